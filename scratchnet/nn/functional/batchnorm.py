"""Batch normalisation: normalise each channel over the batch, then scale and
shift it (torch.nn.functional.batch_norm; Ioffe & Szegedy 2015).

Shapes: N = batch, C = channels (features), L = length (1 for a (N, C) input;
the op works on the (N, C, L) view). M = N·L, the number of values each
channel's statistics are taken over.

In training the statistics are the batch's own: mean μ and biased variance σ²
over the M values of a channel. ``running_mean`` and ``running_var``, when
given, are updated in place with the *unbiased* variance (Bessel's M / (M − 1)),
as torch does::

    running_mean = momentum · μ + (1 − momentum) · running_mean
    running_var  = momentum · σ² · M / (M − 1) + (1 − momentum) · running_var

In evaluation μ and σ² are the running buffers, and the op is an affine map of x.

Rounding follows torch's CPU kernels (aten/src/ATen/native/Normalization.cpp,
native/cpu/batch_norm_kernel.cpp) step by step: the per-channel sums
accumulate in float64 for a float32 input (torch's CPU accumulate type; its
(N, C) kernel sums float32 partial sums per thread, so a float32 sum can differ
from torch's in the last few ulps, well inside the float32 tolerance); μ and
M·σ² are rounded to the input's dtype before use, as torch stores them; and the
output is one multiply-add per element, ``out = x · α + β`` with
α = w / √(σ² + eps) and β = b − μ · α. That last form loses about
eps·|μ|/σ against ``(x − μ) / √(σ² + eps)`` when a channel's mean is far
larger than its spread — the price torch pays for a single pass, matched here so
that scratchnet and torch agree to the ulp rather than each erring its own way.
"""

from __future__ import annotations

import torch

from scratchnet.autodiff import Context, Function, plain
from scratchnet.errors import OptionError, ShapeError, check_tensor

# the dtype per-channel sums accumulate in: torch's CPU acc_type
_ACCUMULATE = {torch.float16: torch.float32, torch.bfloat16: torch.float32,
               torch.float32: torch.float64, torch.float64: torch.float64}


def _per_channel(v: torch.Tensor) -> torch.Tensor:
    """(C,) → (1, C, 1), to broadcast against x: (N, C, L)."""
    return v.view(1, -1, 1)


def _channel_sum(t: torch.Tensor) -> torch.Tensor:
    """Σ over N and L of t: (N, C, L), accumulated in the wider dtype → (C,)."""
    return t.sum(dim=(0, 2), dtype=_ACCUMULATE.get(t.dtype, t.dtype))


def _widened(v: torch.Tensor) -> torch.Tensor:
    return v.to(_ACCUMULATE.get(v.dtype, v.dtype))


def _update_running_stats(running_mean: torch.Tensor | None,
                          running_var: torch.Tensor | None, mean: torch.Tensor,
                          var_sum: torch.Tensor, m: int, momentum: float) -> None:
    """The running averages, in place, torch's formula term for term (the buffers
    are plain tensors, never on the tape)."""
    if running_mean is not None:
        running_mean.copy_(momentum * mean + (1 - momentum) * running_mean)
    if running_var is not None:
        unbiased_var = _widened(var_sum) / (m - 1)  # (C,), accumulate dtype
        running_var.copy_(momentum * unbiased_var + (1 - momentum) * running_var)


class BatchNorm(Function):
    @staticmethod
    def forward(ctx: Context, x: torch.Tensor, weight: torch.Tensor | None,
                bias: torch.Tensor | None, running_mean: torch.Tensor | None,
                running_var: torch.Tensor | None, training: bool, momentum: float,
                eps: float) -> torch.Tensor:
        """out = (x − μ) / √(σ² + eps) · weight + bias, per channel

        x: (N, C) or (N, C, L), weight, bias, running_*: (C,) → out: x's shape
        """
        x3 = x.reshape(x.shape[0], x.shape[1], -1)  # (N, C, L)
        m = x3.shape[0] * x3.shape[2]
        if training:
            mean = (_channel_sum(x3) / m).to(x.dtype)  # (C,)
            xmu = x3 - _per_channel(mean)  # (N, C, L)
            var_sum = _channel_sum(xmu * xmu).to(x.dtype)  # (C,) M·σ², kept as torch
            invstd = (1 / torch.sqrt(_widened(var_sum) / m + eps)).to(x.dtype)  # (C,)
            _update_running_stats(running_mean, running_var, mean, var_sum, m, momentum)
        else:
            mean = running_mean  # (C,)
            invstd = 1 / torch.sqrt(running_var + eps)  # (C,) 1/√(σ² + eps)
        alpha = invstd if weight is None else invstd * weight  # (C,)
        beta = -mean * alpha if bias is None else bias - mean * alpha  # (C,)
        out = x3 * _per_channel(alpha) + _per_channel(beta)  # (N, C, L)
        ctx.save_for_backward(x3, weight, mean, invstd)
        ctx.training = training
        ctx.input_shape = x.shape
        return out.view(x.shape)

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """In the forward pass this was, per channel, with M = N·L values,

            μ = Σ x / M,   σ² = Σ (x − μ)² / M,   x̂ = (x − μ) / √(σ² + eps)
            out = weight · x̂ + bias

        so, with dout = d loss / d out and every Σ over the channel's M values:

            dbias   = Σ dout
            dweight = Σ dout · x̂
            dx̂      = dout · weight

        In training μ and σ² depend on x too. Through them
        (∂μ/∂x_j = 1/M, ∂σ²/∂x_j = 2 (x_j − μ)/M, and Σ (x − μ) = 0) the
        derivative of x̂_i is ∂x̂_i/∂x_j = (δ_ij − 1/M − x̂_i x̂_j / M) / √(σ² + eps),
        which gives

            dx = (dx̂ − Σ dx̂ / M − x̂ · Σ (dx̂ · x̂) / M) / √(σ² + eps)
               = (dout − dbias / M − x̂ · dweight / M) · weight / √(σ² + eps)

        In evaluation μ and σ² are constants (the running buffers): dx = dout ·
        weight / √(σ² + eps). The cache holds x, μ and 1/√(σ² + eps) (not x̂:
        torch's kernel recomputes x − μ, and so do we, to round as it does).
        """
        x3, weight, mean, invstd = ctx.saved_tensors  # (N, C, L), (C,) ×3
        need_dx, need_dweight, need_dbias = ctx.needs_input_grad[:3]
        dout3 = dout.reshape(x3.shape)  # (N, C, L)
        m = x3.shape[0] * x3.shape[2]
        xmu = x3 - _per_channel(mean)  # (N, C, L)
        dbias_sum = _channel_sum(dout3)  # (C,) Σ dout, accumulate dtype
        dot = _channel_sum(xmu * dout3)  # (C,) Σ (x − μ) · dout
        dweight = (dot * invstd).to(x3.dtype) if need_dweight else None  # (C,)
        dbias = dbias_sum.to(x3.dtype) if need_dbias else None  # (C,)
        if not need_dx:
            return None, dweight, dbias
        scale = invstd if weight is None else invstd * weight  # (C,) weight/√(σ²+eps)
        if ctx.training:
            # x̂ · dweight / M = (x − μ) · k, with k = Σ (x − μ)·dout / (σ² + eps) / M
            k = dot.to(x3.dtype) * invstd * invstd / m  # (C,)
            mean_dout = (dbias_sum / m).to(x3.dtype)  # (C,)
            dx3 = ((dout3 - _per_channel(mean_dout) - xmu * _per_channel(k))
                   * _per_channel(scale))  # (N, C, L)
        else:
            dx3 = dout3 * _per_channel(scale)  # (N, C, L)
        return dx3.view(ctx.input_shape), dweight, dbias


def check_batch_norm_args(x: torch.Tensor, running_mean: torch.Tensor | None,
                          running_var: torch.Tensor | None,
                          weight: torch.Tensor | None, bias: torch.Tensor | None,
                          training: bool, eps: float) -> None:
    """Refuse what torch refuses (and what it would broadcast or fail on deep in
    a kernel), naming the shapes."""
    if x.dim() < 2:
        raise ShapeError(f"batch_norm: input must be at least 2-D (N, C, ...), got "
                         f"shape {tuple(x.shape)}")
    channels = x.shape[1]
    for name, v in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if v is not None and tuple(v.shape) != (channels,):
            raise ShapeError(f"batch_norm: {name} of shape {tuple(v.shape)} does not "
                             f"match the input's {channels} channels (input shape "
                             f"{tuple(x.shape)})")
    if (running_mean is None) != (running_var is None):
        raise OptionError("batch_norm: give both running_mean and running_var, or "
                          "neither")
    if not training and running_mean is None:
        raise OptionError("batch_norm: evaluation (training=False) needs "
                          "running_mean and running_var")
    if training and x.numel() // channels == 1:
        raise ShapeError("Expected more than 1 value per channel when training, got "
                         f"input size {x.shape}")
    if training and eps <= 0.0:
        raise OptionError(f"batch_norm eps must be positive during training, but got "
                          f"{eps}")
    if eps < 0.0:
        raise OptionError(f"batch_norm eps must be non-negative, but got {eps}")


def batch_norm(x: torch.Tensor, running_mean: torch.Tensor | None,
               running_var: torch.Tensor | None, weight: torch.Tensor | None = None,
               bias: torch.Tensor | None = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5) -> torch.Tensor:
    """Normalise each channel of x (dim 1) and apply ``weight`` and ``bias``
    (torch.nn.functional.batch_norm, same arguments).

    ``training``: use the batch's statistics and update the running buffers (if
    given) in place; otherwise use the buffers. Shape: x (N, C) or (N, C, L);
    running_mean, running_var, weight, bias (C,) → out: x's shape.
    """
    check_tensor("batch_norm", "input", x)
    check_batch_norm_args(plain(x), plain(running_mean), plain(running_var),
                          plain(weight), plain(bias), training, eps)
    return BatchNorm.apply(x, weight, bias, plain(running_mean), plain(running_var),
                           training, momentum, eps)
