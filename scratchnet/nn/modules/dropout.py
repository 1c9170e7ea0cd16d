"""``Dropout`` module (torch/nn/modules/dropout.py), thin over
:func:`scratchnet.nn.functional.dropout`."""

from __future__ import annotations

import torch

from scratchnet.nn import functional as F
from scratchnet.nn.functional.dropout import check_dropout_probability
from scratchnet.nn.modules.module import Module


class Dropout(Module):
    """During training, zero each element with probability ``p`` and scale the
    others by 1 / (1 − p); after ``eval()``, the identity.

    On CPU the mask is torch's own for the same RNG state (see
    :mod:`scratchnet.nn.functional.dropout`); on any device a mask can be
    supplied: ``m(x, mask=keep)``.

    Args:
        p: probability of an element to be zeroed. Default: 0.5.
        inplace: accepted for torch compatibility (the tape keeps x intact).

    Shape: Input (*), Output (*), same shape.

    Example::

        >>> m = nn.Dropout(p=0.2)
        >>> out = m(torch.randn(20, 16))   # about 20% zeros, the rest × 1.25
    """

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        check_dropout_probability(p)
        self.p = p
        self.inplace = inplace

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask`` (scratchnet only): a bool tensor of x's shape, True = kept, to
        use instead of drawing one (e.g. torch's mask on CUDA)."""
        return F.dropout(x, self.p, self.training, self.inplace, mask=mask)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"
