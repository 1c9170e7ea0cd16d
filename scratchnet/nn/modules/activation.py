"""Activation modules (torch/nn/modules/activation.py), thin over
:mod:`scratchnet.nn.functional.activation`."""

from __future__ import annotations

import torch

from scratchnet.nn import functional as F
from scratchnet.nn.modules.module import Module


class ReLU(Module):
    """ReLU(x) = max(0, x), element-wise. Shape: (*) → (*)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""
