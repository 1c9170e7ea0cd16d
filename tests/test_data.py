"""scratchnet.data: IDX files read and written (against torchvision's reader), bad
files named; where datasets are found and in what order; ToTensor and Normalize bit
for bit; TensorLoader's batches and RNG draws equal to torch's DataLoader over
torchvision's FashionMNIST, and resumable mid-epoch.

Every test runs with HOME and XDG_CACHE_HOME in a temporary directory, no
SCRATCHNET_DATA, downloads off, and Fashion-MNIST's system directory pointed at a
temporary path, so nothing depends on (or touches) this machine's files or network.
"""

import dataclasses
import gzip
import os
from pathlib import Path

import pytest
import torch
import torchvision
from hypothesis import given
from hypothesis import strategies as st
from torchvision.datasets.mnist import read_image_file, read_label_file
from torchvision.transforms import Compose, Normalize, ToTensor

from scratchnet.data import (
    DATASETS,
    TensorLoader,
    find_dataset,
    load_dataset,
    normalize,
    pixel_table,
    read_idx,
    to_tensor,
    write_idx,
)
from scratchnet.data import datasets as datasets_module
from scratchnet.data.transforms import lookup_pixels
from scratchnet.errors import (
    DataError,
    DTypeError,
    OptionError,
    ShapeError,
    StateDictError,
)
from tests.oracles import device_params

SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FILES = DATASETS["fashion-mnist"].files
NUM_IMAGES = 100  # small dataset: 100 random 28x28 images, labels 0..9


def random_split(num_images: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 images (N, 28, 28), every value 0..255 present, labels (N,)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (num_images, 28, 28), dtype=torch.uint8,
                           generator=generator)
    images.view(-1)[:256] = torch.arange(256, dtype=torch.uint8)
    labels = torch.randint(0, 10, (num_images,), dtype=torch.uint8, generator=generator)
    return images, labels


def write_split_files(directory: Path, seed: int, gz: bool) -> dict:
    """Write the four IDX files of a small random dataset into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    splits = {True: random_split(NUM_IMAGES, seed), False: random_split(30, seed + 1)}
    for train, (images, labels) in splits.items():
        prefix = "train" if train else "test"
        write_idx(directory / f"{FILES[f'{prefix}_images']}{suffix}", images)
        write_idx(directory / f"{FILES[f'{prefix}_labels']}{suffix}", labels)
    return splits


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch, tmp_path):
    """No real cache, no SCRATCHNET_DATA, no network, no system dataset."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("SCRATCHNET_DATA", raising=False)
    monkeypatch.setenv("SCRATCHNET_NO_DOWNLOAD", "1")
    monkeypatch.setitem(DATASETS, "fashion-mnist", dataclasses.replace(
        DATASETS["fashion-mnist"], system_dir=tmp_path / "system"))

    def no_network(info, root):
        raise AssertionError("a test tried to download")
    monkeypatch.setattr(datasets_module, "download_with_torchvision", no_network)


@pytest.fixture(scope="module")
def torchvision_root(tmp_path_factory):
    """A root in torchvision's layout (FashionMNIST/raw/, uncompressed), so that
    torchvision.datasets.FashionMNIST(root, download=False) reads it."""
    root = tmp_path_factory.mktemp("torchvision-root")
    splits = write_split_files(root / "FashionMNIST" / "raw", seed=7, gz=False)
    return root, splits


# --- IDX files -----------------------------------------------------------------

@pytest.mark.parametrize("shape", [(5,), (1,), (0,), (3, 4), (1, 1), (4, 28, 28),
                                   (1, 2, 3), (0, 28, 28)])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_write_then_read_gives_the_same_tensor(tmp_path, shape, suffix):
    tensor = torch.randint(0, 256, shape, dtype=torch.uint8)
    path = tmp_path / f"file-idx{suffix}"
    write_idx(path, tensor)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz"), "gzip by suffix"
    back = read_idx(path)
    assert back.dtype == torch.uint8 and back.shape == tensor.shape, f"{back.shape}"
    assert torch.equal(back, tensor), f"round trip {shape} {suffix!r}"
    assert os.listdir(tmp_path) == [path.name], "no temporary file left behind"


def test_read_idx_matches_torchvision_reader(torchvision_root):
    root, splits = torchvision_root
    raw = root / "FashionMNIST" / "raw"
    images, labels = splits[True]
    assert torch.equal(read_idx(raw / FILES["train_images"]),
                       read_image_file(str(raw / FILES["train_images"])))
    assert torch.equal(read_idx(raw / FILES["train_labels"]).long(),
                       read_label_file(str(raw / FILES["train_labels"])))
    assert torch.equal(read_idx(raw / FILES["train_images"]), images)


def test_gzip_is_recognised_by_content_not_name(tmp_path):
    tensor = torch.randint(0, 256, (6, 28, 28), dtype=torch.uint8)
    write_idx(tmp_path / "compressed.gz", tensor)
    write_idx(tmp_path / "plain", tensor)
    (tmp_path / "compressed.gz").rename(tmp_path / "compressed-without-suffix")
    (tmp_path / "plain").rename(tmp_path / "plain.gz")
    assert torch.equal(read_idx(tmp_path / "compressed-without-suffix"), tensor)
    assert torch.equal(read_idx(tmp_path / "plain.gz"), tensor)


def test_write_idx_replaces_an_existing_file(tmp_path):
    path = tmp_path / "labels.gz"
    write_idx(path, torch.zeros(10, dtype=torch.uint8))
    write_idx(path, torch.ones(3, dtype=torch.uint8))
    assert torch.equal(read_idx(path), torch.ones(3, dtype=torch.uint8))


def _labels_file(tmp_path: Path) -> Path:
    path = tmp_path / "labels"
    write_idx(path, torch.arange(10, dtype=torch.uint8))  # 8 header + 10 data bytes
    return path


BAD_FILES = [
    # (name, how to spoil the 18 bytes of a good 10-label file, message expected)
    ("truncated", lambda data: data[:-1],
     r"truncated: shape \(10,\) needs 18 bytes \(8 header \+ 10 data\), the file has 17"),
    ("extra bytes", lambda data: data + b"\x00\x00",
     r"2 extra bytes after the data: shape \(10,\) needs 18 bytes .* has 20"),
    ("header only", lambda data: data[:6], r"truncated IDX header: expected 8 bytes"),
    ("empty", lambda data: b"", r"truncated IDX file: expected at least a 4-byte header"),
    ("type code int", lambda data: b"\x00\x00\x0c\x01" + data[4:],
     r"type code 0x0C \(int\) in magic number 0x00000C01"),
    ("type code float", lambda data: b"\x00\x00\x0d\x01" + data[4:],
     r"type code 0x0D \(float\)"),
    ("magic not zero", lambda data: b"\x01\x00" + data[2:],
     r"not an IDX file: magic number 0x01000801, expected 0x00000801 .* 0x00000803"),
    ("rank 4", lambda data: b"\x00\x00\x08\x04" + data[4:], r"not an IDX file"),
    ("rank 0", lambda data: b"\x00\x00\x08\x00" + data[4:], r"not an IDX file"),
    ("gzip truncated", lambda data: gzip.compress(data)[:-6], r"corrupt gzip data"),
    ("gzip garbled", lambda data: gzip.compress(data)[:12] + b"\xff" * 20,
     r"corrupt gzip data"),
    ("gzip of a truncated file", lambda data: gzip.compress(data[:-3]), r"truncated"),
]


@pytest.mark.parametrize("name, spoil, message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_idx_files_raise_data_error_naming_the_file(tmp_path, name, spoil, message):
    path = _labels_file(tmp_path)
    path.write_bytes(spoil(path.read_bytes()))
    with pytest.raises(DataError, match=message) as raised:
        read_idx(path)
    assert str(path) in str(raised.value), f"{name}: the message names the file"


def test_missing_file_raises_data_error(tmp_path):
    with pytest.raises(DataError, match=r"nowhere-idx1-ubyte: cannot read IDX file"):
        read_idx(tmp_path / "nowhere-idx1-ubyte")


@pytest.mark.parametrize("tensor, error, message", [
    (torch.zeros(3, dtype=torch.int64), DTypeError, r"expected a torch.uint8 tensor, got torch.int64"),
    (torch.zeros(3, dtype=torch.float32), DTypeError, r"got torch.float32"),
    (torch.zeros((), dtype=torch.uint8), ShapeError, r"rank 1 to 3, got shape \(\) \(rank 0\)"),
    (torch.zeros(1, 2, 3, 4, dtype=torch.uint8), ShapeError, r"got shape \(1, 2, 3, 4\) \(rank 4\)"),
])
def test_write_idx_rejects_what_idx_cannot_hold(tmp_path, tensor, error, message):
    with pytest.raises(error, match=message):
        write_idx(tmp_path / "out", tensor)
    assert not os.listdir(tmp_path), "nothing written"


# --- finding and loading ---------------------------------------------------------

def _places(tmp_path: Path) -> dict[str, Path]:
    return {"data_dir": tmp_path / "argument", "env": tmp_path / "environment",
            "cache": tmp_path / "xdg-cache" / "scratchnet" / "fashion-mnist",
            "system": tmp_path / "system"}


def test_find_dataset_order_data_dir_env_cache_system(tmp_path, monkeypatch):
    places = _places(tmp_path)
    for seed, directory in enumerate(places.values()):
        write_split_files(directory, seed, gz=bool(seed % 2))
    monkeypatch.setenv("SCRATCHNET_DATA", str(places["env"]))
    assert find_dataset("fashion-mnist", places["data_dir"]) == places["data_dir"]
    assert find_dataset("fashion-mnist") == places["env"], "env when no data_dir"
    monkeypatch.delenv("SCRATCHNET_DATA")
    assert find_dataset("fashion-mnist") == places["cache"], "cache when no env"
    for name in FILES.values():  # an incomplete cache is passed over
        (places["cache"] / name).unlink(missing_ok=True)
        (places["cache"] / f"{name}.gz").unlink(missing_ok=True)
        break
    assert find_dataset("fashion-mnist") == places["system"], "system dir last"


def test_data_dir_that_lacks_files_falls_through_to_cache(tmp_path):
    places = _places(tmp_path)
    write_split_files(places["cache"], 0, gz=True)
    places["data_dir"].mkdir()
    assert find_dataset("fashion-mnist", places["data_dir"]) == places["cache"]


def test_cache_honours_home_when_xdg_cache_home_is_unset(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME")
    cache = tmp_path / "home" / ".cache" / "scratchnet" / "mnist"
    write_split_files(cache, 0, gz=True)
    assert find_dataset("MNIST") == cache


@pytest.mark.parametrize("layout", ["FashionMNIST/raw", "fashion-mnist", "."])
@pytest.mark.parametrize("gz", [False, True])
def test_every_layout_is_found_and_loads(tmp_path, layout, gz):
    root = tmp_path / "data"
    splits = write_split_files(root / layout, 3, gz=gz)
    assert find_dataset("fashion-mnist", root) == root / layout  # root / "." is root
    for train in (True, False):
        images, labels = load_dataset("fashion-mnist", train=train, data_dir=root)
        assert images.dtype == torch.uint8 and labels.dtype == torch.int64
        assert torch.equal(images, splits[train][0]), f"{layout} train={train} images"
        assert torch.equal(labels, splits[train][1].long()), f"{layout} train={train} labels"


def test_torchvision_layout_is_preferred_inside_a_directory(tmp_path):
    root = tmp_path / "data"
    write_split_files(root, 1, gz=True)
    write_split_files(root / "FashionMNIST" / "raw", 2, gz=False)
    assert find_dataset("fashion-mnist", root) == root / "FashionMNIST" / "raw"
    assert find_dataset("mnist", root) == root, "MNIST/raw absent: the plain files"


@pytest.mark.parametrize("alias", ["fashion-mnist", "Fashion-MNIST", "fashionmnist",
                                   "FashionMNIST", "fashion_mnist"])
def test_dataset_names_are_case_and_dash_insensitive(tmp_path, alias):
    write_split_files(tmp_path / "d", 0, gz=True)
    assert find_dataset(alias, tmp_path / "d") == tmp_path / "d"


def test_unknown_dataset_name_raises_option_error(tmp_path):
    with pytest.raises(OptionError, match=r"unknown dataset 'cifar10'.*fashion-mnist"):
        find_dataset("cifar10", tmp_path)


def test_dataset_info():
    assert DATASETS["fashion-mnist"].classes[:2] == ("T-shirt/top", "Trouser")
    assert DATASETS["fashion-mnist"].classes == tuple(torchvision.datasets.FashionMNIST.classes)
    assert DATASETS["mnist"].classes == tuple(str(d) for d in range(10))
    assert DATASETS["mnist"].file_name(False, "labels") == "t10k-labels-idx1-ubyte"


def test_not_found_error_lists_every_place_and_the_fixes(tmp_path, monkeypatch):
    places = _places(tmp_path)
    places["system"].mkdir()
    write_idx(places["system"] / "train-images-idx3-ubyte.gz",
              torch.zeros(1, 28, 28, dtype=torch.uint8))
    with pytest.raises(DataError) as raised:
        find_dataset("fashion-mnist", places["data_dir"])
    message = str(raised.value)
    expected_lines = [
        f"1. data_dir argument {places['data_dir']}: no such directory",
        f"2. user cache {places['cache']}: no such directory",
        f"3. system dataset {places['system']}: missing train-labels-idx1-ubyte[.gz], "
        "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]",
        f"4. torchvision download into {places['cache']}: skipped "
        "($SCRATCHNET_NO_DOWNLOAD=1)",
        "apt-get install dataset-fashion-mnist",
        f"copy the four IDX files into {places['cache']}",
        "set SCRATCHNET_DATA",
    ]
    for line in expected_lines:
        assert line in message, f"{line!r} not in:\n{message}"
    monkeypatch.setenv("SCRATCHNET_DATA", str(places["env"]))
    with pytest.raises(DataError, match=r"1\. \$SCRATCHNET_DATA .*environment: no such"):
        find_dataset("fashion-mnist")
    with pytest.raises(DataError) as raised:
        find_dataset("mnist")
    assert "system" not in str(raised.value) and "apt-get" not in str(raised.value), \
        "MNIST has no system package"


def test_download_is_the_last_resort_and_can_be_switched_off(tmp_path, monkeypatch):
    calls = []

    def fake_download(info, root):
        calls.append((info.name, root))
        write_split_files(root / info.torchvision_name / "raw", 5, gz=False)

    monkeypatch.setattr(datasets_module, "download_with_torchvision", fake_download)
    cache = _places(tmp_path)["cache"]
    with pytest.raises(DataError, match=r"skipped \(\$SCRATCHNET_NO_DOWNLOAD=1\)"):
        find_dataset("fashion-mnist")
    monkeypatch.delenv("SCRATCHNET_NO_DOWNLOAD")
    with pytest.raises(DataError, match=r"skipped \(download=False\)"):
        find_dataset("fashion-mnist", download=False)
    assert calls == [], "no download while switched off"
    assert find_dataset("fashion-mnist") == cache / "FashionMNIST" / "raw"
    assert calls == [("fashion-mnist", cache)]
    assert find_dataset("fashion-mnist") == cache / "FashionMNIST" / "raw"
    assert len(calls) == 1, "found in the cache the second time"


def test_failed_download_is_reported(monkeypatch):
    def failing_download(info, root):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nno network")

    monkeypatch.setattr(datasets_module, "download_with_torchvision", failing_download)
    monkeypatch.delenv("SCRATCHNET_NO_DOWNLOAD")
    with pytest.raises(DataError, match=r"failed \(RuntimeError: Error downloading "
                                        r"train-images-idx3-ubyte.gz: no network\)"):
        find_dataset("mnist")


@pytest.mark.parametrize("labels_shape, max_label, message", [
    ((99,), 9, r"expected labels \(100,\) to match .*, got shape \(99,\)"),
    ((100,), 10, r"labels must be in 0..9, found 10"),
])
def test_load_dataset_rejects_inconsistent_files(tmp_path, labels_shape, max_label, message):
    write_split_files(tmp_path, 0, gz=True)
    labels = torch.full(labels_shape, max_label, dtype=torch.uint8)
    write_idx(tmp_path / f"{FILES['train_labels']}.gz", labels)
    with pytest.raises(DataError, match=message):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_load_dataset_rejects_images_that_are_not_28x28(tmp_path):
    write_split_files(tmp_path, 0, gz=True)
    write_idx(tmp_path / f"{FILES['train_images']}.gz", torch.zeros(100, 28, 27, dtype=torch.uint8))
    with pytest.raises(DataError, match=r"expected images \(N, 28, 28\), got shape \(100, 28, 27\)"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(not SYSTEM_FASHION_MNIST.is_dir(), reason="dataset-fashion-mnist not installed")
@pytest.mark.parametrize("train, count", [(True, 60000), (False, 10000)])
def test_real_fashion_mnist_loads(monkeypatch, train, count):
    monkeypatch.setitem(DATASETS, "fashion-mnist", dataclasses.replace(
        DATASETS["fashion-mnist"], system_dir=SYSTEM_FASHION_MNIST))
    assert find_dataset("fashion-mnist") == SYSTEM_FASHION_MNIST
    images, labels = load_dataset("fashion-mnist", train=train)
    assert images.shape == (count, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (count,) and labels.dtype == torch.int64
    # Fashion-MNIST is balanced: every class count / 10 times.
    assert torch.equal(torch.bincount(labels, minlength=10),
                       torch.full((10,), count // 10)), "labels 0..9, balanced"
    assert int(images.max()) == 255 and int(images.min()) == 0


# --- ToTensor and Normalize ----------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_to_tensor_matches_torchvision(dtype):
    images, _ = random_split(8, seed=1)  # holds every value 0..255
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # ToTensor converts to the default dtype
    try:
        expected = torch.stack([ToTensor()(image.numpy()) for image in images])
    finally:
        torch.set_default_dtype(previous)
    actual = to_tensor(images, dtype)
    assert actual.dtype == dtype and actual.shape == (8, 1, 28, 28)
    assert torch.equal(actual, expected), "to_tensor bit for bit"
    assert torch.equal(to_tensor(images[0], dtype), expected[0]), "one image (H, W)"


@pytest.mark.parametrize("mean, std", [((0.5,), (0.5,)), ((0.2860,), (0.3530,)),
                                        (0.1307, 0.3081), ([0.0], [1.0])])
def test_normalize_matches_torchvision(mean, std):
    images, _ = random_split(8, seed=2)
    x = to_tensor(images)  # (8, 1, 28, 28)
    expected = torch.stack([Normalize(mean, std)(image) for image in x])
    assert torch.equal(normalize(x, mean, std), expected), f"normalize {mean} {std}"
    table = pixel_table(torch.float32, mean, std)
    expected_table = Normalize(mean, std)(ToTensor()(torch.arange(256, dtype=torch.uint8)
                                                    .view(16, 16).numpy()))
    assert torch.equal(table, expected_table.view(256)), "pixel table"


@given(count=st.integers(1, 40), dtype=st.sampled_from([torch.float32, torch.float64]),
       mean_std=st.sampled_from([None, ((0.5,), (0.5,)), (0.2860, 0.3530),
                                 ([0.1307], [0.3081])]),
       seed=st.integers(0, 2**16))
def test_cpu_formula_equals_the_pixel_table(count, dtype, mean_std, seed):
    """On the CPU the loader and to_tensor run torchvision's formula on the batch
    instead of gathering from the 256-entry table; the two agree element for
    element, in SIMD lanes and in the scalar tail (count · 784 is rarely a
    multiple of the vector width)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 28, 28), dtype=torch.uint8, generator=generator)
    images[0].view(-1)[:256] = torch.arange(256, dtype=torch.uint8)  # every value
    mean, std = mean_std if mean_std is not None else (None, None)
    table = pixel_table(dtype, mean, std)
    expected = lookup_pixels(table, images).unsqueeze(1)  # (count, 1, 28, 28)
    loader = TensorLoader(images, torch.zeros(count, dtype=torch.int64),
                          batch_size=count, mean=mean, std=std, dtype=dtype)
    (x, _), = list(loader)
    assert x.dtype == dtype and torch.equal(x, expected), "loader: formula = table"
    if mean is None:
        assert torch.equal(to_tensor(images, dtype), expected), "to_tensor: formula = table"


@pytest.mark.parametrize("call, error, message", [
    (lambda: to_tensor(torch.zeros(2, 28, 28)), DTypeError, r"expected uint8 images, got torch.float32"),
    (lambda: to_tensor(torch.zeros(1, 2, 28, 28, dtype=torch.uint8)), ShapeError, r"got shape \(1, 2, 28, 28\)"),
    (lambda: normalize(torch.zeros(2, 28, 28, dtype=torch.uint8), 0.5, 0.5), DTypeError, r"expected float images"),
    (lambda: normalize(torch.zeros(28, 28), 0.5, 0.5), ShapeError, r"\(\.\.\., C, H, W\), got shape \(28, 28\)"),
    (lambda: normalize(torch.zeros(1, 28, 28), 0.5, 0.0), OptionError, r"std .* is zero"),
    (lambda: pixel_table(torch.float32, 0.5, None), OptionError, r"both mean and std"),
    (lambda: pixel_table(torch.int64), DTypeError, r"floating dtype, got torch.int64"),
])
def test_transforms_reject_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


# --- TensorLoader against DataLoader ---------------------------------------------

MEAN_STD = {"ToTensor": (None, None), "Normalize": ((0.5,), (0.5,))}


def torchvision_dataset(root: Path, normalized: str):
    mean, std = MEAN_STD[normalized]
    transform = ToTensor() if mean is None else Compose([ToTensor(), Normalize(mean, std)])
    return torchvision.datasets.FashionMNIST(root, train=True, download=False,
                                             transform=transform)


def run_epochs(make_loader, seed: int, use_generator: bool, epochs: int):
    """Seed, build a loader, iterate ``epochs`` epochs, drawing from the RNGs after
    every batch as a training step would (dropout); return the batches and draws."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed + 1) if use_generator else None
    loader = make_loader(generator)
    batches, draws = [], []
    for _ in range(epochs):
        for x, y in loader:
            batches.append((x, y))
            draws.append(torch.rand(2))
            if generator is not None:
                draws.append(torch.rand(2, generator=generator))
    draws.append(torch.rand(2))
    if generator is not None:
        draws.append(torch.rand(2, generator=generator))
    return len(loader), batches, draws


def assert_same_run(ours, reference, what: str) -> None:
    (our_len, our_batches, our_draws), (ref_len, ref_batches, ref_draws) = ours, reference
    assert our_len == ref_len, f"{what}: len {our_len} vs {ref_len}"
    assert len(our_batches) == len(ref_batches), f"{what}: batch count"
    for number, ((x, y), (x_ref, y_ref)) in enumerate(zip(our_batches, ref_batches, strict=True)):
        assert x.dtype == x_ref.dtype and x.shape == x_ref.shape, \
            f"{what} batch {number}: x {x.dtype} {tuple(x.shape)} vs {x_ref.dtype} {tuple(x_ref.shape)}"
        assert y.dtype == torch.int64 and torch.equal(y, y_ref), f"{what} batch {number}: labels"
        assert torch.equal(x, x_ref), f"{what} batch {number}: images not bit-identical"
    for number, (draw, draw_ref) in enumerate(zip(our_draws, ref_draws, strict=True)):
        assert torch.equal(draw, draw_ref), f"{what}: RNG out of step at draw {number}"


def compare_with_dataloader(torchvision_root, batch_size, shuffle, drop_last,
                            use_generator, normalized, seed, epochs=2):
    root, splits = torchvision_root
    images, labels = splits[True]
    dataset = torchvision_dataset(root, normalized)
    mean, std = MEAN_STD[normalized]
    reference = run_epochs(lambda generator: torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
        drop_last=drop_last), seed, use_generator, epochs)
    ours = run_epochs(lambda generator: TensorLoader(
        images, labels, batch_size=batch_size, shuffle=shuffle, generator=generator,
        drop_last=drop_last, mean=mean, std=std), seed, use_generator, epochs)
    what = (f"B={batch_size} shuffle={shuffle} drop_last={drop_last} "
            f"generator={use_generator} {normalized} seed={seed}")
    assert_same_run(ours, reference, what)


@pytest.mark.parametrize("normalized", list(MEAN_STD))
@pytest.mark.parametrize("use_generator", [True, False], ids=["generator", "global-seed"])
@pytest.mark.parametrize("shuffle", [False, True], ids=["in-order", "shuffle"])
@pytest.mark.parametrize("drop_last", [False, True], ids=["keep-last", "drop-last"])
@pytest.mark.parametrize("batch_size", [1, 7, 10, 100, 128])  # 100 % 7 = 2: partial
def test_loader_equals_dataloader(torchvision_root, batch_size, drop_last, shuffle,
                                  use_generator, normalized):
    compare_with_dataloader(torchvision_root, batch_size, shuffle, drop_last,
                            use_generator, normalized, seed=batch_size)


@given(batch_size=st.integers(1, 130), shuffle=st.booleans(), drop_last=st.booleans(),
       use_generator=st.booleans(), normalized=st.sampled_from(list(MEAN_STD)),
       seed=st.integers(0, 2**31 - 1))
def test_loader_equals_dataloader_property(torchvision_root, batch_size, shuffle,
                                           drop_last, use_generator, normalized, seed):
    compare_with_dataloader(torchvision_root, batch_size, shuffle, drop_last,
                            use_generator, normalized, seed, epochs=1)


@pytest.mark.parametrize("device", device_params())
def test_loader_on_device_equals_dataloader(torchvision_root, device):
    root, splits = torchvision_root
    images, labels = splits[True]
    generator = torch.Generator().manual_seed(0)
    reference = list(torch.utils.data.DataLoader(torchvision_dataset(root, "Normalize"),
                                                 batch_size=32, shuffle=True,
                                                 generator=generator))
    generator = torch.Generator().manual_seed(0)
    loader = TensorLoader(images, labels, batch_size=32, shuffle=True, generator=generator,
                          mean=(0.5,), std=(0.5,), device=device)
    for number, ((x, y), (x_ref, y_ref)) in enumerate(zip(loader, reference, strict=True)):
        assert x.device.type == device and y.device.type == device
        assert torch.equal(x.cpu(), x_ref), f"{device} batch {number} images"
        assert torch.equal(y.cpu(), y_ref), f"{device} batch {number} labels"


def test_loader_dtype_float64_equals_to_tensor(torchvision_root):
    _, splits = torchvision_root
    images, labels = splits[True]
    (x, y), = TensorLoader(images, labels, batch_size=NUM_IMAGES, dtype=torch.float64)
    assert x.dtype == torch.float64
    assert torch.equal(x, to_tensor(images, torch.float64))


# --- resuming mid-epoch -----------------------------------------------------------

@pytest.mark.parametrize("use_generator", [True, False], ids=["generator", "global-seed"])
@pytest.mark.parametrize("shuffle", [True, False], ids=["shuffle", "in-order"])
@pytest.mark.parametrize("batch_size, drop_last, stop_after", [
    (7, False, 0), (7, False, 5), (7, False, 15), (10, False, 10), (10, True, 10),
    (7, True, 14), (7, True, 3),
])  # stop_after = batches of epoch 1 taken before saving; 15 of 15 = the last one
def test_state_dict_resumes_mid_epoch(torchvision_root, batch_size, drop_last,
                                      stop_after, shuffle, use_generator):
    _, splits = torchvision_root
    images, labels = splits[True]

    def make_loader(generator_seed):
        generator = (torch.Generator().manual_seed(generator_seed)
                     if use_generator else None)
        return TensorLoader(images, labels, batch_size=batch_size, shuffle=shuffle,
                            generator=generator, drop_last=drop_last)

    torch.manual_seed(0)
    loader = make_loader(1)
    uninterrupted = [list(loader) for _ in range(3)]

    torch.manual_seed(0)
    loader = make_loader(1)
    list(loader)  # epoch 0
    epoch_1 = iter(loader)
    for _ in range(stop_after):
        next(epoch_1)
    saved, saved_rng = loader.state_dict(), torch.get_rng_state()
    assert saved["epoch"] == 1 and saved["in_progress"] is True
    assert saved["position"] == min(stop_after * batch_size, NUM_IMAGES)

    torch.manual_seed(12345)  # another process: other RNG states, other generator seed
    resumed = make_loader(99)
    resumed.load_state_dict(saved)
    torch.set_rng_state(saved_rng)
    rest_of_epoch_1, epoch_2 = list(resumed), list(resumed)
    assert resumed.state_dict()["epoch"] == 3 and not resumed.state_dict()["in_progress"]
    for name, got, expected in (("epoch 1", rest_of_epoch_1, uninterrupted[1][stop_after:]),
                                ("epoch 2", epoch_2, uninterrupted[2])):
        assert len(got) == len(expected), f"{name}: {len(got)} vs {len(expected)} batches"
        for number, ((x, y), (x_ref, y_ref)) in enumerate(zip(got, expected, strict=True)):
            assert torch.equal(x, x_ref) and torch.equal(y, y_ref), f"{name} batch {number}"


def test_state_dict_between_epochs_starts_a_fresh_epoch(torchvision_root):
    _, splits = torchvision_root
    images, labels = splits[True]
    generator = torch.Generator().manual_seed(3)
    loader = TensorLoader(images, labels, batch_size=16, shuffle=True, generator=generator)
    list(loader)
    saved = loader.state_dict()
    assert saved["epoch"] == 1 and not saved["in_progress"] and saved["permutation"] is None
    expected = list(loader)
    resumed = TensorLoader(images, labels, batch_size=16, shuffle=True,
                           generator=torch.Generator())
    resumed.load_state_dict(saved)
    for (x, y), (x_ref, y_ref) in zip(resumed, expected, strict=True):
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)


def test_load_state_dict_rejects_another_configuration(torchvision_root):
    _, splits = torchvision_root
    images, labels = splits[True]
    loader = TensorLoader(images, labels, batch_size=16, shuffle=True)
    iterator = iter(loader)
    next(iterator)
    saved = loader.state_dict()
    with pytest.raises(StateDictError, match=r"batch_size=16, this loader batch_size=8"):
        TensorLoader(images, labels, batch_size=8, shuffle=True).load_state_dict(saved)
    with pytest.raises(StateDictError, match=r"num_samples=100, this loader num_samples=50"):
        TensorLoader(images[:50], labels[:50], batch_size=16, shuffle=True).load_state_dict(saved)
    with pytest.raises(StateDictError, match=r"saved without a generator"):
        TensorLoader(images, labels, batch_size=16, shuffle=True,
                     generator=torch.Generator()).load_state_dict(saved)
    with pytest.raises(StateDictError, match=r"missing keys \['permutation'\]"):
        loader.load_state_dict({k: v for k, v in saved.items() if k != "permutation"})
    with pytest.raises(StateDictError, match=r"needs its permutation"):
        loader.load_state_dict({**saved, "permutation": None})


@pytest.mark.parametrize("kwargs, error, message", [
    ({"images": torch.zeros(4, 28, 28)}, DTypeError, r"expected uint8 images, got torch.float32"),
    ({"images": torch.zeros(4, 784, dtype=torch.uint8)}, ShapeError, r"\(N, H, W\) with N >= 1, got shape \(4, 784\)"),
    ({"images": torch.zeros(0, 28, 28, dtype=torch.uint8), "labels": torch.zeros(0)}, ShapeError, r"N >= 1"),
    ({"labels": torch.zeros(3, dtype=torch.int64)}, ShapeError, r"expected labels \(4,\) to match .* got \(3,\)"),
    ({"labels": torch.zeros(4)}, DTypeError, r"integer labels, got torch.float32"),
    ({"batch_size": 0}, OptionError, r"positive integer, got 0"),
    ({"batch_size": True}, OptionError, r"positive integer, got True"),
    ({"shuffle": 1}, OptionError, r"shuffle should be True or False, got 1"),
    ({"generator": 3}, OptionError, r"torch.Generator or None, got int"),
    ({"mean": 0.5}, OptionError, r"both mean and std"),
])
def test_loader_rejects_bad_arguments(kwargs, error, message):
    arguments = {"images": torch.zeros(4, 28, 28, dtype=torch.uint8),
                 "labels": torch.zeros(4, dtype=torch.int64), **kwargs}
    with pytest.raises(error, match=message):
        TensorLoader(**arguments)
