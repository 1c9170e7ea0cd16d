"""Element-wise activations: forward and input gradient against torch.nn.functional
+ torch.autograd and against central differences; saturation at extreme inputs;
the modules' repr and backward against torch.nn's; the step function's zero
gradient; bad options named.

Tolerances: the parity contract of tests/oracles.py, except for GELU in float64,
where torch's own result carries an absolute rounding error and a documented
floor is added (see :func:`gelu_rounding_floors`).
"""

import math
import warnings
from functools import partial

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
    assert_parity,
    device_params,
    finite_difference_vjp,
    scratchnet_grads,
    torch_grads,
)
from tests.strategies import dtypes, scales, seeded, shapes

TF = torch.nn.functional
EPS64 = torch.finfo(torch.float64).eps


def assert_parity_with_floor(actual: torch.Tensor, expected: torch.Tensor,
                             floor: torch.Tensor | None, what: str) -> None:
    """The parity contract (tests/oracles.py), plus, in float64 only, an
    element-wise absolute ``floor`` for ops whose torch result is itself only
    accurate to an absolute rounding error (the floor's derivation is given
    where it is computed). float32 always uses the plain contract."""
    if floor is None or expected.dtype != torch.float64:
        assert_parity(actual, expected, what)
        return
    actual = scratchnet.autodiff.plain(actual).detach()
    expected = expected.detach()
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, (
        f"{what}: {actual.dtype} {tuple(actual.shape)} != "
        f"{expected.dtype} {tuple(expected.shape)}")
    finite = expected[torch.isfinite(expected)]
    scale = finite.abs().max().item() if finite.numel() else 0.0
    allowed = 1e-12 * expected.abs() + 1e-12 * scale + floor
    difference = (actual - expected).abs()
    identical = (actual == expected) | (actual.isnan() & expected.isnan())
    close = torch.isfinite(expected) & (difference <= allowed)  # ±inf, NaN: identical
    bad = ~identical & ~close
    if bad.any():
        i = int(bad.flatten().nonzero()[0])
        raise AssertionError(
            f"{what} (float64): {int(bad.sum())} element(s) differ beyond the contract "
            f"+ rounding floor; first at flat index {i}: scratchnet "
            f"{actual.flatten()[i].item()!r}, torch {expected.flatten()[i].item()!r}, "
            f"|diff| {difference.flatten()[i].item():.3e} > allowed "
            f"{allowed.flatten()[i].item():.3e} "
            f"(floor {floor.flatten()[i].item():.3e})")


# aten's GELU constants (Activation.cpp)
_TANH_BETA = math.sqrt(2) * (2 / math.sqrt(math.pi)) * 0.5  # √(2/π)
_TANH_KAPPA = 0.044715


def gelu_rounding_floors(approximate: str, x: torch.Tensor, dout: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """How far torch's float64 GELU may legitimately be from scratchnet's.

    Both compute ``½x · (1 + e)`` with e = erf(x/√2) or tanh(u), and e → −1 for
    x ≪ 0: the sum cancels, so the result is only accurate to an absolute
    0.5·|x|·ulp(e), not to a relative ε. torch's fused kernel evaluates e with
    SLEEF while ``torch.erf`` / ``torch.tanh`` (which scratchnet must use) go
    through MKL's VML; each is within 1 ulp, so they can differ by 2 ulps of a
    number in [½, 1), i.e. by ε. The floors are the results' sensitivity to
    Δe = ε (2ε for the tanh backward, whose inner u may also differ by an ulp):

        forward:          ½|x| · ε                (·2 margin → ε·|x|)
        backward 'none':  |dout| · ½ε             (·2 margin → ε·|dout|)
        backward 'tanh':  |dout| · (½ + |x|·u') · 2ε,  u' = √(2/π)(1 + 3κx²)

    and zero where e is exactly ±1 in any implementation (|x/√2| ≥ 8.5 for erf,
    |u| ≥ 40 for tanh): there both give exactly the same saturated value.
    Measured on 4·10⁶ float64 samples at scales 1..30, the largest
    |scratchnet − torch| beyond the contract was 0.25 of these floors
    (fwd and 'none' bwd) and 0.30 ('tanh' bwd); about 1 element in 4000 ('none')
    and 1 in 25 ('tanh') needs the floor at all.
    """
    if approximate == "tanh":
        live = (_TANH_BETA * (x + _TANH_KAPPA * x ** 3)).abs() < 40
        forward = EPS64 * x.abs() * live
        inner_derivative = _TANH_BETA * (1 + 3 * _TANH_KAPPA * x * x)
        backward = 2 * EPS64 * dout.abs() * (0.5 + x.abs() * inner_derivative) * live
        return forward, backward
    forward = EPS64 * x.abs() * (x.abs() < 12)
    return forward, EPS64 * dout.abs()


# (name, scratchnet op, torch reference, rounding floors or None, kink at 0)
ELEMENTWISE = [
    ("relu", F.relu, TF.relu, None, True),
    ("sigmoid", F.sigmoid, torch.sigmoid, None, False),
    ("tanh", F.tanh, torch.tanh, None, False),
    ("leaky_relu", F.leaky_relu, TF.leaky_relu, None, True),
    ("leaky_relu(0.2)", partial(F.leaky_relu, negative_slope=0.2),
     partial(TF.leaky_relu, negative_slope=0.2), None, True),
    ("leaky_relu(-1.5)", partial(F.leaky_relu, negative_slope=-1.5),
     partial(TF.leaky_relu, negative_slope=-1.5), None, True),
    ("gelu", F.gelu, TF.gelu, partial(gelu_rounding_floors, "none"), False),
    ("gelu(tanh)", partial(F.gelu, approximate="tanh"),
     partial(TF.gelu, approximate="tanh"), partial(gelu_rounding_floors, "tanh"),
     False),
]
CASES = [pytest.param(*case, id=case[0]) for case in ELEMENTWISE]


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize("name, ours, ref, floors, kink", CASES)
@given(shape=shapes(min_dims=0), dtype=dtypes, scale=scales, seed=st.integers(0, 2**16))
def test_matches_torch(device, name, ours, ref, floors, kink, shape, dtype, scale,
                       seed):
    x = seeded(shape, seed, dtype, scale, device)
    dout = seeded(shape, seed + 1, dtype, 1.0, device)
    out, (dx,) = scratchnet_grads(ours, [x], dout)
    out_ref, (dx_ref,) = torch_grads(ref, [x], dout)
    forward_floor, backward_floor = (None, None) if floors is None else floors(x, dout)
    assert_parity_with_floor(out, out_ref, forward_floor, f"{name} forward")
    assert_parity_with_floor(dx, dx_ref, backward_floor, f"{name} dx")


@pytest.mark.parametrize("name, ours, ref, floors, kink", CASES)
def test_gradient_at_zero_matches_torch(name, ours, ref, floors, kink):
    """The kinks' convention (relu: 0, leaky relu: the slope) is torch's."""
    x = torch.tensor([-1.0, 0.0, 2.0, -0.0], dtype=torch.float64)
    dout = torch.tensor([0.5, 3.0, -2.0, 7.0], dtype=torch.float64)
    out, (dx,) = scratchnet_grads(ours, [x], dout)
    out_ref, (dx_ref,) = torch_grads(ref, [x], dout)
    assert_parity(out, out_ref, f"{name} forward at 0")
    assert_parity(dx, dx_ref, f"{name} dx at 0")


@pytest.mark.parametrize("name, ours, ref, floors, kink", CASES)
@given(shape=shapes(max_dims=3, max_side=4), seed=st.integers(0, 2**16),
       scale=st.sampled_from([0.1, 1.0, 5.0]))
def test_backward_matches_finite_differences(name, ours, ref, floors, kink, shape, seed,
                                             scale):
    x = seeded(shape, seed, scale=scale)
    if kink:  # central differences across a kink are meaningless: keep |x| ≥ 1e-3
        x = x + torch.where(x < 0, -1e-3, 1e-3)
    dout = seeded(shape, seed + 1)
    _, (dx,) = scratchnet_grads(ours, [x], dout)
    (numeric,) = finite_difference_vjp(ours, [x], dout)
    assert_close_to_finite_differences(dx, numeric, f"{name} dx")


@pytest.mark.parametrize("name, ours, ref", [
    ("sigmoid", F.sigmoid, torch.sigmoid), ("tanh", F.tanh, torch.tanh)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_saturates_without_overflow(name, ours, ref, dtype):
    """σ and tanh at ±1e4 … ±max: exactly 0/±1, zero gradient, no NaN, no warning."""
    big = torch.finfo(dtype).max
    x = torch.tensor([-big, -1e30, -1e4, -50.0, 0.0, 50.0, 1e4, 1e30, big], dtype=dtype)
    dout = torch.ones_like(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, (dx,) = scratchnet_grads(ours, [x], dout)
    out_ref, (dx_ref,) = torch_grads(ref, [x], dout)
    assert torch.isfinite(out).all(), f"{name} forward: {out}"
    assert torch.isfinite(dx).all(), f"{name} dx: {dx}"
    assert_parity(out, out_ref, f"{name} saturated forward")
    assert_parity(dx, dx_ref, f"{name} saturated dx")
    low = 0.0 if name == "sigmoid" else -1.0
    assert scratchnet.autodiff.plain(out)[0] == low and out[-1] == 1.0
    assert (scratchnet.autodiff.plain(dx)[[0, 1, 2, -3, -2, -1]] == 0).all()


@pytest.mark.parametrize("name, ours, ref", [
    ("sigmoid", F.sigmoid, torch.sigmoid), ("tanh", F.tanh, torch.tanh)])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_gradient_near_saturation_matches_torch(name, ours, ref, sign):
    """Where σ or tanh is within 1e-4 … 1e-16 of saturation, 1 − out (σ) and
    1 − out² (tanh) cancel and magnify any rounding of out: every rounding step
    must be torch's (for tanh, the fused 1 − out·out). One element per tensor, so
    no larger neighbour lends the comparison an absolute floor."""
    for x in sign * torch.linspace(4.0, 40.0, 2000, dtype=torch.float64):
        x = x.reshape(1)
        dout = torch.ones_like(x)
        out, (dx,) = scratchnet_grads(ours, [x], dout)
        out_ref, (dx_ref,) = torch_grads(ref, [x], dout)
        assert_parity(out, out_ref, f"{name}({x.item()}) forward")
        assert_parity(dx, dx_ref, f"{name}({x.item()}) dx")


# --------------------------------------------------------------------------------------
# the binary step


def test_step_forward_is_the_tutorial_definition():
    """f(x) = 0 if x < 0, 1 if x ≥ 0; torch's nearest op is heaviside with H(0) = 1,
    which agrees except that it maps NaN to 0 where step keeps NaN."""
    x = torch.tensor([-1e30, -2.5, -1e-300, -0.0, 0.0, 1e-300, 3.0, 1e30, math.nan],
                     dtype=torch.float64)
    out = F.step(x)
    expected = torch.tensor([0.0, 0, 0, 1, 1, 1, 1, 1, math.nan], dtype=torch.float64)
    torch.testing.assert_close(out, expected, rtol=0, atol=0, equal_nan=True)
    heaviside = torch.heaviside(x[:-1], torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(out[:-1], heaviside, rtol=0, atol=0)


@given(shape=shapes(min_dims=0), dtype=dtypes, scale=scales, seed=st.integers(0, 2**16))
def test_step_gradient_is_zero(shape, dtype, scale, seed):
    x = seeded(shape, seed, dtype, scale)
    dout = seeded(shape, seed + 1, dtype)
    out, (dx,) = scratchnet_grads(F.step, [x], dout)
    assert_parity(out, (x >= 0).to(dtype), "step forward")
    assert_parity(dx, torch.zeros_like(x), "step dx")


@given(shape=shapes(max_dims=3, max_side=4), seed=st.integers(0, 2**16))
def test_step_zero_gradient_matches_finite_differences(shape, seed):
    """Away from 0 (|x| ≥ 1e-3 ≫ h) the step is flat: central differences are 0."""
    x = seeded(shape, seed)
    x = x + torch.where(x < 0, -1e-3, 1e-3)
    dout = seeded(shape, seed + 1)
    _, (dx,) = scratchnet_grads(F.step, [x], dout)
    (numeric,) = finite_difference_vjp(F.step, [x], dout)
    assert_close_to_finite_differences(dx, numeric, "step dx")


def test_a_network_of_steps_cannot_learn():
    """Every parameter before the step gets a zero gradient, so SGD never moves it;
    the layer after the step still learns."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Step(), nn.Linear(3, 1))
    loss = model(torch.randn(8, 4)).square().mean()
    loss.backward()
    first, last = model[0], model[2]
    assert torch.equal(first.weight.grad, torch.zeros(3, 4))
    assert torch.equal(first.bias.grad, torch.zeros(3))
    assert last.weight.grad.abs().sum() > 0, "the layer after the step should learn"


# --------------------------------------------------------------------------------------
# modules

MODULE_PAIRS = [
    ("ReLU()", lambda: nn.ReLU(), lambda: torch.nn.ReLU()),
    ("ReLU(inplace=True)", lambda: nn.ReLU(inplace=True),
     lambda: torch.nn.ReLU(inplace=True)),
    ("Sigmoid()", lambda: nn.Sigmoid(), lambda: torch.nn.Sigmoid()),
    ("Tanh()", lambda: nn.Tanh(), lambda: torch.nn.Tanh()),
    ("LeakyReLU()", lambda: nn.LeakyReLU(), lambda: torch.nn.LeakyReLU()),
    ("LeakyReLU(0.2, inplace=True)", lambda: nn.LeakyReLU(0.2, inplace=True),
     lambda: torch.nn.LeakyReLU(0.2, inplace=True)),
    ("GELU()", lambda: nn.GELU(), lambda: torch.nn.GELU()),
    ("GELU('tanh')", lambda: nn.GELU("tanh"), lambda: torch.nn.GELU("tanh")),
]


@pytest.mark.parametrize("label, make_ours, make_ref", MODULE_PAIRS,
                         ids=[pair[0] for pair in MODULE_PAIRS])
def test_module_repr_matches_torch(label, make_ours, make_ref):
    assert repr(make_ours()) == repr(make_ref()), label


def test_step_module_repr():
    assert repr(nn.Step()) == "Step()"
    assert repr(nn.Sequential(nn.Linear(2, 2), nn.Step())).endswith("(1): Step()\n)")


@pytest.mark.parametrize("label, make_ours, make_ref", MODULE_PAIRS,
                         ids=[pair[0] for pair in MODULE_PAIRS])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_module_backward_matches_torch(label, make_ours, make_ref, dtype):
    """``out = m(x); dx = m.backward(dout)`` gives torch's input gradient."""
    x = seeded((3, 5), 7, dtype, scale=2.0)
    dout = seeded((3, 5), 8, dtype)
    module = make_ours()
    out = module(x.clone())
    dx = module.backward(dout)
    x_ref = x.clone().requires_grad_(True)
    out_ref = make_ref()(x_ref * 1)  # "* 1": torch's inplace variants need a non-leaf
    out_ref.backward(dout)
    assert_parity(out, out_ref, f"{label} forward")
    assert_parity(dx, x_ref.grad, f"{label} Module.backward dx")
    assert torch.equal(x, seeded((3, 5), 7, dtype, scale=2.0)), "the input was modified"


def test_bad_gelu_approximation_raises_option_error():
    with pytest.raises(OptionError, match="'exact'"):
        F.gelu(torch.randn(3), approximate="exact")
    with pytest.raises(OptionError, match="'none' or 'tanh'"):
        nn.GELU("sigmoid")
