"""Ops that only rearrange elements: reshape (view, flatten) and its backward.

A reshape moves no numbers, so its backward moves them back: dx = dout reshaped
to x's shape.
"""

from __future__ import annotations

import torch

from scratchnet.autodiff import Context, Function, plain
from scratchnet.errors import ArgumentTypeError, ShapeError, check_tensor


class Reshape(Function):
    @staticmethod
    def forward(ctx: Context, x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """out = x with the same elements in row-major order, in ``shape``."""
        ctx.input_shape = x.shape
        return x.reshape(shape)

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """dx = dout reshaped back to x's shape (each element's gradient goes
        back to the element it came from)."""
        return dout.reshape(ctx.input_shape), None


def reshape(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``x.reshape(shape)`` on the tape (also what ``x.view(...)`` records)."""
    return Reshape.apply(x, tuple(shape))


def flatten(x: torch.Tensor, start_dim: int = 1, end_dim: int = -1) -> torch.Tensor:
    """Merge dims ``start_dim..end_dim`` into one (torch.flatten).

    Shape: (*, S_start, ..., S_end, *) → (*, Π S_i, *).
    """
    check_tensor("flatten", "input", x)
    for name, dim in (("start_dim", start_dim), ("end_dim", end_dim)):
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise ArgumentTypeError(f"flatten: {name} must be an int, got {dim!r}")
    shape = plain(x).shape
    rank = len(shape)
    start = start_dim + rank if start_dim < 0 else start_dim
    end = end_dim + rank if end_dim < 0 else end_dim
    if rank == 0:
        return reshape(x, (1,))
    if not (0 <= start < rank and 0 <= end < rank):
        raise ShapeError(f"flatten(start_dim={start_dim}, end_dim={end_dim}) on an input "
                         f"of shape {tuple(shape)} (rank {rank}): dimension out of range")
    if start > end:
        raise ShapeError(f"flatten: start_dim={start_dim} comes after end_dim={end_dim} "
                         f"for an input of shape {tuple(shape)}")
    merged = 1
    for size in shape[start:end + 1]:
        merged *= size
    return reshape(x, (*shape[:start], merged, *shape[end + 1:]))
