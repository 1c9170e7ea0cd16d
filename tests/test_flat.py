"""scratchnet.nn.utils.FlatParameters: parameters and gradients as views into one
flat buffer each. Checked: the values are unchanged by flattening; parameters,
gradients and the buffers share memory both ways; a backward through the tape
accumulates into ``flat_grads`` (two backwards double it) and gives torch.nn's
gradients; zeroing and re-attaching; the layout and the reverse-order buckets
cover every element exactly once; bad input is refused.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchnet import nn
from scratchnet.errors import DTypeError, OptionError
from scratchnet.nn.utils import FlatParameters, contiguous_span
from scratchnet.train import build_model, seed_everything
from tests.oracles import assert_parity


def _twin_models(name: str, dtype: torch.dtype) -> tuple[nn.Module, torch.nn.Module]:
    """The same seed model in scratchnet and torch.nn, bit-identical weights."""
    seed_everything(0)
    ours = build_model(name, "scratchnet").to(dtype)
    seed_everything(0)
    theirs = build_model(name, "torch").to(dtype)
    return ours, theirs


def test_flattening_keeps_values_and_parameter_objects():
    model, _ = _twin_models("NeuralNetwork", torch.float64)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    objects = list(model.parameters())
    flat = FlatParameters(model)
    assert list(model.parameters()) == objects  # same Parameter objects
    for (name, param), slot in zip(model.named_parameters(), flat.layout, strict=True):
        assert slot.name == name
        assert torch.equal(param.detach(), before[name]), name
    assert flat.flat_params.numel() == sum(p.numel() for p in objects)
    assert flat.is_intact()


def test_params_and_grads_share_memory_with_the_buffers():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    flat = FlatParameters(model)
    flat.flat_params.fill_(0.5)
    assert all(torch.all(p == 0.5) for p in model.parameters())
    model[0].weight.data[1, 2] = 7.0  # written through the parameter ...
    slot = flat.layout[0]
    assert flat.flat_params[slot.offset + 1 * 3 + 2] == 7.0  # ... read in the buffer
    flat.flat_grads.fill_(2.0)
    assert all(torch.all(p.grad == 2.0) for p in model.parameters())


@pytest.mark.parametrize("name", ["NeuralNetwork", "Network", "FCNetwork",
                                  "SequentialNetwork"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_backward_fills_flat_grads_with_torchs_gradients(name, dtype):
    ours, theirs = _twin_models(name, dtype)
    flat = FlatParameters(ours)
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(8, 784, generator=generator, dtype=dtype)
    y = torch.randint(0, 10, (8,), generator=generator)
    if name == "NeuralNetwork":
        x = x.reshape(8, 1, 28, 28)
    nn.CrossEntropyLoss()(ours(x), y).backward()
    torch.nn.CrossEntropyLoss()(theirs(x), y).backward()
    for slot, (_, theirs_param) in zip(flat.layout, theirs.named_parameters(),
                                       strict=True):
        assert_parity(flat.view(flat.flat_grads, slot), theirs_param.grad,
                      f"{name} d{slot.name} in flat_grads")
    assert flat.grads_attached()


def test_two_backwards_double_the_flat_gradient_and_zero_grad_resets_it():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 3), nn.Tanh(), nn.Linear(3, 2)).double()
    flat = FlatParameters(model)
    x = torch.randn(4, 5, dtype=torch.float64)
    model(x).sum().backward()
    once = flat.flat_grads.clone()
    assert once.abs().sum() > 0
    model(x).sum().backward()
    torch.testing.assert_close(flat.flat_grads, 2 * once, rtol=0, atol=0)
    flat.zero_grad()
    assert torch.count_nonzero(flat.flat_grads) == 0
    assert flat.grads_attached()


def test_zero_grad_reattaches_grads_set_to_none_or_replaced():
    model = nn.Sequential(nn.Linear(3, 2))
    flat = FlatParameters(model)
    model.zero_grad(set_to_none=True)
    assert not flat.grads_attached() and not flat.is_intact()
    flat.zero_grad()
    assert flat.grads_attached()
    model[0].bias.grad = torch.full((2,), 3.0)  # a replaced .grad is copied back in
    assert not flat.grads_attached()
    flat.attach_grads()
    assert flat.grads_attached()
    assert torch.equal(model[0].bias.grad, torch.full((2,), 3.0))


def test_moving_the_module_detaches_its_parameters():
    model = nn.Sequential(nn.Linear(3, 2))
    flat = FlatParameters(model)
    model.double()
    assert not flat.params_attached()


@given(sizes=st.lists(st.integers(1, 9), min_size=2, max_size=5),
       bucket_numel=st.integers(1, 120))
@settings(max_examples=30)
def test_layout_and_buckets_cover_every_element_once_last_layer_first(sizes,
                                                                      bucket_numel):
    layers = [nn.Linear(a, b) for a, b in zip(sizes, sizes[1:], strict=False)]
    flat = FlatParameters(nn.Sequential(*layers))
    offsets = [slot.offset for slot in flat.layout]
    assert offsets == sorted(offsets) and offsets[0] == 0
    ends = [slot.offset + slot.numel for slot in flat.layout]
    assert offsets[1:] == ends[:-1] and ends[-1] == flat.flat_params.numel()
    buckets = flat.buckets(bucket_numel)
    assert buckets[0].slots[-1] is flat.layout[-1]  # last parameter first
    covered = torch.zeros(flat.flat_grads.numel(), dtype=torch.int64)
    for bucket in buckets:
        assert bucket.numel <= bucket_numel or len(bucket.slots) == 1
        assert bucket.offset == bucket.slots[0].offset
        covered[bucket.offset: bucket.offset + bucket.numel] += 1
        flat.bucket_grads(bucket).add_(1.0)  # writes reach the .grad views
    assert torch.all(covered == 1)
    assert all(torch.all(p.grad == 1.0) for p in flat.params)
    starts = [bucket.offset for bucket in buckets]
    assert starts == sorted(starts, reverse=True)


def test_contiguous_span_finds_consecutive_views_only():
    flat = FlatParameters(nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2)))
    span = contiguous_span([p.data for p in flat.params])
    assert span is not None and span.data_ptr() == flat.flat_params.data_ptr()
    assert span.numel() == flat.flat_params.numel()
    assert contiguous_span(list(reversed(flat.params))) is None  # out of order
    assert contiguous_span([flat.params[0], flat.params[2]]) is None  # a gap
    assert contiguous_span([torch.zeros(2), torch.zeros(2)]) is None  # two storages


def test_bad_input_is_refused():
    with pytest.raises(OptionError, match="no parameters"):
        FlatParameters(nn.Sequential(nn.ReLU()))
    mixed = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    mixed[1].weight.data = mixed[1].weight.data.double()
    with pytest.raises(DTypeError, match=r"linear|1\.weight"):
        FlatParameters(mixed)
    with pytest.raises(OptionError, match="bucket_numel"):
        FlatParameters(nn.Linear(2, 2)).buckets(0)


# --------------------------------------------------------------------------------------
# Adam / AdamW over the flat buffer (scratchnet/optim/adam.py, the flat path)

ADAM_OPTIONS = [
    {},
    {"amsgrad": True},
    {"maximize": True, "weight_decay": 0.1},
    {"weight_decay": 0.05, "betas": (0.8, 0.99), "eps": 1e-6},
]


def _stack(shapes: list[tuple[int, ...]], dtype: torch.dtype) -> nn.Module:
    """A module holding one parameter per shape, drawn from torch's RNG."""
    module = nn.Module()
    for i, shape in enumerate(shapes):
        module.register_parameter(f"p{i}", nn.Parameter(torch.randn(shape, dtype=dtype)))
    return module


@pytest.mark.parametrize("options", ADAM_OPTIONS, ids=str)
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_flat_adam_equals_torch_adam_bit_for_bit(name, options, dtype):
    """Elementwise ops on one long buffer give each element the same arithmetic as
    on its own tensor, so the flat path equals torch.optim (single-tensor path)
    exactly; odd sizes put the vectorised loops' tails in different places."""
    import scratchnet.optim

    torch.manual_seed(3)
    shapes = [(7, 13), (13,), (5, 7), (5,), (1,), (33, 3)]
    module = _stack(shapes, dtype)
    theirs_params = [p.detach().clone() for p in module.parameters()]
    flat = FlatParameters(module)
    ours = getattr(scratchnet.optim, name)(module.parameters(), lr=1e-2, **options)
    theirs = getattr(torch.optim, name)(theirs_params, lr=1e-2, foreach=False, **options)
    for step in range(5):
        flat.flat_grads.copy_(torch.randn(flat.flat_grads.shape, dtype=dtype)
                              * 10.0 ** (-step))
        for slot, theirs_param in zip(flat.layout, theirs_params, strict=True):
            theirs_param.grad = flat.view(flat.flat_grads, slot).clone()
        ours.step()
        theirs.step()
    moments = [ours.state[p]["exp_avg"] for p in flat.params]
    assert contiguous_span(moments) is not None, "the flat path was not taken"
    for i, (ours_param, theirs_param) in enumerate(zip(flat.params, theirs_params,
                                                       strict=True)):
        assert torch.equal(ours_param.detach(), theirs_param), f"param {i}"
        for key, value in theirs.state[theirs_param].items():
            assert torch.equal(ours.state[ours_param][key], value), f"{key} of param {i}"
    assert flat.is_intact()


def test_flat_adam_state_is_flat_and_its_state_dict_is_torchs():
    import scratchnet.optim

    torch.manual_seed(0)
    module = _stack([(4, 3), (4,)], torch.float32)
    flat = FlatParameters(module)
    optimizer = scratchnet.optim.Adam(module.parameters())
    flat.flat_grads.normal_()
    optimizer.step()
    states = [optimizer.state[p] for p in flat.params]
    assert contiguous_span([s["exp_avg"] for s in states]) is not None
    assert contiguous_span([s["step"] for s in states]) is not None
    saved = optimizer.state_dict()
    assert set(saved["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    assert saved["state"][1]["step"].shape == () and float(saved["state"][1]["step"]) == 1
    twin = [p.detach().clone() for p in flat.params]
    torch_optimizer = torch.optim.Adam(twin)
    torch_optimizer.load_state_dict(saved)  # loads into torch.optim as it is
    assert torch.equal(torch_optimizer.state[twin[0]]["exp_avg"], states[0]["exp_avg"])


def test_flat_adam_continues_exactly_after_load_state_dict():
    """A loaded (non-flat) state is laid out flat again, values unchanged."""
    import scratchnet.optim

    torch.manual_seed(1)
    module = _stack([(6, 2), (6,)], torch.float64)
    reference = [p.detach().clone() for p in module.parameters()]
    flat = FlatParameters(module)
    ours = scratchnet.optim.Adam(module.parameters(), lr=0.1)
    theirs = torch.optim.Adam(reference, lr=0.1, foreach=False)
    grads = [torch.randn(flat.flat_grads.shape, dtype=torch.float64) for _ in range(4)]

    def step_both(g: torch.Tensor) -> None:
        flat.flat_grads.copy_(g)
        for slot, param in zip(flat.layout, reference, strict=True):
            param.grad = flat.view(g, slot).clone()
        ours.step()
        theirs.step()

    step_both(grads[0])
    step_both(grads[1])
    ours.load_state_dict(theirs.state_dict())  # separate tensors, not flat
    step_both(grads[2])
    step_both(grads[3])
    for ours_param, theirs_param in zip(flat.params, reference, strict=True):
        assert torch.equal(ours_param.detach(), theirs_param)
    assert contiguous_span([ours.state[p]["exp_avg_sq"] for p in flat.params]) is not None
