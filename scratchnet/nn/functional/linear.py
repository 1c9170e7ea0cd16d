"""Linear layer op: ``out = x @ weight.T + bias``.

Shapes: B = batch (any number of leading dims, flattened to one here),
D_in = in_features, D_out = out_features.
"""

from __future__ import annotations

import math

import torch

from scratchnet.autodiff import Context, Function, plain
from scratchnet.errors import DeviceError, DTypeError, ShapeError, check_tensor


def check_linear_args(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Refuse what torch would broadcast, promote or fail on deep inside a kernel."""
    for name, value in (("input", x), ("weight", weight)):
        check_tensor("linear", name, value)
    if bias is not None:
        check_tensor("linear", "bias", bias)
    if x.dim() < 1:
        raise ShapeError("linear: input must have at least 1 dimension, got a scalar")
    if weight.dim() != 2:
        raise ShapeError(f"linear: weight must be 2-D (out_features, in_features), got "
                         f"shape {tuple(weight.shape)}")
    if x.shape[-1] != weight.shape[1]:
        raise ShapeError(
            f"linear: input of shape {tuple(x.shape)} has {x.shape[-1]} features in its "
            f"last dimension, but the weight {tuple(weight.shape)} expects in_features="
            f"{weight.shape[1]}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ShapeError(f"linear: bias of shape {tuple(bias.shape)} does not match "
                         f"out_features={weight.shape[0]}")
    if x.dtype != weight.dtype:
        raise DTypeError(f"linear: input dtype {x.dtype} does not match the weight's "
                         f"{weight.dtype}; convert one (model.to({x.dtype}) or "
                         f"x.to({weight.dtype}))")
    if x.device != weight.device:
        raise DeviceError(f"linear: input is on {x.device} but the weight is on "
                          f"{weight.device}; move one (model.to(device) or x.to(device))")


class Linear(Function):
    @staticmethod
    def forward(ctx: Context, x: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
        """out = x · Wᵀ + b

        x: (*, D_in), weight: (D_out, D_in), bias: (D_out,) → out: (*, D_out)
        """
        # B = the product of the leading dims, spelled out: reshape(-1, 0) is
        # ambiguous when D_in = 0 (a Linear(0, D_out) is legal, as in torch)
        x2d = x.reshape(math.prod(x.shape[:-1]), x.shape[-1])  # (B, D_in)
        if bias is None:
            out2d = torch.mm(x2d, weight.t())  # (B, D_out)
        else:
            out2d = torch.addmm(bias, x2d, weight.t())  # (B, D_out)
        ctx.save_for_backward(x2d, weight)
        ctx.input_shape = x.shape
        ctx.has_bias = bias is not None
        return out2d.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """In the forward pass this was ``out = x · Wᵀ + b``. So, with dout
        = d loss / d out of shape (B, D_out):

            dx      = dout · W          (B, D_out) · (D_out, D_in) → (B, D_in)
            dweight = doutᵀ · x         (D_out, B) · (B, D_in)     → (D_out, D_in)
            dbias   = Σ_B dout          (D_out,)
        """
        x2d, weight = ctx.saved_tensors  # (B, D_in), (D_out, D_in)
        dout2d = dout.reshape(x2d.shape[0], weight.shape[0])  # (B, D_out)
        need_dx, need_dweight, need_dbias = ctx.needs_input_grad
        dx = torch.mm(dout2d, weight).reshape(ctx.input_shape) if need_dx else None
        dweight = torch.mm(dout2d.t(), x2d) if need_dweight else None
        dbias = dout2d.sum(0) if need_dbias and ctx.has_bias else None
        return dx, dweight, dbias


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
           ) -> torch.Tensor:
    """Apply ``x · weightᵀ + bias`` (torch.nn.functional.linear).

    Shape: x (*, D_in), weight (D_out, D_in), bias (D_out,) → (*, D_out).
    """
    check_linear_args(plain(x), plain(weight), None if bias is None else plain(bias))
    return Linear.apply(x, weight, bias)
