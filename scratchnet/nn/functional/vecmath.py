"""torch's CPU kernels' own arithmetic, reproduced in tensor ops, so that
scratchnet's float32 softmax family rounds exactly as torch's does.

Why this file exists. On CPU, ``torch.exp`` and ``torch.log`` call Intel MKL
(nearly correctly rounded), but torch's softmax / log_softmax kernels
(aten/src/ATen/native/cpu/SoftMaxKernel.cpp, LogSoftmaxKernelImpl.h) compute
``Vectorized<float>::exp()`` and ``::log()``, which are SLEEF's ``expf_u10`` and
``logf_u10`` (error up to 1 ulp), and sum a row in SIMD lanes, not left to right.
Formulas that are right on paper therefore differ from torch in the last bit of
about one float32 entry in five. One bit is enough: in training, Adam divides by
√v, turns the difference into a full step, a ReLU flips, and two runs of the
same model from the same weights drift apart (0.35 accuracy points after five
Fashion-MNIST epochs, measured). With the functions here, scratchnet's float32
log_softmax, softmax and cross-entropy forward and backward equal torch's bit for
bit on x86 CPUs (tests/test_vecmath.py), and so does a whole training run.

What is reproduced, for float32 on a CPU whose torch kernels use AVX2 or AVX-512
(``torch.backends.cpu.get_cpu_capability()``):

- :func:`fma` — the fused multiply-add the kernels compile to, exactly
  (float64 product, then a round-to-odd sum, then one rounding to float32).
- :func:`sleef_expf` — SLEEF ``xexpf`` (Cody–Waite reduction by ln 2, degree-6
  polynomial, scaling by 2^q).
- :func:`sleef_logf` — SLEEF ``xlogf_u1`` (mantissa in [0.75, 1.5), atanh series
  in double-float arithmetic).
- :func:`lane_sum` — ``vec::map_reduce_all``'s order: the row in chunks of L
  lanes (16 for AVX-512, 8 for AVX2) added chunk by chunk, the last chunk padded
  with zeros, then the L lanes folded in halves.

Everywhere else (float64, CUDA, other CPUs) the plain ``torch.exp`` / ``torch.log``
/ ``sum`` are used, and parity is to the tolerance the tests state. These are
forward-only helpers: the ops that call them own the derivatives.
"""

from __future__ import annotations

import functools

import torch

# SLEEF's constants (sleef/src/libm/sleefsimdsp.c, misc.h)
_R_LN2 = 1.442695040888963407359924681001892137426645954152985934135449406931
_L2U = 0.693145751953125  # ln 2, upper bits
_L2L = 1.428606765330187045e-06  # ln 2, lower bits
_EXP_POLY = (0.000198527617612853646278381, 0.00139304355252534151077271,
             0.00833336077630519866943359, 0.0416664853692054748535156,
             0.166666671633720397949219, 0.5)
_LOG_POLY = (0.3027294874, 0.3996108174, 0.6666694880)
_LN2_HI, _LN2_LO = 0.69314718246459960938, -1.904654323148236017e-09


@functools.cache
def simd_lanes() -> int | None:
    """float32 lanes of torch's CPU kernels here: 16 (AVX-512), 8 (AVX2), or None
    where torch's kernels are not the x86 SLEEF ones this file reproduces."""
    capability = torch.backends.cpu.get_cpu_capability()
    return {"AVX512": 16, "AVX2": 8}.get(capability)


def matches_torch_kernels(x: torch.Tensor) -> bool:
    """True where this file's float32 emulation applies: float32 on such a CPU."""
    return x.dtype == torch.float32 and x.device.type == "cpu" and simd_lanes() is not None


def _f32(value: float, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float32, device=like.device)


def fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """a·b + c rounded once to float32 (a, b, c float32), as the FMA instruction.

    a·b is exact in float64 (24 + 24 bits < 53). The sum is rounded to odd in
    float64 (round to nearest, then, if inexact and the last bit is even, one step
    toward the exact value), which makes the final rounding to float32 correct
    (float64 carries more than 24 + 2 bits). The rounding error of the float64
    sum is recovered exactly by Knuth's TwoSum.
    """
    product = a.double() * b.double()  # exact
    c64 = c.double()
    total = product + c64  # round to nearest (float64)
    # TwoSum: error = (product + c) − total, exactly
    back_c = total - product
    error = (product - (total - back_c)) + (c64 - back_c)
    last_bit_even = (total.view(torch.int64) & 1) == 0
    inexact = (error != 0) & last_bit_even & torch.isfinite(total)
    toward = torch.where(error > 0, torch.full_like(total, float("inf")),
                         torch.full_like(total, -float("inf")))
    odd = torch.where(inexact, torch.nextafter(total, toward), total)
    return odd.float()


def sleef_expf(d: torch.Tensor) -> torch.Tensor:
    """e^d as SLEEF ``xexpf`` computes it (float32 in, float32 out).

    q = rint(d / ln 2); s = d − q·ln 2 in two FMA steps (ln 2 split in high and
    low parts); u = 1 + s + s²·P(s) with P of degree 5 by Horner's rule in FMAs;
    result u·2^q, 0 below d = −104 and ∞ above d = 100.
    """
    q = torch.round(d * _f32(_R_LN2, d))  # round half to even, as vrint
    s = fma(q, _f32(-_L2U, d), d)
    s = fma(q, _f32(-_L2L, d), s)
    u = _f32(_EXP_POLY[0], d).expand_as(d)
    for coefficient in _EXP_POLY[1:]:
        u = fma(u, s, _f32(coefficient, d))
    u = _f32(1.0, d) + fma(s * s, u, s)
    # u·2^q: exact in float64, one rounding to float32 (SLEEF's two-step scaling
    # can round differently only where the result is subnormal, below 1.2e-38)
    result = (u.double() * torch.pow(2.0, q.double())).float()
    result = torch.where(d < -104, torch.zeros_like(result), result)
    return torch.where(d > 100, torch.full_like(result, float("inf")), result)


def _two_sum(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SLEEF ``dfadd2_vf2_vf_vf``: (s, e) with s = fl(x + y), s + e = x + y."""
    s = x + y
    v = s - x
    return s, (x - (s - v)) + (y - v)


def sleef_logf(d: torch.Tensor) -> torch.Tensor:
    """ln d as SLEEF ``xlogf_u1`` computes it on AVX-512/AVX2 (float32, d > 0
    finite; 0 → −∞, negative → nan, ∞ → ∞ as torch's).

    d = m·2^e with m in [0.75, 1.5); x = (m − 1)/(m + 1) in double-float
    arithmetic; ln d = e·ln 2 + 2x + x³·T(x²), the sum kept as a double-float
    (hi, lo) pair and rounded once at the end.
    """
    one = _f32(1.0, d)
    # e = getexp(d · (1/0.75)): the exponent of the rounded product
    e = torch.frexp(d * _f32(1.0 / 0.75, d))[1].float() - 1
    # m = getmant(d) normalised to [0.75, 1.5)
    fraction, exponent = torch.frexp(d)  # d = fraction · 2^exponent, fraction in [0.5, 1)
    m = torch.where(fraction < 0.75, fraction * 2, fraction)
    # s = (ln 2 as hi + lo) · e, a double-float (dfmul_vf2_vf2_vf)
    s_hi = _f32(_LN2_HI, d) * e
    s_lo = fma(_f32(_LN2_LO, d).expand_as(e), e, fma(_f32(_LN2_HI, d).expand_as(e), e, -s_hi))
    # x = (m − 1)/(m + 1) as a double-float (dfdiv of two dfadd2 results)
    n_hi, n_lo = _two_sum(-one, m)
    q_hi, q_lo = _two_sum(one, m)
    t = one / q_hi
    x_hi = n_hi * t
    u = fma(t, n_hi, -x_hi)
    v = fma(-q_lo, t, fma(-q_hi, t, one))
    x_lo = fma(x_hi, v, fma(n_lo, t, u))
    x2 = x_hi * x_hi
    poly = _f32(_LOG_POLY[0], d).expand_as(d)
    for coefficient in _LOG_POLY[1:]:
        poly = fma(poly, x2, _f32(coefficient, d))
    # s += 2x (dfadd_vf2_vf2_vf2 with dfscale)
    sx, sy = 2 * x_hi, 2 * x_lo
    total = s_hi + sx
    s_lo = (((s_hi - total) + sx) + s_lo) + sy
    s_hi = total
    # s += x³·T (dfadd_vf2_vf2_vf)
    tail = (x2 * x_hi) * poly
    total = s_hi + tail
    s_lo = ((s_hi - total) + tail) + s_lo
    result = total + s_lo
    result = torch.where(d == 0, torch.full_like(result, -float("inf")), result)
    result = torch.where(d == float("inf"), d, result)
    return torch.where((d < 0) | d.isnan(), torch.full_like(result, float("nan")), result)


def lane_sum(x: torch.Tensor) -> torch.Tensor:
    """Σ over the last dim in the order of aten's ``vec::map_reduce_all`` /
    ``reduce_all`` with L SIMD lanes: lane j accumulates x[j], x[j+L], x[j+2L], …
    left to right (the last, partial chunk padded with zeros), then the lanes are
    folded in halves (lane i += lane i + L/2, …); a row shorter than 8 is summed
    left to right. (*, n) → (*, 1)."""
    lanes = simd_lanes() or 16
    n = x.shape[-1]
    if n < 8:  # a short row is summed left to right (measured, AVX2 and AVX-512)
        acc = x[..., :1]
        for j in range(1, n):
            acc = acc + x[..., j:j + 1]
        return acc  # (*, 1)
    chunks = max(1, -(-n // lanes))
    padded = torch.nn.functional.pad(x, (0, chunks * lanes - n)) if chunks * lanes != n else x
    blocks = padded.reshape(*x.shape[:-1], chunks, lanes)  # (*, chunks, L)
    acc = blocks[..., 0, :]
    for k in range(1, chunks):
        acc = acc + blocks[..., k, :]  # (*, L)
    while acc.shape[-1] > 1:
        half = acc.shape[-1] // 2
        acc = acc[..., :half] + acc[..., half:]
    return acc  # (*, 1)


def kernel_exp(x: torch.Tensor) -> torch.Tensor:
    """e^x as torch's softmax kernels compute it here (SLEEF on x86 float32)."""
    return sleef_expf(x) if matches_torch_kernels(x) else x.exp()


def kernel_log(x: torch.Tensor) -> torch.Tensor:
    """ln x as torch's softmax kernels compute it here."""
    return sleef_logf(x) if matches_torch_kernels(x) else x.log()


def kernel_row_sum(x: torch.Tensor) -> torch.Tensor:
    """Σ over the last dim, (*, n) → (*, 1), in torch's kernel order where
    emulated, else ``x.sum(-1, keepdim=True)``."""
    return lane_sum(x) if matches_torch_kernels(x) else x.sum(dim=-1, keepdim=True)
