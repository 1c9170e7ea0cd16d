"""Every seed model: scratchnet's twin against the torch.nn reference.

Same seed → bit-identical initial parameters; same names, shapes and print text;
torch's state_dict loaded → equal outputs, loss and every parameter gradient on
the same batch, in float32 and float64, with torch.autograd switched off on the
scratchnet side.
"""

import pytest
import torch

import reference.models as reference
import scratchnet.nn.functional as F
from scratchnet import nn
from scratchnet.models import seed_models, sequential_network
from tests.oracles import assert_parity, device_params

OURS = seed_models(nn, F)
BUILDERS = {
    name: (getattr(OURS, name), getattr(reference, name))
    for name in ("NeuralNetwork", "SimpleNN", "SingleLayerNN", "Network",
                 "FunctionalNetwork", "FCNetwork")
}
BUILDERS["SequentialNetwork"] = (lambda: sequential_network(nn), reference.sequential_network)
IMAGE_INPUT = {"NeuralNetwork", "SimpleNN", "SingleLayerNN"}  # the others take (B, 784)


def _batch(name: str, batch: int, dtype: torch.dtype, device: str):
    generator = torch.Generator().manual_seed(batch)
    shape = (batch, 1, 28, 28) if name in IMAGE_INPUT else (batch, 784)
    x = torch.rand(shape, generator=generator, dtype=dtype).to(device)
    y = torch.randint(0, 10, (batch,), generator=generator).to(device)
    return x, y


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_same_seed_gives_bit_identical_init_names_and_print(name):
    make_ours, make_ref = BUILDERS[name]
    torch.manual_seed(1234)
    ours = make_ours()
    torch.manual_seed(1234)
    ref = make_ref()
    assert repr(ours) == repr(ref)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [
        (n, p.shape) for n, p in ref.named_parameters()]
    for (key, a), (_, b) in zip(ours.state_dict().items(), ref.state_dict().items(),
                                strict=True):
        assert torch.equal(a, b), f"{name}.{key} differs after the same seed"


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_outputs_loss_and_gradients_match_torch(name, dtype, device):
    make_ours, make_ref = BUILDERS[name]
    torch.manual_seed(0)
    ref = make_ref().to(device, dtype)
    ours = make_ours().to(device, dtype)
    ours.load_state_dict(ref.state_dict())
    x, y = _batch(name, 17, dtype, device)

    with torch.autograd.set_grad_enabled(False):  # scratchnet never needs autograd
        out = ours(x)
        loss = nn.CrossEntropyLoss()(out, y)
        loss.backward()
    out_ref = ref(x)
    loss_ref = torch.nn.CrossEntropyLoss()(out_ref, y)
    loss_ref.backward()

    assert_parity(out, out_ref, f"{name} output")
    assert_parity(loss, loss_ref, f"{name} loss")
    assert isinstance(loss.item(), float)
    for (pname, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters(),
                                  strict=True):
        assert_parity(p.grad, q.grad, f"{name} d{pname}")
    assert not out.requires_grad and out.grad_fn is None
    assert not loss.requires_grad and loss.grad_fn is None
