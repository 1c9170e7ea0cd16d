"""Module API against torch.nn.Module: names, traversal, state_dict both ways,
repr, modes, devices and dtypes, and the errors for bad state_dicts."""

import copy

import pytest
import torch

import scratchnet
from scratchnet import nn
from scratchnet.autodiff import plain
from scratchnet.errors import BackwardError, StateDictError
from tests.oracles import device_params


def _pair(seed: int = 0):
    torch.manual_seed(seed)
    ours = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 3))
    torch.manual_seed(seed)
    ref = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5),
                              torch.nn.ReLU(), torch.nn.Linear(5, 3))
    return ours, ref


def test_named_parameters_children_modules_match_torch():
    ours, ref = _pair()
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [
        (n, p.shape) for n, p in ref.named_parameters()]
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in ref.named_modules()]
    assert [type(m).__name__ for m in ours.children()] == [
        type(m).__name__ for m in ref.children()]
    assert len(list(ours.parameters())) == len(list(ref.parameters())) == 4
    assert all(isinstance(p, nn.Parameter) for p in ours.parameters())
    assert not any(p.requires_grad for p in ours.parameters())


def test_state_dict_moves_both_ways():
    ours, ref = _pair(1)
    torch.manual_seed(7)
    other = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5),
                                torch.nn.ReLU(), torch.nn.Linear(5, 3))
    ours.load_state_dict(other.state_dict())
    for (name, a), (_, b) in zip(ours.state_dict().items(), other.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    ref.load_state_dict(ours.state_dict())
    for (name, a), (_, b) in zip(ref.state_dict().items(), ours.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert all(type(v) is torch.Tensor for v in ours.state_dict().values())


def test_load_state_dict_refuses_missing_extra_and_misshapen_keys():
    ours, ref = _pair()
    state = ref.state_dict()
    missing = dict(state)
    del missing["1.bias"]
    with pytest.raises(StateDictError, match=r'Missing key\(s\).*"1.bias"'):
        ours.load_state_dict(missing)
    extra = dict(state, **{"9.weight": torch.zeros(1)})
    with pytest.raises(StateDictError, match=r'Unexpected key\(s\).*"9.weight"'):
        ours.load_state_dict(extra)
    wrong = dict(state, **{"3.weight": torch.zeros(3, 6)})
    with pytest.raises(StateDictError, match=r"size mismatch for 3.weight.*\(3, 6\).*\(3, 5\)"):
        ours.load_state_dict(wrong)
    result = ours.load_state_dict(missing, strict=False)
    assert result.missing_keys == ["1.bias"] and result.unexpected_keys == []


def test_train_eval_flags_every_submodule():
    ours, _ = _pair()
    assert ours.training and all(m.training for m in ours.modules())
    assert ours.eval() is ours
    assert not any(m.training for m in ours.modules())
    ours.train()
    assert all(m.training for m in ours.modules())


@pytest.mark.parametrize("device", device_params())
def test_to_keeps_parameter_objects_and_converts(device):
    ours, _ = _pair()
    params_before = list(ours.parameters())
    ours.to(device, torch.float64)
    assert [id(p) for p in ours.parameters()] == [id(p) for p in params_before]
    assert all(p.dtype == torch.float64 and p.device.type == device
               for p in ours.parameters())
    ours.float()
    assert all(p.dtype == torch.float32 for p in ours.parameters())


def test_zero_grad_both_modes():
    ours, _ = _pair()
    out = ours(torch.randn(2, 3, 4))
    out.backward(torch.ones(2, 3))
    assert all(p.grad is not None for p in ours.parameters())
    ours.zero_grad(set_to_none=False)
    assert all(torch.count_nonzero(p.grad) == 0 for p in ours.parameters())
    ours.zero_grad()
    assert all(p.grad is None for p in ours.parameters())


def test_sequential_indexing_slicing_len_iteration():
    ours, ref = _pair()
    assert len(ours) == len(ref) == 4
    assert isinstance(ours[1], nn.Linear) and ours[-1] is ours[3]
    head = ours[1:3]
    assert isinstance(head, nn.Sequential) and len(head) == 2
    assert repr(head) == repr(ref[1:3])
    assert [type(m).__name__ for m in ours] == [type(m).__name__ for m in ref]
    with pytest.raises(IndexError):
        ours[4]


def test_repr_equals_torch_print():
    ours, ref = _pair()
    assert repr(ours) == repr(ref)
    assert repr(nn.Linear(3, 4, bias=False)) == repr(torch.nn.Linear(3, 4, bias=False))
    assert repr(nn.Flatten(0, 2)) == repr(torch.nn.Flatten(0, 2))
    assert repr(nn.Identity()) == repr(torch.nn.Identity())


def test_parameter_behaves_like_torch_parameter_for_the_seeds():
    layer = nn.Linear(784, 128)
    layer.bias.data.fill_(0)
    layer.weight.data.normal_(std=0.01)
    assert torch.count_nonzero(layer.bias) == 0
    assert 0.005 < layer.weight.std().item() < 0.015
    head = layer.weight[:2]  # on the tape, as torch's has a grad_fn
    assert isinstance(head, scratchnet.autodiff.Tensor) and head.shape == (2, 784)
    assert torch.equal(plain(head), layer.weight.data[:2])
    assert repr(layer.bias).startswith("Parameter containing:\ntensor([0., 0.,")
    clone = copy.deepcopy(layer)
    assert torch.equal(clone.weight, layer.weight) and clone.weight is not layer.weight


def test_module_backward_before_forward_raises():
    with pytest.raises(BackwardError, match="before forward"):
        nn.Linear(2, 2).backward(torch.ones(1, 2))


def test_custom_module_registration_and_attribute_errors():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(4, 3)
            self.scale = 2.0

        def forward(self, x):
            return self.fc1(x)

    net = Net()
    assert [n for n, _ in net.named_parameters()] == ["fc1.weight", "fc1.bias"]
    assert net.scale == 2.0
    with pytest.raises(AttributeError, match="no attribute 'fc2'"):
        net.fc2  # noqa: B018
    with pytest.raises(TypeError):
        net.fc1.weight = torch.zeros(3, 4)  # a plain tensor cannot replace a Parameter
    assert isinstance(net(torch.randn(2, 4)), scratchnet.Tensor)
