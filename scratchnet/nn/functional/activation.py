"""Element-wise activations, each forward beside its backward.

Every op here maps x (any shape) to out of the same shape, so its backward is
dx = dout ⊙ f'(x), written with whichever of x or out makes f' cheapest.
"""

from __future__ import annotations

import torch

from scratchnet.autodiff import Context, Function


class ReLU(Function):
    @staticmethod
    def forward(ctx: Context, x: torch.Tensor) -> torch.Tensor:
        """out = max(x, 0)"""
        out = torch.relu(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """dx = dout ⊙ [out > 0]  (the derivative at x = 0 is taken as 0, as torch
        does: the mask is built from the output)."""
        (out,) = ctx.saved_tensors
        return (torch.where(out > 0, dout, 0.0),)


def relu(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:  # noqa: ARG001
    """max(x, 0), element-wise (torch.nn.functional.relu). ``inplace`` is
    accepted for signature compatibility; the tape always keeps x intact."""
    return ReLU.apply(x)
