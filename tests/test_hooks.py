"""Module hooks against torch.nn.Module's: on every reference model, the sequence
of (module path, hook kind, tensors) recorded by forward pre-hooks, forward
hooks and full backward hooks on every submodule equals torch's, shapes and
values (parity tolerance); hooks that return replacements change the forward
and the gradients as torch's do; handles remove hooks; misuse is named."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch

import scratchnet
from reference.models import MODELS
from scratchnet import nn
from scratchnet.errors import BackwardError, ShapeError
from scratchnet.models import seed_models, sequential_network
from scratchnet.nn import functional as F
from tests.oracles import assert_parity
from tests.strategies import seeded

OURS = {**vars(seed_models(nn, F)), "SequentialNetwork": lambda: sequential_network(nn)}
NO_INPUT_GRAD = "no inputs require gradients"  # both libraries' warning contains it


def model_pair(name: str, dtype: torch.dtype, seed: int = 0):
    """The same reference model in scratchnet and torch.nn, same initial weights
    (each library draws them in the same order from the same seed)."""
    torch.manual_seed(seed)
    ours = OURS[name]().to(dtype)
    torch.manual_seed(seed)
    ref = MODELS[name]().to(dtype)
    return ours, ref


def batch_for(model, dtype: torch.dtype, seed: int = 1):
    """Images (B, 1, 28, 28) for the models that flatten, (B, 784) for the others."""
    flattens = any(name.endswith("flatten") for name, _ in model.named_modules())
    shape = (4, 1, 28, 28) if flattens else (4, 784)
    return seeded(shape, seed, dtype), torch.tensor([3, 0, 9, 3])


def tensors_of(values) -> list[torch.Tensor | None]:
    """Every entry of a hook argument as a detached plain copy (None stays None,
    non-tensors are dropped); the copy keeps what the hook saw at that moment."""
    if isinstance(values, torch.Tensor):
        values = (values,)
    return [None if v is None else scratchnet.autodiff.plain(v).detach().clone()
            for v in values if v is None or isinstance(v, torch.Tensor)]


def record_all_hooks(model) -> tuple[list, list]:
    """Register all three hook kinds on every module; returns (log, handles). Each
    log entry is (module path, hook kind, [tensors ...])."""
    log, handles = [], []
    for path, module in model.named_modules():
        def pre(_module, args, path=path):
            log.append((path, "forward_pre", tensors_of(args)))

        def forward(_module, args, output, path=path):
            log.append((path, "forward", tensors_of(args) + tensors_of(output)))

        def backward(_module, grad_input, grad_output, path=path):
            log.append((path, "full_backward",
                        tensors_of(grad_input) + tensors_of(grad_output)))

        handles += [module.register_forward_pre_hook(pre),
                    module.register_forward_hook(forward),
                    module.register_full_backward_hook(backward)]
    return log, handles


def assert_same_hook_sequence(ours: list, ref: list) -> None:
    assert [entry[:2] for entry in ours] == [entry[:2] for entry in ref], (
        "hooks fired in a different order or set")
    for (path, kind, tensors), (_, _, tensors_ref) in zip(ours, ref, strict=True):
        where = f"{path or '<model>'} {kind}"
        assert len(tensors) == len(tensors_ref), f"{where}: number of tensors"
        for i, (t, t_ref) in enumerate(zip(tensors, tensors_ref, strict=True)):
            assert_parity(t, t_ref, f"{where} tensor {i}")


def run_step(model, loss_fn, x, target, input_needs_grad: bool):
    """Forward, CrossEntropy, backward; returns the input leaf (or x)."""
    if input_needs_grad:
        x = (scratchnet.leaf(x.clone()) if isinstance(model, nn.Module)
             else x.clone().requires_grad_(True))
    loss_fn(model(x), target).backward()
    return x


@pytest.mark.parametrize("input_needs_grad", [False, True], ids=["x", "x_requires_grad"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_hook_sequence_equals_torch(name, dtype, input_needs_grad):
    ours, ref = model_pair(name, dtype)
    x, target = batch_for(ours, dtype)
    log, _ = record_all_hooks(ours)
    log_ref, _ = record_all_hooks(ref)
    with warnings.catch_warnings():
        # both warn when a hook fires with grad_input all None (model input)
        warnings.filterwarnings("ignore", message=f".*{NO_INPUT_GRAD}")
        run_step(ours, nn.CrossEntropyLoss(), x, target, input_needs_grad)
        run_step(ref, torch.nn.CrossEntropyLoss(), x, target, input_needs_grad)
    assert_same_hook_sequence(log, log_ref)
    kinds = {kind for _, kind, _ in log}
    assert kinds == {"forward_pre", "forward", "full_backward"}
    backward_paths = [path for path, kind, _ in log if kind == "full_backward"]
    assert len(backward_paths) == len(set(backward_paths)), "one backward hook per call"


@pytest.mark.parametrize("name", ["NeuralNetwork", "Network"])
def test_hooks_on_the_loss_module_see_zeros_for_the_target(name):
    """torch materialises a gradient for every tensor argument: the integer
    target's grad_input entry is integer zeros, not None."""
    ours, ref = model_pair(name, torch.float64)
    x, target = batch_for(ours, torch.float64)
    loss, loss_ref = nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    log, _ = record_all_hooks(loss)
    log_ref, _ = record_all_hooks(loss_ref)
    loss(ours(x), target).backward()
    loss_ref(ref(x), target).backward()
    assert_same_hook_sequence(log, log_ref)
    grad_input = log[-1][2]
    assert grad_input[1].dtype == torch.int64 and not grad_input[1].any()


def two_in_two_out(lib):
    class TwoInTwoOut(lib.Module):
        """Uses only its first input; its second output is a scalar."""

        def forward(self, a, b, scale):
            return a * scale, (a * 3).sum()

    return TwoInTwoOut()


def test_unused_inputs_get_zeros_and_unreached_outputs_none_as_in_torch():
    seen = {}
    for lib, make_leaf in ((nn, scratchnet.leaf),
                           (torch.nn, lambda t: t.requires_grad_(True))):
        module = two_in_two_out(lib)
        module.register_full_backward_hook(
            lambda _m, gi, go, lib=lib: seen.update({lib: (gi, go)}))
        a, b = make_leaf(seeded((3,), 0)), make_leaf(seeded((2,), 1))
        first, _ = module(a, b, 2.0)
        first.sum().backward()
    (gi, go), (gi_ref, go_ref) = seen[nn], seen[torch.nn]
    assert gi[2] is None and gi_ref[2] is None, "a float argument is not a tensor"
    assert go[1] is None and go_ref[1] is None, "the unused output got no gradient"
    for i in range(2):
        assert_parity(gi[i], gi_ref[i], f"grad_input[{i}]")
    assert_parity(go[0], go_ref[0], "grad_output[0]")
    assert not gi[1].any(), "b is unused: zeros"


def test_the_model_input_warns_as_torch_does():
    ours, ref = model_pair("SingleLayerNN", torch.float64)
    x, target = batch_for(ours, torch.float64)
    for model, loss_fn in ((ours, nn.CrossEntropyLoss()),
                           (ref, torch.nn.CrossEntropyLoss())):
        model.register_full_backward_hook(lambda *_: None)
        with pytest.warns(UserWarning, match=NO_INPUT_GRAD):
            loss_fn(model(x), target).backward()


# ------------------------------------------------------------------ returned values


def double_args(_module, args):
    return tuple(2 * a for a in args)


def add_one_to_output(_module, _args, output):
    return output + 1


def halve_grad_input(_module, grad_input, _grad_output):
    return tuple(None if g is None else g / 2 for g in grad_input)


@pytest.mark.parametrize("register, hook, layer", [
    ("register_forward_pre_hook", double_args, "linear_relu_stack.2"),
    ("register_forward_hook", add_one_to_output, "linear_relu_stack.1"),
    ("register_full_backward_hook", halve_grad_input, "linear_relu_stack.2"),
    ("register_full_backward_hook", halve_grad_input, "linear_relu_stack"),
])
def test_returned_values_replace_args_output_and_grad_input(register, hook, layer):
    ours, ref = model_pair("NeuralNetwork", torch.float64)
    x, target = batch_for(ours, torch.float64)
    getattr(ours.get_submodule(layer), register)(hook)
    getattr(ref.get_submodule(layer), register)(hook)
    x_leaf = run_step(ours, nn.CrossEntropyLoss(), x, target, True)
    x_ref = run_step(ref, torch.nn.CrossEntropyLoss(), x, target, True)
    assert_parity(x_leaf.grad, x_ref.grad, f"{register} on {layer}: dx")
    for (name, p), (_, p_ref) in zip(ours.named_parameters(), ref.named_parameters(),
                                     strict=True):
        assert_parity(p.grad, p_ref.grad, f"{register} on {layer}: d{name}")


def test_unmodified_gradients_are_unchanged_by_hooks():
    plain_model, _ = model_pair("FCNetwork", torch.float64)
    hooked, _ = model_pair("FCNetwork", torch.float64)
    record_all_hooks(hooked)
    x, target = batch_for(plain_model, torch.float64)
    for model in (plain_model, hooked):
        run_step(model, nn.CrossEntropyLoss(), x, target, True)
    for (name, p), (_, q) in zip(plain_model.named_parameters(),
                                 hooked.named_parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), f"d{name} changed by recording hooks"


def test_pre_hook_returning_a_single_tensor_is_wrapped_in_a_tuple():
    layer = nn.Linear(3, 2)
    seen = []
    layer.register_forward_pre_hook(lambda _m, args: args[0] * 0)
    layer.register_forward_hook(lambda _m, args, _out: seen.append(args))
    out = layer(torch.ones(4, 3))
    assert isinstance(seen[0], tuple) and len(seen[0]) == 1
    assert torch.equal(scratchnet.autodiff.plain(out),
                       layer.bias.detach().expand(4, 2))


@pytest.mark.parametrize("lib", [nn, torch.nn], ids=["scratchnet", "torch"])
def test_hooks_with_kwargs_and_prepend_follow_torch(lib):
    calls = []
    layer = lib.Linear(3, 2)
    layer.register_forward_pre_hook(lambda *_: calls.append("second"))
    layer.register_forward_pre_hook(lambda *_: calls.append("first"), prepend=True)

    def with_kwargs(_module, args, kwargs, output):
        calls.append(("kwargs", len(args), tuple(kwargs), tuple(output.shape)))

    layer.register_forward_hook(with_kwargs, with_kwargs=True)
    layer(torch.ones(1, 3))
    assert calls == ["first", "second", ("kwargs", 1, (), (1, 2))]


# ------------------------------------------------------------------ handles, calls


def counting_hooks(module) -> tuple[dict, list]:
    counts = {"forward_pre": 0, "forward": 0, "full_backward": 0}

    def bump(kind: str) -> Callable:
        def hook(*_):
            counts[kind] += 1
        return hook

    handles = [module.register_forward_pre_hook(bump("forward_pre")),
               module.register_forward_hook(bump("forward")),
               module.register_full_backward_hook(bump("full_backward"))]
    return counts, handles


def test_remove_and_context_manager_unregister():
    layer = nn.Linear(3, 2)
    counts, handles = counting_hooks(layer)
    x = scratchnet.leaf(torch.ones(2, 3))
    layer(x).sum().backward()
    assert counts == {"forward_pre": 1, "forward": 1, "full_backward": 1}
    for handle in handles:
        handle.remove()
        handle.remove()  # a second remove is harmless, as in torch
    layer(x).sum().backward()
    assert counts == {"forward_pre": 1, "forward": 1, "full_backward": 1}
    with layer.register_full_backward_hook(lambda *_: counts.update(ctx=1)):
        layer(x).sum().backward()
    assert counts.pop("ctx") == 1
    layer(x).sum().backward()
    assert "ctx" not in counts


def test_backward_hook_fires_once_per_call_and_per_backward():
    layer = nn.Linear(3, 3)
    counts, _ = counting_hooks(layer)
    x = scratchnet.leaf(torch.ones(2, 3))
    out = layer(layer(x)).sum()
    out.backward(retain_graph=True)
    assert counts["full_backward"] == 2, "two calls of the module, two hook calls"
    out.backward()
    assert counts["full_backward"] == 4, "each backward crosses both calls again"


def test_module_backward_fires_the_hooks_of_the_layers_it_crosses():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    fired = []
    for path, module in model.named_modules():
        module.register_full_backward_hook(
            lambda _m, gi, go, path=path: fired.append((path, gi[0] is None)))
    out = model(torch.ones(2, 3))  # noqa: F841 (keeps the tape, as in any training step)
    model[2].backward(torch.ones(2, 2))
    assert fired == [("2", False)], "only the layer that was backpropagated"


def test_hooked_leaf_gradient_is_not_an_alias_of_what_the_hook_saw():
    layer = nn.Linear(3, 2)
    seen = []
    layer.register_full_backward_hook(lambda _m, gi, _go: seen.append(gi[0]))
    x = scratchnet.leaf(torch.ones(2, 3))
    layer(x).sum().backward()
    first = seen[0].clone()
    layer(x).sum().backward()  # accumulates into x.grad in place
    assert torch.equal(seen[0], first), "x.grad += ... changed a tensor a hook holds"
    assert torch.equal(x.grad, 2 * first)


def test_no_hook_fires_without_recording():
    layer = nn.Linear(3, 2)
    counts, _ = counting_hooks(layer)
    with scratchnet.no_grad():
        out = layer(torch.ones(2, 3))
    assert type(out) is torch.Tensor
    assert counts == {"forward_pre": 1, "forward": 1, "full_backward": 0}


def test_bad_backward_hook_returns_are_named():
    layer = nn.Linear(3, 2)
    x = scratchnet.leaf(torch.ones(2, 3))
    with layer.register_full_backward_hook(lambda *_: (None, None)):
        with pytest.raises(BackwardError, match=r"Linear.*got 2, but expected 1"):
            layer(x).sum().backward()
    with layer.register_full_backward_hook(lambda *_: (torch.ones(5),)):
        with pytest.raises(ShapeError, match=r"grad_input\[0\].*\(2, 3\) to \(5,\)"):
            layer(x).sum().backward()
    with layer.register_full_backward_hook(lambda *_: (torch.ones(2, 3),)):
        with pytest.warns(UserWarning, match=NO_INPUT_GRAD):
            with pytest.raises(BackwardError, match="None for all gradients"):
                layer(torch.ones(2, 3)).sum().backward()


def test_pre_hook_with_kwargs_must_return_a_pair():
    layer = nn.Linear(3, 2)
    layer.register_forward_pre_hook(lambda _m, args, kwargs: args, with_kwargs=True)
    with pytest.raises(TypeError, match=r"Linear.*tuple of \(new_args, new_kwargs\)"):
        layer(torch.ones(1, 3))  # returns args alone: a 1-tuple
