"""A Linear layer's three matrix products through ``gemm.c``: the BLAS routine
torch.mm itself calls, on hand-split blocks of the output, one thread each, or
in float32 scratchnet's own loops in MKL's order of sums (``sgemm.h``), wherever
that is torch's result bit for bit (used by :mod:`scratchnet.fast`).

    products = linear_products(batch, in_features, out_features, dtype, bias=True)
    products.forward(x, weight, bias, out)   # out = x·Wᵀ + b   (torch.addmm(b, x, W.t()))
    products.weight_grad(dout, x, dweight)   # dweight = doutᵀ·x (torch.mm(dout.t(), x))
    products.input_grad(dout, weight, dx)    # dx = dout·W       (torch.mm(dout, W))

    products.forward(x, weight, bias, out, relu=True)  # then out ← relu(out)
    products.input_grad(dout, weight, dx, gate=h)      # then dx ← dx · [h > 0]
    products.weight_grad(dout, x, dweight, dbias)      # and dbias = Σ_B dout

(the ReLU and its backward in the same pass, on the C path only:
``products.fuses(kind)``; the bias's gradient in the weight gradient's call
where gemm.c's sum is torch.sum(dout, 0)'s bit for bit, ``sums_in_product``,
else torch.sum after it).

All of the products' dtype and shapes: x (B, D_in), weight (D_out, D_in),
bias (D_out,), out and dout (B, D_out); all but x contiguous (a product with a
non-contiguous x takes torch's op).

How each product is run is chosen once per shape, dtype and thread count, by
trying it: each way of splitting it between the threads (over the rows or the
columns of BLAS's output, or not at all: one BLAS call on BLAS's own threads),
each again on sgemm.h's loops where they were built ("kernel", "kernel rows",
"kernel columns"), is run on random inputs and kept only if it equals torch's
op bit for bit; the fastest of those kept is used. Which ways are equal depends on the shapes, not
on the values or where the tensors lie in memory (tests/test_native.py); at
batch 64 on the seed MLP the splits are 15–25% faster than torch.mm (README
"Speed"). Every product takes torch's op off the CPU, or where the C library
cannot be built or torch's BLAS routine cannot be found (:func:`why_unavailable`).
"""

from __future__ import annotations

import ctypes
import functools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from scratchnet import native

SPLITS = {"none": 0, "rows": 1, "columns": 2}  # gemm.c's SPLIT_NONE, SPLIT_M, SPLIT_N
OWN_KERNEL = 4  # or'ed into a split: its blocks run sgemm.h's loops, not BLAS
# the ways run on scratchnet's loops (float32 where built): "kernel" is one block
# on the calling thread
SPLITS.update({f"kernel {split}" if split != "none" else "kernel": code | OWN_KERNEL
               for split, code in list(SPLITS.items())})
SPLIT_MIN = 16  # gemm.c's SPLIT_ALIGN: its blocks are this long at least (see below)
# torch sums dout over dim 0 in one order for whole blocks of columns and in another
# for the rest; where the width is not a multiple of this, gemm.c's sum was seen equal
# to torch's on some draws and not on others (widths 2, 5, 37: by chance, with few
# terms, or an order not the shape's alone), so it is tried only at widths that are
SUM_WIDTH = 64
PROBE_DRAWS = 3  # random inputs a split must reproduce torch's result on
PROBE_BUDGET_S = 0.005  # timing a way of running a product: about this long, ...
PROBE_REPEATS = 5  # ... at most this many calls
_MAX_INT = 2**31 - 1  # BLAS's sizes are 32-bit
_BLAS_ROUTINES = {torch.float32: "sgemm_", torch.float64: "dgemm_"}

_plans: dict[tuple, str | None] = {}  # (kind, shape, dtype, bias, threads) → split or None
_sum_plans: dict[tuple, bool] = {}  # (shape, dtype, threads) → gemm.c's Σ_B dout is torch's
_why_unavailable: dict[torch.dtype, str] = {}


class LinearProducts:
    """The three products of one Linear layer at one batch size, each bound to
    its BLAS arguments and split (``splits``: None where it takes torch's op)."""

    def __init__(self, batch: int, in_features: int, out_features: int,
                 dtype: torch.dtype, bias: bool, threads: int,
                 loop: Callable[..., None] | None) -> None:
        self.shape = (batch, in_features, out_features)
        self.dtype, self.bias, self.threads = dtype, bias, threads
        # BLAS is column-major: a row-major (r, c) buffer is the (c, r) matrix, so
        # each product is computed transposed: (B, D_out)ᵀ = W'·x', and so on.
        b, d_in, d_out = self.shape
        self.blas_arguments = {  # transposes, m, n, k, lda, ldb, ldc
            "forward": (b"T", b"N", d_out, b, d_in, d_in, d_in, d_out),
            "weight_grad": (b"N", b"T", d_in, d_out, b, d_in, d_out, d_in),
            "input_grad": (b"N", b"N", d_in, b, d_out, d_in, d_out, d_in),
        }
        self.splits: dict[str, str | None] = {}
        self._calls: dict[str, Callable[..., None] | None] = {}
        for kind, arguments in self.blas_arguments.items():
            split = None if loop is None else _plan(kind, self, loop, arguments)
            self.splits[kind] = split
            self._calls[kind] = (None if split is None else functools.partial(
                loop, *arguments, SPLITS[split], threads))
        self.sums_in_product = bias and self._calls["weight_grad"] is not None and \
            out_features % SUM_WIDTH == 0 and _sums_plan(self, loop)  # see weight_grad

    def fuses(self, kind: str) -> bool:
        """Whether ``kind``'s product is gemm.c's, and so takes a ReLU with it
        (forward: ``relu``; input_grad: ``gate``)."""
        return self._calls[kind] is not None

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                out: torch.Tensor, relu: bool = False) -> torch.Tensor:
        """out = x·Wᵀ + b: torch.addmm(bias, x, weight.t(), out=out) (torch.mm
        without a bias); with ``relu`` then torch.relu_(out), in the same pass."""
        call = self._calls["forward"]
        if call is None or not x.is_contiguous():
            if bias is None:
                torch.mm(x, weight.t(), out=out)
            else:
                torch.addmm(bias, x, weight.t(), out=out)
            return torch.relu_(out) if relu else out
        call(int(relu), weight.data_ptr(), x.data_ptr(),
             None if bias is None else bias.data_ptr(), None, out.data_ptr(), None)
        return out

    def weight_grad(self, dout: torch.Tensor, x: torch.Tensor, dweight: torch.Tensor,
                    dbias: torch.Tensor | None = None) -> torch.Tensor:
        """dweight = doutᵀ·x: torch.mm(dout.t(), x, out=dweight); with ``dbias``
        (D_out,), also dbias = torch.sum(dout, 0, out=dbias): in the same call,
        each thread summing some columns of dout, where gemm.c's sum is torch's
        bit for bit for this shape (``sums_in_product``: aten's cascade order,
        probed like the splits), else torch.sum after the product."""
        call = self._calls["weight_grad"]
        if call is None or not x.is_contiguous():
            torch.mm(dout.t(), x, out=dweight)
        else:
            sums = dbias is not None and self.sums_in_product
            call(0, x.data_ptr(), dout.data_ptr(), None, None, dweight.data_ptr(),
                 dbias.data_ptr() if sums else None)
            if sums:
                return dweight
        if dbias is not None:
            torch.sum(dout, 0, out=dbias)
        return dweight

    def input_grad(self, dout: torch.Tensor, weight: torch.Tensor, dx: torch.Tensor,
                   gate: torch.Tensor | None = None) -> torch.Tensor:
        """dx = dout·W: torch.mm(dout, weight, out=dx); with ``gate`` (B, D_in),
        a ReLU's output h, then dx ← dx · [h > 0] in the same pass: ReLU's
        backward as scratchnet.fast computes it, dx.mul_(sign(h)) (the C path
        only: ``fuses("input_grad")``)."""
        call = self._calls["input_grad"]
        if call is None:
            if gate is not None:
                raise ValueError("input_grad: a gate needs gemm.c's product "
                                 "(fuses('input_grad') is False)")
            return torch.mm(dout, weight, out=dx)
        call(0, weight.data_ptr(), dout.data_ptr(), None,
             None if gate is None else gate.data_ptr(), dx.data_ptr(), None)
        return dx


def linear_products(batch: int, in_features: int, out_features: int,
                    dtype: torch.dtype, bias: bool, device: torch.device | str = "cpu",
                    threads: int | None = None) -> LinearProducts:
    """The products of a Linear layer (in_features → out_features, with or
    without a bias) at this batch size, on ``threads`` threads (default torch's
    count)."""
    # a product with a side of 1 is a matrix-vector product, which torch may
    # not hand to BLAS's gemm at all
    sizes_fit = min(batch, in_features, out_features) >= 2 and max(
        batch * in_features, batch * out_features, in_features * out_features) <= _MAX_INT
    loop = (_gemm_loop(dtype) if torch.device(device).type == "cpu" and sizes_fit
            else None)
    return LinearProducts(batch, in_features, out_features, dtype, bias,
                          torch.get_num_threads() if threads is None else threads, loop)


def chosen_splits() -> dict[tuple, str | None]:
    """The way chosen for each product shape so far in this process: (kind,
    (B, D_in, D_out), dtype, bias, threads) → "none", "rows", "columns", the
    same on scratchnet's loops ("kernel", "kernel rows", "kernel columns"), or
    None (torch's op)."""
    return dict(_plans)


def why_unavailable(dtype: torch.dtype) -> str | None:
    """Why the products of ``dtype`` on the CPU take torch's ops (None if they
    need not)."""
    _gemm_loop(dtype)
    return _why_unavailable.get(dtype)


@functools.cache
def _gemm_loop(dtype: torch.dtype) -> Callable[..., None] | None:
    """gemm.c's product for ``dtype`` with torch's BLAS routine set, or None."""
    if dtype not in _BLAS_ROUTINES:
        _why_unavailable[dtype] = f"no BLAS product for {dtype}"
        return None
    suffix = native.C_TYPES[dtype][0]
    integer, pointer = ctypes.c_int, ctypes.c_void_p
    loop = native.function("gemm", f"scratchnet_gemm_{suffix}", None,
                           [ctypes.c_char, ctypes.c_char, *[integer] * 9, *[pointer] * 6])
    set_blas = native.function("gemm", f"scratchnet_gemm_{suffix}_set_blas", ctypes.c_int,
                               [pointer])
    if loop is None or set_blas is None:
        _why_unavailable[dtype] = f"gemm.c: {native.why_unavailable('gemm')}"
        return None
    routine = _blas_routine(_BLAS_ROUTINES[dtype])
    if routine is None:
        _why_unavailable[dtype] = (f"torch's library exports no {_BLAS_ROUTINES[dtype]} "
                                   "(a build without a Fortran-interface BLAS)")
        return None
    set_blas(routine)
    return loop


def _blas_routine(name: str) -> int | None:
    """The address of BLAS's ``name`` as torch's CPU library links it."""
    for library in sorted((Path(torch.__file__).parent / "lib").glob("libtorch_cpu.*")):
        try:
            return ctypes.cast(getattr(ctypes.CDLL(str(library)), name),
                               ctypes.c_void_p).value
        except (OSError, AttributeError):
            continue
    return None


def _plan(kind: str, products: LinearProducts, loop: Callable[..., None],
          arguments: tuple) -> str | None:
    """The fastest split of the product that equals torch's op bit for bit on
    random inputs (cached per shape, dtype, bias and threads), or None."""
    bias = products.bias and kind == "forward"
    key = (kind, products.shape, products.dtype, bias, products.threads)
    if key not in _plans:
        _plans[key] = _try_splits(kind, products, loop, arguments, bias)
    return _plans[key]


def splits_to_try(arguments: tuple, threads: int, kernel: bool = False) -> list[str]:
    """The ways of running a product (its gemm.c arguments) worth trying: one
    BLAS call always; a split where every thread's block, and the product's
    other sides, are at least SPLIT_MIN long (smaller blocks gain nothing, and
    BLAS may run them with other kernels: a block of one row is a
    matrix-vector product). With ``kernel`` (float32 where sgemm.h's loops were
    built: :func:`has_kernel`), each of those again on scratchnet's loops, where
    every side is SPLIT_MIN long at least (with a few terms per sum, torch's
    order and the loops' agree on some values and not others)."""
    m, n, k = arguments[2:5]
    if threads <= 1 or min(m, n, k) < SPLIT_MIN:
        ways = ["none"]
    else:
        ways = ["none", *(split for split, side in (("rows", m), ("columns", n))
                          if side >= threads * SPLIT_MIN)]
    if kernel and min(m, n, k) >= SPLIT_MIN:  # (below, orders agree by chance)
        ways += ["kernel" if way == "none" else f"kernel {way}" for way in ways]
    return ways


def has_kernel(dtype: torch.dtype) -> bool:
    """Whether gemm.c was built with scratchnet's own loops for ``dtype``
    (sgemm.h: float32 on a CPU with AVX-512)."""
    if _gemm_loop(dtype) is None:
        return False
    suffix = native.C_TYPES[dtype][0]
    probe = native.function("gemm", f"scratchnet_gemm_{suffix}_has_kernel", ctypes.c_int, [])
    return probe is not None and bool(probe())


def _try_splits(kind: str, products: LinearProducts, loop: Callable[..., None],
                arguments: tuple, bias: bool) -> str | None:
    equal = splits_to_try(arguments, products.threads, has_kernel(products.dtype))
    for seed in range(PROBE_DRAWS):  # one draw at a time: the least memory
        expected, out, inputs = _probe(kind, products.shape, products.dtype, bias, seed)
        pointers = (0, *(None if t is None else t.data_ptr() for t in inputs), None,
                    out.data_ptr(), None)  # (relu, A, B, bias, gate, C, Σ); inputs alive
        for split in list(equal):
            out.fill_(float("nan"))
            loop(*arguments, SPLITS[split], products.threads, *pointers)
            if not torch.equal(out.view(-1).view(torch.uint8),
                               expected.view(-1).view(torch.uint8)):
                equal.remove(split)
    if len(equal) <= 1:
        return equal[0] if equal else None
    return _fastest(equal, lambda split: loop(*arguments, SPLITS[split],
                                              products.threads, *pointers))


def _sums_plan(products: LinearProducts, loop: Callable[..., None]) -> bool:
    """Whether gemm.c's Σ_B dout in the weight gradient's call equals
    torch.sum(dout, 0) bit for bit on random inputs (cached per shape, dtype and
    threads). Asked only at widths that are multiples of SUM_WIDTH, where
    torch's order depends on the shape, not on the values: tests/test_native.py."""
    key = (products.shape, products.dtype, products.threads)
    if key not in _sum_plans:
        call = products._calls["weight_grad"]
        equal = True
        for seed in range(PROBE_DRAWS):
            _, out, (x, dout, _) = _probe("weight_grad", products.shape, products.dtype,
                                          False, seed)
            expected, sums = torch.sum(dout, 0), dout.new_full((dout.shape[1],), math.nan)
            call(0, x.data_ptr(), dout.data_ptr(), None, None, out.data_ptr(),
                 sums.data_ptr())
            equal = equal and torch.equal(sums.view(torch.uint8),
                                          expected.view(torch.uint8))
        _sum_plans[key] = equal
    return _sum_plans[key]


def _probe(kind: str, shape: tuple[int, int, int], dtype: torch.dtype, bias: bool,
           seed: int) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """torch's result of the product on random values, an output buffer for
    gemm.c's, and gemm.c's inputs (A, B, bias or None). The values span six
    decades and include zeros, so that sums taken in another order round
    differently."""
    batch, d_in, d_out = shape
    generator = torch.Generator().manual_seed(seed)

    def values(*size: int) -> torch.Tensor:  # in place: a weight's size twice at most
        drawn = torch.randn(*size, generator=generator, dtype=dtype)
        scale = torch.randint(-3, 3, size, generator=generator, dtype=dtype)  # decades
        drawn.mul_(scale.mul_(math.log(10)).exp_())  # × 10^decade
        torch.rand(size, generator=generator, dtype=dtype, out=scale)
        return drawn.masked_fill_(scale < 0.05, 0.0)  # and some exact zeros

    x, weight, dout = values(batch, d_in), values(d_out, d_in), values(batch, d_out)
    if kind == "forward":
        bias_values = values(d_out) if bias else None
        expected = (torch.addmm(bias_values, x, weight.t()) if bias
                    else torch.mm(x, weight.t()))
        inputs = (weight, x, bias_values)
    elif kind == "weight_grad":
        expected, inputs = torch.mm(dout.t(), x), (x, dout, None)
    else:
        expected, inputs = torch.mm(dout, weight), (weight, dout, None)
    return expected, torch.empty_like(expected), inputs


def _fastest(splits: list[str], run: Callable[[str], Any]) -> str:
    """The split whose quickest of a few interleaved calls is quickest."""
    best = {split: float("inf") for split in splits}
    start = time.perf_counter()
    for repeat in range(PROBE_REPEATS):
        for split in splits:
            began = time.perf_counter()
            run(split)
            best[split] = min(best[split], time.perf_counter() - began)
        if time.perf_counter() - start > PROBE_BUDGET_S * len(splits) and repeat >= 1:
            break
    return min(splits, key=best.__getitem__)
