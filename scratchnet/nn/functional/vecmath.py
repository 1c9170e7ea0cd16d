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
bit on x86 CPUs whose torch kernels use AVX2 or AVX-512 (tests/test_vecmath.py),
and so does a whole training run (``scratchnet compare``: |Δparam| = 0 and
every step loss equal after five epochs, on both; on AVX-512 with the emulation
off, |Δparam| = 7e-6 and 56 of 100 step losses differ after 6400 images).

What is reproduced, for float32 on such a CPU
(``torch.backends.cpu.get_cpu_capability()`` is "AVX2": L = 8 lanes, or
"AVX512": L = 16; :func:`simd_lanes`):

- :func:`fma` — the fused multiply-add the kernels compile to, exactly
  (float64 product, then a round-to-odd sum, then one rounding to float32).
- :func:`sleef_expf` — SLEEF ``xexpf`` (Cody–Waite reduction by ln 2, degree-6
  polynomial, scaling by 2^q); the AVX-512 build (``Sleef_expf16_u10``) rounds
  the same, subnormal results included (2·10⁶ points in [−110, 0], measured).
- :func:`sleef_logf` — SLEEF ``xlogf_u1`` (mantissa in [0.75, 1.5), atanh series
  in double-float arithmetic; AVX-512's getexp/getmant give the same m and e).
- :func:`lane_sum` — ``vec::map_reduce_all``'s order: the row in chunks of L
  lanes added chunk by chunk, the last chunk padded with zeros, then the lanes
  folded in halves (AVX-512's four shuffles are the same halving); a row shorter
  than L goes through ``vec_reduce_all``'s slow path: left to right.
- :func:`softmax_backward_dot` — Σ dout·out of the softmax backward
  (``map2_reduce_all``). On AVX-512 it depends on the path ``at::parallel_for``
  takes, both reproduced: with two or more threads and rows, the products
  rounded and summed as :func:`lane_sum`; with one thread or one row (serial),
  the last partial chunk fused into the lanes, acc = fma(dout, out, acc)
  (:func:`lane_dot`). The chunking of rows over threads and the log_softmax
  forward's row chunks change nothing (measured).
- :func:`nll_cascade_sum` — the order in which torch's CPU ``nll_loss`` sums a
  batch into the loss value (plain scalar code: the same on every CPU, in
  float32 and float64).

Measured on AVX-512 (torch 2.14.1; 1 and 2 threads, softmax backward also 3
and 4; 1..300 rows; 1..40, 47, 64, 100, 512, 1000 classes; (C,), (B, C) and
(B, T, C) inputs; values scaled by 1e-3..1e3; a grid of 1.2·10⁷ entries per op
and thread count, and 5 500 random cases): no entry differs, in the forward and
backward of log_softmax and softmax, and cross-entropy's gradient and loss
(class indices, ignored rows, every reduction).

Not reproduced: on AVX2, torch's softmax *backward* with one thread or one row
per thread sums in yet another order (measured; probably AVX-512's fused tail,
not checked there), so it matches there only to the float32 tolerance.

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
    """float32 lanes of torch's CPU kernels where they are emulated: 8 on AVX2,
    16 on AVX-512 (where every claim of this file was measured), else None
    (other CPUs: the emulation stays off)."""
    return {"AVX2": 8, "AVX512": 16}.get(torch.backends.cpu.get_cpu_capability())


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
    result u·2^q, 0 below d = −104 and ∞ above d = 100 (±∞ and nan in, as
    torch's, quietly: the intermediate overflows are masked below).
    """
    with np.errstate(all="ignore"):
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


def _lane_accumulators(rows: np.ndarray, lanes: int) -> np.ndarray:
    """(*, n) float32 with n ≥ L → (*, L): lane j holds x[j] + x[j+L] + …, added
    chunk by chunk left to right (the last, partial chunk padded with zeros)."""
    n = rows.shape[-1]
    chunks = -(-n // lanes)
    padded = np.zeros((*rows.shape[:-1], chunks * lanes), dtype=rows.dtype)
    padded[..., :n] = rows
    blocks = padded.reshape(*rows.shape[:-1], chunks, lanes)  # (*, chunks, L)
    acc = blocks[..., 0, :].copy()
    for k in range(1, chunks):
        acc += blocks[..., k, :]  # (*, L)
    return acc


def _fold_halves(acc: np.ndarray) -> torch.Tensor:
    """(*, L) → (*, 1): lane i += lane i + L/2, then again on the first half, …
    (``vec_reduce_all``'s shuffles: on AVX2 by 128, 64, 32 bits; on AVX-512 by
    256, 128, 64, 32 bits — the same halving)."""
    while acc.shape[-1] > 1:
        half = acc.shape[-1] // 2
        acc = acc[..., :half] + acc[..., half:]
    return torch.from_numpy(np.ascontiguousarray(acc))  # (*, 1)


def lane_sum(x: torch.Tensor, lanes: int | None = None) -> torch.Tensor:
    """Σ over the last dim in the order of aten's ``vec::map_reduce_all`` /
    ``reduce_all`` with L SIMD lanes (``lanes``, default this CPU's): lane j
    accumulates x[j], x[j+L], x[j+2L], … left to right (the last, partial chunk
    padded with zeros), then the lanes are folded in halves (lane i += lane
    i + L/2, …); a row shorter than L is summed left to right. (*, n) → (*, 1),
    float32."""
    lanes = lanes or simd_lanes() or 8
    rows = x.detach().cpu().numpy()  # (*, n)
    n = rows.shape[-1]
    if n < lanes:  # a short row is summed left to right (measured)
        acc = rows[..., :1].copy()
        for j in range(1, n):
            acc += rows[..., j:j + 1]
        return torch.from_numpy(acc)  # (*, 1)
    return _fold_halves(_lane_accumulators(rows, lanes))


def lane_dot(a: torch.Tensor, b: torch.Tensor, fused_tail: bool,
             lanes: int | None = None) -> torch.Tensor:
    """Σ a·b over the last dim in the order of aten's ``vec::map2_reduce_all``
    (x·y, then x + y): the products rounded and summed as :func:`lane_sum` sums.
    ``fused_tail``: the last, partial chunk's products are fused into the lane
    accumulators instead (acc = fma(a, b, acc)), as the compiler contracts that
    step in the serial path of torch's softmax backward (measured, AVX-512).
    (*, n) → (*, 1), float32."""
    lanes = lanes or simd_lanes() or 8
    n = a.shape[-1]
    tail = n % lanes
    if not fused_tail or n < lanes or tail == 0:
        return lane_sum(a * b, lanes)
    head = n - tail
    rows = (a[..., :head] * b[..., :head]).detach().cpu().numpy()  # (*, head)
    acc = _lane_accumulators(rows, lanes).astype(_F64)  # (*, L)
    a_tail, b_tail = (t[..., head:].detach().cpu().numpy().astype(_F64) for t in (a, b))
    acc[..., :tail] = _fma(a_tail, b_tail, acc[..., :tail])
    return _fold_halves(acc.astype(_F32))


def softmax_backward_dot(dout: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Σ dout·out over the last dim, as torch's float32 softmax backward kernel
    forms it here. On AVX-512 its order depends on the path ``at::parallel_for``
    takes: serial (one thread, or one row) fuses the partial last chunk
    (:func:`lane_dot`), parallel does not (measured). On AVX2 the parallel order
    (the serial one was not reproduced there). (*, n) → (*, 1)."""
    if simd_lanes() == 16:
        rows = out.numel() // max(out.shape[-1], 1)
        serial = torch.get_num_threads() == 1 or rows == 1
        return lane_dot(dout, out, fused_tail=serial)
    return lane_sum(dout * out)


def _cascade_shape(count: int) -> tuple[int, int, int]:
    """(levels, power, mask) of aten's nll_loss cascade for ``count`` rows."""
    levels = 8
    power = max(4, (max(count, 1) - 1).bit_length() // levels)
    return levels, power, (1 << power) - 1


@functools.cache
def _cascade_plan(count: int) -> tuple[tuple[int, int, int], ...]:
    """With every row kept: the runs (start, stop) that level 0 sums between two
    flushes, and how many levels each flush carries up (0: no flush)."""
    levels, power, mask = _cascade_shape(count)
    plan, start = [], 0
    while start < count:
        flush = start if start & mask == 0 else (start | mask) + 1
        stop = min(flush, count - 1) + 1
        carries = 0
        if flush < count:
            while carries < levels - 1 and not flush & (mask << (carries * power)):
                carries += 1
        plan.append((start, stop, carries))
        start = stop
    return tuple(plan)


def cascade_sum_all_kept(rows: np.ndarray) -> np.floating:
    """:func:`nll_cascade_sum` of a NumPy (M,) array with no ignored row, from
    the cached plan; a NumPy scalar of the rows' dtype."""
    levels = _cascade_shape(rows.shape[0])[0]
    zero = rows.dtype.type(0)
    partial = [zero] * levels
    for start, stop, carries in _cascade_plan(rows.shape[0]):
        # level 0 is 0 at a run's start: ((0 + r₀) + r₁) + … = (r₀ + r₁ + …) + 0
        partial[0] = np.add.accumulate(rows[start:stop])[-1] + zero
        for j in range(carries):
            partial[j + 1] = partial[j + 1] + partial[j]
            partial[j] = zero
    total = zero
    for level_sum in partial:
        total = total + level_sum
    return total


def nll_cascade_sum(loss_rows: torch.Tensor, kept: torch.Tensor | None) -> torch.Tensor:
    """Σ of ``loss_rows`` over the ``kept`` rows (``None``: all of them) in the
    order of aten's CPU ``nll_loss`` forward (aten/src/ATen/native/LossNLL.cpp),
    which every cross-entropy with class indices ends in: eight levels of partial
    sums; each kept row b is added into level 0, and then, while b's next
    ``power`` bits are all zero, level j is added into level j + 1 and cleared
    (``power`` = max(4, ⌈log2 B⌉ // 8): with B = 64, level 0 is flushed after
    rows 0, 16, 32 and 48); at the end the levels are added up from level 0.
    An ignored row is skipped, flush included. (M,) → () in the rows' dtype.

    Level 0 is 0 after every flush, so its run between two flushes is a left-to-
    right running sum (``np.add.accumulate``); the flushes are a few scalar adds.
    """
    rows = loss_rows.detach().cpu().numpy()
    if kept is None:
        return torch.tensor(cascade_sum_all_kept(rows), dtype=loss_rows.dtype)
    kept_rows = kept.detach().cpu().numpy()
    count = rows.shape[0]
    levels, power, mask = _cascade_shape(count)
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
