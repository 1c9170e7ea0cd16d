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
native/cpu/batch_norm_kernel.cpp). For float32 on CPU it is reproduced operation
for operation, so that the output, dx, dweight, dbias and the running buffers
equal torch's bit for bit (measured on torch 2.14, whose x86 batch-norm kernels
are its AVX2 build, on AVX-512 CPUs too; T = torch.get_num_threads(), read at
every call, as the kernels read it):

- μ and M·σ² of an (N, C) input (the kernel for ``strides()[1] == 1``): if N > T,
  each of min(T, N) threads sums its ⌈N / T⌉ consecutive rows in float32 — x for
  μ, then (x − μ)² as one fused multiply-add per row — and the T partial sums
  are added in float64; μ = that / N, rounded to float32. If N ≤ T: one float32
  pass over the rows, μ = Σ x / N in float32, except with T > 1 and
  16 < C ≤ 2048, where each channel is summed in float64. An (N, C, L > 1)
  input: each channel summed left to right in float64 (the squares rounded to
  float32 first).
- 1/√(σ² + eps): σ² = (M·σ²) / M in float32, the rest in float64.
- The running buffers: momentum is rounded to float32 (``momentum_``), and
  ``running_mean = momentum_ · μ + (1 − momentum_) · running_mean`` is float32
  arithmetic; the unbiased variance (M·σ²) / (M − 1) is a float32 quotient,
  ``momentum_`` times it is taken in float64, (1 − momentum_) · running_var in
  float32, and their sum rounded once to float32. (Not the float64 update the
  source reads like: measured.)
- The output is one multiply-add per element, ``out = x · α + β`` with
  α = w / √(σ² + eps) and β = b − μ · α, each a fused multiply-add. That form
  loses about eps·|μ|/σ against ``(x − μ) / √(σ² + eps)`` when a channel's mean
  is far larger than its spread — the price torch pays for a single pass,
  matched here so that scratchnet and torch agree to the ulp rather than each
  erring its own way. In evaluation 1/√(running_var + eps) is float32 in the
  forward pass and float64 (then rounded) in the backward, as in torch.
- Backward, Σ dout and Σ (x − μ)·dout: (N, C) as μ above, per-thread float32
  sums (the products fused) added in float64, then stored as float32; (N, C, L):
  each (n, c) row of L summed in float32 (``vec::reduce_all``: left to right if
  L < 8, else in 8 SIMD lanes folded in halves), the N row sums in float64.
  dx = ((dout − Σ dout / M) − (x − μ) · k) · invstd · w with
  k = Σ (x − μ)·dout · invstd² / M, the inner product fused, except over the
  (N, C) kernel's last, partial vector of channels.

The kernels' fused multiply-adds are torch.addcmul here, which torch's builds
compile alike (fused on AVX2 and AVX-512, not on DEFAULT; probed once), and the
square roots are numpy's, correctly rounded as std::sqrt is (torch.sqrt is not
always). The price: the per-thread float32 sums are a Python loop over ⌈N / T⌉
rows, three passes per training step.

Not reproduced: float64 and CUDA, which sum each channel in float64 as before
(parity to the tests' tolerance: 1e-12 relative in float64); a non-contiguous
input (torch takes a generic path for it, and scratchnet rounds it as the
contiguous copy); torch's DEFAULT build (ATEN_CPU_CAPABILITY=default) in the
(N, C, L > 1) backward's sums, which run in other lanes (everything else
matched there); CPUs other than x86, never measured.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from scratchnet.autodiff import Context, Function, plain
from scratchnet.errors import OptionError, ShapeError, check_tensor
from scratchnet.nn.functional import vecmath

# the dtype per-channel sums accumulate in: torch's CPU acc_type
_ACCUMULATE = {torch.float16: torch.float32, torch.bfloat16: torch.float32,
               torch.float32: torch.float64, torch.float64: torch.float64}
# float32 lanes of the batch-norm kernels torch runs on x86 CPUs: its AVX2 build, on
# AVX-512 CPUs too (batch_norm_kernel.cpp has no AVX-512 build; measured)
_LANES = 8


def _per_channel(v: torch.Tensor) -> torch.Tensor:
    """(C,) → (1, C, 1), to broadcast against x: (N, C, L)."""
    return v.view(1, -1, 1)


def _channel_sum(t: torch.Tensor) -> torch.Tensor:
    """Σ over N and L of t: (N, C, L), accumulated in the wider dtype → (C,)."""
    return t.sum(dim=(0, 2), dtype=_ACCUMULATE.get(t.dtype, t.dtype))


def _widened(v: torch.Tensor) -> torch.Tensor:
    return v.to(_ACCUMULATE.get(v.dtype, v.dtype))


# ---------------------------------------------------------- torch's float32 CPU kernels


def _follows_cpu_kernels(x: torch.Tensor) -> bool:
    """float32 on CPU: where this file reproduces torch's kernels step by step."""
    return x.dtype == torch.float32 and x.device.type == "cpu"


@functools.cache
def _kernels_fuse() -> bool:
    """Whether torch's CPU kernels compile ``a * b + c`` to one fused multiply-add
    (its AVX2 and AVX-512 builds do, the DEFAULT build does not; measured), which
    torch.addcmul shows: (1 + 2⁻¹²)² − 1 is 2⁻¹¹ + 2⁻²⁴ fused, 2⁻¹¹ rounded twice."""
    a = torch.tensor([1 + 2**-12], dtype=torch.float32)
    minus_one = torch.tensor([-1.0], dtype=torch.float32)
    return torch.addcmul(minus_one, a, a).item() != 2**-11


def _multiply_add(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """a · b + c (broadcast), rounded as the kernels round it: once where they fuse."""
    return torch.addcmul(c, a, b) if _kernels_fuse() else a * b + c


def _sqrt(v: torch.Tensor) -> torch.Tensor:
    """std::sqrt: correctly rounded (IEEE), which torch.sqrt on CPU is not always
    (measured: about one float32 result in six is an ulp off). (C,) → (C,)"""
    return torch.from_numpy(np.sqrt(v.numpy()))


def _sum64(rows: torch.Tensor) -> torch.Tensor:
    """Σ over dim 0 left to right in float64, a C++ ``double`` loop: (K, C) → (C,)."""
    return torch.cumsum(rows, dim=0, dtype=torch.float64)[-1]


def _channel_rows(x3: torch.Tensor) -> torch.Tensor:
    """(N, C, L) → (N·L, C): row n·L + i holds x[n, :, i], each channel's values
    in the order the kernels read them."""
    return x3.transpose(1, 2).reshape(-1, x3.shape[1])


def _thread_blocks(rows: torch.Tensor, threads: int) -> torch.Tensor:
    """(M, C) → (threads, chunk, C): the rows as ``at::parallel_for(0, M, 1)`` deals
    them to OpenMP threads — min(threads, M) threads take chunk = ⌈M / that⌉
    consecutive rows each (the last fewer, some none); a missing row is −0.0,
    which adds nothing."""
    m = rows.shape[0]
    chunk = -(-m // min(threads, m))
    blocks = rows.new_full((threads * chunk, rows.shape[1]), -0.0)
    blocks[:m] = rows
    return blocks.view(threads, chunk, -1)


def _thread_sums(rows: torch.Tensor, threads: int,
                 times: torch.Tensor | None = None) -> torch.Tensor:
    """Each thread's float32 buffer, its rows added in order: ``buffer[t] =
    buffer[t] + row``, or with ``times`` ``buffer[t] + row · times_row`` (one
    multiply-add where the kernels fuse). rows, times: (M, C) → (threads, C)."""
    buffer = rows.new_zeros(threads, rows.shape[1])  # at::zeros({num_threads, C})
    steps = _thread_blocks(rows, threads).unbind(1)  # chunk × (threads, C)
    if times is None:
        for row in steps:
            buffer.add_(row)
        return buffer
    factors = _thread_blocks(times, threads).unbind(1)
    for row, factor in zip(steps, factors, strict=True):
        if _kernels_fuse():
            buffer.addcmul_(row, factor)
        else:
            buffer.add_(row * factor)
    return buffer


def _row_sums(rows: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
    """One float32 running sum over all rows (a single buffer): (M, C) → (C,)."""
    return _thread_sums(rows, 1, times)[0]


def _stats_cpu(x3: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """μ and M·σ² per channel as torch's float32 CPU kernel computes them
    (batch_norm_cpu_collect_stats_{channels_last,contiguous}_impl). x3: (N, C, L)
    → mean, var_sum: (C,), float32."""
    rows = _channel_rows(x3)  # (M, C)
    m, channels = rows.shape
    threads = torch.get_num_threads()
    if x3.shape[2] == 1 and m > threads:  # the (N, C) kernel, rows shared by threads
        # buffer[t] = buffer[t] + x, per thread; mean = (Σ_t buffer[t] in double) / N
        mean = (_sum64(_thread_sums(rows, threads)) / m).float()  # (C,)
        xmu = rows - mean  # (M, C)
        # buffer[t] = buffer[t] + (x − mean) * (x − mean), fused;
        # var_sum = Σ_t buffer[t] in double
        var_sum = _sum64(_thread_sums(xmu, threads, times=xmu)).float()  # (C,)
    elif x3.shape[2] == 1 and (threads == 1 or channels <= 16 or channels > 2048):
        # N ≤ threads, "Method 2": mean += x in float32, then mean / Vec(N)
        mean = _row_sums(rows) / m  # (C,)
        xmu = rows - mean  # (M, C)
        var_sum = _row_sums(xmu, times=xmu)  # var_sum + (x − mean) * (x − mean)
    else:  # (N, C, L > 1), or N ≤ threads "Method 1": a double per channel
        # accscalar_t sum += x; scalar_t mean = sum / N
        mean = (_sum64(rows) / m).float()  # (C,)
        xmu = rows - mean  # (M, C)
        # _var_sum += (x - mean) * (x - mean): float32 products, double sum
        var_sum = _sum64(xmu * xmu).float()  # (C,)
    return mean, var_sum


def _invstd_cpu(var_sum: torch.Tensor, m: int, eps: float) -> torch.Tensor:
    """save_invstd = VarTransform<double>{}(var_sum / n, eps): the quotient in
    float32, then 1 / std::sqrt(var + eps) in double. (C,) → (C,)"""
    return (1 / _sqrt((var_sum / m).double() + eps)).float()


def _update_running_stats_cpu(running_mean: torch.Tensor | None,
                              running_var: torch.Tensor | None, mean: torch.Tensor,
                              var_sum: torch.Tensor, m: int, momentum: float) -> None:
    """batch_norm_cpu_update_stats_template's update, in place: with
    ``momentum_ = static_cast<float>(momentum)`` it is float32 arithmetic, except
    where the unbiased variance is widened to double (measured)."""
    momentum_ = torch.tensor(momentum, dtype=torch.float32)
    keep = 1 - momentum_  # (1 - momentum_), float32
    if running_mean is not None:
        # running_mean = momentum_ * mean + (1 - momentum_) * running_mean, all float
        running_mean.copy_(momentum_ * mean + keep * running_mean)
    if running_var is not None:
        # accscalar_t unbiased_var = var_sum / (n - 1): a float32 quotient, widened
        unbiased_var = (var_sum / (m - 1)).double()  # (C,)
        # momentum_ * unbiased_var in double (exact), + (1 - momentum_) * running_var
        # in float; the double sum stored as float
        running_var.copy_(momentum_.double() * unbiased_var
                          + (keep * running_var).double())


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


def _backward_sums_cpu(x3: torch.Tensor, dout3: torch.Tensor, xmu: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ dout and Σ (x − μ) · dout per channel, in float64, summed as the float32
    backward kernels sum them. (N, C, L) → (C,), (C,)"""
    if x3.shape[2] == 1:  # batch_norm_cpu_backward_channels_last_impl
        dy = dout3[..., 0]  # (M, C)
        # sum_ptr[t] = sum + dy and dotp_ptr[t] = dotp + (x - mean) * dy, float32 per
        # thread, in one pass: sum + 1 · dy is sum + dy, fused or not
        factors = torch.cat([torch.ones_like(dy), xmu[..., 0]], dim=1)  # (M, 2C)
        partial = _thread_sums(factors, torch.get_num_threads(), times=dy.repeat(1, 2))
        # _sum = Σ_t sum_ptr[t] in double, stored back as float; _dotp likewise
        dy_sum, dot = _sum64(partial).float().double().chunk(2)  # (C,), (C,)
        return dy_sum, dot
    # batch_norm_cpu_backward_contiguous_impl: accscalar_t sum += vec::reduce_all(dy)
    # of each (n, c) row; dotp += vec::map2_reduce_all((x - mean) * dy)
    # (vecmath's lane order with the batch-norm kernels' 8 lanes; of the products,
    # only the last, partial vector's are fused into their adds, measured)
    dy_sum = vecmath.lane_sum(dout3, _LANES)[..., 0]  # (N, C)
    dot = vecmath.lane_dot(xmu, dout3, fused_tail=_kernels_fuse(), lanes=_LANES)[..., 0]
    return _sum64(dy_sum), _sum64(dot)  # (C,), (C,)


def _dx_training_cpu(xmu: torch.Tensor, dout3: torch.Tensor, dy_sum: torch.Tensor,
                     dot: torch.Tensor, invstd: torch.Tensor,
                     weight: torch.Tensor | None, m: int) -> torch.Tensor:
    """dx = (dy − grad_mean − (x − μ) · k) · invstd · w, rounded as the kernels
    round it. xmu, dout3: (N, C, L); dy_sum, dot (float64), invstd, weight: (C,)
    → (N, C, L)"""
    # k = (float) dotp * invstd * invstd / N, in float
    k = _per_channel(dot.float() * invstd * invstd / m)  # (1, C, 1)
    # grad_mean = sum / N: float32 of the quotient (of the stored float sum on (N, C))
    grad_mean = _per_channel((dy_sum / m).float())  # (1, C, 1)
    centred = dout3 - grad_mean  # dy - grad_mean
    inner = _multiply_add(-xmu, k, centred)  # dy - grad_mean - (x - mean) * k, fused
    if xmu.shape[2] == 1 and _kernels_fuse():
        # (N, C): the channels past the last full vector are rounded twice (measured)
        tail = xmu.shape[1] - xmu.shape[1] % _LANES
        inner[:, tail:] = centred[:, tail:] - xmu[:, tail:] * k[:, tail:]
    dx = inner * _per_channel(invstd)  # (...) * invstd
    return dx if weight is None else dx * _per_channel(weight)  # (...) * invstd * w


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
        cpu = _follows_cpu_kernels(x)
        if training and cpu:
            mean, var_sum = _stats_cpu(x3)  # (C,), (C,) M·σ²
            invstd = _invstd_cpu(var_sum, m, eps)  # (C,)
            _update_running_stats_cpu(running_mean, running_var, mean, var_sum, m,
                                      momentum)
            backward_invstd = invstd
        elif training:
            mean = (_channel_sum(x3) / m).to(x.dtype)  # (C,)
            xmu = x3 - _per_channel(mean)  # (N, C, L)
            var_sum = _channel_sum(xmu * xmu).to(x.dtype)  # (C,) M·σ², kept as torch
            invstd = (1 / torch.sqrt(_widened(var_sum) / m + eps)).to(x.dtype)  # (C,)
            _update_running_stats(running_mean, running_var, mean, var_sum, m, momentum)
            backward_invstd = invstd
        elif cpu:
            mean = running_mean  # (C,)
            # invstd = 1 / std::sqrt(running_var + static_cast<float>(eps)), in float
            invstd = 1 / _sqrt(running_var + eps)  # (C,)
            # the backward kernels take 1 / std::sqrt(running_var + eps) in double
            backward_invstd = (1 / _sqrt(running_var.double() + eps)).float()  # (C,)
        else:
            mean = running_mean  # (C,)
            invstd = 1 / torch.sqrt(running_var + eps)  # (C,) 1/√(σ² + eps)
            backward_invstd = invstd
        alpha = invstd if weight is None else invstd * weight  # (C,)
        if cpu:
            # beta = bias - mean * alpha; out = x * alpha + beta: one fused step each
            beta = _multiply_add(-mean, alpha, torch.zeros_like(mean) if bias is None
                                 else bias)  # (C,)
            out = _multiply_add(x3, _per_channel(alpha),
                                _per_channel(beta))  # (N, C, L)
        else:
            beta = -mean * alpha if bias is None else bias - mean * alpha  # (C,)
            out = x3 * _per_channel(alpha) + _per_channel(beta)  # (N, C, L)
        ctx.save_for_backward(x3, weight, mean, backward_invstd)
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
        cpu = _follows_cpu_kernels(x3)
        xmu = x3 - _per_channel(mean)  # (N, C, L)
        if cpu:
            dy_sum, dot = _backward_sums_cpu(x3, dout3, xmu)  # (C,) ×2, float64
        else:
            dy_sum = _channel_sum(dout3)  # (C,) Σ dout, accumulate dtype
            dot = _channel_sum(xmu * dout3)  # (C,) Σ (x − μ) · dout
        # grad_weight = dotp * invstd; grad_bias = sum
        dweight = (dot * invstd).to(x3.dtype) if need_dweight else None  # (C,)
        dbias = dy_sum.to(x3.dtype) if need_dbias else None  # (C,)
        if not need_dx:
            return None, dweight, dbias
        if cpu and ctx.training:
            dx3 = _dx_training_cpu(xmu, dout3, dy_sum, dot, invstd, weight, m)
        elif cpu:
            dx3 = dout3 * _per_channel(invstd)  # dx = dy * invstd * w: (N, C, L)
            dx3 = dx3 if weight is None else dx3 * _per_channel(weight)
        elif ctx.training:
            scale = invstd if weight is None else invstd * weight  # (C,) w/√(σ²+eps)
            # x̂ · dweight / M = (x − μ) · k, with k = Σ (x − μ)·dout / (σ² + eps) / M
            k = dot.to(x3.dtype) * invstd * invstd / m  # (C,)
            mean_dout = (dy_sum / m).to(x3.dtype)  # (C,)
            dx3 = ((dout3 - _per_channel(mean_dout) - xmu * _per_channel(k))
                   * _per_channel(scale))  # (N, C, L)
        else:
            scale = invstd if weight is None else invstd * weight  # (C,) w/√(σ²+eps)
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
