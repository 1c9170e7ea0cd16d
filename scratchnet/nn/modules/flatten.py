"""``Flatten`` (torch/nn/modules/flatten.py)."""

from __future__ import annotations

import torch

from scratchnet.nn import functional as F
from scratchnet.nn.modules.module import Module


class Flatten(Module):
    """Flattens dims ``start_dim..end_dim`` into one (torch.nn.Flatten).

    Shape: (B, *) → (B, Π *) with the defaults start_dim=1, end_dim=-1;
    e.g. a batch of images (64, 1, 28, 28) → (64, 784).
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
