"""torch operations on tensors on scratchnet's tape, each with its backward.

A forward may use plain torch on tape tensors, as a torch.nn user would:
``x.view(x.shape[0], -1)``, ``h + h``, ``fc2(h) * h``, ``logits[0]``,
``(out ** 2).mean()``, ``x @ w.t()``, ``out.sum()``, ``torch.exp(x)``. Each such
call reaches :class:`scratchnet.autodiff.Tensor`'s ``__torch_function__``, which
looks the torch function up in ``autodiff.TENSOR_OPS`` (filled at the bottom of
this file) and runs the scratchnet op found there instead: a :class:`Function`
whose forward calls the same torch op on plain tensors and whose backward, right
beside it, is written by hand. Anything not listed raises
:class:`~scratchnet.errors.NotDifferentiableError` rather than lose a gradient.

The formulas follow torch's own (``tools/autograd/derivatives.yaml``) operation
for operation, and matmul takes torch's kernel path, so on the CPU every row of
tests/test_tensor_ops.py came out bit-identical to torch.autograd, in float32 and
float64 (the tests still use the parity tolerances of tests/oracles.py).

Broadcasting: a binary op's output has the broadcast shape of its inputs; its
backward sums the gradient back over every dimension an input was broadcast
along (:func:`unbroadcast`, torch's ``sum_to``), then casts it to the input's
dtype (``float32 + float64`` computes in float64).

Shapes: ``*`` = any leading dims, M, K, N = matrix sizes in ``(M, K) @ (K, N)``.

The wrappers keep torch's names (``sum``, ``abs``, ``pow``, ``float``): inside this
module those names are the wrappers, not Python's built-ins.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Sequence
from typing import Any

import torch

from scratchnet.autodiff import (
    TENSOR_OPS,
    Context,
    Function,
    _plain_tree,
    is_on_tape,
    plain,
)
from scratchnet.errors import NotDifferentiableError, ShapeError
from scratchnet.nn.functional import shape as shape_ops

Scalar = int | float | bool
NUMBER_TYPES = (int, float, bool)


def unbroadcast(grad: torch.Tensor, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """Sum ``grad`` (the output's shape) back to an input of ``shape``: over the
    leading dims the input lacked and the dims where it had size 1 (torch's
    ``sum_to``, in one ``sum`` call as torch does), then cast to its dtype."""
    leading = grad.dim() - len(shape)
    dims = list(range(leading)) + [
        leading + i for i, size in enumerate(shape)
        if size == 1 and grad.shape[leading + i] != 1
    ]
    if dims:
        grad = grad.sum(dims, keepdim=True).reshape(shape)
    return grad if grad.dtype == dtype else grad.to(dtype)


def _shape_of(x: Any) -> torch.Size | None:
    return x.shape if isinstance(x, torch.Tensor) else None


def _not_differentiable(what: str) -> NotDifferentiableError:
    return NotDifferentiableError(
        f"{what} has no scratchnet backward, and its input is on scratchnet's tape: "
        "the gradient through it would be lost. Call .detach() first, or run it "
        "under scratchnet.no_grad()")


def _check_broadcast(name: str, a: Any, b: Any) -> None:
    """Refuse shapes torch cannot broadcast, naming them (torch would raise a bare
    RuntimeError from inside the kernel)."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        try:
            torch.broadcast_shapes(a.shape, b.shape)
        except RuntimeError:
            raise ShapeError(f"{name}: shapes {tuple(a.shape)} and {tuple(b.shape)} "
                             "cannot be broadcast together") from None


# --------------------------------------------------------------------------------------
# arithmetic: a ⊕ b with broadcasting; either side may be a Python number


class Add(Function):
    @staticmethod
    def forward(ctx: Context, a: torch.Tensor, b: torch.Tensor | Scalar,
                alpha: Scalar) -> torch.Tensor:
        """out = a + alpha · b"""
        ctx.a_shape, ctx.a_dtype = a.shape, a.dtype
        ctx.b_shape, ctx.b_dtype = _shape_of(b), getattr(b, "dtype", None)
        ctx.alpha = alpha
        return torch.add(a, b, alpha=alpha)

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """da = Σ_broadcast dout,   db = Σ_broadcast alpha · dout"""
        need_da, need_db, _ = ctx.needs_input_grad
        da = unbroadcast(dout, ctx.a_shape, ctx.a_dtype) if need_da else None
        db = None
        if need_db:
            db = dout if ctx.alpha == 1 else dout * ctx.alpha
            db = unbroadcast(db, ctx.b_shape, ctx.b_dtype)
        return da, db, None


class Sub(Function):
    @staticmethod
    def forward(ctx: Context, a: torch.Tensor | Scalar, b: torch.Tensor | Scalar,
                alpha: Scalar) -> torch.Tensor:
        """out = a − alpha · b  (a may be a number: ``1 - x`` is torch.rsub)"""
        ctx.a_shape, ctx.a_dtype = _shape_of(a), getattr(a, "dtype", None)
        ctx.b_shape, ctx.b_dtype = _shape_of(b), getattr(b, "dtype", None)
        ctx.alpha = alpha
        if isinstance(a, torch.Tensor):
            return torch.sub(a, b, alpha=alpha)
        return torch.rsub(b, a, alpha=alpha)

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """da = Σ_broadcast dout,   db = Σ_broadcast −dout · alpha"""
        need_da, need_db, _ = ctx.needs_input_grad
        da = unbroadcast(dout, ctx.a_shape, ctx.a_dtype) if need_da else None
        db = None
        if need_db:
            db = -dout if ctx.alpha == 1 else -dout * ctx.alpha
            db = unbroadcast(db, ctx.b_shape, ctx.b_dtype)
        return da, db, None


class Mul(Function):
    @staticmethod
    def forward(ctx: Context, a: torch.Tensor | Scalar,
                b: torch.Tensor | Scalar) -> torch.Tensor:
        """out = a ⊙ b"""
        ctx.save_for_backward(*(x if isinstance(x, torch.Tensor) else None
                                for x in (a, b)))
        ctx.numbers = tuple(None if isinstance(x, torch.Tensor) else x for x in (a, b))
        ctx.a_shape, ctx.a_dtype = _shape_of(a), getattr(a, "dtype", None)
        ctx.b_shape, ctx.b_dtype = _shape_of(b), getattr(b, "dtype", None)
        return a * b

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """da = Σ_broadcast dout ⊙ b,   db = Σ_broadcast dout ⊙ a"""
        a, b = (saved if saved is not None else number
                for saved, number in zip(ctx.saved_tensors, ctx.numbers, strict=True))
        need_da, need_db = ctx.needs_input_grad
        da = unbroadcast(dout * b, ctx.a_shape, ctx.a_dtype) if need_da else None
        db = unbroadcast(dout * a, ctx.b_shape, ctx.b_dtype) if need_db else None
        return da, db


class Div(Function):
    @staticmethod
    def forward(ctx: Context, a: torch.Tensor, b: torch.Tensor | Scalar) -> torch.Tensor:
        """out = a / b"""
        ctx.save_for_backward(a, b if isinstance(b, torch.Tensor) else None)
        ctx.b_number = None if isinstance(b, torch.Tensor) else b
        ctx.a_shape, ctx.a_dtype = a.shape, a.dtype
        ctx.b_shape, ctx.b_dtype = _shape_of(b), getattr(b, "dtype", None)
        return a / b

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """da = Σ_broadcast dout / b,   db = Σ_broadcast −dout ⊙ (a / b) / b

        (torch computes db in this order, not −dout·a/b², for stability)."""
        a, b = ctx.saved_tensors
        if b is None:
            b = ctx.b_number
        need_da, need_db = ctx.needs_input_grad
        da = unbroadcast(dout / b, ctx.a_shape, ctx.a_dtype) if need_da else None
        db = None
        if need_db:
            db = unbroadcast(-dout * ((a / b) / b), ctx.b_shape, ctx.b_dtype)
        return da, db


class Neg(Function):
    @staticmethod
    def forward(ctx: Context, x: torch.Tensor) -> torch.Tensor:
        """out = −x"""
        return torch.neg(x)

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """dx = −dout"""
        return (torch.neg(dout),)


class Reciprocal(Function):
    @staticmethod
    def forward(ctx: Context, x: torch.Tensor) -> torch.Tensor:
        """out = 1 / x"""
        out = torch.reciprocal(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """dx = −dout ⊙ out²   (d(1/x)/dx = −1/x²)"""
        (out,) = ctx.saved_tensors
        return (-dout * (out * out),)


class Pow(Function):
    @staticmethod
    def forward(ctx: Context, x: torch.Tensor, exponent: Scalar) -> torch.Tensor:
        """out = x ** p, p a number"""
        ctx.save_for_backward(x)
        ctx.exponent = exponent
        return torch.pow(x, exponent)

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """dx = dout ⊙ p · x^(p−1)   (0 when p = 0, as torch: no 0 · x⁻¹ = nan at 0)"""
        (x,) = ctx.saved_tensors
        p = ctx.exponent
        if p == 0:
            return torch.zeros_like(x), None
        return dout * (p * x.pow(p - 1)), None


class PowScalarBase(Function):
    @staticmethod
    def forward(ctx: Context, base: Scalar, x: torch.Tensor) -> torch.Tensor:
        """out = base ** x, base a number (``2 ** x``)"""
        out = torch.pow(base, x)
        ctx.save_for_backward(x, out)
        ctx.base = base
        return out

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """dx = dout ⊙ out · ln(base); for base 0, 0 where x ≥ 0 (torch's
        convention: 0**x is flat there, not out · ln 0 = 0 · −∞)."""
        x, out = ctx.saved_tensors
        base = ctx.base
        log_base = math.log(base) if base > 0 else -math.inf if base == 0 else math.nan
        dx = out * log_base
        if base == 0:
            dx = torch.where(x >= 0, torch.zeros((), dtype=dx.dtype, device=dx.device), dx)
        return None, dout * dx


# --------------------------------------------------------------------------------------
# element-wise functions: dx = dout ⊙ f'(x), with x or out, whichever torch uses


class Exp(Function):
    @staticmethod
    def forward(ctx: Context, x: torch.Tensor) -> torch.Tensor:
        """out = eˣ"""
        out = torch.exp(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """dx = dout ⊙ out   (d eˣ/dx = eˣ)"""
        (out,) = ctx.saved_tensors
        return (dout * out,)


class Log(Function):
    @staticmethod
    def forward(ctx: Context, x: torch.Tensor) -> torch.Tensor:
        """out = ln x"""
        ctx.save_for_backward(x)
        return torch.log(x)

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """dx = dout / x"""
        (x,) = ctx.saved_tensors
        return (dout / x,)


class Sqrt(Function):
    @staticmethod
    def forward(ctx: Context, x: torch.Tensor) -> torch.Tensor:
        """out = √x"""
        out = torch.sqrt(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """dx = dout / (2 · out)   (d√x/dx = 1 / 2√x)"""
        (out,) = ctx.saved_tensors
        return (dout / (2 * out),)


class Abs(Function):
    @staticmethod
    def forward(ctx: Context, x: torch.Tensor) -> torch.Tensor:
        """out = |x|"""
        ctx.save_for_backward(x)
        return torch.abs(x)

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """dx = dout ⊙ sign(x)   (0 at x = 0, as torch)"""
        (x,) = ctx.saved_tensors
        return (dout * torch.sgn(x),)


# --------------------------------------------------------------------------------------
# matrix product


class Dot(Function):
    @staticmethod
    def forward(ctx: Context, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """out = Σ_k a_k b_k     a: (K,), b: (K,) → out: ()"""
        ctx.save_for_backward(a, b)
        return torch.dot(a, b)

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """da = dout · b,   db = dout · a"""
        a, b = ctx.saved_tensors
        need_da, need_db = ctx.needs_input_grad
        return (dout * b if need_da else None), (dout * a if need_db else None)


class Mv(Function):
    @staticmethod
    def forward(ctx: Context, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """out = a · v     a: (M, K), v: (K,) → out: (M,)"""
        ctx.save_for_backward(a, v)
        return torch.mv(a, v)

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """da = dout ⊗ v (outer product, (M, K)),   dv = aᵀ · dout  (K,)"""
        a, v = ctx.saved_tensors
        need_da, need_dv = ctx.needs_input_grad
        da = torch.outer(dout, v) if need_da else None
        dv = a.t().mv(dout) if need_dv else None
        return da, dv


def _column_major(x: torch.Tensor) -> bool:
    return x.stride(0) == 1 and x.stride(1) == x.shape[0]


class Mm(Function):
    @staticmethod
    def forward(ctx: Context, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """out = a · b     a: (M, K), b: (K, N) → out: (M, N)"""
        ctx.save_for_backward(a, b)
        return torch.mm(a, b)

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """da = dout · bᵀ   (M, N) · (N, K) → (M, K)
        db = aᵀ · dout   (K, M) · (M, N) → (K, N)

        For an input stored column-major (a transposed view, as ``w.t()`` in
        ``x @ w.t()``) torch computes the transposed product and transposes it
        back, ``db = (doutᵀ · a)ᵀ``: the same numbers in that input's layout. We
        do the same, so the sums round identically."""
        a, b = ctx.saved_tensors
        need_da, need_db = ctx.needs_input_grad
        da = db = None
        if need_da:
            da = b.mm(dout.t()).t() if _column_major(a) else dout.mm(b.t())
        if need_db:
            db = dout.t().mm(a).t() if _column_major(b) else a.t().mm(dout)
        return da, db


class Bmm(Function):
    @staticmethod
    def forward(ctx: Context, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """out_i = a_i · b_i     a: (B, M, K), b: (B, K, N) → out: (B, M, N)"""
        ctx.save_for_backward(a, b)
        return torch.bmm(a, b)

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """da_i = dout_i · b_iᵀ  (B, M, K),   db_i = a_iᵀ · dout_i  (B, K, N)"""
        a, b = ctx.saved_tensors
        need_da, need_db = ctx.needs_input_grad
        da = dout.bmm(b.transpose(1, 2)) if need_da else None
        db = a.transpose(1, 2).bmm(dout) if need_db else None
        return da, db


class Expand(Function):
    @staticmethod
    def forward(ctx: Context, x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """out = x repeated (without copying) along its size-1 and new leading dims"""
        ctx.input_shape, ctx.input_dtype = x.shape, x.dtype
        return x.expand(shape)

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """dx = dout summed over every dim x was repeated along"""
        return unbroadcast(dout, ctx.input_shape, ctx.input_dtype), None


def _check_matmul(name: str, a: torch.Tensor, b: torch.Tensor) -> None:
    if a.dim() == 0 or b.dim() == 0:
        raise ShapeError(f"{name}: both arguments need at least 1 dimension, got shapes "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    k_a = a.shape[-1]
    k_b = b.shape[0] if b.dim() == 1 else b.shape[-2]
    if k_a != k_b:
        raise ShapeError(f"{name}: shapes {tuple(a.shape)} and {tuple(b.shape)} cannot "
                         f"be multiplied ({k_a} columns in the first, {k_b} rows in the "
                         "second)")
    if a.dim() > 2 or b.dim() > 2:
        try:
            torch.broadcast_shapes(a.shape[:-2] if a.dim() > 1 else (),
                                   b.shape[:-2] if b.dim() > 1 else ())
        except RuntimeError:
            raise ShapeError(f"{name}: batch dims of {tuple(a.shape)} and "
                             f"{tuple(b.shape)} cannot be broadcast together") from None
    # Mixed dtypes are left to torch's RuntimeError ("expected m1 and m2 to have the
    # same dtype, but got: float != double"): a DTypeError is a TypeError, which the
    # ``@`` operator turns into a bare "unsupported operand type(s)".


# --------------------------------------------------------------------------------------
# reductions


def _reduced_dims(dim: int | Sequence[int] | None, rank: int) -> tuple[int, ...]:
    """The dims a reduction runs over, non-negative and sorted; all for None or ()."""
    if dim is None:
        return tuple(range(rank))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    if not dims:
        return tuple(range(rank))
    if rank == 0:  # torch accepts dim 0 / -1 on a 0-d tensor
        return ()
    for d in dims:
        if not -rank <= d < rank:
            raise ShapeError(f"dim {d} out of range for a tensor of rank {rank}")
    return tuple(sorted(d % rank for d in dims))


def _expand_back(dout: torch.Tensor, shape: torch.Size, dims: tuple[int, ...],
                 keepdim: bool) -> torch.Tensor:
    """dout of a reduction over ``dims`` spread back over the input's ``shape``
    (torch's ``sum_backward``): unsqueeze the reduced dims, expand (no copy)."""
    if not keepdim:
        for d in dims:  # ascending, so each index is already final
            dout = dout.unsqueeze(d)
    return dout.expand(shape)


class Sum(Function):
    @staticmethod
    def forward(ctx: Context, x: torch.Tensor, dim: int | Sequence[int] | None,
                keepdim: bool, dtype: torch.dtype | None) -> torch.Tensor:
        """out = Σ_dim x"""
        ctx.input_shape, ctx.input_dtype = x.shape, x.dtype
        ctx.dims, ctx.keepdim = _reduced_dims(dim, x.dim()), keepdim
        return torch.sum(x, dim=dim, keepdim=keepdim, dtype=dtype)

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """dx = dout broadcast back over the summed dims (each x_i adds 1 · x_i)"""
        dx = _expand_back(dout, ctx.input_shape, ctx.dims, ctx.keepdim)
        return dx.to(ctx.input_dtype), None, None, None


class Mean(Function):
    @staticmethod
    def forward(ctx: Context, x: torch.Tensor, dim: int | Sequence[int] | None,
                keepdim: bool, dtype: torch.dtype | None) -> torch.Tensor:
        """out = (1/n) Σ_dim x,  n = number of elements averaged"""
        ctx.input_shape, ctx.input_dtype = x.shape, x.dtype
        ctx.dims, ctx.keepdim = _reduced_dims(dim, x.dim()), keepdim
        ctx.count = math.prod(x.shape[d] for d in ctx.dims)
        return torch.mean(x, dim=dim, keepdim=keepdim, dtype=dtype)

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """dx = (dout / n) broadcast back over the averaged dims"""
        dx = _expand_back(dout / ctx.count, ctx.input_shape, ctx.dims, ctx.keepdim)
        return dx.to(ctx.input_dtype), None, None, None


class Extreme(Function):
    @staticmethod
    def forward(ctx: Context, x: torch.Tensor, largest: bool) -> torch.Tensor:
        """out = max x (or min x) over all elements"""
        out = x.max() if largest else x.min()  # ()
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """∂out/∂x_i = 1 at the extreme element; where k elements tie, torch
        shares the gradient evenly between them: dx = dout · [x = out] / k."""
        x, out = ctx.saved_tensors
        is_extreme = (x == out).to(x.dtype)  # (*) 1 at the ties
        return is_extreme * (dout / is_extreme.sum()), None


class ExtremeAlongDim(Function):
    @staticmethod
    def forward(ctx: Context, x: torch.Tensor, dim: int, keepdim: bool,
                indices: torch.Tensor) -> torch.Tensor:
        """out = x at ``indices`` along ``dim``: the values of torch.max / torch.min
        (x, dim), whose indices the caller computed (they carry no gradient)"""
        dim = dim % builtins.max(x.dim(), 1)
        index = indices if keepdim or x.dim() == 0 else indices.unsqueeze(dim)
        ctx.save_for_backward(index)
        ctx.input_shape, ctx.dim, ctx.keepdim = x.shape, dim, keepdim
        out = x.gather(dim, index) if x.dim() else x.clone()  # keepdim shape
        return out if keepdim or x.dim() == 0 else out.squeeze(dim)

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """Only the selected element of each slice moved out: dx is dout scattered
        back to its index along dim, zero elsewhere (one index per slice, ties
        not shared: torch's value_selecting_reduction_backward)."""
        (index,) = ctx.saved_tensors
        if len(ctx.input_shape) == 0:
            return dout.clone(), None, None, None
        if not ctx.keepdim:
            dout = dout.unsqueeze(ctx.dim)
        dx = dout.new_zeros(ctx.input_shape).scatter(ctx.dim, index, dout)
        return dx, None, None, None


def _extreme(input: torch.Tensor, largest: bool, dim: Any = None, keepdim: bool = False,
             **kwargs: Any) -> Any:
    """torch.max / torch.min: of all elements, or (values, indices) along ``dim``;
    with a tensor as second argument (the elementwise maximum) there is no
    scratchnet backward."""
    name = "max" if largest else "min"
    if isinstance(dim, torch.Tensor) or kwargs:
        raise _not_differentiable(f"torch.{name} with a tensor or out= argument")
    if dim is None:
        return Extreme.apply(input, largest)
    x = plain(input)
    torch_op = torch.max if largest else torch.min
    indices = torch_op(x, dim, keepdim).indices
    values = ExtremeAlongDim.apply(input, dim, keepdim, indices)
    return_type = torch.return_types.max if largest else torch.return_types.min
    return return_type((values, indices))


def max(input: torch.Tensor, dim: Any = None, keepdim: bool = False,  # noqa: A001
        **kwargs: Any) -> Any:
    """torch.max(x) or torch.max(x, dim, keepdim) → (values, indices)."""
    return _extreme(input, True, dim, keepdim, **kwargs)


def min(input: torch.Tensor, dim: Any = None, keepdim: bool = False,  # noqa: A001
        **kwargs: Any) -> Any:
    """torch.min(x) or torch.min(x, dim, keepdim) → (values, indices)."""
    return _extreme(input, False, dim, keepdim, **kwargs)


# --------------------------------------------------------------------------------------
# moving elements: permute, indexing, copies, dtype casts (reshapes: nn.functional.shape)


class Permute(Function):
    @staticmethod
    def forward(ctx: Context, x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        """out = x with its dims reordered: out.shape[i] = x.shape[dims[i]]"""
        ctx.dims = dims
        return x.permute(dims)

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """dx = dout permuted back by the inverse order"""
        inverse = [0] * len(ctx.dims)
        for i, d in enumerate(ctx.dims):
            inverse[d] = i
        return dout.permute(inverse), None


class Index(Function):
    @staticmethod
    def forward(ctx: Context, x: torch.Tensor, index: Any) -> torch.Tensor:
        """out = x[index]: any mix of ints, slices, None, ..., integer and bool
        tensors or lists."""
        ctx.input_shape = x.shape
        ctx.index = index
        return x[index]

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """dx = zeros, with dout added at the element each output came from. The
        same index applied to ``arange`` tells which element that is; ``index_put_``
        with ``accumulate=True`` adds repeated indices together (``x[[0, 0]]``
        gives x[0] twice, so it gets both gradients)."""
        numel = math.prod(ctx.input_shape)
        # x's shape, each element holding its own flat position in x
        source = torch.arange(numel, device=dout.device).reshape(ctx.input_shape)
        positions = source[ctx.index].reshape(-1)  # (out.numel(),) where each came from
        dx = torch.zeros(numel, dtype=dout.dtype, device=dout.device)  # (numel,)
        dx.index_put_((positions,), dout.reshape(-1), accumulate=True)
        return dx.reshape(ctx.input_shape), None


class Clone(Function):
    @staticmethod
    def forward(ctx: Context, x: torch.Tensor, memory_format: torch.memory_format
                ) -> torch.Tensor:
        """out = a copy of x"""
        return x.clone(memory_format=memory_format)

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """dx = dout"""
        return dout, None


class Cast(Function):
    @staticmethod
    def forward(ctx: Context, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """out = x converted to another floating dtype"""
        ctx.input_dtype = x.dtype
        return x.to(dtype)

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """dx = dout converted back to x's dtype"""
        return dout.to(ctx.input_dtype), None


# ======================================================================================
# torch's signatures: what TENSOR_OPS maps each torch function to


def add(input: Any, other: Any, *, alpha: Scalar = 1) -> torch.Tensor:
    """torch.add / ``input + other``: input + alpha · other."""
    if not isinstance(input, torch.Tensor):  # torch.add(2, x) is x + 2 (alpha 1)
        input, other = other, input
    _check_broadcast("add", input, other)
    return Add.apply(input, other, alpha)


def sub(input: Any, other: Any, *, alpha: Scalar = 1) -> torch.Tensor:
    """torch.sub / ``input - other``: input − alpha · other."""
    _check_broadcast("sub", input, other)
    return Sub.apply(input, other, alpha)


def rsub(input: torch.Tensor, other: Any, alpha: Scalar = 1) -> torch.Tensor:
    """torch.rsub / ``other - input``: other − alpha · input."""
    _check_broadcast("rsub", other, input)
    return Sub.apply(other, input, alpha)


def mul(input: Any, other: Any) -> torch.Tensor:
    """torch.mul / ``input * other``."""
    _check_broadcast("mul", input, other)
    return Mul.apply(input, other)


def div(input: Any, other: Any, *, rounding_mode: str | None = None) -> torch.Tensor:
    """torch.div / ``input / other`` (true division only)."""
    if rounding_mode is not None:
        raise _not_differentiable(f"div(rounding_mode={rounding_mode!r})")
    if not isinstance(input, torch.Tensor):
        return rdiv(other, input)
    _check_broadcast("div", input, other)
    return Div.apply(input, other)


def rdiv(input: torch.Tensor, other: Any) -> torch.Tensor:
    """``other / input``: torch computes it as reciprocal(input) · other, and so
    do we (so forward and gradient round as torch's do)."""
    return mul(Reciprocal.apply(input), other)


def neg(input: torch.Tensor) -> torch.Tensor:
    """torch.neg / ``-input``."""
    return Neg.apply(input)


def positive(input: torch.Tensor) -> torch.Tensor:
    """``+input``: input itself, as torch returns it."""
    return input


def reciprocal(input: torch.Tensor) -> torch.Tensor:
    """torch.reciprocal: 1 / input."""
    return Reciprocal.apply(input)


def pow(input: Any, exponent: Any) -> torch.Tensor:
    """torch.pow / ``input ** exponent`` with a number on one side."""
    if isinstance(input, torch.Tensor) and isinstance(exponent, NUMBER_TYPES):
        return Pow.apply(input, exponent)
    if isinstance(input, NUMBER_TYPES) and isinstance(exponent, torch.Tensor):
        return PowScalarBase.apply(input, exponent)
    raise _not_differentiable("pow of a tensor to a tensor power")


def rpow(input: torch.Tensor, other: Any) -> torch.Tensor:
    """``other ** input``."""
    return pow(other, input)


def square(input: torch.Tensor) -> torch.Tensor:
    """torch.square: input ** 2 (torch's own definition)."""
    return Pow.apply(input, 2)


def exp(input: torch.Tensor) -> torch.Tensor:
    """torch.exp."""
    return Exp.apply(input)


def log(input: torch.Tensor) -> torch.Tensor:
    """torch.log (natural logarithm)."""
    return Log.apply(input)


def sqrt(input: torch.Tensor) -> torch.Tensor:
    """torch.sqrt."""
    return Sqrt.apply(input)


def abs(input: torch.Tensor) -> torch.Tensor:
    """torch.abs / ``abs(input)``."""
    return Abs.apply(input)


def matmul(input: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """torch.matmul / ``input @ other``: (*, M, K) @ (*, K, N) → (*, M, N); a 1-D
    left side is a row (its dim dropped from out), a 1-D right side a column.

    Built from dot / mv / mm / bmm exactly as torch builds it
    (``aten/src/ATen/native/LinearAlgebra.cpp``, ``_matmul_impl``), including
    its choice to fold a batch into one ``mm``: each output element is then the
    same sum in the same order as torch's, so float32 results match bit for bit.
    """
    a, b = plain(input), plain(other)
    _check_matmul("matmul", a, b)
    if a.dim() == 1 and b.dim() == 1:
        return Dot.apply(input, other)  # ()
    if a.dim() == 2 and b.dim() == 1:
        return Mv.apply(input, other)  # (M,)
    if a.dim() == 1 and b.dim() == 2:
        return squeeze(Mm.apply(unsqueeze(input, 0), other), 0)  # (1, N) → (N,)
    if a.dim() == 2 and b.dim() == 2:
        return Mm.apply(input, other)  # (M, N)
    if _should_fold(input, other):
        return _folded_matmul(input, other)
    return _batched_matmul(input, other)


def _should_fold(input: torch.Tensor, other: torch.Tensor) -> bool:
    """torch's ``should_fold``: fold when one side has batch dims and the other is
    a matrix or vector, always if that smaller side needs a gradient, otherwise
    only if the fold is a free view."""
    a, b = plain(input), plain(other)
    a_larger = a.dim() >= b.dim()
    big = a if a_larger else b.mT  # (*, rows, K)
    small_dim = b.dim() if a_larger else a.dim()
    if not (big.dim() >= 3 and small_dim <= 2):
        return False
    if is_on_tape(other if a_larger else input):
        return True
    if a.dim() == 2:
        return False
    sizes, strides = big.shape, big.stride()
    return big.numel() == 0 or all(strides[i] == strides[i + 1] * sizes[i + 1]
                                   for i in range(big.dim() - 2))


def _folded_matmul(input: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Batched side (*, rows, K) folded to (Π* · rows, K), one mm (or mv); when
    the batch is on the right, computed transposed: (a @ b)ᵀ = bᵀ @ aᵀ."""
    transpose = plain(other).dim() > plain(input).dim()
    if transpose:
        big = transpose_matrices(other)  # (*, N, K)
        small = t(input) if plain(input).dim() == 2 else input  # (K, M) or (K,)
    else:
        big, small = input, other  # (*, M, K), (K, N) or (K,)
    big_shape = plain(big).shape
    rows = math.prod(big_shape[:-1])
    big_folded = reshape(big, (rows, big_shape[-1]))  # (Π* · rows, K)
    if plain(small).dim() == 1:
        return reshape(Mv.apply(big_folded, small), big_shape[:-1])  # (*, rows)
    out = reshape(Mm.apply(big_folded, small),
                  (*big_shape[:-1], plain(small).shape[1]))  # (*, rows, cols)
    return contiguous(transpose_matrices(out)) if transpose else out


def _batched_matmul(input: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Both sides expanded to the broadcast batch (*), flattened to B = Π*, bmm."""
    a, b = plain(input), plain(other)
    m, k = (a.shape[-2] if a.dim() > 1 else 1), a.shape[-1]
    n = b.shape[-1] if b.dim() > 1 else 1
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    size = math.prod(batch)
    a3 = reshape(Expand.apply(input, (*batch, m, k)), (size, m, k))  # (B, M, K)
    if b.dim() == 1:
        b3 = unsqueeze(reshape(Expand.apply(other, (*batch, k)), (size, k)), 2)  # (B, K, 1)
        out = squeeze(Bmm.apply(a3, b3), -1)  # (B, M)
    else:
        b3 = reshape(Expand.apply(other, (*batch, k, n)), (size, k, n))  # (B, K, N)
        out = Bmm.apply(a3, b3)  # (B, M, N)
    out_shape = (*batch, *((m,) if a.dim() > 1 else ()), *((n,) if b.dim() > 1 else ()))
    return reshape(out, out_shape)


def rmatmul(input: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``other @ input``."""
    return matmul(other, input)


def mm(input: torch.Tensor, mat2: torch.Tensor) -> torch.Tensor:
    """torch.mm: (M, K) @ (K, N) → (M, N), 2-D only."""
    a, b = plain(input), plain(mat2)
    if a.dim() != 2 or b.dim() != 2:
        raise ShapeError(f"mm: both arguments must be 2-D, got shapes "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    _check_matmul("mm", a, b)
    return Mm.apply(input, mat2)


def bmm(input: torch.Tensor, mat2: torch.Tensor) -> torch.Tensor:
    """torch.bmm: (B, M, K) @ (B, K, N) → (B, M, N), no broadcasting."""
    a, b = plain(input), plain(mat2)
    if a.dim() != 3 or b.dim() != 3 or a.shape[0] != b.shape[0]:
        raise ShapeError(f"bmm: both arguments must be 3-D with the same batch size, "
                         f"got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    _check_matmul("bmm", a, b)
    return Bmm.apply(input, mat2)


def expand(input: torch.Tensor, *sizes: Any) -> torch.Tensor:
    """Tensor.expand(*sizes): repeat size-1 dims (and add leading ones) without
    copying; -1 keeps a size."""
    shape = _shape_argument(sizes)
    x = plain(input)
    return Expand.apply(input, tuple(x.expand(shape).shape))


def expand_as(input: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Tensor.expand_as: expand to other's shape."""
    return Expand.apply(input, tuple(plain(other).shape))


def broadcast_to(input: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """torch.broadcast_to: expand to ``shape``."""
    return expand(input, tuple(shape))


def sum(input: torch.Tensor, dim: int | Sequence[int] | None = None,
        keepdim: bool = False, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """torch.sum: over all elements, or over ``dim`` (an int or a tuple)."""
    return Sum.apply(input, dim, keepdim, dtype)


def mean(input: torch.Tensor, dim: int | Sequence[int] | None = None,
         keepdim: bool = False, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """torch.mean: over all elements, or over ``dim`` (an int or a tuple)."""
    return Mean.apply(input, dim, keepdim, dtype)


def _correction(unbiased: bool | None, correction: float | None) -> float:
    if correction is not None:
        return correction
    return 0 if unbiased is False else 1


class Var(Function):
    @staticmethod
    def forward(ctx: Context, x: torch.Tensor, dims: tuple[int, ...], correction: float,
                keepdim: bool, take_sqrt: bool) -> torch.Tensor:
        """var = Σ (x − mean)² / (N − correction) over ``dims``; std = √var."""
        centred = x - x.mean(dim=dims, keepdim=True)  # like x
        count = 1
        for d in dims:
            count *= x.shape[d]
        var = (centred * centred).sum(dim=dims, keepdim=True) / builtins.max(count - correction, 0)
        out = var.sqrt() if take_sqrt else var  # dims of size 1
        ctx.save_for_backward(centred, out)
        ctx.dims, ctx.keepdim, ctx.take_sqrt = dims, keepdim, take_sqrt
        ctx.denominator = builtins.max(count - correction, 0)
        return out if keepdim else out.squeeze(dims) if dims else out

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """dvar/dx_i = 2 (x_i − mean) / (N − correction) (the mean's own derivative
        drops out: Σ (x − mean) = 0); dstd/dx_i = dvar/dx_i / (2 std), taken as 0
        where std = 0, as torch does."""
        centred, out = ctx.saved_tensors
        if not ctx.keepdim and ctx.dims:
            dout = dout.reshape(out.shape)  # dims of size 1 again
        if ctx.take_sqrt:
            scale = torch.where(out == 0, 0, dout / out)  # dout / (2 std) · 2
        else:
            scale = 2 * dout
        return scale * centred / ctx.denominator, None, None, None, None


def var(input: torch.Tensor, dim: int | Sequence[int] | None = None,
        unbiased: bool | None = None, keepdim: bool = False, *,
        correction: float | None = None) -> torch.Tensor:
    """torch.var: Σ (x − mean)² / (N − correction), correction 1 by default."""
    dims = _reduced_dims(dim, plain(input).dim())
    return Var.apply(input, dims, _correction(unbiased, correction), keepdim, False)


def std(input: torch.Tensor, dim: int | Sequence[int] | None = None,
        unbiased: bool | None = None, keepdim: bool = False, *,
        correction: float | None = None) -> torch.Tensor:
    """torch.std = √var (see :func:`var`)."""
    dims = _reduced_dims(dim, plain(input).dim())
    return Var.apply(input, dims, _correction(unbiased, correction), keepdim, True)


def _shape_argument(shape: tuple) -> tuple[int, ...]:
    """``view(2, -1)``, ``view((2, -1))`` and ``view(torch.Size(...))`` alike."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
        shape = tuple(shape[0])
    return tuple(int(size) for size in shape)


def view(input: torch.Tensor, *shape: Any) -> torch.Tensor:
    """Tensor.view(*shape), e.g. ``x.view(x.shape[0], -1)``. Reinterpreting the
    bits as another dtype (``view(torch.int32)``) has no gradient."""
    if len(shape) == 1 and isinstance(shape[0], torch.dtype):
        if not shape[0].is_floating_point:  # integer bits carry no gradient
            return plain(input).view(shape[0])
        raise _not_differentiable(f"view({shape[0]}) (reinterpreting the bits)")
    return shape_ops.reshape(input, _shape_argument(shape))


def reshape(input: torch.Tensor, *shape: Any) -> torch.Tensor:
    """torch.reshape / Tensor.reshape."""
    return shape_ops.reshape(input, _shape_argument(shape))


def view_as(input: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Tensor.view_as / reshape_as: input in other's shape."""
    return shape_ops.reshape(input, plain(other).shape)


def flatten(input: torch.Tensor, start_dim: int = 0, end_dim: int = -1) -> torch.Tensor:
    """torch.flatten (note torch's default start_dim=0, unlike nn.Flatten's 1)."""
    return shape_ops.flatten(input, start_dim, end_dim)


def squeeze(input: torch.Tensor, dim: int | Sequence[int] | None = None) -> torch.Tensor:
    """torch.squeeze: drop size-1 dims (all, or those in ``dim``); a reshape."""
    x = plain(input)
    squeezed = x.squeeze() if dim is None else x.squeeze(dim)
    return shape_ops.reshape(input, squeezed.shape)


def unsqueeze(input: torch.Tensor, dim: int) -> torch.Tensor:
    """torch.unsqueeze: insert a size-1 dim at ``dim``; a reshape."""
    return shape_ops.reshape(input, plain(input).unsqueeze(dim).shape)


def permute(input: torch.Tensor, *dims: Any) -> torch.Tensor:
    """torch.permute / Tensor.permute(*dims)."""
    rank = plain(input).dim()
    dims = _shape_argument(dims)
    if sorted(d % rank if rank else d for d in dims) != list(range(rank)):
        raise ShapeError(f"permute{dims}: not a reordering of the {rank} dims of a "
                         f"tensor of shape {tuple(plain(input).shape)}")
    return Permute.apply(input, tuple(d % rank for d in dims))


def transpose(input: torch.Tensor, dim0: int, dim1: int) -> torch.Tensor:
    """torch.transpose: swap two dims."""
    rank = plain(input).dim()
    if rank == 0:
        return input
    dims = list(range(rank))
    dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
    return Permute.apply(input, tuple(dims))


def t(input: torch.Tensor) -> torch.Tensor:
    """torch.t / Tensor.t: transpose a matrix; 0-D and 1-D come back as they are."""
    rank = plain(input).dim()
    if rank > 2:
        raise ShapeError(f"t() expects a tensor with <= 2 dimensions, got shape "
                         f"{tuple(plain(input).shape)}")
    return input if rank < 2 else Permute.apply(input, (1, 0))


def transpose_all(input: torch.Tensor) -> torch.Tensor:
    """``Tensor.T``: all dims reversed."""
    rank = plain(input).dim()
    return input if rank < 2 else Permute.apply(input, tuple(reversed(range(rank))))


def transpose_matrices(input: torch.Tensor) -> torch.Tensor:
    """``Tensor.mT``: the last two dims swapped."""
    return transpose(input, -2, -1)


def getitem(input: torch.Tensor, index: Any) -> torch.Tensor:
    """``input[index]``: basic slicing and integer / bool / advanced indexing."""
    return Index.apply(input, _plain_tree(index))


def unbind(input: torch.Tensor, dim: int = 0) -> tuple[torch.Tensor, ...]:
    """torch.unbind (also what ``for row in x`` calls): the slices along ``dim``."""
    x = plain(input)
    if x.dim() == 0:
        raise ShapeError("unbind: a 0-d tensor has no dimension to split")
    dim = dim % x.dim()
    lead = (slice(None),) * dim
    return tuple(getitem(input, (*lead, i)) for i in range(x.shape[dim]))


def clone(input: torch.Tensor, *,
          memory_format: torch.memory_format = torch.preserve_format) -> torch.Tensor:
    """torch.clone: a copy on the tape."""
    return Clone.apply(input, memory_format)


def contiguous(input: torch.Tensor,
               memory_format: torch.memory_format = torch.contiguous_format
               ) -> torch.Tensor:
    """Tensor.contiguous: input itself if already contiguous (as torch), else a
    copy on the tape."""
    if plain(input).is_contiguous(memory_format=memory_format):
        return input
    return Clone.apply(input, memory_format)


def to(input: torch.Tensor, *args: Any, copy: bool = False, **kwargs: Any
       ) -> torch.Tensor:
    """Tensor.to: a dtype change is recorded (its backward casts back); a move to
    another device is not supported on the tape; no change returns input itself."""
    x = plain(input)
    device, dtype, _, _ = torch._C._nn._parse_to(*_plain_tree(args), **_plain_tree(kwargs))
    if device is not None and not _same_device(torch.device(device), x.device):
        raise _not_differentiable(f"to({device}) (moving from {x.device})")
    if dtype is None or dtype == x.dtype:
        return clone(input) if copy else input
    if not (dtype.is_floating_point or dtype.is_complex):
        return x.to(dtype)  # an integer or bool result carries no gradient
    return Cast.apply(input, dtype)


def _same_device(target: torch.device, current: torch.device) -> bool:
    return target.type == current.type and target.index in (None, current.index)


def float(input: torch.Tensor, memory_format: Any = None) -> torch.Tensor:
    """Tensor.float: to(torch.float32)."""
    return to(input, torch.float32)


def double(input: torch.Tensor, memory_format: Any = None) -> torch.Tensor:
    """Tensor.double: to(torch.float64)."""
    return to(input, torch.float64)


def half(input: torch.Tensor, memory_format: Any = None) -> torch.Tensor:
    """Tensor.half: to(torch.float16)."""
    return to(input, torch.float16)


def bfloat16(input: torch.Tensor, memory_format: Any = None) -> torch.Tensor:
    """Tensor.bfloat16: to(torch.bfloat16)."""
    return to(input, torch.bfloat16)


def cpu(input: torch.Tensor, memory_format: Any = None) -> torch.Tensor:
    """Tensor.cpu: input itself when it already is on the CPU."""
    return to(input, "cpu")


# The activations live in scratchnet.nn.functional with their backwards; imported
# when first called, so this module does not depend on the order of imports.


def sigmoid(input: torch.Tensor) -> torch.Tensor:
    """torch.sigmoid → scratchnet.nn.functional.sigmoid."""
    from scratchnet.nn import functional as F

    return F.sigmoid(input)


def tanh(input: torch.Tensor) -> torch.Tensor:
    """torch.tanh → scratchnet.nn.functional.tanh."""
    from scratchnet.nn import functional as F

    return F.tanh(input)


def relu(input: torch.Tensor) -> torch.Tensor:
    """torch.relu → scratchnet.nn.functional.relu."""
    from scratchnet.nn import functional as F

    return F.relu(input)


def softmax(input: torch.Tensor, dim: int, dtype: torch.dtype | None = None
            ) -> torch.Tensor:
    """torch.softmax → scratchnet.nn.functional.softmax (``dtype``: cast first)."""
    from scratchnet.nn import functional as F

    return F.softmax(input if dtype is None else to(input, dtype), dim=dim)


def log_softmax(input: torch.Tensor, dim: int, dtype: torch.dtype | None = None
                ) -> torch.Tensor:
    """torch.log_softmax → scratchnet.nn.functional.log_softmax."""
    from scratchnet.nn import functional as F

    return F.log_softmax(input if dtype is None else to(input, dtype), dim=dim)


# --------------------------------------------------------------------------------------
# the table: torch function → the op above that replaces it on the tape

_T = torch.Tensor

_REPLACEMENTS: list[tuple[Any, tuple[Any, ...]]] = [
    (add, (torch.add, _T.add, _T.__add__, _T.__radd__)),
    (sub, (torch.sub, torch.subtract, _T.sub, _T.subtract, _T.__sub__)),
    (rsub, (torch.rsub, _T.__rsub__)),
    (mul, (torch.mul, torch.multiply, _T.mul, _T.multiply, _T.__mul__, _T.__rmul__)),
    (div, (torch.div, torch.divide, torch.true_divide, _T.div, _T.divide,
           _T.true_divide, _T.__truediv__, _T.__div__)),
    (rdiv, (_T.__rtruediv__, _T.__rdiv__)),
    (neg, (torch.neg, torch.negative, _T.neg, _T.negative, _T.__neg__)),
    (positive, (torch.positive, _T.positive, _T.__pos__)),
    (reciprocal, (torch.reciprocal, _T.reciprocal)),
    (pow, (torch.pow, _T.pow, _T.__pow__)),
    (rpow, (_T.__rpow__,)),
    (square, (torch.square, _T.square)),
    (exp, (torch.exp, _T.exp)),
    (log, (torch.log, _T.log)),
    (sqrt, (torch.sqrt, _T.sqrt)),
    (abs, (torch.abs, torch.absolute, _T.abs, _T.absolute, _T.__abs__)),
    (matmul, (torch.matmul, _T.matmul, _T.__matmul__)),
    (rmatmul, (_T.__rmatmul__,)),
    (mm, (torch.mm, _T.mm)),
    (bmm, (torch.bmm, _T.bmm)),
    (expand, (_T.expand,)),
    (expand_as, (_T.expand_as,)),
    (broadcast_to, (torch.broadcast_to, _T.broadcast_to)),
    (sum, (torch.sum, _T.sum)),
    (mean, (torch.mean, _T.mean)),
    (var, (torch.var, _T.var)),
    (std, (torch.std, _T.std)),
    (max, (torch.max, _T.max)),
    (min, (torch.min, _T.min)),
    (view, (_T.view,)),
    (reshape, (torch.reshape, _T.reshape)),
    (view_as, (_T.view_as, _T.reshape_as)),
    (flatten, (torch.flatten, _T.flatten)),
    (squeeze, (torch.squeeze, _T.squeeze)),
    (unsqueeze, (torch.unsqueeze, _T.unsqueeze)),
    (permute, (torch.permute, _T.permute)),
    (transpose, (torch.transpose, torch.swapaxes, torch.swapdims, _T.transpose,
                 _T.swapaxes, _T.swapdims)),
    (t, (torch.t, _T.t)),
    (transpose_all, (_T.T.__get__,)),
    (transpose_matrices, (_T.mT.__get__,)),
    (getitem, (_T.__getitem__,)),
    (unbind, (torch.unbind, _T.unbind)),
    (clone, (torch.clone, _T.clone)),
    (contiguous, (_T.contiguous,)),
    (to, (_T.to,)),
    (float, (_T.float,)),
    (double, (_T.double,)),
    (half, (_T.half,)),
    (bfloat16, (_T.bfloat16,)),
    (cpu, (_T.cpu,)),
    (sigmoid, (torch.sigmoid, _T.sigmoid)),
    (tanh, (torch.tanh, _T.tanh)),
    (relu, (torch.relu, _T.relu)),
    (softmax, (torch.softmax, _T.softmax)),
    (log_softmax, (torch.log_softmax, _T.log_softmax)),
]

for _op, _torch_functions in _REPLACEMENTS:
    for _function in _torch_functions:
        TENSOR_OPS[_function] = _op
