"""The IDX file format of MNIST and Fashion-MNIST: read and write, raw or gzip.

An IDX file is a header and then the data, row-major, big-endian (LeCun's
description at http://yann.lecun.com/exdb/mnist/, "FILE FORMATS"):

    bytes 0-1   0x00 0x00
    byte  2     type code: 0x08 = unsigned byte (the only one scratchnet reads)
    byte  3     number of dimensions, ndim
    then        ndim sizes, each a 4-byte big-endian unsigned integer
    then        prod(sizes) bytes of data

So labels start with the magic number 0x00000801 (ndim = 1, shape (N,)) and images
with 0x00000803 (ndim = 3, shape (N, H, W), H = W = 28). A file is read whole and
checked before any tensor is made: the magic number, the type code, and that the
sizes account for every byte (a truncated download or trailing junk is an error,
not a silently short dataset). gzip is recognised by its content (first bytes
0x1f 0x8b), not by the file name.

torchvision's reader, for comparison: torchvision/datasets/mnist.py,
``read_sn3_pascalvincent_tensor``.
"""

import gzip
import math
import os
import struct
import tempfile
import zlib
from pathlib import Path

import torch

from scratchnet.errors import DataError, DTypeError, ShapeError, check_tensor

GZIP_MAGIC = b"\x1f\x8b"
UBYTE_TYPE_CODE = 0x08
TYPE_NAMES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "short",
              0x0C: "int", 0x0D: "float", 0x0E: "double"}


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """Read an IDX file of unsigned bytes, raw or gzip-compressed.

    Args:
        path: the file; whether it is gzip is decided by its first two bytes.

    Returns:
        a uint8 tensor with the file's shape: (N,) for labels, (N, H, W) for images.

    Raises:
        DataError: the file is missing or unreadable, the gzip stream is corrupt,
            the magic number is not an IDX one, the type code is not 0x08
            (unsigned byte), or the sizes do not match the number of data bytes.
    """
    path = Path(path)
    try:
        content = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read IDX file ({error})") from error
    if content[:2] == GZIP_MAGIC:
        try:
            content = gzip.decompress(content)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(f"{path}: corrupt gzip data ({error})") from error
    shape, header_size = _parse_header(path, content)
    if len(content) == header_size:  # no data: frombuffer rejects an empty buffer
        return torch.empty(shape, dtype=torch.uint8)
    return torch.frombuffer(bytearray(content), dtype=torch.uint8,
                            offset=header_size).view(shape)  # (N,) or (N, H, W)


def _parse_header(path: Path, content: bytes) -> tuple[tuple[int, ...], int]:
    """Check the magic number and the sizes against len(content); return
    (shape, header size in bytes)."""
    if len(content) < 4:
        raise DataError(f"{path}: truncated IDX file: expected at least a 4-byte "
                        f"header, got {len(content)} bytes")
    zeros, type_code, ndim = content[0:2], content[2], content[3]
    magic = int.from_bytes(content[0:4], "big")
    if zeros != b"\x00\x00" or not 1 <= ndim <= 3:
        raise DataError(f"{path}: not an IDX file: magic number 0x{magic:08X}, "
                        "expected 0x00000801 (labels) or 0x00000803 (images)")
    if type_code != UBYTE_TYPE_CODE:
        name = TYPE_NAMES.get(type_code, "unknown type")
        raise DataError(f"{path}: IDX type code 0x{type_code:02X} ({name}) in magic "
                        f"number 0x{magic:08X}; scratchnet reads unsigned bytes "
                        "(0x08) only, magic 0x00000801 or 0x00000803")
    header_size = 4 + 4 * ndim
    if len(content) < header_size:
        raise DataError(f"{path}: truncated IDX header: expected {header_size} bytes "
                        f"for {ndim} sizes, got {len(content)} bytes")
    shape = struct.unpack(f">{ndim}I", content[4:header_size])
    expected = header_size + math.prod(shape)
    if len(content) != expected:
        problem = "truncated" if len(content) < expected else (
            f"{len(content) - expected} extra bytes after the data")
        raise DataError(f"{path}: {problem}: shape {tuple(shape)} needs {expected} "
                        f"bytes ({header_size} header + {math.prod(shape)} data), "
                        f"the file has {len(content)} bytes")
    return tuple(shape), header_size


def write_idx(path: str | os.PathLike, tensor: torch.Tensor) -> None:
    """Write a uint8 tensor of rank 1 to 3 as an IDX file.

    The file is gzip-compressed when ``path`` ends in ``.gz``. It is written to a
    temporary file in the same directory and renamed into place, so a reader never
    sees half a file and an interrupted write leaves the old file intact.

    Raises:
        DTypeError: the tensor is not uint8.
        ShapeError: its rank is not 1, 2 or 3.
    """
    check_tensor("write_idx", "tensor", tensor)
    if tensor.dtype != torch.uint8:
        raise DTypeError(f"write_idx: expected a torch.uint8 tensor, got {tensor.dtype}")
    if not 1 <= tensor.dim() <= 3:
        raise ShapeError(f"write_idx: expected a tensor of rank 1 to 3, got shape "
                         f"{tuple(tensor.shape)} (rank {tensor.dim()})")
    header = bytes([0, 0, UBYTE_TYPE_CODE, tensor.dim()]) + struct.pack(
        f">{tensor.dim()}I", *tensor.shape)
    content = header + tensor.detach().cpu().contiguous().numpy().tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        # mtime=0: the same tensor always gives the same bytes.
        content = gzip.compress(content, mtime=0)
    _write_atomically(path, content)


def _write_atomically(path: Path, content: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename it over ``path``."""
    file_descriptor, temporary = tempfile.mkstemp(dir=path.parent,
                                                  prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(file_descriptor, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
