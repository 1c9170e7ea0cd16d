"""torch's CPU kernels' own arithmetic, reproduced in NumPy array ops, so that
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
bit on x86 CPUs whose torch kernels use AVX2 (tests/test_vecmath.py), and so does
a whole training run (``scratchnet compare``: |Δparam| = 0 after five epochs).

What is reproduced, for float32 on such a CPU
(``torch.backends.cpu.get_cpu_capability()`` is "AVX2"):

- :func:`fma` — the fused multiply-add the kernels compile to, exactly
  (float64 product, then a round-to-odd sum, then one rounding to float32).
- :func:`sleef_expf` — SLEEF ``xexpf`` (Cody–Waite reduction by ln 2, degree-6
  polynomial, scaling by 2^q).
- :func:`sleef_logf` — SLEEF ``xlogf_u1`` (mantissa in [0.75, 1.5), atanh series
  in double-float arithmetic).
- :func:`lane_sum` — ``vec::map_reduce_all``'s order: the row in chunks of L = 8
  lanes added chunk by chunk, the last chunk padded with zeros, then the lanes
  folded in halves (a row shorter than 8: left to right).
- :func:`nll_cascade_sum` — the order in which torch's CPU ``nll_loss`` sums a
  batch into the loss value (plain scalar code: the same on every CPU, in
  float32 and float64).

Not reproduced: torch's softmax *backward* with one thread or one row per
thread sums in yet another order (measured), so it matches there only to the
float32 tolerance.

Everywhere else (float64, CUDA, other CPUs) the plain ``torch.exp`` / ``torch.log``
/ ``sum`` are used, and parity is to the tolerance the tests state. These are
forward-only helpers: the ops that call them own the derivatives.
"""

from __future__ import annotations

import functools

import numpy as np
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
    """float32 lanes of torch's CPU kernels where they are emulated: 8 on AVX2
    (where every claim of this file was measured), else None: on AVX-512 the
    kernels run wider vectors (and perhaps not all of them), which was never
    measured, so the emulation stays off there."""
    return {"AVX2": 8}.get(torch.backends.cpu.get_cpu_capability())


def matches_torch_kernels(x: torch.Tensor) -> bool:
    """True where this file's float32 emulation applies: float32 on such a CPU."""
    return x.dtype == torch.float32 and x.device.type == "cpu" and simd_lanes() is not None


# The emulation runs in NumPy on the tensors' own memory (``Tensor.numpy()``):
# it is some hundred elementwise steps on a small (B, C) array, where NumPy's
# per-call cost is a fraction of torch's. Float32 values are carried in float64 arrays (exact),
# rounded back to float32 after every float32 operation (``_r32``), so a fused
# multiply-add is one float64 product (exact: 24 + 24 bits) and one float64 sum.

_F32, _F64 = np.float32, np.float64
_HALFWAY_MASK, _HALFWAY = (1 << 29) - 1, 1 << 28  # float64 bits below float32's


def _r32(x: np.ndarray) -> np.ndarray:
    """Round to float32, kept in a float64 array."""
    return x.astype(_F32).astype(_F64)


def _fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """a·b + c rounded once to float32, for float32 values in float64 arrays.

    a·b is exact in float64; a·b + c is rounded once to float64, then to float32.
    Rounding twice can differ from rounding once only where the float64 sum lands
    exactly halfway between two float32s and is inexact: there it is moved one
    float64 step towards the exact value (its error, by Knuth's TwoSum) first —
    round-to-odd, which makes the final rounding correct.
    """
    product = a * b  # exact
    total = product + c  # one float64 rounding
    halfway = (total.view(np.int64) & _HALFWAY_MASK) == _HALFWAY
    if halfway.any():
        back_c = total - product
        error = (product - (total - back_c)) + (c - back_c)  # exact
        nudged = np.nextafter(total, np.copysign(np.inf, error))
        total = np.where(halfway & (error != 0), nudged, total)
    return _r32(total)


def _on_numpy(compute):  # noqa: ANN001, ANN202
    """Wrap ``compute(values)`` (float64 arrays of float32 values) for a float32
    tensor in and out."""
    def run(x: torch.Tensor) -> torch.Tensor:
        values = x.detach().cpu().numpy().astype(_F64)
        return torch.from_numpy(compute(values).astype(_F32))
    run.__name__, run.__doc__ = compute.__name__.lstrip("_"), compute.__doc__
    return run


def fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """a·b + c rounded once to float32 (float32 tensors of one shape), as the FMA
    instruction torch's kernels are compiled to."""
    a64, b64, c64 = (t.detach().cpu().numpy().astype(_F64) for t in (a, b, c))
    return torch.from_numpy(_fma(a64, b64, c64).astype(_F32))


def _sleef_expf(d: np.ndarray) -> np.ndarray:
    """e^d as SLEEF ``xexpf`` computes it (float32 in, float32 out).

    q = rint(d / ln 2); s = d − q·ln 2 in two FMA steps (ln 2 split in high and
    low parts); u = 1 + s + s²·P(s) with P of degree 5 by Horner's rule in FMAs;
    result u·2^q, 0 below d = −104 and ∞ above d = 100.
    """
    q = np.rint(_r32(d * _F64(_F32(_R_LN2))))  # round half to even, as vrint
    s = _fma(q, _F64(_F32(-_L2U)), d)
    s = _fma(q, _F64(_F32(-_L2L)), s)
    u = np.full_like(d, _F32(_EXP_POLY[0]))
    for coefficient in _EXP_POLY[1:]:
        u = _fma(u, s, _F64(_F32(coefficient)))
    u = _r32(1.0 + _fma(_r32(s * s), u, s))
    # u·2^q: exact in float64, one rounding to float32 (SLEEF's two-step scaling
    # can round differently only where the result is subnormal, below 1.2e-38)
    result = u * np.exp2(q)
    result = np.where(d < -104, 0.0, result)
    return np.where(d > 100, np.inf, result)


sleef_expf = _on_numpy(_sleef_expf)


def _two_sum(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SLEEF ``dfadd2_vf2_vf_vf`` in float32: (s, e), s = fl(x + y), s + e = x + y."""
    s = _r32(x + y)
    v = _r32(s - x)
    return s, _r32(_r32(x - _r32(s - v)) + _r32(y - v))


def _sleef_logf(d: np.ndarray) -> np.ndarray:
    """ln d as SLEEF ``xlogf_u1`` computes it with FMA (float32, d > 0
    finite; 0 → −∞, negative → nan, ∞ → ∞ as torch's).

    d = m·2^e with m in [0.75, 1.5); x = (m − 1)/(m + 1) in double-float
    arithmetic; ln d = e·ln 2 + 2x + x³·T(x²), the sum kept as a double-float
    (hi, lo) pair and rounded once at the end.
    """
    with np.errstate(all="ignore"):
        # e = getexp(d · (1/0.75)): the exponent of the rounded product
        e = np.frexp(_r32(d * _F64(_F32(1.0 / 0.75))))[1].astype(_F64) - 1
        fraction = np.frexp(d)[0]  # d = fraction · 2^k, fraction in [0.5, 1)
        m = np.where(fraction < 0.75, fraction * 2, fraction)  # getmant: [0.75, 1.5)
        # s = (ln 2 as hi + lo) · e, a double-float (dfmul_vf2_vf2_vf)
        ln2_hi, ln2_lo = _F64(_F32(_LN2_HI)), _F64(_F32(_LN2_LO))
        s_hi = _r32(ln2_hi * e)
        s_lo = _fma(ln2_lo, e, _fma(ln2_hi, e, -s_hi))
        # x = (m − 1)/(m + 1) as a double-float (dfdiv of two dfadd2 results)
        n_hi, n_lo = _two_sum(np.full_like(m, -1.0), m)
        q_hi, q_lo = _two_sum(np.ones_like(m), m)
        t = _r32(1.0 / q_hi)
        x_hi = _r32(n_hi * t)
        u = _fma(t, n_hi, -x_hi)
        v = _fma(-q_lo, t, _fma(-q_hi, t, np.ones_like(m)))
        x_lo = _fma(x_hi, v, _fma(n_lo, t, u))
        x2 = _r32(x_hi * x_hi)
        poly = np.full_like(d, _F32(_LOG_POLY[0]))
        for coefficient in _LOG_POLY[1:]:
            poly = _fma(poly, x2, _F64(_F32(coefficient)))
        # s += 2x (dfadd_vf2_vf2_vf2 with dfscale)
        sx, sy = 2 * x_hi, 2 * x_lo
        total = _r32(s_hi + sx)
        s_lo = _r32(_r32(_r32(_r32(s_hi - total) + sx) + s_lo) + sy)
        s_hi = total
        # s += x³·T (dfadd_vf2_vf2_vf)
        tail = _r32(_r32(x2 * x_hi) * poly)
        total = _r32(s_hi + tail)
        s_lo = _r32(_r32(_r32(s_hi - total) + tail) + s_lo)
        result = _r32(total + s_lo)
    result = np.where(d == 0, -np.inf, result)
    result = np.where(d == np.inf, np.inf, result)
    return np.where((d < 0) | np.isnan(d), np.nan, result)


sleef_logf = _on_numpy(_sleef_logf)


def lane_sum(x: torch.Tensor) -> torch.Tensor:
    """Σ over the last dim in the order of aten's ``vec::map_reduce_all`` /
    ``reduce_all`` with L SIMD lanes: lane j accumulates x[j], x[j+L], x[j+2L], …
    left to right (the last, partial chunk padded with zeros), then the lanes are
    folded in halves (lane i += lane i + L/2, …); a row shorter than 8 is summed
    left to right. (*, n) → (*, 1), float32."""
    lanes = simd_lanes() or 8
    rows = x.detach().cpu().numpy()  # (*, n)
    n = rows.shape[-1]
    if n < 8:  # a short row is summed left to right (measured)
        acc = rows[..., :1].copy()
        for j in range(1, n):
            acc += rows[..., j:j + 1]
        return torch.from_numpy(acc)  # (*, 1)
    chunks = -(-n // lanes)
    padded = np.zeros((*rows.shape[:-1], chunks * lanes), dtype=rows.dtype)
    padded[..., :n] = rows
    blocks = padded.reshape(*rows.shape[:-1], chunks, lanes)  # (*, chunks, L)
    acc = blocks[..., 0, :].copy()
    for k in range(1, chunks):
        acc += blocks[..., k, :]  # (*, L)
    while acc.shape[-1] > 1:
        half = acc.shape[-1] // 2
        acc = acc[..., :half] + acc[..., half:]
    return torch.from_numpy(np.ascontiguousarray(acc))  # (*, 1)


def nll_cascade_sum(loss_rows: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Σ of ``loss_rows`` over the ``kept`` rows in the order of aten's CPU
    ``nll_loss`` forward (aten/src/ATen/native/LossNLL.cpp), which every
    cross-entropy with class indices ends in: eight levels of partial sums;
    each kept row b is added into level 0, and then, while b's next ``power``
    bits are all zero, level j is added into level j + 1 and cleared
    (``power`` = max(4, ⌈log2 B⌉ // 8): with B = 64, level 0 is flushed after
    rows 0, 16, 32 and 48); at the end the levels are added up from level 0.
    An ignored row is skipped, flush included. (M,) → () in the rows' dtype.

    Level 0 is 0 after every flush, so its run between two flushes is a left-to-
    right running sum (``np.add.accumulate``); the flushes are a few scalar adds.
    """
    rows = loss_rows.detach().cpu().numpy()
    kept_rows = kept.detach().cpu().numpy()
    count = rows.shape[0]
    levels = 8
    power = max(4, (max(count, 1) - 1).bit_length() // levels)
    mask = (1 << power) - 1
    zero = rows.dtype.type(0)
    partial = [zero] * levels
    start = 0
    while start < count:
        # the next row after which level 0 is flushed: b & mask == 0 and b kept
        flush = start if start & mask == 0 else (start | mask) + 1
        while flush < count and not kept_rows[flush]:
            flush += 1 + mask  # an ignored row does not flush; try the next
        end = min(flush, count - 1)
        run = rows[start:end + 1][kept_rows[start:end + 1]]
        if run.size:
            partial[0] = np.add.accumulate(np.concatenate(([partial[0]], run)))[-1]
        if flush < count:
            for j in range(levels - 1):
                if flush & (mask << (j * power)):
                    break
                partial[j + 1] = partial[j + 1] + partial[j]
                partial[j] = zero
        start = end + 1
    total = zero
    for level_sum in partial:
        total = total + level_sum
    return torch.tensor(total, dtype=loss_rows.dtype)
