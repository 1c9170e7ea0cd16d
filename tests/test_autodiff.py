"""The tape itself (scratchnet.autodiff): how gradients flow, not any one op.

A tensor used twice gets the sum of both paths; each backward runs once per
node however many paths reach it; gradients accumulate across backward calls
(exactly, zero tolerance); the tape is released after a backward unless
``retain_graph``; bad calls raise named errors; ``scratchnet.grad`` leaves
``.grad`` alone; ``Module.backward`` stops at the module's input; nothing
depends on torch's autograd being on; no gradient nobody asked for is computed;
and no two leaves ever share a ``.grad`` tensor.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import scratchnet
from scratchnet import nn
from scratchnet.autodiff import Context, Function, Tensor, plain
from scratchnet.errors import BackwardError, ShapeError
from scratchnet.nn import functional as F
from scratchnet.nn.functional.linear import Linear as LinearFunction
from tests.oracles import assert_parity
from tests.strategies import dtypes, seeded

# --------------------------------------------------------------------------------------
# helpers: a small MLP and its torch.nn twin with the same weights


def mlp_pair(seed: int, dtype: torch.dtype = torch.float64, sizes=(4, 5, 3)):
    """scratchnet and torch.nn ``Linear-ReLU-Linear`` with identical weights
    (same seed: the default init is bit-identical, see tests/test_linear.py)."""
    d_in, hidden, d_out = sizes
    torch.manual_seed(seed)
    ours = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))
    torch.manual_seed(seed)
    ref = torch.nn.Sequential(torch.nn.Linear(d_in, hidden), torch.nn.ReLU(),
                              torch.nn.Linear(hidden, d_out))
    return ours.to(dtype), ref.to(dtype)


def assert_same_parameter_grads(ours: nn.Module, ref: torch.nn.Module, what: str) -> None:
    for (name, p), (_, p_ref) in zip(ours.named_parameters(), ref.named_parameters(),
                                     strict=True):
        assert_parity(p.grad, p_ref.grad, f"{what}: d{name}")


# --------------------------------------------------------------------------------------
# several paths


@given(batch=st.integers(1, 4), d_in=st.integers(1, 5), hidden=st.integers(1, 5),
       dtype=dtypes, seed=st.integers(0, 2**16))
def test_a_tensor_used_twice_gets_the_sum_of_both_paths(batch, d_in, hidden, dtype, seed):
    """h = linear(x, W1, b1); out = linear(h, W2) + h: h's gradient is the sum of
    the path through W2 and the direct one."""
    x, w1, b1, w2 = (seeded(shape, seed + i, dtype) for i, shape in enumerate(
        [(batch, d_in), (hidden, d_in), (hidden,), (hidden, hidden)]))
    dout = seeded((batch, hidden), seed + 9, dtype)

    leaves = [scratchnet.leaf(t.clone()) for t in (x, w1, b1, w2)]
    h = F.linear(leaves[0], leaves[1], leaves[2])
    out = F.linear(h, leaves[3]) + h
    out.backward(dout)

    refs = [t.clone().requires_grad_(True) for t in (x, w1, b1, w2)]
    h_ref = torch.nn.functional.linear(refs[0], refs[1], refs[2])
    out_ref = torch.nn.functional.linear(h_ref, refs[3]) + h_ref
    out_ref.backward(dout)

    assert_parity(out, out_ref, "out")
    for name, leaf, ref in zip(("dx", "dW1", "db1", "dW2"), leaves, refs, strict=True):
        assert_parity(leaf.grad, ref.grad, name)


class CountingIdentity(Function):
    """out = x; counts its backward calls."""

    calls = 0

    @staticmethod
    def forward(ctx: Context, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        CountingIdentity.calls += 1
        return (dout,)


@given(shape=st.sampled_from([(3,), (2, 3), (1, 4)]), seed=st.integers(0, 2**16))
def test_diamond_graph_runs_each_backward_once_with_both_paths_summed(shape, seed):
    """a → top → (left: top·2, right: exp(top)) → out = Σ left ⊙ right."""
    a = seeded(shape, seed)
    CountingIdentity.calls = 0
    a_leaf = scratchnet.leaf(a.clone())
    top = CountingIdentity.apply(a_leaf)
    left, right = top * 2, top.exp()
    out = (left * right).sum()
    out.backward()
    assert CountingIdentity.calls == 1, "the shared node's backward must run once"

    a_ref = a.clone().requires_grad_(True)
    ((a_ref * 2) * a_ref.exp()).sum().backward()
    assert_parity(out, ((a * 2) * a.exp()).sum(), "diamond out")
    assert_parity(a_leaf.grad, a_ref.grad, "diamond da")


def test_two_diamonds_in_a_row():
    a = seeded((2, 3), 7)
    a_leaf = scratchnet.leaf(a.clone())
    b = a_leaf.exp() + a_leaf * 3  # first diamond
    c = (b.sum(0) * b.mean(0)).sum()  # second diamond
    a_ref = a.clone().requires_grad_(True)
    b_ref = a_ref.exp() + a_ref * 3
    c_ref = (b_ref.sum(0) * b_ref.mean(0)).sum()
    c.backward()
    c_ref.backward()
    assert_parity(a_leaf.grad, a_ref.grad, "chained diamonds da")


# --------------------------------------------------------------------------------------
# accumulation, retain_graph, bad calls


def test_gradients_accumulate_exactly_across_two_backward_calls():
    model, _ = mlp_pair(0)
    x = scratchnet.leaf(seeded((3, 4), 1))
    firsts = None
    for _ in range(2):
        out = (model(x) ** 2).mean()
        out.backward()
        if firsts is None:
            firsts = [p.grad.clone() for p in model.parameters()] + [x.grad.clone()]
    for first, now in zip(firsts, [p.grad for p in model.parameters()] + [x.grad],
                          strict=True):
        torch.testing.assert_close(now, 2 * first, rtol=0, atol=0)


def test_retain_graph_allows_a_second_backward_and_without_it_the_second_raises():
    model, _ = mlp_pair(1)
    x = seeded((2, 4), 2)
    out = model(x).sum()
    out.backward(retain_graph=True)
    first = model[0].weight.grad.clone()
    out.backward()  # the tape was kept
    torch.testing.assert_close(model[0].weight.grad, 2 * first, rtol=0, atol=0)
    with pytest.raises(BackwardError, match="retain_graph"):
        out.backward()  # the second call released it


def test_backward_on_a_non_scalar_without_gradient_raises():
    out = scratchnet.leaf(torch.randn(3)) * 2
    with pytest.raises(BackwardError, match=r"scalar.*\(3,\)"):
        out.backward()


def test_gradient_of_the_wrong_shape_raises():
    out = scratchnet.leaf(torch.randn(2, 3)) * 2
    with pytest.raises(ShapeError, match=r"\(3, 2\).*\(2, 3\)"):
        out.backward(torch.ones(3, 2))


def test_backward_of_something_not_on_the_tape_raises():
    with scratchnet.no_grad():
        out = scratchnet.leaf(torch.randn(3)).sum()
    assert type(out) is torch.Tensor
    with pytest.raises(BackwardError, match="not on scratchnet's tape"):
        scratchnet.autodiff.run_backward(out)


def test_create_graph_and_inputs_are_refused():
    out = (scratchnet.leaf(torch.randn(3)) * 2).sum()
    with pytest.raises(BackwardError, match="create_graph"):
        out.backward(create_graph=True)
    with pytest.raises(BackwardError, match="inputs"):
        out.backward(inputs=[out])


def test_backward_from_a_leaf_itself_copies_the_gradient():
    x = scratchnet.leaf(torch.zeros(3))
    gradient = torch.ones(3)
    x.backward(gradient)
    gradient.mul_(5)  # the caller's tensor is not kept
    torch.testing.assert_close(x.grad, torch.ones(3), rtol=0, atol=0)


# --------------------------------------------------------------------------------------
# scratchnet.grad and Module.backward


def test_grad_returns_gradients_and_leaves_dot_grad_untouched():
    model, ref = mlp_pair(3)
    x = seeded((2, 4), 4)
    x_leaf = scratchnet.leaf(x.clone())
    out = model(x_leaf).sum()
    previous = torch.full_like(model[2].bias, 7.0)
    model[2].bias.grad = previous
    weight = model[0].weight
    dx, dweight = scratchnet.grad(out, [x_leaf, weight])
    dx_again, _ = scratchnet.grad(out, [x_leaf, weight])  # the tape is kept

    x_ref = x.clone().requires_grad_(True)
    dx_ref, dweight_ref = torch.autograd.grad(ref(x_ref).sum(), [x_ref, ref[0].weight])
    assert_parity(dx, dx_ref, "grad dx")
    assert_parity(dweight, dweight_ref, "grad dweight")
    assert_parity(dx_again, dx_ref, "grad dx, second call")
    assert x_leaf.grad is None and weight.grad is None and model[2].weight.grad is None
    assert model[2].bias.grad is previous and torch.equal(previous, torch.full((3,), 7.0,
                                                                          dtype=previous.dtype))


def test_grad_of_an_intermediate_tensor():
    x = scratchnet.leaf(seeded((3,), 5))
    h = x.exp()
    out = (h * h).sum()
    (dh,) = scratchnet.grad(out, [h])
    torch.testing.assert_close(dh, 2 * plain(h), rtol=0, atol=0)


def test_module_backward_returns_the_input_gradient():
    model, ref = mlp_pair(6)
    x = seeded((3, 4), 7)
    grad_output = seeded((3, 3), 8)
    out = model(x)  # noqa: F841 (Module.backward needs the output alive)
    dx = model.backward(grad_output)

    x_ref = x.clone().requires_grad_(True)
    ref(x_ref).backward(grad_output)
    assert_parity(dx, x_ref.grad, "Module.backward dx")
    assert_same_parameter_grads(model, ref, "Module.backward")


def test_submodule_backward_stops_at_its_input():
    """Inside a bigger forward, a layer's backward fills only its own parameters and
    returns d(its input), not reaching the layers before it."""
    model, ref = mlp_pair(9)
    first, last = model[0], model[2]
    x = seeded((3, 4), 10)
    grad_output = seeded((3, 3), 11)
    hidden = F.relu(first(x))
    out = last(hidden)  # noqa: F841 (Module.backward needs the output alive)
    dhidden = last.backward(grad_output)

    hidden_ref = ref[1](ref[0](x)).detach().requires_grad_(True)
    ref[2](hidden_ref).backward(grad_output)
    assert_parity(dhidden, hidden_ref.grad, "last layer's d input")
    assert_parity(last.weight.grad, ref[2].weight.grad, "last layer's dweight")
    assert_parity(last.bias.grad, ref[2].bias.grad, "last layer's dbias")
    assert first.weight.grad is None and first.bias.grad is None, (
        "the first layer is before the submodule's input: it must not get gradients")


def test_submodule_backward_inside_sequential():
    """A layer's input made inside Sequential.forward exists nowhere else: the
    layer holds it, so ``model[2].backward`` works after the whole forward."""
    model, ref = mlp_pair(9)
    x, grad_output = seeded((3, 4), 10), seeded((3, 3), 11)
    out = model(x)  # noqa: F841 (Module.backward needs the output alive)
    dhidden = model[2].backward(grad_output)

    hidden_ref = ref[1](ref[0](x)).detach().requires_grad_(True)
    ref[2](hidden_ref).backward(grad_output)
    assert_parity(dhidden, hidden_ref.grad, "model[2].backward d input")
    assert_parity(model[2].weight.grad, ref[2].weight.grad, "model[2] dweight")
    assert model[0].weight.grad is None, "model[0] is before model[2]'s input"


def test_module_backward_before_forward_raises():
    with pytest.raises(BackwardError, match="before forward"):
        nn.Linear(2, 3).backward(torch.ones(1, 3))


# --------------------------------------------------------------------------------------
# torch's autograd off; no gradient that nobody asked for


def _train_step(model: nn.Module, x: torch.Tensor, grad_output: torch.Tensor):
    out = model(x)
    dx = model.backward(grad_output)
    return [out, dx] + [p.grad for p in model.parameters()]


@pytest.mark.parametrize("torch_grad_mode", [
    pytest.param(lambda: torch.autograd.set_grad_enabled(False), id="set_grad_enabled"),
    pytest.param(torch.no_grad, id="no_grad"),
])
def test_works_the_same_with_torch_autograd_disabled(torch_grad_mode):
    x, grad_output = seeded((5, 4), 12), seeded((5, 3), 13)
    with_autograd = _train_step(mlp_pair(14)[0], x, grad_output)
    with torch_grad_mode():
        without_autograd = _train_step(mlp_pair(14)[0], x, grad_output)
        loss_model = mlp_pair(14)[0]
        loss = (loss_model(x) ** 2).mean()
        loss.backward()
    for a, b in zip(with_autograd, without_autograd, strict=True):
        torch.testing.assert_close(plain(a), plain(b), rtol=0, atol=0)
    for t in with_autograd + without_autograd + [loss] + [
            p.grad for p in loss_model.parameters()]:
        assert not t.requires_grad and t.grad_fn is None, "scratchnet used torch autograd"


def test_first_layer_input_gradient_is_not_computed_by_loss_backward(monkeypatch):
    """A training step asks for parameter gradients only: the first Linear's
    backward is told its input needs none (ctx.needs_input_grad), so dx is never
    computed; asking for it (a leaf input, or Module.backward) turns it on."""
    asked = []
    original = LinearFunction.backward

    def recording_backward(ctx, dout):
        asked.append(ctx.needs_input_grad[0])
        grads = original(ctx, dout)
        assert (grads[0] is not None) == ctx.needs_input_grad[0]
        return grads

    monkeypatch.setattr(LinearFunction, "backward", staticmethod(recording_backward))
    model, _ = mlp_pair(15)
    x = seeded((2, 4), 16)

    model(x).sum().backward()
    assert asked == [True, False], "backward order: last layer, then first layer"

    asked.clear()
    model(scratchnet.leaf(x.clone())).sum().backward()
    assert asked == [True, True], "a leaf input wants its gradient"

    asked.clear()
    out = model(x)  # noqa: F841 (Module.backward needs the output alive)
    model.backward(torch.ones(2, 3))
    assert asked == [True, True], "Module.backward returns d input"


# --------------------------------------------------------------------------------------
# leaves never share a .grad tensor (a backward may pass dout through to several)


def test_leaves_fed_the_same_gradient_get_separate_grad_tensors():
    a, b = scratchnet.leaf(torch.ones(3)), scratchnet.leaf(torch.ones(3))
    (a + b).sum().backward()  # add hands the same dout to a and b
    assert a.grad.untyped_storage().data_ptr() != b.grad.untyped_storage().data_ptr()
    a.grad.mul_(5)  # e.g. gradient clipping, in place
    torch.testing.assert_close(b.grad, torch.ones(3), rtol=0, atol=0)


def test_leaves_fed_a_view_of_the_gradient_own_their_grad():
    a, b = scratchnet.leaf(torch.ones(2, 3)), scratchnet.leaf(torch.ones(2, 3))
    out = a.view(-1).view(2, 3) + b  # reshape's backward passes a view of dout
    out.backward(torch.ones(2, 3))
    assert a.grad.untyped_storage().data_ptr() != b.grad.untyped_storage().data_ptr()


def test_expanded_gradient_can_be_accumulated_into():
    """sum's backward returns dout expanded (stride 0); a second backward adds into
    .grad in place, which needs a real tensor."""
    x = scratchnet.leaf(torch.zeros(2, 3))
    x.sum().backward()
    x.sum().backward()
    assert x.grad.is_contiguous()
    torch.testing.assert_close(x.grad, torch.full((2, 3), 2.0), rtol=0, atol=0)


def test_same_leaf_twice_in_one_op():
    x = scratchnet.leaf(torch.tensor([1.0, 2.0]))
    (x + x).backward(torch.tensor([1.0, 10.0]))
    torch.testing.assert_close(x.grad, torch.tensor([2.0, 20.0]), rtol=0, atol=0)


def test_tape_tensors_are_tensors_with_no_torch_autograd_state():
    x = scratchnet.leaf(torch.randn(2, 2))
    for t in (x, x * 2, (x * 2).sum()):
        assert isinstance(t, Tensor) and isinstance(t, torch.Tensor)
        assert not t.requires_grad and t.grad_fn is None


# --------------------------------------------------------------------------------------
# gradient-ready callbacks (what data-parallel training starts its all_reduce from)


def test_gradient_ready_fires_once_per_leaf_after_its_last_contribution():
    """Each watched parameter's callback fires once per backward, when its .grad
    is final — the last layer's before the first layer's backward has run — and
    a weight used twice fires only after both uses."""
    model, _ = mlp_pair(5)
    first, last = model[0], model[2]
    events: list[tuple[str, torch.Tensor | None]] = []
    handles = [
        scratchnet.autodiff.on_gradient_ready(
            p, lambda leaf, name=name: events.append((name, leaf.grad.clone())))
        for name, p in model.named_parameters()]
    x = seeded((3, 4), 6)
    shared = nn.Linear(3, 3).double()
    out = last(F.relu(first(x)))
    loss = (shared(shared(out)) * 1.0).sum()
    watched = scratchnet.autodiff.on_gradient_ready(
        shared.weight, lambda leaf: events.append(("shared.weight", leaf.grad.clone())))
    loss.backward()

    names = [name for name, _ in events]
    assert sorted(names) == sorted(["0.weight", "0.bias", "2.weight", "2.bias",
                                    "shared.weight"]), names
    assert names.index("2.weight") < names.index("0.weight"), names
    params = {**dict(model.named_parameters()), "shared.weight": shared.weight}
    for name, grad_then in events:  # the .grad seen by the callback is the final one
        assert torch.equal(grad_then, params[name].grad), name

    for handle in [*handles, watched]:
        handle.remove()
    events.clear()
    model.zero_grad()
    last(F.relu(first(x))).sum().backward()
    assert events == [], "removed callbacks must not fire"
