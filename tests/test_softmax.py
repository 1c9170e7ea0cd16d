"""softmax / log_softmax: forward and input gradient over every dim (negative dims
included) against torch + torch.autograd and against central differences;
extreme logits; the implicit-dim rule and its warning; ``dtype=``; the modules'
repr and backward; bad options named.

Tolerances: the parity contract of tests/oracles.py, except softmax's gradient in
float64, where a documented rounding floor is added (:func:`softmax_backward_floor`).
"""

import contextlib

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import scratchnet
from scratchnet import nn
from scratchnet.errors import DTypeError, OptionError, ShapeError
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
from tests.test_activation import assert_parity_with_floor

EPS64 = torch.finfo(torch.float64).eps


def softmax_backward_floor(out: torch.Tensor, dout: torch.Tensor, dim: int
                           ) -> torch.Tensor:
    """How far torch's float64 softmax gradient may legitimately be from ours.

    dx_j = out_j · (dout_j − s), s = Σ_i dout_i · out_i. When the slice is nearly
    one-hot, dout_j − s cancels and dx_j is only accurate to an absolute
    out_j · |Δs|, and s legitimately differs between the two: torch's out comes
    from SLEEF's exp (ours from ``torch.exp``, MKL's VML: ≤ 2 ulps apart, plus
    the sum and reciprocal, ≤ 8ε relative per out_i in all), and torch sums s
    with fused multiply-adds in an order that depends on the dim and the CPU's
    vector width (n rounded terms: ≤ 2nε·Σ|dout_i·out_i| apart). So

        floor_j = (2n + 8) · ε · out_j · max|dout|

    Measured on 1.2·10⁵ slices (n = 2..17, logits ×1..×100), the largest
    difference beyond the contract was 0.14 of this floor; about 1 element in 200
    needs it.
    """
    n = out.shape[dim] if out.dim() else 1
    largest_dout = dout.abs().max() if dout.numel() else 0.0
    return (2 * n + 8) * EPS64 * out.abs() * largest_dout


# (name, scratchnet op, torch reference, rounding floor for the float64 gradient)
SOFTMAXES = [
    pytest.param("softmax", F.softmax, torch.softmax, softmax_backward_floor,
                 id="softmax"),
    pytest.param("log_softmax", F.log_softmax, torch.log_softmax, None,
                 id="log_softmax"),
]


def check_against_torch(name, ours, ref, floor, x, dim, dout):
    out, (dx,) = scratchnet_grads(lambda t: ours(t, dim), [x], dout)
    out_ref, (dx_ref,) = torch_grads(lambda t: ref(t, dim), [x], dout)
    assert_parity(out, out_ref, f"{name}(dim={dim}) forward")
    backward_floor = None if floor is None else floor(out_ref.detach(), dout, dim)
    assert_parity_with_floor(dx, dx_ref, backward_floor, f"{name}(dim={dim}) dx")


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize("name, ours, ref, floor", SOFTMAXES)
@given(data=st.data(), shape=shapes(min_dims=0), dtype=dtypes, scale=scales,
       seed=st.integers(0, 2**16))
def test_matches_torch(device, name, ours, ref, floor, data, shape, dtype, scale, seed):
    ndim = max(len(shape), 1)
    dim = data.draw(st.integers(-ndim, ndim - 1), label="dim")
    x = seeded(shape, seed, dtype, scale, device)
    dout = seeded(shape, seed + 1, dtype, 1.0, device)
    check_against_torch(name, ours, ref, floor, x, dim, dout)


@pytest.mark.parametrize("name, ours, ref, floor", SOFTMAXES)
@pytest.mark.parametrize("dim", range(-4, 4))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_dim_of_a_4d_input(name, ours, ref, floor, dim, dtype):
    x = seeded((2, 1, 3, 4), 3, dtype, scale=3.0)
    dout = seeded((2, 1, 3, 4), 4, dtype)
    check_against_torch(name, ours, ref, floor, x, dim, dout)


@pytest.mark.parametrize("name, ours, ref, floor", SOFTMAXES)
@given(data=st.data(), shape=shapes(max_dims=3, max_side=4), seed=st.integers(0, 2**16),
       scale=st.sampled_from([0.1, 1.0, 4.0]))
def test_backward_matches_finite_differences(name, ours, ref, floor, data, shape, seed,
                                             scale):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1), label="dim")
    x = seeded(shape, seed, scale=scale)
    dout = seeded(shape, seed + 1)
    _, (dx,) = scratchnet_grads(lambda t: ours(t, dim), [x], dout)
    (numeric,) = finite_difference_vjp(lambda t: ours(t, dim), [x], dout)
    assert_close_to_finite_differences(dx, numeric, f"{name}(dim={dim}) dx")


@pytest.mark.parametrize("name, ours, ref, floor", SOFTMAXES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("magnitude", [1e4, 1e10, 1e30, "max/4"])
def test_extreme_logits_stay_finite(name, ours, ref, floor, dtype, magnitude):
    """Logits up to ±1e30 (and ±max/4, whose pairwise differences still fit)
    give finite outputs and gradients equal to torch's; softmax rows sum to 1."""
    m = torch.finfo(dtype).max / 4 if magnitude == "max/4" else magnitude
    pattern = torch.tensor([[1.0, -1.0, 0.0, 0.5], [-1.0, -1.0, -1.0, -1.0],
                            [0.25, 1.0, 1.0, -0.3]], dtype=torch.float64)
    x = (pattern * m).to(dtype)  # (3, 4)
    dout = seeded((3, 4), 5, dtype)
    out, (dx,) = scratchnet_grads(lambda t: ours(t, 1), [x], dout)
    out_ref, (dx_ref,) = torch_grads(lambda t: ref(t, 1), [x], dout)
    out, dx = scratchnet.autodiff.plain(out), scratchnet.autodiff.plain(dx)
    assert torch.isfinite(out).all(), f"{name} forward at ±{m}: {out}"
    assert torch.isfinite(dx).all(), f"{name} dx at ±{m}: {dx}"
    assert_parity(out, out_ref, f"{name} forward at ±{m}")
    assert_parity(dx, dx_ref, f"{name} dx at ±{m}")
    probabilities = out if name == "softmax" else out.exp()
    torch.testing.assert_close(probabilities.sum(1), torch.ones(3, dtype=dtype),
                               msg=lambda msg: f"{name} rows at ±{m} sum to 1: {msg}")


@pytest.mark.parametrize("name, ours, ref, floor", SOFTMAXES)
def test_dtype_argument_casts_first_and_returns_grad_in_input_dtype(name, ours, ref,
                                                                    floor):
    x = seeded((3, 5), 1, torch.float32, scale=10.0)
    dout = seeded((3, 5), 2, torch.float64)
    out, (dx,) = scratchnet_grads(lambda t: ours(t, 1, dtype=torch.float64), [x], dout)
    out_ref, (dx_ref,) = torch_grads(lambda t: ref(t, 1, dtype=torch.float64), [x],
                                     dout)
    assert out.dtype == torch.float64 and dx.dtype == torch.float32
    assert_parity(out, out_ref, f"{name}(dtype=float64) forward")
    assert_parity(dx, dx_ref, f"{name}(dtype=float64) dx")


@pytest.mark.parametrize("name, ours, ref, floor", SOFTMAXES)
def test_zero_dim_and_empty_inputs(name, ours, ref, floor):
    scalar = torch.tensor(3.5, dtype=torch.float64)
    for dim in (0, -1):
        dout = torch.tensor(2.0, dtype=torch.float64)
        check_against_torch(name, ours, ref, floor, scalar, dim, dout)
    empty = torch.empty(0, 3, dtype=torch.float64)
    for dim in (0, 1):
        check_against_torch(name, ours, ref, floor, empty, dim, torch.empty_like(empty))


@pytest.mark.parametrize("name, ours, ref, floor", SOFTMAXES)
@pytest.mark.parametrize("shape, implied_dim", [
    ((), 0), ((4,), 0), ((2, 3), 1), ((2, 3, 4), 0), ((2, 3, 4, 5), 1)])
def test_implicit_dim_follows_torch_and_warns(name, ours, ref, floor, shape,
                                              implied_dim):
    """dim=None: torch's legacy rule, torch's warning text, pointing at the caller."""
    x = seeded(shape, 6, scale=2.0)
    message = f"Implicit dimension choice for {name} has been deprecated"
    with pytest.warns(UserWarning, match=message) as record:
        out = ours(x)
    assert record[0].filename == __file__, "the warning should point at the caller"
    with pytest.warns(UserWarning, match=message):
        out_ref = getattr(torch.nn.functional, name)(x)
    assert_parity(out, out_ref, f"{name}(dim=None) on shape {shape}")
    assert_parity(out, ours(x, implied_dim), f"{name}(dim=None) is dim={implied_dim}")


# --------------------------------------------------------------------------------------
# modules

MODULE_PAIRS = [
    ("Softmax()", lambda: nn.Softmax(), lambda: torch.nn.Softmax()),
    ("Softmax(dim=1)", lambda: nn.Softmax(dim=1), lambda: torch.nn.Softmax(dim=1)),
    ("Softmax(-1)", lambda: nn.Softmax(-1), lambda: torch.nn.Softmax(-1)),
    ("LogSoftmax()", lambda: nn.LogSoftmax(), lambda: torch.nn.LogSoftmax()),
    ("LogSoftmax(dim=0)", lambda: nn.LogSoftmax(dim=0),
     lambda: torch.nn.LogSoftmax(dim=0)),
]
MODULE_IDS = [pair[0] for pair in MODULE_PAIRS]


@pytest.mark.parametrize("label, make_ours, make_ref", MODULE_PAIRS, ids=MODULE_IDS)
def test_module_repr_matches_torch(label, make_ours, make_ref):
    assert repr(make_ours()) == repr(make_ref()), label


def implicit_dim_warning(module):
    """A module built with dim=None warns on every call (both libraries)."""
    return pytest.warns(UserWarning) if module.dim is None else contextlib.nullcontext()


@pytest.mark.parametrize("label, make_ours, make_ref", MODULE_PAIRS, ids=MODULE_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_module_backward_matches_torch(label, make_ours, make_ref, dtype):
    """``out = m(x); dx = m.backward(dout)`` gives torch's input gradient."""
    x = seeded((4, 6), 9, dtype, scale=3.0)
    dout = seeded((4, 6), 10, dtype)
    module, reference = make_ours(), make_ref()
    with implicit_dim_warning(module):
        out = module(x)
    dx = module.backward(dout)
    x_ref = x.clone().requires_grad_(True)
    with implicit_dim_warning(reference):
        out_ref = reference(x_ref)
    out_ref.backward(dout)
    assert_parity(out, out_ref, f"{label} forward")
    assert_parity(dx, x_ref.grad, f"{label} Module.backward dx")


def test_module_implicit_dim_warning_points_at_the_caller():
    message = "Implicit dimension choice for softmax"
    with pytest.warns(UserWarning, match=message) as record:
        nn.Softmax()(torch.randn(2, 3))
    assert record[0].filename == __file__


def test_bad_options_are_named():
    x = torch.randn(2, 3)
    with pytest.raises(ShapeError, match=r"dim=2 is out of range.*\(2, 3\).*\[-2, 1\]"):
        F.softmax(x, 2)
    with pytest.raises(ShapeError, match=r"dim=-3"):
        F.log_softmax(x, -3)
    with pytest.raises(OptionError, match="dim must be an int"):
        F.softmax(x, "1")
    with pytest.raises(OptionError, match="dim must be an int"):
        nn.LogSoftmax(dim=1.0)
    with pytest.raises(DTypeError, match="floating point"):
        F.softmax(torch.arange(6).reshape(2, 3), 1)
    with pytest.raises(DTypeError, match="torch.int64"):
        F.log_softmax(x, 1, dtype=torch.int64)
    model = nn.Sequential(nn.Linear(3, 3), nn.Softmax(dim=2))
    with pytest.raises(ShapeError, match=r"^1 \(Softmax\(dim=2\)\): softmax: dim=2"):
        model(x)


def test_integer_input_with_float_dtype_matches_torch():
    x = torch.arange(6).reshape(2, 3)
    out = F.softmax(x, 1, dtype=torch.float64)
    assert_parity(out, torch.softmax(x, 1, dtype=torch.float64), "softmax(int, dtype)")
