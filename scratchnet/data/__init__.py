"""scratchnet.data: MNIST and Fashion-MNIST from their IDX files to batches.

Follow one batch in this order:

    idx.py         the IDX file format: read_idx, write_idx
    datasets.py    where the files are (find_dataset) and what they hold (load_dataset,
                   DATASETS)
    transforms.py  torchvision's ToTensor and Normalize, bit for bit
    loader.py      TensorLoader: DataLoader's batches, RNG draws and order, from one
                   uint8 tensor

    from scratchnet.data import load_dataset, TensorLoader
    images, labels = load_dataset("fashion-mnist", train=True)  # (N, 28, 28), (N,)
    loader = TensorLoader(images, labels, batch_size=64, shuffle=True,
                          mean=(0.5,), std=(0.5,))
"""

from scratchnet.data.datasets import (
    DATASETS,
    DatasetInfo,
    cache_dir,
    dataset_info,
    find_dataset,
    load_dataset,
)
from scratchnet.data.idx import read_idx, write_idx
from scratchnet.data.loader import TensorLoader
from scratchnet.data.transforms import normalize, pixel_table, to_tensor

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "TensorLoader",
    "cache_dir",
    "dataset_info",
    "find_dataset",
    "load_dataset",
    "normalize",
    "pixel_table",
    "read_idx",
    "to_tensor",
    "write_idx",
]
