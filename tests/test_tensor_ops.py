"""torch operations on tape tensors (scratchnet.tensor_ops).

Each row of the table is a torch expression a user may write in a forward
(``a + b``, ``x @ w.t()``, ``x[[0, 0, 2]]``, ``(x ** 2).mean()``): run on
scratchnet leaves it goes through scratchnet's hand-written backwards; run on
``requires_grad`` tensors it goes through torch.autograd, the oracle. Forward and
every input gradient must agree (tests/oracles.py's parity contract), and the
gradients must also match central differences in float64. Then: repeated
indices add up, ``scratchnet.no_grad()`` gives plain tensors, unsupported and
in-place ops raise, and what carries no gradient (printing, ``item``,
``argmax``, comparisons, ``.detach()`` ...) still works.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import scratchnet
from scratchnet.autodiff import Tensor, plain
from scratchnet.errors import NotDifferentiableError, ShapeError
from tests.oracles import (
    assert_close_to_finite_differences,
    assert_parity,
    device_params,
    finite_difference_vjp,
    scratchnet_grads,
)
from tests.strategies import dtypes, scales, seeded, shapes
from tests.test_activation import assert_parity_with_floor
from tests.test_softmax import softmax_backward_floor

# --------------------------------------------------------------------------------------
# input shapes: each strategy builder takes max_side (6 for parity, 3 for the
# finite-difference check, which costs two forwards per input element)


def one(min_dims: int = 0, max_dims: int = 4) -> Callable[[int], st.SearchStrategy]:
    """One input of any shape with min_dims..max_dims dims (size-1 dims common)."""
    def build(max_side: int) -> st.SearchStrategy:
        return shapes(min_dims=min_dims, max_dims=max_dims, max_side=max_side).map(
            lambda shape: [shape])
    return build


def pair(max_side: int) -> st.SearchStrategy:
    """Two shapes that broadcast: a full shape, and one with leading dims dropped
    and some dims set to 1, in either order."""
    @st.composite
    def draw_pair(draw):
        full = draw(shapes(min_dims=0, max_dims=4, max_side=max_side))
        dropped = draw(st.integers(0, len(full)))
        partial = tuple(1 if draw(st.booleans()) else size for size in full[dropped:])
        return [full, partial] if draw(st.booleans()) else [partial, full]
    return draw_pair()


def matrices(*templates: str) -> Callable[[int], st.SearchStrategy]:
    """Shapes from letter templates: ``matrices("BMK", "KN")`` is (B, M, K) and
    (K, N) with each letter one drawn size; a "1" is a literal 1."""
    def build(max_side: int) -> st.SearchStrategy:
        letters = sorted(set("".join(templates)) - {"1"})
        sizes = st.fixed_dictionaries({c: st.integers(1, max_side) for c in letters})
        return sizes.map(lambda size: [tuple(1 if c == "1" else size[c] for c in t)
                                       for t in templates])
    return build


def indexable(max_side: int) -> st.SearchStrategy:
    """(≥3, ≥2, *rest): room for the fixed indices used in the table."""
    return st.tuples(st.integers(3, max(3, max_side)), st.integers(2, max(2, max_side)),
                     shapes(min_dims=0, max_dims=2, max_side=max_side)).map(
        lambda s: [(s[0], s[1], *s[2])])


# --------------------------------------------------------------------------------------
# value domains: where an op is defined and smooth (applied before the leaves are made)


def anywhere(x: torch.Tensor) -> torch.Tensor:
    return x


def positive(x: torch.Tensor) -> torch.Tensor:
    """log, sqrt, fractional powers: x > 0, at least 0.1 from the singularity."""
    return x.abs() + 0.1


def nonzero(x: torch.Tensor) -> torch.Tensor:
    """Denominators and negative powers: |x| ≥ 0.1."""
    return torch.where(x < 0, x - 0.1, x + 0.1)


@dataclass(frozen=True)
class Case:
    """One row: ``ours`` runs on scratchnet leaves, ``reference`` on torch
    requires_grad leaves (the same torch expression unless given: that is the
    point, the user's code does not change)."""

    name: str
    ours: Callable[..., torch.Tensor]
    shapes: Callable[[int], st.SearchStrategy]
    domain: Callable[[torch.Tensor], torch.Tensor] = anywhere
    max_scale: float = 1e4  # exp and powers of x overflow beyond their own limit
    reference: Callable[..., torch.Tensor] | None = None
    # False where central differences measure something else: a float32 cast
    # rounds each probe to ~1e-7 (h is 1e-6), and 0 ** x is ±inf for x < 0
    finite_differences: bool = True
    # float64 gradient rounding floor (out, dout) → tensor, where an op's own tests
    # derived and measured one; None: the plain parity contract
    gradient_floor: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    def torch_expression(self) -> Callable[..., torch.Tensor]:
        return self.reference or self.ours


def spread(max_side: int) -> st.SearchStrategy:
    """One input whose every dim has size ≥ 2: a variance with correction 1 over
    a single element is 0/0 (nan on both sides, nothing to compare)."""
    return shapes(min_dims=1, max_dims=3, max_side=max(max_side, 2)).map(
        lambda shape: [tuple(max(size, 2) for size in shape)])


ONE = one()
MIN1 = one(min_dims=1)
MIN2 = one(min_dims=2)
MATRIX = one(min_dims=2, max_dims=2)

ARITHMETIC = [
    Case("a + b", lambda a, b: a + b, pair),
    Case("a - b", lambda a, b: a - b, pair),
    Case("a * b", lambda a, b: a * b, pair),
    Case("a / b", lambda a, b: a / b, pair, nonzero),
    Case("torch.add(a, b, alpha=2.5)", lambda a, b: torch.add(a, b, alpha=2.5), pair),
    Case("a.add(b, alpha=-3)", lambda a, b: a.add(b, alpha=-3), pair),
    Case("torch.sub(a, b, alpha=0.5)", lambda a, b: torch.sub(a, b, alpha=0.5), pair),
    Case("a.sub(b)", lambda a, b: a.sub(b), pair),
    Case("torch.rsub(a, b)", lambda a, b: torch.rsub(a, b), pair),
    Case("torch.mul(a, b)", lambda a, b: torch.mul(a, b), pair),
    Case("a.mul(b)", lambda a, b: a.mul(b), pair),
    Case("torch.div(a, b)", lambda a, b: torch.div(a, b), pair, nonzero),
    Case("a.div(b)", lambda a, b: a.div(b), pair, nonzero),
    Case("torch.true_divide(a, b)", lambda a, b: torch.true_divide(a, b), pair, nonzero),
    Case("plain a * b", lambda a, b: a.detach() * b, pair),
    Case("a * plain b", lambda a, b: a * b.detach(), pair),
    Case("plain a / b", lambda a, b: a.detach() / b, pair, nonzero),
    Case("float64 a + float32 b", lambda a, b: a.double() + b.float(), pair,
         finite_differences=False),
    Case("float32 a / float64 b", lambda a, b: a.float() / b.double(), pair, nonzero,
         finite_differences=False),
    Case("x + 2.5", lambda x: x + 2.5, ONE),
    Case("2.5 + x", lambda x: 2.5 + x, ONE),
    Case("x - 3", lambda x: x - 3, ONE),
    Case("3 - x", lambda x: 3 - x, ONE),
    Case("torch.rsub(x, 2)", lambda x: torch.rsub(x, 2), ONE),
    Case("torch.add(x, 2, alpha=3)", lambda x: torch.add(x, 2, alpha=3), ONE),
    Case("x * -1.5", lambda x: x * -1.5, ONE),
    Case("-1.5 * x", lambda x: -1.5 * x, ONE),
    Case("x / 4", lambda x: x / 4, ONE),
    Case("4 / x", lambda x: 4 / x, ONE, nonzero),
    Case("x.reciprocal()", lambda x: x.reciprocal(), ONE, nonzero),
    Case("-x", lambda x: -x, ONE),
    Case("torch.neg(x)", lambda x: torch.neg(x), ONE),
    Case("+x", lambda x: +x, ONE),
    Case("x ** 2", lambda x: x ** 2, ONE),
    Case("x ** 3", lambda x: x ** 3, ONE),
    Case("x ** -1", lambda x: x ** -1, ONE, nonzero),
    Case("x ** -2", lambda x: x ** -2, ONE, nonzero),
    Case("x ** 0.5", lambda x: x ** 0.5, ONE, positive),
    Case("x ** 1.5", lambda x: x ** 1.5, ONE, positive),
    Case("x ** 0", lambda x: x ** 0, ONE),
    Case("torch.pow(x, 3)", lambda x: torch.pow(x, 3), ONE),
    Case("x.pow(2)", lambda x: x.pow(2), ONE),
    Case("torch.square(x)", lambda x: torch.square(x), ONE),
    Case("x.square()", lambda x: x.square(), ONE),
    Case("2 ** x", lambda x: 2 ** x, ONE, max_scale=10.0),
    Case("0.5 ** x", lambda x: 0.5 ** x, ONE, max_scale=10.0),
    Case("torch.pow(3, x)", lambda x: torch.pow(3, x), ONE, max_scale=10.0),
    Case("0 ** x", lambda x: 0 ** x, ONE, finite_differences=False),
]

ELEMENTWISE = [
    Case("torch.exp(x)", lambda x: torch.exp(x), ONE, max_scale=10.0),
    Case("x.exp()", lambda x: x.exp(), ONE, max_scale=10.0),
    Case("torch.log(x)", lambda x: torch.log(x), ONE, positive),
    Case("x.log()", lambda x: x.log(), ONE, positive),
    Case("torch.sqrt(x)", lambda x: torch.sqrt(x), ONE, positive),
    Case("x.sqrt()", lambda x: x.sqrt(), ONE, positive),
    Case("torch.abs(x)", lambda x: torch.abs(x), ONE),
    Case("abs(x)", lambda x: abs(x), ONE),
    Case("x.abs()", lambda x: x.abs(), ONE),
]

MATMUL = [
    Case("(M,K) @ (K,N)", lambda a, b: a @ b, matrices("MK", "KN")),
    Case("x @ w.t()", lambda x, w: x @ w.t(), matrices("MK", "NK")),
    Case("w.T @ x", lambda w, x: w.T @ x, matrices("KM", "KN")),
    Case("torch.mm(a, b)", lambda a, b: torch.mm(a, b), matrices("MK", "KN")),
    Case("a.mm(b)", lambda a, b: a.mm(b), matrices("MK", "KN")),
    Case("torch.matmul (K,) (K,)", lambda a, b: torch.matmul(a, b), matrices("K", "K")),
    Case("(M,K) @ (K,)", lambda a, b: a @ b, matrices("MK", "K")),
    Case("(K,) @ (K,N)", lambda a, b: a @ b, matrices("K", "KN")),
    Case("(B,M,K) @ (K,N)", lambda a, b: a @ b, matrices("BMK", "KN")),
    Case("(B,M,K) @ (K,)", lambda a, b: a @ b, matrices("BMK", "K")),
    Case("(M,K) @ (B,K,N)", lambda a, b: a @ b, matrices("MK", "BKN")),
    Case("(K,) @ (B,K,N)", lambda a, b: a @ b, matrices("K", "BKN")),
    Case("(B,M,K) @ (B,K,N)", lambda a, b: a @ b, matrices("BMK", "BKN")),
    Case("(B,1,M,K) @ (C,K,N)", lambda a, b: a @ b, matrices("B1MK", "CKN")),
    Case("(B,M,K) @ (B,N,K).mT", lambda a, b: a @ b.mT, matrices("BMK", "BNK")),
    Case("(B,M,K) @ plain (K,N)", lambda a, b: a @ b.detach(), matrices("BMK", "KN")),
    Case("plain (M,K) @ (B,K,N)", lambda a, b: a.detach() @ b, matrices("MK", "BKN")),
    Case("torch.bmm(a, b)", lambda a, b: torch.bmm(a, b), matrices("BMK", "BKN")),
    Case("(h @ w.t()) * h", lambda h, w: (h @ w.t()) * h, matrices("MK", "KK")),
]

REDUCTIONS = [
    Case("x.sum()", lambda x: x.sum(), ONE),
    Case("torch.sum(x)", lambda x: torch.sum(x), ONE),
    Case("x.sum(0)", lambda x: x.sum(0), ONE),
    Case("x.sum(-1, keepdim=True)", lambda x: x.sum(-1, keepdim=True), ONE),
    Case("x.sum(dim=(0, -1))", lambda x: x.sum(dim=(0, -1)), MIN2),
    Case("torch.sum(x, (1,), keepdim=True)", lambda x: torch.sum(x, (1,), keepdim=True),
         MIN2),
    Case("x.sum(dim=())", lambda x: x.sum(dim=()), ONE),
    Case("x.sum(dtype=torch.float64)", lambda x: x.sum(dtype=torch.float64), ONE),
    Case("x.mean()", lambda x: x.mean(), ONE),
    Case("torch.mean(x)", lambda x: torch.mean(x), ONE),
    Case("x.mean(0)", lambda x: x.mean(0), ONE),
    Case("x.mean(-1, keepdim=True)", lambda x: x.mean(-1, keepdim=True), ONE),
    Case("x.mean(dim=(0, -1))", lambda x: x.mean(dim=(0, -1)), MIN2),
    Case("(x ** 2).mean()", lambda x: (x ** 2).mean(), ONE),
    Case("x.var()", lambda x: x.var(), spread),
    Case("x.var(0, correction=0)", lambda x: x.var(0, correction=0), spread),
    Case("x.std()", lambda x: x.std(), spread),
    Case("torch.std(x, -1, keepdim=True)", lambda x: torch.std(x, -1, keepdim=True), spread),
    Case("x.std(unbiased=False)", lambda x: x.std(unbiased=False), spread),
    Case("x.max()", lambda x: x.max(), MIN1),
    Case("torch.min(x)", lambda x: torch.min(x), MIN1),
    Case("torch.max(x, 1).values", lambda x: torch.max(x, 1).values, MIN2),
    Case("x.min(0, keepdim=True)[0]", lambda x: x.min(0, keepdim=True)[0], MIN1),
    Case("x.max(dim=-1).values * 2", lambda x: x.max(dim=-1).values * 2, MIN1),
]

REARRANGING = [
    Case("x.view(-1)", lambda x: x.view(-1), ONE),
    Case("x.view(x.shape[0], -1)", lambda x: x.view(x.shape[0], -1), MIN1),
    Case("x.view((-1, 1))", lambda x: x.view((-1, 1)), ONE),
    Case("x.reshape(-1, 1)", lambda x: x.reshape(-1, 1), ONE),
    Case("torch.reshape(x, (-1,))", lambda x: torch.reshape(x, (-1,)), ONE),
    Case("x.view(-1).view_as(x)", lambda x: x.view(-1).view_as(x), ONE),
    Case("x.flatten()", lambda x: x.flatten(), ONE),
    Case("torch.flatten(x, 1)", lambda x: torch.flatten(x, 1), MIN2),
    Case("x.squeeze()", lambda x: x.squeeze(), ONE),
    Case("x.squeeze(0)", lambda x: x.squeeze(0), MIN1),
    Case("x.unsqueeze(0)", lambda x: x.unsqueeze(0), ONE),
    Case("torch.unsqueeze(x, -1)", lambda x: torch.unsqueeze(x, -1), ONE),
    Case("x.t()", lambda x: x.t(), one(min_dims=1, max_dims=2)),
    Case("torch.t(x)", lambda x: torch.t(x), MATRIX),
    Case("x.T", lambda x: x.T, MATRIX),
    Case("x.mT", lambda x: x.mT, MIN2),
    Case("x.transpose(0, -1)", lambda x: x.transpose(0, -1), MIN1),
    Case("torch.transpose(x, 0, 1)", lambda x: torch.transpose(x, 0, 1), MIN2),
    Case("x.permute(reversed)", lambda x: x.permute(*reversed(range(x.dim()))), MIN1),
    Case("torch.permute(x, (1, 0, ...))",
         lambda x: torch.permute(x, (1, 0, *range(2, x.dim()))), MIN2),
    Case("x.t().contiguous()", lambda x: x.t().contiguous(), MATRIX),
    Case("x.contiguous()", lambda x: x.contiguous(), ONE),
    Case("x.clone()", lambda x: x.clone(), ONE),
    Case("torch.clone(x)", lambda x: torch.clone(x), ONE),
    Case("x.expand(2, *x.shape)", lambda x: x.expand(2, *x.shape), ONE),
    Case("x.expand_as(...)", lambda x: x[:1].expand_as(x), MIN1),
    Case("torch.broadcast_to(x, (3, *x.shape))",
         lambda x: torch.broadcast_to(x, (3, *x.shape)), ONE),
    Case("x.double()", lambda x: x.double(), ONE),
    Case("x.float()", lambda x: x.float(), ONE, finite_differences=False),
    Case("x.to(torch.float64)", lambda x: x.to(torch.float64), ONE),
    Case("x.to(x.device)", lambda x: x.to(x.device), ONE),
    Case("x.cpu()", lambda x: x.cpu(), ONE),
]

INDEXING = [
    Case("x[0]", lambda x: x[0], indexable),
    Case("x[-1, ...]", lambda x: x[-1, ...], indexable),
    Case("x[..., 0]", lambda x: x[..., 0], indexable),
    Case("x[:, 1:]", lambda x: x[:, 1:], indexable),
    Case("x[::2]", lambda x: x[::2], indexable),
    Case("x[None, 1]", lambda x: x[None, 1], indexable),
    Case("x[1, :, None]", lambda x: x[1, :, None], indexable),
    Case("x[[0, 0, 2]]", lambda x: x[[0, 0, 2]], indexable),
    Case("x[tensor([2, 0, 2, 2])]", lambda x: x[torch.tensor([2, 0, 2, 2])], indexable),
    Case("x[x > 0]", lambda x: x[x > 0], indexable),
    Case("x[[0, 2, 0], [1, 1, 1]]", lambda x: x[[0, 2, 0], [1, 1, 1]], indexable),
    Case("x[1:, [0, 0]]", lambda x: x[1:, [0, 0]], indexable),
    Case("x.unbind(0)[1]", lambda x: x.unbind(0)[1], indexable),
    Case("torch.unbind(x, 1)[0]", lambda x: torch.unbind(x, 1)[0], indexable),
    Case("rows = list(x)", lambda x: list(x)[-1] * 2 + list(x)[0], indexable),
]

CASES = ARITHMETIC + ELEMENTWISE + MATMUL + REDUCTIONS + REARRANGING + INDEXING


# --------------------------------------------------------------------------------------
# the property tests


def _draw_inputs(data, case: Case, dtype: torch.dtype, scale: float, seed: int,
                 max_side: int, device: str = "cpu") -> list[torch.Tensor]:
    input_shapes = data.draw(case.shapes(max_side), label="shapes")
    scale = min(scale, case.max_scale)
    return [case.domain(seeded(shape, seed + i, dtype, scale, device))
            for i, shape in enumerate(input_shapes)]


def _torch_autograd(case: Case, inputs: list[torch.Tensor], dout_seed: int):
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    out = case.torch_expression()(*leaves)
    dout = seeded(tuple(out.shape), dout_seed, out.dtype, device=str(out.device))
    grads = torch.autograd.grad(out, leaves, dout, allow_unused=True)
    return out, list(grads), dout


def check_against_torch(case: Case, inputs: list[torch.Tensor], dout_seed: int) -> None:
    out_ref, grads_ref, dout = _torch_autograd(case, inputs, dout_seed)
    out, grads = scratchnet_grads(case.ours, inputs, dout)
    assert_parity(out, out_ref, f"{case.name} forward")
    floor = case.gradient_floor and case.gradient_floor(out_ref.detach(), dout)
    for i, (g, g_ref) in enumerate(zip(grads, grads_ref, strict=True)):
        assert_parity_with_floor(g, g_ref, floor, f"{case.name} d(input {i})")


def check_against_finite_differences(case: Case, inputs: list[torch.Tensor],
                                     dout_seed: int) -> None:
    with scratchnet.no_grad():
        out_shape = tuple(case.ours(*inputs).shape)
    dout = seeded(out_shape, dout_seed)
    _, grads = scratchnet_grads(case.ours, inputs, dout)
    numeric = finite_difference_vjp(case.ours, inputs, dout)
    for i, (g, n) in enumerate(zip(grads, numeric, strict=True)):
        if g is None:  # cut by .detach() on purpose; the torch test checks torch agrees
            continue
        assert_close_to_finite_differences(g, n, f"{case.name} d(input {i})")


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
@given(data=st.data(), dtype=dtypes, scale=scales, seed=st.integers(0, 2**16))
def test_matches_torch_autograd(device, case, data, dtype, scale, seed):
    inputs = _draw_inputs(data, case, dtype, scale, seed, max_side=6, device=device)
    check_against_torch(case, inputs, seed + 100)


@pytest.mark.parametrize("case", [c for c in CASES if c.finite_differences],
                         ids=lambda case: case.name)
@settings(max_examples=10)  # each example runs two forwards per input element
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_matches_finite_differences(case, data, seed):
    inputs = _draw_inputs(data, case, torch.float64, 1.0, seed, max_side=3)
    check_against_finite_differences(case, inputs, seed + 100)


# --------------------------------------------------------------------------------------
# indexing with repeated indices, spelled out


def test_repeated_indices_add_their_gradients():
    x = scratchnet.leaf(torch.arange(4.0, dtype=torch.float64))
    out = x[[0, 0, 3, 0]] * torch.tensor([1.0, 10.0, 100.0, 1000.0], dtype=torch.float64)
    (dx,) = scratchnet.grad(out, [x], torch.ones(4, dtype=torch.float64))
    # x[0] was taken three times (weights 1, 10, 1000), x[3] once, x[1], x[2] never
    expected = torch.tensor([1011.0, 0.0, 0.0, 100.0], dtype=torch.float64)
    torch.testing.assert_close(dx, expected, rtol=0, atol=0)


# --------------------------------------------------------------------------------------
# recording off, unsupported ops, in-place ops, results that carry no gradient


def test_no_grad_gives_plain_tensors():
    x = scratchnet.leaf(torch.randn(3, 4))
    w = scratchnet.leaf(torch.randn(5, 4))
    with scratchnet.no_grad():
        results = [x + 1, x * x, x @ w.t(), x.sum(), x[0], x.view(-1), x.exp(), x.t(),
                   x.mean(0), 2 / x, x ** 2, x.double()]
    for r in results:
        assert type(r) is torch.Tensor, f"{r!r} is {type(r).__name__} under no_grad"
    with scratchnet.no_grad(), scratchnet.enable_grad():
        assert isinstance(x + 1, Tensor), "enable_grad inside no_grad records again"


@pytest.mark.parametrize("name, expression", [
    ("torch.cumsum", lambda x: torch.cumsum(x, 0)),
    ("torch.max(x, y), the elementwise maximum", lambda x: torch.max(x, x * 2)),
    ("torch.cat", lambda x: torch.cat([x, x])),
    ("torch.nn.functional.relu", lambda x: torch.nn.functional.relu(x)),
    ("x ** tensor", lambda x: x ** x),
    ("x.div(2, rounding_mode='floor')", lambda x: x.div(2, rounding_mode="floor")),
    ("x.view(torch.float16)", lambda x: x.view(torch.float16)),
    ("x.to('meta')", lambda x: x.to("meta")),
])
def test_ops_without_a_backward_raise(name, expression):
    x = scratchnet.leaf(torch.randn(3, 4))
    with pytest.raises(NotDifferentiableError):
        expression(x)
    with scratchnet.no_grad():  # with recording off the plain op runs
        assert type(expression(x)) is torch.Tensor, name


@pytest.mark.parametrize("name, expression", [
    ("x.add_(1)", lambda x: x.add_(1)),
    ("x[0] = 1", lambda x: x.__setitem__(0, 1.0)),
    ("x += 1", lambda x: x.__iadd__(1)),
    ("torch.add(x, 1, out=...)", lambda x: torch.add(x, 1, out=torch.empty(3, 4))),
])
def test_in_place_ops_raise_and_leave_the_values_alone(name, expression):
    values = torch.randn(3, 4)
    x = scratchnet.leaf(values.clone())
    with pytest.raises(NotDifferentiableError, match="in-place"):
        expression(x)
    assert torch.equal(plain(x), values), f"{name} changed the tensor before raising"


def test_results_without_a_gradient_pass_through_as_plain_values():
    x = scratchnet.leaf(torch.tensor([[1.0, -2.0, 3.0], [0.5, 4.0, -1.0]]))
    out = x * 2  # a tensor made by an op, not only a leaf
    for t in (x, out):
        for text in (repr(t), str(t), f"{t}"):
            assert text.startswith("tensor([[ 1.0000, -2.0000") or text.startswith(
                "tensor([[ 2., -4."), text
        assert isinstance(t[0, 0].item(), float)
        assert f"{t[0, 0]:.1f}" in ("1.0", "2.0")
        assert type(t.argmax()) is torch.Tensor and t.argmax().item() == 4
        assert type(t > 0) is torch.Tensor and (t > 0).dtype == torch.bool
        assert type(t == t) is torch.Tensor
        assert type(t.detach()) is torch.Tensor and type(t.data) is torch.Tensor
        assert t.shape == (2, 3) and t.size() == (2, 3) and t.size(1) == 3
        assert t.dim() == 2 and t.numel() == 6 and len(t) == 2
        assert t.tolist() == plain(t).tolist()
        assert (t.numpy() == plain(t).numpy()).all()
        assert t.dtype == torch.float32 and t.device.type == "cpu"
        assert not t.requires_grad and t.grad_fn is None
    assert "backward=<MulBackward>" in repr(out)


def test_to_without_a_change_returns_the_tensor_itself():
    x = scratchnet.leaf(torch.randn(2, 3))
    assert x.to(torch.float32) is x and x.float() is x and x.cpu() is x
    assert x.to(torch.int64).dtype == torch.int64  # an integer result: plain, no gradient
    assert type(x.to(torch.int64)) is torch.Tensor


def test_bad_shapes_and_dtypes_are_named():
    a = scratchnet.leaf(torch.randn(2, 3))
    with pytest.raises(ShapeError, match=r"\(2, 3\) and \(4,\)"):
        a + torch.randn(4)
    with pytest.raises(ShapeError, match=r"\(2, 3\) and \(2, 3\)"):
        a @ a
    with pytest.raises(ShapeError, match="2-D"):
        torch.mm(a, torch.randn(3))
    with pytest.raises(RuntimeError, match="dtype"):  # torch's message (see _check_matmul)
        a @ torch.randn(3, 2, dtype=torch.float64)


def test_parameters_meeting_tape_tensors_get_their_gradients():
    from scratchnet import nn

    weight = nn.Parameter(torch.randn(4, 3, dtype=torch.float64))
    x = scratchnet.leaf(torch.randn(2, 4, dtype=torch.float64))

    def forward(x, weight):
        return ((x @ weight) * 2).sum() + (weight * x.sum() / weight).mean()

    forward(x, weight).backward()
    weight_ref = weight.detach().clone().requires_grad_(True)
    x_ref = plain(x).clone().requires_grad_(True)
    forward(x_ref, weight_ref).backward()
    assert_parity(weight.grad, weight_ref.grad, "parameter dweight")
    assert_parity(x.grad, x_ref.grad, "leaf dx")


def test_torch_ops_on_a_parameter_alone_stay_on_the_tape():
    from scratchnet import nn

    weight = nn.Parameter(torch.randn(4, 3))
    assert isinstance(weight.t(), Tensor) and isinstance((weight ** 2).sum(), Tensor)


# --------------------------------------------------------------------------------------
# torch activations on tape tensors → scratchnet.nn.functional's ops


def softmax_floor(dim: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """softmax's float64 gradient loses accuracy to cancellation when a slice is
    nearly one-hot; tests/test_softmax.py derives and measures the floor."""
    return lambda out, dout: softmax_backward_floor(out, dout, dim)


ACTIVATIONS = [
    Case("torch.sigmoid(x)", lambda x: torch.sigmoid(x), ONE),
    Case("x.sigmoid()", lambda x: x.sigmoid(), ONE),
    Case("torch.tanh(x)", lambda x: torch.tanh(x), ONE),
    Case("x.tanh()", lambda x: x.tanh(), ONE),
    Case("torch.relu(x)", lambda x: torch.relu(x), ONE),
    Case("x.relu()", lambda x: x.relu(), ONE),
    Case("torch.softmax(x, -1)", lambda x: torch.softmax(x, -1), MIN1,
         gradient_floor=softmax_floor(-1)),
    Case("x.softmax(0)", lambda x: x.softmax(0), MIN1, gradient_floor=softmax_floor(0)),
    Case("torch.softmax(x, 1, dtype=torch.float64)",
         lambda x: torch.softmax(x, 1, dtype=torch.float64), MIN2,
         gradient_floor=softmax_floor(1)),
    Case("torch.log_softmax(x, -1)", lambda x: torch.log_softmax(x, -1), MIN1),
    Case("x.log_softmax(dim=0)", lambda x: x.log_softmax(dim=0), MIN1),
]


@pytest.mark.parametrize("case", ACTIVATIONS, ids=lambda case: case.name)
@given(data=st.data(), dtype=dtypes, scale=scales, seed=st.integers(0, 2**16))
def test_activations_map_to_scratchnet_functional(case, data, dtype, scale, seed):
    inputs = _draw_inputs(data, case, dtype, scale, seed, max_side=6)
    check_against_torch(case, inputs, seed + 100)


@pytest.mark.parametrize("case", ACTIVATIONS, ids=lambda case: case.name)
@settings(max_examples=5)
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_activations_match_finite_differences(case, data, seed):
    inputs = _draw_inputs(data, case, torch.float64, 1.0, seed, max_side=3)
    check_against_finite_differences(case, inputs, seed + 100)


def test_activations_record_scratchnet_functional_nodes():
    x = scratchnet.leaf(torch.randn(2, 3))
    for out, node in [(torch.sigmoid(x), "Sigmoid"), (x.tanh(), "Tanh"),
                      (torch.relu(x), "ReLU"), (x.softmax(1), "Softmax"),
                      (torch.log_softmax(x, 1), "LogSoftmax")]:
        assert out._node.name == node, f"{node}: recorded {out._node.name}"
