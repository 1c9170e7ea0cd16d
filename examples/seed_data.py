"""What the seed scripts share: their command line, and their data.

Command line (every example):

    --backend torch|scratchnet   which ``nn`` / ``F`` / ``optim`` the script imports
                                 (default torch: the seed exactly as written)
    --seed N                     torch.manual_seed before anything random (default 0)

and, for the scripts that read images, ``--dataset``, ``--data-dir`` and
``--limit N`` (the first N images of each split, for quick runs); ``--epochs``
where the seed trains, ``--out-dir`` where it draws.

Data: the seeds call ``torchvision.datasets.MNIST(root, train, transform,
download=True)``. The machines scratchnet runs on have no internet, so
:class:`IDXDataset` stands in for it: the IDX files come from scratchnet's data
finder (:func:`scratchnet.data.find_dataset`: ``--data-dir``, ``$SCRATCHNET_DATA``,
the user cache, Debian's ``/usr/share/datasets/fashion-mnist``; never a download),
and each item is made exactly as torchvision's ``MNIST.__getitem__`` makes it —
the uint8 image as a PIL image, put through the seed's own ``transforms.Compose``,
with an ``int`` label — so ``torch.utils.data.DataLoader`` batches it as it would
torchvision's dataset. Nothing here depends on the backend.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import torch
from PIL import Image

from scratchnet.data import load_dataset

BACKENDS = ("torch", "scratchnet")


def parse_args(description: str | None, *, data: bool = False,
               epochs: int | None = None, out_dir: bool = False,
               min_limit: int = 1) -> argparse.Namespace:
    """The example's options (see the module docstring).

    Args:
        description: the script's ``__doc__``, shown by ``--help``.
        data: add ``--dataset``, ``--data-dir`` and ``--limit``.
        epochs: add ``--epochs`` with this default (the seed's own number).
        out_dir: add ``--out-dir`` (where PNGs go).
        min_limit: the smallest ``--limit`` the script can run with.
    """
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=BACKENDS, default="torch",
                        help="import nn, F and optim from torch (the seed as written) "
                        "or from scratchnet (default: torch)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of torch's global RNG, set before anything random "
                        "(default: 0)")
    if data:
        parser.add_argument("--dataset", default="fashion-mnist",
                            help="fashion-mnist (installable: apt-get install "
                            "dataset-fashion-mnist) or mnist, the seed's own "
                            "(default: fashion-mnist)")
        parser.add_argument("--data-dir", help="directory holding the four IDX files "
                            "(searched first; then $SCRATCHNET_DATA, the user cache, "
                            "/usr/share/datasets/fashion-mnist)")
        parser.add_argument("--limit", type=int, help="use only the first N images of "
                            "each split, for a quick run (default: all)")
    if epochs is not None:
        parser.add_argument("--epochs", type=int, default=epochs,
                            help=f"training epochs (default: {epochs}, the seed's)")
    if out_dir:
        parser.add_argument("--out-dir", default="runs/examples",
                            help="where the pictures go (default: runs/examples)")
    args = parser.parse_args()
    if data and args.limit is not None and args.limit < min_limit:
        parser.error(f"--limit must be at least {min_limit}, got {args.limit}")
    if epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")
    return args


class IDXDataset(torch.utils.data.Dataset):
    """torchvision's ``datasets.MNIST`` / ``FashionMNIST``, reading the IDX files
    that scratchnet's data finder locates instead of downloading them.

    Args:
        dataset: ``"mnist"`` or ``"fashion-mnist"``.
        root: ``--data-dir`` (None: scratchnet's search order).
        train: the 60,000 training images, else the 10,000 test images.
        transform: applied to each PIL image, as torchvision does.
        limit: keep only the first ``limit`` images (None: all).
    """

    def __init__(self, dataset: str, root: str | os.PathLike | None, train: bool,
                 transform: Callable | None = None, limit: int | None = None) -> None:
        images, labels = load_dataset(dataset, train=train, data_dir=root,
                                      download=False)  # (N, 28, 28) uint8, (N,) int64
        self.images = images[:limit]
        self.labels = labels[:limit]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[object, int]:
        # torchvision/datasets/mnist.py, MNIST.__getitem__, line for line (a uint8
        # (28, 28) array is a mode "L" image; torchvision passes mode="L", which
        # Pillow >= 11.3 deprecates, through a wrapper)
        img, target = self.images[index], int(self.labels[index])
        img = Image.fromarray(img.numpy())
        if self.transform is not None:
            img = self.transform(img)
        return img, target
