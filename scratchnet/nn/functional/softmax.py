"""softmax and log_softmax over one dimension, each forward beside its backward.

Shapes: the input x has any shape; ``dim`` picks the axis of length n that is
normalised (the class axis, usually). Every slice along ``dim`` is one
distribution; every other axis is a batch. Outputs have the shape of x.

Numerical stability: softmax is unchanged by adding a constant to every entry
of a slice, so the slice's max is subtracted first. Then the largest exponent
is exp(0) = 1 and the rest lie in [0, 1]: exp never overflows, the sum is at
least 1, and logits of ±1e30 give finite probabilities and log-probabilities.

The formulas follow aten's CPU kernels (aten/src/ATen/native/cpu/SoftMaxKernel.cpp)
operation for operation: softmax = exp(x − max) · (1 / Σ), log_softmax =
(x − max) − log Σ (in that order: forming max + log Σ first loses the small
log Σ against a large max). Over the last dim of a float32 CPU tensor they also
use the kernels' own exp, log and summation order (:mod:`.vecmath`), so the
results equal torch's bit for bit; elsewhere they agree to a rounding or two.
"""

from __future__ import annotations

import warnings

import torch

from scratchnet.autodiff import Context, Function, plain
from scratchnet.errors import DTypeError, OptionError, ShapeError, check_tensor
from scratchnet.nn.functional import vecmath


def _as_torch_kernel(x: torch.Tensor, dim: int) -> bool:
    """Whether torch's last-dim CPU kernel, whose arithmetic :mod:`.vecmath`
    reproduces, is the one torch runs for this input."""
    return dim == x.dim() - 1 and vecmath.matches_torch_kernels(x)


def _get_softmax_dim(name: str, ndim: int, stacklevel: int) -> int:
    """torch's legacy rule for ``dim=None`` (torch.nn.functional._get_softmax_dim),
    with its deprecation warning: dim 0 for 0-, 1- and 3-D input (3-D was taken
    as one unbatched (C, H, W) image), else dim 1 (batched (N, C, ...))."""
    warnings.warn(
        f"Implicit dimension choice for {name} has been deprecated. "
        "Change the call to include dim=X as an argument.",
        stacklevel=stacklevel,
    )
    return 0 if ndim in (0, 1, 3) else 1


def _check_softmax_args(name: str, x: torch.Tensor, dim: object,
                        dtype: torch.dtype | None) -> int:
    """Refuse what torch refuses, with scratchnet's errors; return dim ≥ 0."""
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise OptionError(f"{name}: dim must be an int or None, got {dim!r}")
    if dtype is not None and not dtype.is_floating_point:
        raise DTypeError(f"{name}: dtype must be a floating-point dtype, got {dtype}")
    if dtype is None and not x.is_floating_point():
        raise DTypeError(f"{name}: input must be floating point, got {x.dtype}; pass "
                         f"dtype=torch.float32 (or convert the input)")
    ndim = max(x.dim(), 1)  # a 0-d tensor takes dim 0 or -1, as in torch
    if not -ndim <= dim < ndim:
        raise ShapeError(f"{name}: dim={dim} is out of range for an input of shape "
                         f"{tuple(x.shape)} (expected a dim in [{-ndim}, {ndim - 1}])")
    return dim % ndim if x.dim() > 0 else 0


class Softmax(Function):
    @staticmethod
    def forward(ctx: Context, x: torch.Tensor, dim: int,
                dtype: torch.dtype | None) -> torch.Tensor:
        """out_i = exp(x_i − max_j x_j) / Σ_k exp(x_k − max_j x_j)  along ``dim``

        x: (*) → out: (*), every slice along dim summing to 1.
        """
        ctx.input_dtype = x.dtype
        ctx.dim = dim
        if dtype is not None:
            x = x.to(dtype)
        if x.numel() == 0:  # nothing to normalise (amax refuses empty dims)
            out = torch.empty_like(x)
        else:
            shifted = x - x.amax(dim=dim, keepdim=True)  # (*), max entry 0
            if _as_torch_kernel(x, dim):
                exps = vecmath.sleef_expf(shifted)  # (*), in [0, 1]
                total = vecmath.lane_sum(exps)  # (*) with dim of size 1
            else:
                exps = shifted.exp()
                total = exps.sum(dim=dim, keepdim=True)
            out = exps * (1 / total)  # (*)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """The Jacobian of softmax along dim is ∂out_i/∂x_j = out_i · ([i = j] − out_j),
        so, for each slice,

            dx_j = Σ_i dout_i · out_i · ([i = j] − out_j)
                 = out_j ⊙ (dout_j − Σ_i dout_i · out_i)

        computed as ``(dout − Σ dout ⊙ out) · out`` like torch's softmax backward,
        from the saved output alone; then cast back to the input's dtype (the
        backward of ``dtype=``).
        """
        (out,) = ctx.saved_tensors  # (*)
        if _as_torch_kernel(out, ctx.dim):  # the kernel's summation order
            dot = vecmath.softmax_backward_dot(dout, out)  # dim of size 1
        else:
            dot = (dout * out).sum(dim=ctx.dim, keepdim=True)
        dx = (dout - dot) * out  # (*)
        return dx.to(ctx.input_dtype), None, None


def softmax(x: torch.Tensor, dim: int | None = None, _stacklevel: int = 3,
            dtype: torch.dtype | None = None) -> torch.Tensor:
    """exp(x_i) / Σ_j exp(x_j) along ``dim`` (torch.nn.functional.softmax).

    Args:
        x: input of any shape.
        dim: the dimension that sums to 1. ``None`` follows torch's deprecated
            implicit choice (with its warning): 0 for 0-, 1- and 3-D input, else 1.
        _stacklevel: where the implicit-dim warning points (torch's argument).
        dtype: if given, x is cast to it before the operation (the gradient
            comes back in x's dtype).
    """
    check_tensor("softmax", "input", x)
    if dim is None:
        dim = _get_softmax_dim("softmax", plain(x).dim(), _stacklevel)
    dim = _check_softmax_args("softmax", plain(x), dim, dtype)
    return Softmax.apply(x, dim, dtype)


def log_softmax_values(x: torch.Tensor, dim: int, as_torch_kernel: bool
                       ) -> torch.Tensor:
    """(x − max) − log Σ exp(x − max) along ``dim`` (x non-empty), in aten's order
    (the shifted logit first, then log Σ, which is ≥ 0 and small).
    ``as_torch_kernel`` (dim the last): with the exp, log and summation order of
    torch's float32 CPU kernel (:mod:`.vecmath`). The forward of
    :class:`LogSoftmax` and of cross_entropy."""
    shifted = x - x.amax(dim=dim, keepdim=True)  # (*), max entry 0
    if as_torch_kernel:
        exp_sum = vecmath.lane_sum(vecmath.sleef_expf(shifted))
        log_sum = vecmath.sleef_logf(exp_sum)  # (*) with dim of size 1
    else:
        log_sum = shifted.exp().sum(dim=dim, keepdim=True).log()
    return shifted - log_sum  # (*)


def log_softmax_backward_values(out: torch.Tensor, dout: torch.Tensor, dim: int,
                                as_torch_kernel: bool) -> torch.Tensor:
    """dx = dout − exp(out) · Σ_dim dout, from the saved output, as torch's
    log_softmax backward computes it (with ``as_torch_kernel``: one fused
    multiply-add, dout + (−exp(out)) · Σ dout, in the kernel's arithmetic). The
    backward of :class:`LogSoftmax` and the second half of cross_entropy's."""
    if as_torch_kernel:
        total = vecmath.lane_sum(dout)  # dim of size 1
        return vecmath.fma(-vecmath.sleef_expf(out), total.expand_as(out), dout)
    return dout - out.exp() * dout.sum(dim=dim, keepdim=True)  # (*)


class LogSoftmax(Function):
    @staticmethod
    def forward(ctx: Context, x: torch.Tensor, dim: int,
                dtype: torch.dtype | None) -> torch.Tensor:
        """out_i = log softmax(x)_i = (x_i − max_j x_j) − log Σ_k exp(x_k − max_j x_j)

        x: (*) → out: (*), every out ≤ 0. The subtraction order is aten's: the
        shifted logit first, then log Σ, which is ≥ 0 and small.
        """
        ctx.input_dtype = x.dtype
        ctx.dim = dim
        if dtype is not None:
            x = x.to(dtype)
        out = torch.empty_like(x) if x.numel() == 0 else log_softmax_values(
            x, dim, _as_torch_kernel(x, dim))  # (*)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """∂out_i/∂x_j = [i = j] − softmax(x)_j, and softmax(x) = exp(out), so

            dx_j = dout_j − exp(out_j) · Σ_i dout_i

        as torch's log_softmax backward computes it, from the saved output.
        """
        (out,) = ctx.saved_tensors  # (*)
        dx = log_softmax_backward_values(out, dout, ctx.dim, _as_torch_kernel(out, ctx.dim))
        return dx.to(ctx.input_dtype), None, None


def log_softmax(x: torch.Tensor, dim: int | None = None, _stacklevel: int = 3,
                dtype: torch.dtype | None = None) -> torch.Tensor:
    """log(softmax(x)) along ``dim``, computed stably
    (torch.nn.functional.log_softmax). Arguments as for :func:`softmax`."""
    check_tensor("log_softmax", "input", x)
    if dim is None:
        dim = _get_softmax_dim("log_softmax", plain(x).dim(), _stacklevel)
    dim = _check_softmax_args("log_softmax", plain(x), dim, dtype)
    return LogSoftmax.apply(x, dim, dtype)
