"""Dropout: on CPU, the same mask as torch.nn.functional.dropout after the same
torch.manual_seed (output, gradient and RNG state all identical); eval mode and
p = 0 are the identity, p = 1 gives zeros; the kept fraction and scaling have the
right statistics; central differences; the module's repr and backward; bad p
named."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import scratchnet
from scratchnet import nn
from scratchnet.errors import OptionError
from scratchnet.nn import functional as F
from tests.oracles import (
    assert_close_to_finite_differences,
    device_params,
    finite_difference_vjp,
    scratchnet_grads,
    torch_grads,
)
from tests.strategies import dtypes, scales, seeded, shapes

TF = torch.nn.functional
probabilities = st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]) | st.floats(0.0, 1.0)


def assert_identical(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Bit for bit: the same mask times the same x cannot round differently."""
    actual = scratchnet.autodiff.plain(actual)
    assert actual.dtype == expected.dtype, f"{what}: {actual.dtype} != {expected.dtype}"
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True,
                               msg=lambda msg: f"{what}: {msg}")


@given(shape=shapes(min_dims=0), dtype=dtypes, scale=scales, p=probabilities,
       seed=st.integers(0, 2**31 - 1))
def test_same_mask_as_torch_after_the_same_seed(shape, dtype, scale, p, seed):
    x = seeded(shape, seed, dtype, scale)
    dout = seeded(shape, seed + 1, dtype)
    torch.manual_seed(seed)
    out, (dx,) = scratchnet_grads(lambda t: F.dropout(t, p), [x], dout)
    after_ours = torch.rand(3)
    torch.manual_seed(seed)
    out_ref, (dx_ref,) = torch_grads(lambda t: TF.dropout(t, p), [x], dout)
    after_torch = torch.rand(3)
    assert_identical(out, out_ref, f"dropout(p={p}) forward")
    assert_identical(dx, dx_ref, f"dropout(p={p}) dx")
    assert torch.equal(after_ours, after_torch), "dropout consumed the RNG differently"


@given(p=st.floats(0.05, 0.95), seed=st.integers(0, 2**31 - 1))
def test_module_matches_torch_in_training_and_is_identity_in_eval(p, seed):
    x = seeded((6, 7), seed, torch.float32, 3.0)
    dout = seeded((6, 7), seed + 1, torch.float32)
    ours, ref = nn.Dropout(p), torch.nn.Dropout(p)
    for train in (True, False):
        ours.train(train)
        ref.train(train)
        torch.manual_seed(seed)
        out = ours(x)
        dx = ours.backward(dout)
        torch.manual_seed(seed)
        x_ref = x.clone().requires_grad_(True)
        out_ref = ref(x_ref)
        out_ref.backward(dout)
        mode = "train" if train else "eval"
        assert_identical(out, out_ref, f"Dropout({p}) {mode} forward")
        assert_identical(dx, x_ref.grad, f"Dropout({p}) {mode} Module.backward dx")
    assert_identical(out, x, "eval mode is the identity")
    assert_identical(dx, dout, "eval mode passes dout through")


@pytest.mark.parametrize("p, training", [(0.0, True), (0.3, False), (1.0, False)])
def test_identity_cases_return_the_input_and_draw_nothing(p, training):
    """As torch: eval mode and p = 0 hand back x itself, without touching the RNG."""
    x = torch.randn(4, 5)
    torch.manual_seed(0)
    next_draw = torch.rand(2)
    torch.manual_seed(0)
    assert F.dropout(x, p, training) is x
    assert TF.dropout(x, p, training) is x
    assert torch.equal(torch.rand(2), next_draw), "the identity drew random numbers"


def test_p_one_drops_everything_like_torch():
    x = torch.tensor([[1.0, -2.0, math.inf], [0.0, -0.5, 3.0]], dtype=torch.float64)
    dout = torch.ones_like(x)
    out, (dx,) = scratchnet_grads(lambda t: F.dropout(t, 1.0), [x], dout)
    out_ref, (dx_ref,) = torch_grads(lambda t: TF.dropout(t, 1.0), [x], dout)
    assert_identical(out, out_ref, "dropout(p=1) forward")  # inf · 0 = nan in both
    assert_identical(dx, dx_ref, "dropout(p=1) dx")
    assert (scratchnet.autodiff.plain(dx) == 0).all()


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_statistics(device, p):
    """On any device: the dropped fraction is p within 5 standard deviations
    (σ = √(p(1 − p)/n)), survivors are exactly x / (1 − p), so E[out] = x."""
    n = 200_000
    torch.manual_seed(1)
    x = torch.rand(n, dtype=torch.float64, device=device) + 1.0  # in [1, 2): no zeros
    out = scratchnet.autodiff.plain(F.dropout(scratchnet.leaf(x), p))
    dropped = (out == 0).double().mean().item()
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(dropped - p) < 5 * sigma, (
        f"dropped {dropped:.4f}, expected {p} ± {5 * sigma:.4f}")
    kept = out != 0
    # the survivors' scale is the one rounded number 1/(1 − p): out = x · it, exactly
    torch.testing.assert_close(out[kept], x[kept] * (1 / (1 - p)), rtol=0, atol=0)
    # mean of out / x over elements: 1 in expectation, σ = √(p / ((1 − p) n))
    ratio_sigma = math.sqrt(p / ((1 - p) * n))
    assert abs((out / x).mean().item() - 1) < 5 * ratio_sigma


@given(shape=shapes(max_dims=3, max_side=4), p=st.floats(0.1, 0.9),
       seed=st.integers(0, 2**31 - 1))
def test_backward_matches_finite_differences(shape, p, seed):
    """With the mask fixed by re-seeding before every call, dropout is linear in x."""
    x = seeded(shape, seed)
    dout = seeded(shape, seed + 1)

    def seeded_dropout(t):
        torch.manual_seed(seed)
        return F.dropout(t, p)

    _, (dx,) = scratchnet_grads(seeded_dropout, [x], dout)
    (numeric,) = finite_difference_vjp(seeded_dropout, [x], dout)
    assert_close_to_finite_differences(dx, numeric, f"dropout(p={p}) dx")


def test_gradients_accumulate_and_the_mask_is_drawn_per_call():
    x = scratchnet.leaf(torch.ones(1000))
    dout = torch.ones(1000)
    F.dropout(x, 0.5).backward(dout)
    first = x.grad.clone()
    second_out = F.dropout(x, 0.5)
    (second,) = scratchnet.grad(second_out, [x], dout)
    second_out.backward(dout)
    assert torch.equal(x.grad, first + second), "gradients should accumulate"
    assert not torch.equal(first, second), "each call should draw a new mask"
    assert set(first.unique().tolist()) == {0.0, 2.0}


@pytest.mark.parametrize("p, inplace",
                         [(0.5, False), (0.2, True), (0.0, False), (1, False)])
def test_module_repr_matches_torch(p, inplace):
    assert repr(nn.Dropout(p, inplace)) == repr(torch.nn.Dropout(p, inplace))
    assert repr(nn.Dropout()) == repr(torch.nn.Dropout())


@pytest.mark.parametrize("p", [-0.1, 1.5, math.nan, math.inf])
def test_bad_probability_raises_option_error(p):
    message = "dropout probability has to be between 0 and 1"
    with pytest.raises(OptionError, match=message):
        F.dropout(torch.randn(3), p)
    with pytest.raises(OptionError, match="between 0 and 1"):
        F.dropout(torch.randn(3), p, training=False)  # checked in eval too, as torch
    with pytest.raises(OptionError, match="between 0 and 1"):
        nn.Dropout(p)


# ------------------------------------------------------------------ a supplied mask


def torch_keep_mask(shape, dtype, p, seed, device="cpu"):
    """The elements torch.nn.functional.dropout keeps after ``manual_seed(seed)``
    (read off its output on ones, so no torch internals are assumed)."""
    torch.manual_seed(seed)
    return TF.dropout(torch.ones(shape, dtype=dtype, device=device), p) != 0


@given(shape=shapes(min_dims=0), dtype=dtypes, scale=scales, p=probabilities,
       seed=st.integers(0, 2**31 - 1))
def test_supplied_mask_gives_torch_output_and_gradient(shape, dtype, scale, p, seed):
    """torch's own mask, supplied: output and dx bit-identical to torch's dropout
    after the same seed, and no random number drawn."""
    x = seeded(shape, seed, dtype, scale)
    dout = seeded(shape, seed + 1, dtype)
    keep = torch_keep_mask(shape, dtype, p, seed)
    torch.manual_seed(seed + 2)
    next_draw = torch.rand(3)
    torch.manual_seed(seed + 2)
    out, (dx,) = scratchnet_grads(lambda t: F.dropout(t, p, mask=keep), [x], dout)
    assert torch.equal(torch.rand(3), next_draw), "a supplied mask drew random numbers"
    torch.manual_seed(seed)
    out_ref, (dx_ref,) = torch_grads(lambda t: TF.dropout(t, p), [x], dout)
    assert_identical(out, out_ref, f"dropout(p={p}, mask) forward")
    assert_identical(dx, dx_ref, f"dropout(p={p}, mask) dx")


def test_module_takes_a_mask_in_training_and_ignores_it_in_eval():
    x = seeded((5, 6), 3, torch.float32)
    keep = torch_keep_mask((5, 6), torch.float32, 0.4, 7)
    torch.manual_seed(7)
    expected = TF.dropout(x, 0.4)
    layer = nn.Dropout(0.4)
    assert_identical(layer(x, mask=keep), expected, "Dropout(0.4)(x, mask=...)")
    layer.eval()
    assert_identical(layer(x, mask=keep), x, "eval mode is the identity, mask or not")


@given(shape=shapes(max_dims=3, max_side=4), p=st.floats(0.1, 0.9),
       seed=st.integers(0, 2**31 - 1))
def test_supplied_mask_backward_matches_finite_differences(shape, p, seed):
    x = seeded(shape, seed)
    dout = seeded(shape, seed + 1)
    keep = seeded(shape, seed + 2) > 0
    _, (dx,) = scratchnet_grads(lambda t: F.dropout(t, p, mask=keep), [x], dout)
    (numeric,) = finite_difference_vjp(lambda t: F.dropout(t, p, mask=keep), [x], dout)
    assert_close_to_finite_differences(dx, numeric, f"dropout(p={p}, mask) dx")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_mask_from_torch_native_dropout_gives_torch_output(dtype):
    """On CUDA torch's mask comes from its fused kernel; supplied to scratchnet,
    output and dx equal torch's within the parity tolerance (torch rounds the
    scale 1/(1 − p) in its kernel's own way)."""
    from tests.oracles import assert_parity

    p = 0.3
    x = seeded((64, 33), 0, dtype, device="cuda")
    dout = seeded((64, 33), 1, dtype, device="cuda")
    x_ref = x.clone().requires_grad_(True)
    out_ref, keep = torch.native_dropout(x_ref, p, True)
    out_ref.backward(dout)
    out, (dx,) = scratchnet_grads(lambda t: F.dropout(t, p, mask=keep), [x], dout)
    assert_parity(out, out_ref, "dropout on CUDA with torch's mask: forward")
    assert_parity(dx, x_ref.grad, "dropout on CUDA with torch's mask: dx")


@pytest.mark.parametrize("mask, error, message", [
    (torch.ones(3, 4), "DTypeError", "mask must be a bool tensor"),
    (torch.ones(4, 3, dtype=torch.bool), "ShapeError", r"mask of shape \(4, 3\).*\(3, 4\)"),
    ([[True] * 4] * 3, "ArgumentTypeError", "mask must be a torch.Tensor"),
])
def test_bad_masks_are_named(mask, error, message):
    with pytest.raises(getattr(scratchnet.errors, error), match=message):
        F.dropout(torch.randn(3, 4), 0.5, mask=mask)
    with pytest.raises(getattr(scratchnet.errors, error), match=message):
        nn.Sequential(nn.Dropout(0.5))[0](torch.randn(3, 4), mask=mask)
