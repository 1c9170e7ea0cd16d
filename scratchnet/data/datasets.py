"""Finding and loading MNIST and Fashion-MNIST.

``find_dataset`` looks in these places, in this order, and returns the first
directory that holds all four IDX files:

1. the ``data_dir`` argument, or else the ``SCRATCHNET_DATA`` environment variable;
2. the user's cache, ``$XDG_CACHE_HOME/scratchnet/<name>`` (default
   ``~/.cache/scratchnet/<name>``);
3. ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``;
   Fashion-MNIST only);
4. a download through torchvision into the cache (torchvision checks the MD5 sums);
   switched off by ``download=False`` or ``SCRATCHNET_NO_DOWNLOAD=1``.

Inside each place the files may sit in torchvision's layout ``<dir>/FashionMNIST/raw/``
(``<dir>/MNIST/raw/``), in ``<dir>/<name>/``, or in ``<dir>`` itself, each file with
or without ``.gz``. MNIST and Fashion-MNIST use the same four file names, so a
plain directory does not say which of the two it holds: scratchnet trusts the
directory it is pointed at. If every place fails, the DataError lists each place
and what was missing there, and how to fill one.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from scratchnet.data.idx import read_idx
from scratchnet.errors import DataError, OptionError


@dataclass(frozen=True)
class DatasetInfo:
    """What scratchnet knows about one dataset.

    Attributes:
        name: scratchnet's name, e.g. ``"fashion-mnist"``.
        torchvision_name: the torchvision.datasets class, also its folder name.
        files: the four IDX file names (without ``.gz``), keyed
            ``train_images``, ``train_labels``, ``test_images``, ``test_labels``.
        classes: class names, index = label.
        system_dir: where a system package installs the files, if one does.
    """

    name: str
    torchvision_name: str
    files: dict[str, str]
    classes: tuple[str, ...]
    system_dir: Path | None = None

    def file_name(self, train: bool, kind: str) -> str:
        """The IDX file name of the train or test ``"images"`` or ``"labels"``."""
        return self.files[f"{'train' if train else 'test'}_{kind}"]


IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

DATASETS: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        torchvision_name="FashionMNIST",
        files=IDX_FILES,
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                 "Shirt", "Sneaker", "Bag", "Ankle boot"),
        system_dir=Path("/usr/share/datasets/fashion-mnist"),
    ),
    "mnist": DatasetInfo(
        name="mnist",
        torchvision_name="MNIST",
        files=IDX_FILES,
        classes=tuple(str(digit) for digit in range(10)),
    ),
}

NO_DOWNLOAD_VARIABLE = "SCRATCHNET_NO_DOWNLOAD"
DATA_VARIABLE = "SCRATCHNET_DATA"


def dataset_info(name: str) -> DatasetInfo:
    """DATASETS[name], accepting ``Fashion-MNIST``, ``fashionmnist``, ``FashionMNIST``,
    ``fashion_mnist``, ``MNIST`` and the like."""
    key = name.lower().replace("-", "").replace("_", "")
    for info in DATASETS.values():
        if key in (info.name.replace("-", ""), info.torchvision_name.lower()):
            return info
    raise OptionError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")


def cache_dir(name: str) -> Path:
    """``$XDG_CACHE_HOME/scratchnet/<name>``, or ``~/.cache/scratchnet/<name>``."""
    cache_home = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(cache_home) if os.path.isabs(cache_home) else Path.home() / ".cache"
    return base / "scratchnet" / dataset_info(name).name


def _idx_file(directory: Path, file_name: str) -> Path | None:
    """``directory/file_name``, else ``directory/file_name.gz``, else None."""
    for candidate in (directory / file_name, directory / f"{file_name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _missing_files(directory: Path, info: DatasetInfo) -> list[str]:
    """The IDX files ``directory`` lacks (with or without .gz)."""
    return [f"{name}[.gz]" for name in info.files.values()
            if _idx_file(directory, name) is None]


def _search_place(root: Path, info: DatasetInfo) -> tuple[Path | None, str]:
    """The directory under ``root`` that holds all four files, or None and why not."""
    if not root.is_dir():
        return None, "no such directory"
    candidates = [root / info.torchvision_name / "raw", root / info.name, root]
    for directory in candidates:
        if directory.is_dir() and not _missing_files(directory, info):
            return directory, ""
    missing = ", ".join(_missing_files(root, info))
    return None, (f"missing {missing} (also looked in {info.torchvision_name}/raw/ "
                  f"and {info.name}/)")


def download_with_torchvision(info: DatasetInfo, root: Path) -> None:
    """Download the four files into ``root/<TorchvisionName>/raw/`` with torchvision,
    which verifies their MD5 checksums. Raises whatever torchvision raises."""
    import torchvision.datasets

    dataset_class = getattr(torchvision.datasets, info.torchvision_name)
    dataset_class(root=str(root), train=True, download=True)
    dataset_class(root=str(root), train=False, download=True)


def find_dataset(name: str, data_dir: str | os.PathLike | None = None, *,
                 download: bool = True) -> Path:
    """The directory holding the four IDX files of ``name`` (see the module docstring
    for the order of places).

    Args:
        name: ``"fashion-mnist"`` or ``"mnist"`` (any case; ``"FashionMNIST"`` too).
        data_dir: looked in first; when None, ``$SCRATCHNET_DATA`` is.
        download: when False (or ``SCRATCHNET_NO_DOWNLOAD=1``), never use the network.

    Raises:
        OptionError: unknown dataset name.
        DataError: found nowhere; the message lists every place tried.
    """
    info = dataset_info(name)
    places: list[tuple[str, Path]] = []
    if data_dir is not None:
        places.append(("data_dir argument", Path(data_dir)))
    elif os.environ.get(DATA_VARIABLE):
        places.append((f"${DATA_VARIABLE}", Path(os.environ[DATA_VARIABLE])))
    places.append(("user cache", cache_dir(info.name)))
    if info.system_dir is not None:
        places.append(("system dataset", info.system_dir))

    tried = []
    for label, root in places:
        directory, why_not = _search_place(root, info)
        if directory is not None:
            return directory
        tried.append(f"{label} {root}: {why_not}")

    why_not = _try_download(info, download)
    if why_not is None:
        directory, why_not = _search_place(cache_dir(info.name), info)
        if directory is not None:
            return directory
    tried.append(f"torchvision download into {cache_dir(info.name)}: {why_not}")
    raise DataError(_not_found_message(info, tried))


def _try_download(info: DatasetInfo, download: bool) -> str | None:
    """Download into the cache; None on success, else why it did not happen."""
    if not download:
        return "skipped (download=False)"
    if os.environ.get(NO_DOWNLOAD_VARIABLE, "") not in ("", "0"):
        return f"skipped (${NO_DOWNLOAD_VARIABLE}={os.environ[NO_DOWNLOAD_VARIABLE]})"
    try:
        download_with_torchvision(info, cache_dir(info.name))
    except Exception as error:  # no network, a mirror down, a checksum mismatch
        reason = " ".join(str(error).split())  # torchvision's message spans lines
        return f"failed ({type(error).__name__}: {reason})"
    return None


def _not_found_message(info: DatasetInfo, tried: list[str]) -> str:
    files = ", ".join(info.files.values())
    lines = [f"{info.name}: the IDX files ({files}, each with or without .gz) "
             "were not found. Places tried, in order:"]
    lines += [f"  {number}. {place}" for number, place in enumerate(tried, 1)]
    lines.append("To fix, do one of:")
    if info.system_dir is not None:
        lines.append(f"  - apt-get install dataset-{info.name}  (installs them in "
                     f"{info.system_dir})")
    lines.append(f"  - copy the four IDX files into {cache_dir(info.name)}")
    lines.append(f"  - set {DATA_VARIABLE} (or pass data_dir) to a directory that "
                 "holds them")
    lines.append(f"  - connect to the internet and unset {NO_DOWNLOAD_VARIABLE}, so "
                 "torchvision can download them")
    return "\n".join(lines)


def load_dataset(name: str, train: bool = True, data_dir: str | os.PathLike | None = None,
                 *, download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of the training (``train=True``) or test split.

    Returns:
        images: uint8 (N, 28, 28);  labels: int64 (N,), each in 0..len(classes)-1.

    Raises:
        DataError: files not found (see find_dataset), corrupt, or inconsistent.
    """
    info = dataset_info(name)
    directory = find_dataset(info.name, data_dir, download=download)
    image_path = _idx_file(directory, info.file_name(train, "images"))
    label_path = _idx_file(directory, info.file_name(train, "labels"))
    images = read_idx(image_path)  # (N, H, W)
    labels = read_idx(label_path)  # (N,)
    if images.dim() != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{image_path}: expected images (N, 28, 28), got shape "
                        f"{tuple(images.shape)}")
    if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(f"{label_path}: expected labels ({images.shape[0]},) to match "
                        f"{image_path}, got shape {tuple(labels.shape)}")
    if labels.numel() and int(labels.max()) >= len(info.classes):
        raise DataError(f"{label_path}: labels must be in 0..{len(info.classes) - 1}, "
                        f"found {int(labels.max())}")
    return images, labels.long()
