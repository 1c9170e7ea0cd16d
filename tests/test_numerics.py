"""Extreme values: softmax, log_softmax and cross_entropy stay finite and equal to
torch's for logits of any magnitude up to 1e30, in float32 and float64, where the
naive exp(x) / Σ exp(x) overflows; sigmoid and tanh saturate silently; label
smoothing and a batch whose every target is ignored behave exactly as torch.

Tolerances are the parity contract of tests/oracles.py (float64 rtol 1e-12, with
its scale floor; float32 assert_close defaults) and the documented float64
floors: softmax's d input, tests/test_softmax.softmax_backward_floor (a nearly
one-hot row cancels); cross_entropy's, tests/test_loss.assert_dinput_parity.
None is widened here.

Shapes: B = batch, C = classes.
"""

import warnings

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given
from hypothesis import strategies as st

import scratchnet
import scratchnet.nn.functional as F
from tests.oracles import assert_parity, scratchnet_grads, torch_grads
from tests.strategies import dtypes
from tests.test_loss import (
    assert_dinput_parity,
    assert_loss_parity,
    class_problems,
    run_both,
)
from tests.test_softmax import SOFTMAXES, check_against_torch


def naive_softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    """exp(x) / Σ exp(x) without subtracting the max (seed 004's formula)."""
    exps = torch.exp(x)
    return exps / exps.sum(dim=dim, keepdim=True)


@st.composite
def extreme_logits(draw, dtype: torch.dtype | None = None) -> torch.Tensor:
    """(B, C) logits of magnitude 10^k, k in [0, 30], in one of four layouts:
    normal noise, rows with tied maxima, one huge outlier per row, and rows of
    one constant (every class tied)."""
    dtype = dtype or draw(dtypes)
    batch, n_classes = draw(st.integers(1, 5)), draw(st.integers(1, 7))
    magnitude = 10.0 ** draw(st.floats(0, 30))
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(batch, n_classes, generator=generator, dtype=torch.float64)
    layout = draw(st.sampled_from(["noise", "ties", "outlier", "constant"]))
    if layout == "ties":
        noise[:, : (n_classes + 1) // 2] = noise.abs().max() + 1  # several maxima
    elif layout == "outlier":
        noise = noise / 1e3
        noise[torch.arange(batch), torch.randint(0, n_classes, (batch,),
                                                 generator=generator)] = 1.0
    elif layout == "constant":
        noise = noise[:, :1].expand(batch, n_classes).clone()
    return (noise * magnitude).to(dtype)  # (B, C)


@pytest.mark.parametrize(("name", "ours", "ref", "floor"), SOFTMAXES)
@given(x=extreme_logits(), dim=st.sampled_from([0, 1, -1]))
def test_softmaxes_of_extreme_logits_are_finite_and_equal_torch(name, ours, ref, floor,
                                                                 x, dim):
    dout = torch.linspace(-1, 1, x.numel(), dtype=x.dtype).reshape(x.shape)
    out, (dx,) = scratchnet_grads(lambda t: ours(t, dim), [x], dout)
    what = f"{name}(dim={dim}) {x.dtype} max|x| {x.abs().max().item():.3g}"
    out, dx = scratchnet.autodiff.plain(out), scratchnet.autodiff.plain(dx)
    assert torch.isfinite(out).all(), f"{what}: forward {out}"
    assert torch.isfinite(dx).all(), f"{what}: dx {dx}"
    check_against_torch(what, ours, ref, floor, x, dim, dout)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("magnitude", [1e4, 1e30])
def test_the_naive_formula_overflows_where_scratchnet_does_not(dtype, magnitude):
    """What the property above guards against: exp(1e4) is inf in both dtypes,
    so the naive softmax is inf / inf = nan."""
    x = torch.tensor([[1.0, 0.5, -1.0]], dtype=torch.float64).mul(magnitude).to(dtype)
    assert torch.isnan(naive_softmax(x, 1)).any()
    out = scratchnet.autodiff.plain(F.softmax(x, dim=1))
    assert_parity(out, TF.softmax(x, dim=1), f"softmax at {magnitude:g}")
    assert torch.equal(out, torch.tensor([[1.0, 0.0, 0.0]], dtype=dtype))


@given(data=st.data(), exponent=st.floats(0, 30))
def test_cross_entropy_of_extreme_logits_is_finite_and_equals_torch(data, exponent):
    """Every target kind, weight, reduction, label_smoothing and ignore_index that
    tests/test_loss.class_problems draws, at magnitude 10^exponent."""
    problem = data.draw(class_problems(scale=10.0 ** exponent))
    out, out_ref, dx, dx_ref, dlog_probs_ref = run_both(F.cross_entropy,
                                                        TF.cross_entropy, problem)
    what = (f"cross_entropy {problem['kind']} |x|~1e{exponent:.1f} "
            f"{problem['logits'].dtype} {problem['kwargs']}")
    if not problem["nan_mean"]:
        assert torch.isfinite(scratchnet.autodiff.plain(out)).all(), f"{what}: {out}"
    assert torch.isfinite(dx).all(), f"{what}: dinput {dx}"
    assert_loss_parity(out, out_ref, f"{what} forward")
    assert_dinput_parity(dx, dx_ref, dlog_probs_ref, f"{what} dinput")


# --------------------------------------------------------------------------------------
# sigmoid and tanh saturate


@pytest.mark.parametrize(("ours", "ref", "low", "high"), [
    pytest.param(F.sigmoid, torch.sigmoid, 0.0, 1.0, id="sigmoid"),
    pytest.param(F.tanh, torch.tanh, -1.0, 1.0, id="tanh"),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sigmoid_and_tanh_saturate_without_warnings(ours, ref, low, high, dtype):
    """At ±1e4, ±1e30 and ±max the output is exactly the limit and the gradient
    exactly 0, nothing overflows to nan, and no warning is raised (numpy's
    'overflow in exp' is what a composed 1 / (1 + exp(−x)) would give)."""
    biggest = torch.finfo(dtype).max
    x = torch.tensor([-biggest, -1e30, -1e4, 1e4, 1e30, biggest], dtype=dtype)
    limits = torch.tensor([low] * 3 + [high] * 3, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, (dx,) = scratchnet_grads(ours, [x], torch.ones_like(x))
    out_ref, (dx_ref,) = torch_grads(ref, [x], torch.ones_like(x))
    out, dx = scratchnet.autodiff.plain(out), scratchnet.autodiff.plain(dx)
    assert torch.equal(out, limits), out
    assert torch.equal(dx, torch.zeros_like(x)), dx
    assert_parity(out, out_ref, "forward")
    assert_parity(dx, dx_ref, "dx")


# --------------------------------------------------------------------------------------
# label smoothing and ignore_index


@pytest.mark.parametrize("label_smoothing", [0.0, 1e-8, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_label_smoothing_matches_torch_up_to_the_uniform_target(label_smoothing,
                                                                reduction, dtype):
    """ε = 1 makes the target uniform (the class index no longer matters), ε = 1e-8
    is a whisker from none; with a weight, an ignored target and logits of 1e30."""
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0], [1e30, -1e30, 0.0, 3.0],
                           [0.1, 0.2, 0.3, 0.4]], dtype=dtype)
    target = torch.tensor([0, 3, -100])
    weight = torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=dtype)
    out, out_ref, dx, dx_ref, dlog_probs_ref = run_both(F.cross_entropy, TF.cross_entropy, {
        "logits": logits, "target": target, "seed": 3,
        "kwargs": {"weight": weight, "label_smoothing": label_smoothing,
                   "reduction": reduction}})
    what = f"label_smoothing={label_smoothing} {reduction} {dtype}"
    assert_loss_parity(out, out_ref, f"{what} forward")
    assert_dinput_parity(dx, dx_ref, dlog_probs_ref, f"{what} dinput")


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize(("ours", "ref", "label_smoothing"), [
    pytest.param(F.cross_entropy, TF.cross_entropy, 0.0, id="cross_entropy"),
    pytest.param(F.cross_entropy, TF.cross_entropy, 0.3, id="cross_entropy-smoothed"),
    pytest.param(F.nll_loss, TF.nll_loss, 0.0, id="nll_loss"),
])
def test_every_target_ignored_behaves_as_torch(reduction, use_weight, ours, ref,
                                               label_smoothing):
    """torch: 'mean' is 0 / 0 = nan, 'sum' is 0, 'none' is zeros; d input is
    exactly 0 everywhere (not nan) in all three."""
    logits = torch.tensor([[1e30, 0.0, -2.0], [0.5, 0.25, -1e30]], dtype=torch.float64)
    target = torch.tensor([-100, -100])
    kwargs = {"reduction": reduction}
    if label_smoothing:
        kwargs["label_smoothing"] = label_smoothing
    if use_weight:
        kwargs["weight"] = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    x_leaf = scratchnet.leaf(logits.clone())
    out = scratchnet.autodiff.plain(ours(x_leaf, target, **kwargs))
    x_ref = logits.clone().requires_grad_(True)
    out_ref = ref(x_ref, target, **kwargs)
    dout = torch.ones_like(out_ref)
    (dx,) = scratchnet.grad(ours(x_leaf, target, **kwargs), [x_leaf], dout)
    (dx_ref,) = torch.autograd.grad(out_ref, [x_ref], dout)
    expected = {"mean": torch.tensor(float("nan"), dtype=torch.float64),
                "sum": torch.tensor(0.0, dtype=torch.float64),
                "none": torch.zeros(2, dtype=torch.float64)}[reduction]
    torch.testing.assert_close(out_ref.detach(), expected, equal_nan=True)  # torch's
    torch.testing.assert_close(out, expected, equal_nan=True, rtol=0, atol=0)
    assert torch.equal(dx_ref, torch.zeros_like(logits))
    assert torch.equal(scratchnet.autodiff.plain(dx), torch.zeros_like(logits)), dx
