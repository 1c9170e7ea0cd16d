"""scratchnet.optim against torch.optim (single-tensor path, foreach=False):
parameters and every state tensor after random gradient streams, for every
option combination; state_dicts both ways; zero_grad; skipped None grads;
bad options named.

An optimizer step has no backward, so the oracle is torch.optim alone (no
finite differences): same parameters, same gradients, same option values in,
parameters and state out within the parity contract (tests/oracles.py).
"""

from __future__ import annotations

import io
import re
from copy import deepcopy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import scratchnet
import scratchnet.optim as optim
from scratchnet import nn
from scratchnet.errors import OptionError, StateDictError
from tests.oracles import assert_parity, device_params
from tests.strategies import dtypes, scales, seeded, shapes

CLASSES = {"SGD": (optim.SGD, torch.optim.SGD), "Adam": (optim.Adam, torch.optim.Adam),
           "AdamW": (optim.AdamW, torch.optim.AdamW)}


def _sgd_combinations() -> list[dict]:
    """Every momentum × dampening × nesterov × weight_decay × maximize torch accepts."""
    combos = []
    for momentum in (0, 0.9):
        for dampening in (0, 0.1):
            for nesterov in (False, True):
                if nesterov and (momentum == 0 or dampening != 0):
                    continue
                for weight_decay in (0, 0.1):
                    for maximize in (False, True):
                        combos.append({"momentum": momentum, "dampening": dampening,
                                       "nesterov": nesterov, "weight_decay": weight_decay,
                                       "maximize": maximize})
    return combos


def _adam_combinations() -> list[dict]:
    """weight_decay × amsgrad × maximize (betas and eps are drawn per example)."""
    return [{"weight_decay": wd, "amsgrad": amsgrad, "maximize": maximize}
            for wd in (0, 0.1) for amsgrad in (False, True) for maximize in (False, True)]


CASES = ([pytest.param("SGD", c, id="SGD-" + "-".join(f"{k}={v}" for k, v in c.items()))
          for c in _sgd_combinations()]
         + [pytest.param(name, c, id=f"{name}-" + "-".join(f"{k}={v}" for k, v in c.items()))
            for name in ("Adam", "AdamW") for c in _adam_combinations()])

lrs = st.sampled_from([1e-3, 0.1, 1.0])
betas = st.sampled_from([(0.9, 0.999), (0.5, 0.9), (0.0, 0.99), (0.99, 0.0)])
epsilons = st.sampled_from([1e-8, 1e-3, 0.0])


def drawn_options(name: str, combo: dict, data: st.DataObject) -> dict:
    options = dict(combo, lr=data.draw(lrs, label="lr"))
    if name != "SGD":
        options["betas"] = data.draw(betas, label="betas")
        options["eps"] = data.draw(epsilons, label="eps")
    return options


# --------------------------------------------------------------------------------------
# helpers: twin optimizers, the same gradient stream, state comparison


def make_twins(name: str, options: dict, param_shapes: list, dtype: torch.dtype,
               seed: int, device: str = "cpu", second_lr: float | None = None,
               as_parameter: bool = True):
    """scratchnet's and torch's optimizer over equal copies of the same params;
    with ``second_lr`` the params after the first form a second group."""
    ours_cls, torch_cls = CLASSES[name]
    values = [seeded(s, seed + i, dtype, 1.0, device) for i, s in enumerate(param_shapes)]
    ours = [nn.Parameter(v.clone()) if as_parameter else v.clone() for v in values]
    ref = [v.clone() for v in values]

    def grouped(params):
        if second_lr is None or len(params) < 2:
            return params
        return [{"params": params[:1]}, {"params": params[1:], "lr": second_lr}]

    # foreach=False on both: torch's single-tensor path (its CPU default anyway,
    # named so that CUDA runs take it too), and equal group dicts to compare
    return (ours, ours_cls(grouped(ours), foreach=False, **options),
            ref, torch_cls(grouped(ref), foreach=False, **options))


def feed_same_grads(ours: list, ref: list, step: int, seed: int, scale: float,
                    skipped: list[bool]) -> None:
    """The same gradients on both sides; ``None`` where ``skipped``."""
    for i, (p, q) in enumerate(zip(ours, ref, strict=True)):
        if skipped[i]:
            p.grad, q.grad = None, None
        else:
            g = seeded(tuple(q.shape), seed + 7919 * (step + 1) + i, q.dtype, scale,
                       str(q.device))
            p.grad, q.grad = g.clone(), g.clone()


def assert_same_state(ours: optim.Optimizer, ref: torch.optim.Optimizer, what: str) -> None:
    """state_dicts equal: group dicts exactly, every state tensor within parity."""
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert ours_sd["param_groups"] == ref_sd["param_groups"], f"{what}: param_groups"
    assert ours_sd["state"].keys() == ref_sd["state"].keys(), (
        f"{what}: state held for params {sorted(ours_sd['state'])}, torch "
        f"{sorted(ref_sd['state'])}")
    for index, ref_state in ref_sd["state"].items():
        ours_state = ours_sd["state"][index]
        assert ours_state.keys() == ref_state.keys(), f"{what}: state[{index}] keys"
        for key, expected in ref_state.items():
            actual = ours_state[key]
            assert actual.device == expected.device, f"{what}: state[{index}][{key}] device"
            assert_parity(actual, expected, f"{what}: state[{index}][{key!r}]")


def step_both_and_compare(ours, ours_opt, ref, ref_opt, steps, seed, scale, skipped,
                          what, first_step=0):
    for t in range(first_step, first_step + steps):
        feed_same_grads(ours, ref, t, seed, scale, skipped[t % len(skipped)])
        ours_opt.step()
        ref_opt.step()
        for i, (p, q) in enumerate(zip(ours, ref, strict=True)):
            assert_parity(p, q, f"{what}: param {i} after step {t + 1}")
    assert_same_state(ours_opt, ref_opt, f"{what} after {first_step + steps} steps")


# --------------------------------------------------------------------------------------
# the update


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize(("name", "combo"), CASES)
@settings(max_examples=8)  # × 36 option combinations; 8 steps each at most
@given(data=st.data(), param_shapes=st.lists(shapes(max_dims=3, max_side=4), min_size=1,
                                             max_size=3),
       dtype=dtypes, scale=scales, steps=st.integers(1, 8), seed=st.integers(0, 2**16),
       two_groups=st.booleans(), as_parameter=st.booleans())
def test_steps_match_torch(device, name, combo, data, param_shapes, dtype, scale, steps,
                           seed, two_groups, as_parameter):
    options = drawn_options(name, combo, data)
    second_lr = data.draw(lrs, label="second group lr") if two_groups else None
    # a grad is None (skipped) in about one step in five
    skipped = data.draw(st.lists(st.lists(st.integers(0, 4).map(lambda k: k == 0),
                                          min_size=len(param_shapes),
                                          max_size=len(param_shapes)),
                                 min_size=steps, max_size=steps), label="grad is None")
    ours, ours_opt, ref, ref_opt = make_twins(name, options, param_shapes, dtype, seed,
                                              device, second_lr, as_parameter)
    step_both_and_compare(ours, ours_opt, ref, ref_opt, steps, seed, scale, skipped,
                          f"{name}{options}")


@pytest.mark.parametrize("name", CLASSES)
def test_param_groups_hold_torchs_keys_and_defaults(name):
    ours_cls, torch_cls = CLASSES[name]
    named = [("weight", torch.zeros(2, 3)), ("bias", torch.zeros(2))]
    ours = ours_cls(named)
    ref = torch_cls([(n, p.clone()) for n, p in named])
    assert ours.state_dict() == ref.state_dict(), f"{name}: default state_dict"
    assert ours.defaults == ref.defaults, f"{name}: defaults"
    assert repr(ours) == repr(ref), f"{name}: repr"


def test_skipped_param_gets_no_state_and_stays_put():
    for name in CLASSES:
        ours, ours_opt, ref, ref_opt = make_twins(
            name, {"momentum": 0.9} if name == "SGD" else {}, [(3,), (2, 2)],
            torch.float64, seed=3)
        before = ours[1].detach().clone()
        ours[0].grad, ref[0].grad = torch.ones(3, dtype=torch.float64), torch.ones(
            3, dtype=torch.float64)
        ours_opt.step()
        ref_opt.step()
        assert torch.equal(ours[1], before), f"{name}: a param without grad moved"
        assert list(ours_opt.state_dict()["state"]) == [0], f"{name}: state of skipped"
        assert_same_state(ours_opt, ref_opt, f"{name} with a None grad")


def test_training_a_linear_layer_through_the_tape_matches_torch():
    """Parameters whose grads come from scratchnet's backward, stepped by Adam."""
    torch.manual_seed(0)
    ours_layer = nn.Linear(4, 3).double()
    torch.manual_seed(0)
    ref_layer = torch.nn.Linear(4, 3).double()
    ours_opt = optim.Adam(ours_layer.parameters(), lr=0.1, weight_decay=0.01)
    ref_opt = torch.optim.Adam(ref_layer.parameters(), lr=0.1, weight_decay=0.01,
                               foreach=False)
    for t in range(3):
        x, dout = seeded((5, 4), t), seeded((5, 3), 100 + t)
        ours_opt.zero_grad()
        ref_opt.zero_grad()
        ours_layer(x).backward(dout)
        ref_layer(x).backward(dout)
        ours_opt.step()
        ref_opt.step()
    assert_parity(ours_layer.weight, ref_layer.weight, "Linear weight after 3 Adam steps")
    assert_parity(ours_layer.bias, ref_layer.bias, "Linear bias after 3 Adam steps")


def test_closure_runs_recording_and_its_loss_is_returned():
    param = nn.Parameter(torch.tensor([1.0, 2.0]))
    optimizer = optim.SGD([param], lr=0.5)
    seen = []

    def closure():
        seen.append(scratchnet.is_recording())
        param.grad = torch.tensor([1.0, -1.0])
        return 7.0

    with scratchnet.no_grad():
        assert optimizer.step(closure) == 7.0
    assert seen == [True], "the closure must run with the tape recording"
    torch.testing.assert_close(param.data, torch.tensor([0.5, 2.5]), rtol=0, atol=0)


# --------------------------------------------------------------------------------------
# state_dict, both ways


def _through_torch_save(state_dict: dict) -> dict:
    """torch.save / torch.load (weights_only, torch's default): a deep copy that
    also proves the state_dict holds nothing but plain data and tensors."""
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer)


@pytest.mark.parametrize("direction", ["scratchnet_to_torch", "torch_to_scratchnet"])
@pytest.mark.parametrize("name", CLASSES)
@settings(max_examples=10)
@given(data=st.data(), param_shapes=st.lists(shapes(max_dims=2, max_side=4), min_size=2,
                                             max_size=3),
       dtype=dtypes, before=st.integers(1, 4), after=st.integers(1, 4),
       seed=st.integers(0, 2**16))
def test_state_dict_round_trip_then_continue(direction, name, data, param_shapes, dtype,
                                             before, after, seed):
    options = drawn_options(name, data.draw(st.sampled_from(
        _sgd_combinations() if name == "SGD" else _adam_combinations())), data)
    ours, ours_opt, ref, ref_opt = make_twins(name, options, param_shapes, dtype, seed,
                                              second_lr=0.01)
    skipped = [[i == 1 and t == 0 for i in range(len(param_shapes))] for t in range(8)]
    step_both_and_compare(ours, ours_opt, ref, ref_opt, before, seed, 1.0, skipped,
                          f"{name} before the round trip")

    # a fresh optimizer of the other kind, at default options, loads the state
    ours_cls, torch_cls = CLASSES[name]
    if direction == "scratchnet_to_torch":
        fresh = [q.detach().clone() for q in ref]
        loaded = torch_cls([{"params": fresh[:1]}, {"params": fresh[1:]}], foreach=False)
        loaded.load_state_dict(_through_torch_save(ours_opt.state_dict()))
        ref, ref_opt = fresh, loaded
    else:
        fresh = [nn.Parameter(p.detach().clone()) for p in ours]
        loaded = ours_cls([{"params": fresh[:1]}, {"params": fresh[1:]}])
        loaded.load_state_dict(_through_torch_save(ref_opt.state_dict()))
        ours, ours_opt = fresh, loaded
    assert_same_state(ours_opt, ref_opt, f"{name} {direction} just loaded")
    step_both_and_compare(ours, ours_opt, ref, ref_opt, after, seed, 1.0, skipped,
                          f"{name} {direction}, continued", first_step=before)


@pytest.mark.parametrize("name", CLASSES)
def test_loaded_state_is_cast_to_the_params_dtype_as_torch_does(name):
    options = {"momentum": 0.9} if name == "SGD" else {"amsgrad": True}
    ours64, ours64_opt, ref64, ref64_opt = make_twins(name, options, [(2, 3)],
                                                      torch.float64, seed=1)
    ours64[0].grad = torch.ones(2, 3, dtype=torch.float64)
    ours64_opt.step()
    saved = ours64_opt.state_dict()

    ours_cls, torch_cls = CLASSES[name]
    ours = ours_cls([nn.Parameter(torch.zeros(2, 3))], **options)
    ref = torch_cls([torch.zeros(2, 3)], **options)
    ours.load_state_dict(deepcopy(saved))
    ref.load_state_dict(deepcopy(saved))
    for key, expected in ref.state_dict()["state"][0].items():
        actual = ours.state_dict()["state"][0][key]
        assert actual.dtype == expected.dtype, f"{name} state {key!r}: {actual.dtype}"
        assert_parity(actual, expected, f"{name} state {key!r} cast to float32")
    if name != "SGD":
        assert ours.state_dict()["state"][0]["step"].dtype == torch.float32


def test_torch_state_dict_with_a_python_number_step_loads_as_a_tensor():
    """Old torch state_dicts kept ``step`` as a number; torch converts on load."""
    param = nn.Parameter(torch.zeros(2))
    optimizer = optim.Adam([param])
    param.grad = torch.ones(2)
    optimizer.step()
    saved = deepcopy(optimizer.state_dict())
    saved["state"][0]["step"] = 1
    optimizer.load_state_dict(saved)
    step = optimizer.state[param]["step"]
    assert torch.is_tensor(step) and step.dtype == torch.float32 and step.item() == 1.0


def test_load_state_dict_refuses_another_layout():
    params = [nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(3))]
    optimizer = optim.SGD(params, momentum=0.9)
    other = optim.SGD([{"params": params[:1]}, {"params": params[1:]}], momentum=0.9)
    with pytest.raises(StateDictError, match="different number of parameter groups: 2"):
        optimizer.load_state_dict(other.state_dict())
    with pytest.raises(StateDictError, match="group 0 holds 2 parameters, the optimizer's 3"):
        optim.SGD(params[:1] + [nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))]
                  ).load_state_dict(optimizer.state_dict())
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()
    swapped = optim.SGD([params[1], params[0]], momentum=0.9)
    with pytest.raises(StateDictError, match=r"'momentum_buffer' has shape \(2,\), the "
                                             r"parameter has \(3,\)"):
        swapped.load_state_dict(optimizer.state_dict())


# --------------------------------------------------------------------------------------
# zero_grad


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad_matches_torch(set_to_none):
    ours, ours_opt, ref, ref_opt = make_twins("SGD", {}, [(2, 2), (3,)], torch.float64,
                                              seed=5)
    feed_same_grads(ours, ref, 0, 5, 1.0, [False, True])
    grad_object = ours[0].grad
    ours_opt.zero_grad(set_to_none=set_to_none)
    ref_opt.zero_grad(set_to_none=set_to_none)
    for i, (p, q) in enumerate(zip(ours, ref, strict=True)):
        assert_parity(p.grad, q.grad, f"grad {i} after zero_grad({set_to_none})")
    if not set_to_none:
        assert ours[0].grad is grad_object, "zero_grad(set_to_none=False) zeroes in place"
        assert not ours[0].grad.any()


# --------------------------------------------------------------------------------------
# bad options

# (optimizer, kwargs, torch's message): scratchnet raises OptionError, torch.optim a
# ValueError, with the same text.
SHARED_REJECTIONS = [
    ("SGD", {"lr": -1}, "Invalid learning rate: -1"),
    ("SGD", {"momentum": -0.5}, "Invalid momentum value: -0.5"),
    ("SGD", {"weight_decay": -1e-3}, "Invalid weight_decay value: -0.001"),
    ("SGD", {"nesterov": True}, "Nesterov momentum requires a momentum and zero dampening"),
    ("SGD", {"nesterov": True, "momentum": 0.9, "dampening": 0.1},
     "Nesterov momentum requires a momentum and zero dampening"),
    ("Adam", {"lr": -1}, "Invalid learning rate: -1"),
    ("Adam", {"eps": -1e-8}, "Invalid epsilon value: -1e-08"),
    ("Adam", {"betas": (1.0, 0.999)}, "Invalid beta parameter at index 0: 1.0"),
    ("Adam", {"betas": (-0.1, 0.999)}, "Invalid beta parameter at index 0: -0.1"),
    ("Adam", {"betas": (0.9, 1.0)}, "Invalid beta parameter at index 1: 1.0"),
    ("Adam", {"weight_decay": -1}, "Invalid weight_decay value: -1"),
    ("Adam", {"betas": (0, 0.9)}, "betas must be either both floats or both Tensors"),
    ("AdamW", {"lr": float("nan")}, "Invalid learning rate: nan"),
    ("AdamW", {"betas": (0.9, 1.5)}, "Invalid beta parameter at index 1: 1.5"),
]


@pytest.mark.parametrize(("name", "kwargs", "message"), SHARED_REJECTIONS,
                         ids=[f"{n}-{k}" for n, k, _ in SHARED_REJECTIONS])
def test_bad_options_raise_torchs_message(name, kwargs, message):
    ours_cls, torch_cls = CLASSES[name]
    with pytest.raises(ValueError, match=re.escape(message)):
        torch_cls([torch.zeros(1)], **kwargs)
    with pytest.raises(OptionError, match=re.escape(message)):
        ours_cls([nn.Parameter(torch.zeros(1))], **kwargs)


SCRATCHNET_REJECTIONS = [
    ("SGD", {"foreach": True}, "foreach=True is not supported: scratchnet.optim has its "
                               "own single path"),
    ("SGD", {"fused": True}, "fused=True is not supported"),
    ("Adam", {"foreach": True}, "foreach=True is not supported"),
    ("Adam", {"fused": True}, "fused=True is not supported"),
    ("Adam", {"capturable": True}, "capturable=True is not supported"),
    ("AdamW", {"differentiable": True}, "AdamW: differentiable=True is not supported"),
    ("SGD", {"lr": torch.tensor(0.1)}, "SGD: lr must be a Python number, got a Tensor"),
    ("Adam", {"betas": (torch.tensor(0.9), torch.tensor(0.99))},
     "Adam: betas[0] must be a Python number"),
]


@pytest.mark.parametrize(("name", "kwargs", "message"), SCRATCHNET_REJECTIONS,
                         ids=[f"{n}-{list(k)}" for n, k, _ in SCRATCHNET_REJECTIONS])
def test_options_of_other_implementations_are_refused(name, kwargs, message):
    with pytest.raises(OptionError, match=re.escape(message)):
        CLASSES[name][0]([nn.Parameter(torch.zeros(1))], **kwargs)


def test_bad_params_and_groups_are_refused():
    p, q = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    with pytest.raises(OptionError, match="optimizer got an empty parameter list"):
        optim.SGD([])
    with pytest.raises(OptionError, match="should be an iterable of Tensors or dicts"):
        optim.SGD(p)
    with pytest.raises(OptionError, match="can only optimize Tensors, but one of the "
                                          "params is int"):
        optim.SGD([p, 3])
    with pytest.raises(OptionError, match="can't optimize a non-leaf Tensor"):
        optim.SGD([nn.functional.relu(scratchnet.leaf(torch.ones(2)))])
    optimizer = optim.SGD([p], lr=0.1)
    with pytest.raises(OptionError, match="some parameters appear in more than one"):
        optimizer.add_param_group({"params": [p]})
    with pytest.raises(OptionError, match=re.escape("Invalid learning rate: -0.5")):
        optimizer.add_param_group({"params": [q], "lr": -0.5})  # groups are checked too
    optimizer.add_param_group({"params": q, "momentum": 0.9})
    assert optimizer.param_groups[1]["lr"] == 0.1, "unset options come from defaults"
    assert optimizer.param_groups[1]["params"] == [q]
