"""Linear: forward, input and parameter gradients against torch.nn.Linear and
central differences; default init bit-identical; bad input named."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import scratchnet
from scratchnet import nn
from scratchnet.errors import DeviceError, DTypeError, ShapeError
from tests.oracles import (
    assert_close_to_finite_differences,
    assert_parity,
    device_params,
    finite_difference_vjp,
)
from tests.strategies import dtypes, scales, seeded, shapes


@pytest.mark.parametrize("device", device_params())
@given(lead=shapes(min_dims=0, max_dims=2), d_in=st.integers(1, 9), d_out=st.integers(1, 9),
       bias=st.booleans(), dtype=dtypes, scale=scales, seed=st.integers(0, 2**16))
def test_linear_matches_torch(device, lead, d_in, d_out, bias, dtype, scale, seed):
    torch.manual_seed(seed)
    ours = nn.Linear(d_in, d_out, bias=bias).to(device, dtype)
    torch.manual_seed(seed)
    ref = torch.nn.Linear(d_in, d_out, bias=bias).to(device, dtype)
    x = seeded((*lead, d_in), seed, dtype, scale, device)
    dout = seeded((*lead, d_out), seed + 1, dtype, 1.0, device)

    x_leaf = scratchnet.leaf(x.clone())
    out = ours(x_leaf)
    out.backward(dout)
    x_ref = x.clone().requires_grad_(True)
    out_ref = ref(x_ref)
    out_ref.backward(dout)

    assert_parity(out, out_ref, "Linear forward")
    assert_parity(x_leaf.grad, x_ref.grad, "Linear dx")
    assert_parity(ours.weight.grad, ref.weight.grad, "Linear dweight")
    if bias:
        assert_parity(ours.bias.grad, ref.bias.grad, "Linear dbias")


@given(d_in=st.integers(1, 4), d_out=st.integers(1, 4), batch=st.integers(1, 3),
       seed=st.integers(0, 2**16))
def test_linear_backward_matches_finite_differences(d_in, d_out, batch, seed):
    x = seeded((batch, d_in), seed)
    weight = seeded((d_out, d_in), seed + 1)
    bias = seeded((d_out,), seed + 2)
    dout = seeded((batch, d_out), seed + 3)
    leaves = [scratchnet.leaf(t.clone()) for t in (x, weight, bias)]
    grads = scratchnet.grad(nn.functional.linear(*leaves), leaves, dout)
    numeric = finite_difference_vjp(nn.functional.linear, [x, weight, bias], dout)
    for name, g, n in zip(("dx", "dweight", "dbias"), grads, numeric, strict=True):
        assert_close_to_finite_differences(g, n, f"linear {name}")


@given(d_in=st.integers(1, 300), d_out=st.integers(1, 300), seed=st.integers(0, 2**31 - 1))
def test_default_init_is_bit_identical(d_in, d_out, seed):
    torch.manual_seed(seed)
    ours = nn.Linear(d_in, d_out)
    torch.manual_seed(seed)
    ref = torch.nn.Linear(d_in, d_out)
    assert torch.equal(ours.weight.data, ref.weight.data)
    assert torch.equal(ours.bias.data, ref.bias.data)


def test_gradients_accumulate_across_backward_calls():
    layer = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    first = None
    for _ in range(2):
        out = layer(x)
        out.backward(torch.ones(4, 2))
        if first is None:
            first = layer.weight.grad.clone()
    torch.testing.assert_close(layer.weight.grad, 2 * first, rtol=0, atol=0)


def test_wrong_features_names_the_layer_and_shapes():
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU())
    with pytest.raises(ShapeError, match=r"0 \(Linear\(in_features=784.*\(64, 100\)"):
        model(torch.randn(64, 100))


def test_wrong_dtype_and_device_are_refused():
    layer = nn.Linear(3, 2)
    with pytest.raises(DTypeError, match="float64"):
        layer(torch.randn(4, 3, dtype=torch.float64))
    if torch.cuda.is_available():
        with pytest.raises(DeviceError):
            layer(torch.randn(4, 3, device="cuda"))
