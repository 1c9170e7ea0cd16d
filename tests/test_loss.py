"""Losses: cross_entropy, nll_loss and mse_loss (functional and modules) against
torch.nn.functional + torch.autograd and central differences; every option
combination; extreme logits; bad input named by scratchnet.errors."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import scratchnet
from scratchnet import nn
from scratchnet.autodiff import plain
from scratchnet.errors import (
    DTypeError,
    NotDifferentiableError,
    OptionError,
    ShapeError,
    TargetError,
)
from scratchnet.nn import functional as F
from scratchnet.nn.functional import vecmath
from tests.oracles import (
    assert_close_to_finite_differences,
    assert_parity,
    device_params,
    finite_difference_vjp,
)
from tests.strategies import dtypes, scales, seeded, shapes

REDUCTIONS = ["none", "mean", "sum"]
SMOOTHINGS = [0.0, 0.1, 0.25, 0.5, 1.0]

# (name, scratchnet op, torch op, full): full = takes label_smoothing and class
# probabilities, and its input is logits (else log-probabilities)
CLASS_LOSSES = [
    pytest.param("cross_entropy", F.cross_entropy, TF.cross_entropy, True,
                 id="cross_entropy"),
    pytest.param("nll_loss", F.nll_loss, TF.nll_loss, False, id="nll_loss"),
]


def assert_loss_parity(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """assert_parity, except for a nan loss (mean over only ignored targets):
    tests/oracles.assert_parity's float64 floor 1e-12·max|expected| is nan there,
    which torch.testing refuses, so a nan is checked as exactly nan on both
    sides (and same dtype and shape)."""
    actual_plain = scratchnet.autodiff.plain(actual).detach()
    if expected.numel() == 1 and torch.isnan(expected).all():
        assert actual_plain.dtype == expected.dtype, f"{what}: dtype"
        assert actual_plain.shape == expected.shape, f"{what}: shape"
        assert torch.isnan(actual_plain).all(), f"{what}: {actual_plain} but torch nan"
        return
    assert_parity(actual, expected, what)


# --------------------------------------------------------------------------------------
# drawing a classification problem


@st.composite
def class_problems(draw, probability_allowed: bool = True, smoothing_allowed: bool = True,
                   dtype: torch.dtype | None = None, scale: float | None = None,
                   device: str = "cpu") -> dict:
    """Input of shape (C,), (N, C) or (N, C, d1..dK); a target of either kind;
    every option. Returns the tensors and the keyword arguments for both sides."""
    layout = draw(st.sampled_from(["unbatched", "batched", "kdim"]))
    n_classes = draw(st.one_of(st.just(1), st.integers(1, 6)))
    batch = draw(st.one_of(st.just(1), st.integers(1, 5)))
    if layout == "unbatched":
        shape = (n_classes,)
    elif layout == "batched":
        shape = (batch, n_classes)
    else:
        shape = (batch, n_classes, *draw(shapes(min_dims=1, max_dims=2, max_side=4)))
    dtype = dtype or draw(dtypes)
    scale = scale if scale is not None else draw(scales)
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    logits = seeded(shape, seed, dtype, scale, device)
    if not probability_allowed:
        # nll_loss: its input is log-probabilities (all ≤ 0), as in real use. On
        # arbitrary-signed input the loss is a sum with cancellation, whose
        # rounding depends on the summation order (torch's cascade vs torch.sum):
        # found 2.7e-6 relative in float32 for inputs ±1e30 summing to 2.5e27.
        class_dim = min(1, len(shape) - 1)
        logits = torch.log_softmax(logits.double(), dim=class_dim).to(dtype)
    kwargs: dict = {"reduction": draw(st.sampled_from(REDUCTIONS))}
    if draw(st.booleans()):
        kwargs["weight"] = (torch.rand(n_classes, generator=generator,
                                       dtype=torch.float64) + 0.1).to(dtype=dtype,
                                                                       device=device)
    if smoothing_allowed:
        kwargs["label_smoothing"] = draw(st.sampled_from(SMOOTHINGS))
    kind = draw(st.sampled_from(["index", "probability"] if probability_allowed
                                else ["index"]))
    target_shape = () if layout == "unbatched" else (shape[0], *shape[2:])
    if kind == "probability":
        target = torch.softmax(torch.randn(shape, generator=generator,
                                           dtype=torch.float64) * 2, dim=min(1, len(shape) - 1))
        target = target.to(dtype=dtype, device=device)
        ignore = "absent"
    else:
        target = torch.randint(0, n_classes, target_shape, generator=generator)
        ignore = draw(st.sampled_from(["absent", "present", "all"]))
        if ignore != "absent":
            ignore_index = draw(st.sampled_from([-100, -1, n_classes - 1]))
            kwargs["ignore_index"] = ignore_index
            if ignore == "all":
                target = torch.full(target_shape, ignore_index, dtype=torch.int64)
            else:
                mask = torch.rand(target_shape, generator=generator) < 0.4
                target = torch.where(mask, ignore_index, target)
        target = target.to(device)
    ignore_index = kwargs.get("ignore_index", -100)
    # a mean over only ignored targets is 0/0 (also when "present" hit them all)
    nan_mean = (kind == "index" and kwargs["reduction"] == "mean"
                and bool((target == ignore_index).all()))
    return {"logits": logits, "target": target, "kwargs": kwargs, "kind": kind,
            "ignore": ignore, "nan_mean": nan_mean, "seed": seed}


def loss_dout(out_shape: tuple[int, ...], seed: int, dtype: torch.dtype, device: str
              ) -> torch.Tensor:
    return seeded(out_shape, seed + 1, dtype, 1.0, device)


def run_both(op, torch_op, problem: dict) -> tuple:
    """Forward and d input through scratchnet's tape and through torch.autograd,
    plus torch's d loss / d log-probabilities (None where torch's graph has no
    log_softmax: nll_loss), for :func:`assert_dinput_parity`."""
    logits, target, kwargs = problem["logits"], problem["target"], problem["kwargs"]
    x_leaf = scratchnet.leaf(logits.clone())
    out = op(x_leaf, target, **kwargs)
    x_ref = logits.clone().requires_grad_(True)
    out_ref = torch_op(x_ref, target, **kwargs)
    dout = loss_dout(tuple(out_ref.shape), problem["seed"], logits.dtype, logits.device.type)
    (dx,) = scratchnet.grad(out, [x_leaf], dout)
    dlog_probs_ref = []
    log_softmax_node = _find_node(out_ref.grad_fn, "LogSoftmaxBackward0")
    if log_softmax_node is not None:
        log_softmax_node.register_prehook(lambda grads: dlog_probs_ref.append(grads[0]))
    (dx_ref,) = torch.autograd.grad(out_ref, [x_ref], dout)
    return out, out_ref, dx, dx_ref, (dlog_probs_ref[0] if dlog_probs_ref else None)


def _find_node(node, name: str):
    """The node called ``name`` in torch's autograd graph below ``node``."""
    stack, seen = [node], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__ == name:
            return node
        stack.extend(next_node for next_node, _ in node.next_functions)
    return None


def assert_dinput_parity(dx: torch.Tensor, dx_ref: torch.Tensor,
                         dlog_probs_ref: torch.Tensor | None, what: str) -> None:
    """assert_parity for d input, with one documented exception in float64.

    Both sides form dx = g − p · Σ_c g (g = d loss / d log p, p = exp(log p)),
    the log_softmax backward. Where p_y is within ~1e-8 of 1, dx_y is a
    cancellation of terms of size |g|, and each side's p carries its exp's
    rounding (≤ 1 ulp of 1 = 2.2e-16; scratchnet's torch.exp on a short tensor
    takes the scalar std::exp, torch's log_softmax backward kernel the
    vectorized Sleef exp): a difference up to ~2.2e-16 · |Σ_c g| that neither
    side can avoid. assert_parity's float64 floor, 1e-12 · max|dx_ref|, assumes
    the cancelling terms are no larger than the result; when every entry of dx
    is this small (found: logits [15.41, −2.93], target 0: dx = ±1.07e-8, the
    two sides 3.95e-17 apart, relative 5.5e-9) it is not. The floor is then
    taken from the cancelling terms themselves, torch's own g:
    1e-12 · max(|dx_ref|, |g_ref|), still ~1e4 times tighter than any wrong
    factor, sign or term would be.
    """
    if dlog_probs_ref is None or dx_ref.dtype != torch.float64:
        assert_parity(dx, dx_ref, what)
        return
    dx = scratchnet.autodiff.plain(dx).detach()
    scale = max(dx_ref.abs().max().item(), dlog_probs_ref.abs().max().item(), 0.0)
    assert dx.shape == dx_ref.shape and dx.dtype == dx_ref.dtype, what
    torch.testing.assert_close(dx, dx_ref, rtol=1e-12, atol=1e-12 * scale,
                               msg=lambda m: f"{what} (float64): {m}")


# --------------------------------------------------------------------------------------
# parity with torch


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize(("name", "op", "torch_op", "full"), CLASS_LOSSES)
@settings(max_examples=60)
@given(data=st.data())
def test_class_loss_matches_torch(device, name, op, torch_op, full, data):
    problem = data.draw(class_problems(probability_allowed=full, smoothing_allowed=full,
                                       device=device))
    out, out_ref, dx, dx_ref, dlog_probs_ref = run_both(op, torch_op, problem)
    what = f"{name} {problem['kind']} ignore={problem['ignore']} {problem['kwargs']}"
    assert_loss_parity(out, out_ref, f"{what} forward")
    assert_dinput_parity(dx, dx_ref, dlog_probs_ref, f"{what} dinput")


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize(("name", "op", "torch_op", "full"), CLASS_LOSSES)
@pytest.mark.parametrize("magnitude", [1e10, 1e30])
@given(data=st.data())
def test_class_loss_extreme_logits_stay_finite_and_match(device, name, op, torch_op,
                                                         full, magnitude, data):
    """Logits up to 1e30: the max is subtracted before exp, so nothing overflows.
    A mean over only ignored targets is nan by definition; everything else is
    finite, in the loss and in d input."""
    problem = data.draw(class_problems(probability_allowed=full, smoothing_allowed=full,
                                       scale=magnitude, device=device))
    out, out_ref, dx, dx_ref, dlog_probs_ref = run_both(op, torch_op, problem)
    what = f"{name} {problem['kind']} |x|~{magnitude:g} {problem['kwargs']}"
    if not problem["nan_mean"]:
        assert torch.isfinite(scratchnet.autodiff.plain(out)).all(), f"{what}: {out}"
    assert torch.isfinite(dx).all(), f"{what}: dinput {dx}"
    assert_loss_parity(out, out_ref, f"{what} forward")
    assert_dinput_parity(dx, dx_ref, dlog_probs_ref, f"{what} dinput")


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_cross_entropy_with_masked_minus_inf_logits_matches_torch(label_smoothing):
    """-inf logits (masked classes) are fine as long as the target is not one:
    the target is gathered, never multiplied by 0·(−inf). With smoothing the
    masked class enters the smoothing term and both sides give inf."""
    logits = torch.tensor([[0.5, -float("inf"), 1.0], [2.0, 0.0, -float("inf")]],
                          dtype=torch.float64)
    target = torch.tensor([0, 1])
    out, out_ref, dx, dx_ref, dlog_probs_ref = run_both(F.cross_entropy, TF.cross_entropy, {
        "logits": logits, "target": target, "seed": 0,
        "kwargs": {"label_smoothing": label_smoothing}})
    assert_parity(out, out_ref, "cross_entropy -inf logits forward")
    if label_smoothing == 0.0:
        assert_dinput_parity(dx, dx_ref, dlog_probs_ref,
                             "cross_entropy -inf logits dinput")


@pytest.mark.parametrize("device", device_params())
@given(shape=shapes(min_dims=0, max_dims=4), dtype=dtypes, scale=scales,
       reduction=st.sampled_from(REDUCTIONS), weighted=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_mse_loss_matches_torch(device, shape, dtype, scale, reduction, weighted, seed):
    x = seeded(shape, seed, dtype, scale, device)
    target = seeded(shape, seed + 1, dtype, scale, device)
    inputs = [x, target]
    if weighted:
        generator = torch.Generator().manual_seed(seed)
        inputs.append((torch.rand(shape, generator=generator, dtype=torch.float64)
                       + 0.1).to(dtype=dtype, device=device))
    leaves = [scratchnet.leaf(t.clone()) for t in inputs]
    out = F.mse_loss(leaves[0], leaves[1], reduction=reduction,
                     weight=leaves[2] if weighted else None)
    refs = [t.clone().requires_grad_(True) for t in inputs]
    out_ref = TF.mse_loss(refs[0], refs[1], reduction=reduction,
                          weight=refs[2] if weighted else None)
    dout = loss_dout(tuple(out_ref.shape), seed, dtype, device)
    grads = scratchnet.grad(out, leaves, dout)
    grads_ref = torch.autograd.grad(out_ref, refs, dout)
    what = f"mse_loss {reduction} weighted={weighted}"
    assert_parity(out, out_ref, f"{what} forward")
    for grad_name, g, g_ref in zip(("dinput", "dtarget", "dweight"), grads, grads_ref,
                                   strict=False):
        assert_parity(g, g_ref, f"{what} {grad_name}")


# --------------------------------------------------------------------------------------
# the second oracle: central differences in float64


@pytest.mark.parametrize(("name", "op", "torch_op", "full"), CLASS_LOSSES)
@settings(max_examples=15)
@given(data=st.data())
def test_class_loss_backward_matches_finite_differences(name, op, torch_op, full, data):
    problem = data.draw(class_problems(probability_allowed=full, smoothing_allowed=full,
                                       dtype=torch.float64, scale=1.0))
    logits, target, kwargs = problem["logits"], problem["target"], problem["kwargs"]
    x_leaf = scratchnet.leaf(logits.clone())
    out = op(x_leaf, target, **kwargs)
    dout = loss_dout(tuple(out.shape), problem["seed"], torch.float64, "cpu")
    (dx,) = scratchnet.grad(out, [x_leaf], dout)
    if problem["nan_mean"]:
        # the loss is nan for every x (0/0): no difference quotient exists; the
        # gradient is exactly zero, as torch's
        assert torch.equal(dx, torch.zeros_like(dx)), f"{name} all ignored: {dx}"
        return
    numeric = finite_difference_vjp(lambda x: op(x, target, **kwargs), [logits], dout)[0]
    assert_close_to_finite_differences(
        dx, numeric, f"{name} {problem['kind']} ignore={problem['ignore']} {kwargs}")


@given(shape=shapes(min_dims=0, max_dims=3, max_side=4),
       reduction=st.sampled_from(REDUCTIONS), weighted=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_mse_loss_backward_matches_finite_differences(shape, reduction, weighted, seed):
    inputs = [seeded(shape, seed), seeded(shape, seed + 1)]
    if weighted:
        inputs.append(seeded(shape, seed + 2).abs() + 0.1)
    leaves = [scratchnet.leaf(t.clone()) for t in inputs]

    def mse(x, target, weight=None):
        return F.mse_loss(x, target, reduction=reduction, weight=weight)

    out = mse(*leaves)
    dout = loss_dout(tuple(out.shape), seed, torch.float64, "cpu")
    grads = scratchnet.grad(out, leaves, dout)
    numeric = finite_difference_vjp(mse, inputs, dout)
    for grad_name, g, n in zip(("dinput", "dtarget", "dweight"), grads, numeric,
                               strict=False):
        assert_close_to_finite_differences(g, n, f"mse_loss {reduction} {grad_name}")


# --------------------------------------------------------------------------------------
# modules


MODULES = [
    pytest.param("CrossEntropyLoss", nn.CrossEntropyLoss, torch.nn.CrossEntropyLoss,
                 {"label_smoothing": 0.1, "ignore_index": 2}, id="CrossEntropyLoss"),
    pytest.param("NLLLoss", nn.NLLLoss, torch.nn.NLLLoss, {"ignore_index": 2},
                 id="NLLLoss"),
]


@pytest.mark.parametrize(("name", "ours_cls", "torch_cls", "options"), MODULES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_weighted_loss_module_matches_torch(name, ours_cls, torch_cls, options, reduction):
    generator = torch.Generator().manual_seed(3)
    weight = torch.rand(5, generator=generator) + 0.1
    ours = ours_cls(weight=weight, reduction=reduction, **options)
    ref = torch_cls(weight=weight, reduction=reduction, **options)
    assert repr(ours) == repr(ref), name
    assert list(ours.state_dict()) == list(ref.state_dict()) == ["weight"], name

    ours.to(torch.float64)
    ref.to(torch.float64)
    assert ours.weight.dtype == torch.float64, f"{name}: .to() moved the weight buffer"
    logits = torch.randn(6, 5, 2, generator=generator, dtype=torch.float64)
    target = torch.randint(0, 5, (6, 2), generator=generator)
    out, out_ref, dx, dx_ref, dlog_probs_ref = run_both(ours, ref, {
        "logits": logits, "target": target, "kwargs": {}, "seed": 4})
    assert_parity(out, out_ref, f"{name} {reduction} forward")
    assert_dinput_parity(dx, dx_ref, dlog_probs_ref, f"{name} {reduction} dinput")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_loss_module_matches_torch(reduction):
    x, target = seeded((3, 4), 0), seeded((3, 4), 1)
    ours, ref = nn.MSELoss(reduction=reduction), torch.nn.MSELoss(reduction=reduction)
    assert repr(ours) == repr(ref) == "MSELoss()"
    leaves = [scratchnet.leaf(x.clone()), scratchnet.leaf(target.clone())]
    refs = [x.clone().requires_grad_(True), target.clone().requires_grad_(True)]
    out, out_ref = ours(*leaves), ref(*refs)
    dout = loss_dout(tuple(out_ref.shape), 2, torch.float64, "cpu")
    for what, g, g_ref in zip(("dinput", "dtarget"), scratchnet.grad(out, leaves, dout),
                              torch.autograd.grad(out_ref, refs, dout), strict=True):
        assert_parity(g, g_ref, f"MSELoss {reduction} {what}")
    assert_parity(out, out_ref, f"MSELoss {reduction} forward")


def test_default_reprs_equal_torch():
    for ours, ref in [(nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()),
                      (nn.NLLLoss(), torch.nn.NLLLoss()), (nn.MSELoss(), torch.nn.MSELoss())]:
        assert repr(ours) == repr(ref), (repr(ours), repr(ref))
    assert repr(nn.CrossEntropyLoss()) == "CrossEntropyLoss()"


@pytest.mark.parametrize(("size_average", "reduce"), [(False, None), (None, False),
                                                      (True, True), (False, True)])
def test_deprecated_size_average_and_reduce_mean_what_torch_means(size_average, reduce):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = nn.CrossEntropyLoss(size_average=size_average, reduce=reduce)
        ref = torch.nn.CrossEntropyLoss(size_average=size_average, reduce=reduce)
        assert ours.reduction == ref.reduction
        logits, target = seeded((4, 3), 5), torch.tensor([0, 2, 1, 1])
        assert_parity(F.cross_entropy(logits, target, size_average=size_average,
                                      reduce=reduce),
                      TF.cross_entropy(logits, target, size_average=size_average,
                                       reduce=reduce), "legacy reduction")
    with pytest.warns(UserWarning, match="size_average and reduce args"):
        nn.MSELoss(size_average=size_average, reduce=reduce)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_model_with_cross_entropy_matches_torch(dtype):
    """The seed's usage: ``loss = nn.CrossEntropyLoss()(logits, labels);
    loss.backward(); loss.item()`` with logits from a scratchnet model."""
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 4))
    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 8),
                              torch.nn.ReLU(), torch.nn.Linear(8, 4))
    ours.to(dtype)
    ref.to(dtype)
    x = seeded((5, 3, 4), 1, dtype)
    labels = torch.tensor([0, 3, 1, 1, 2])

    loss = nn.CrossEntropyLoss()(ours(x), labels)
    loss.backward()
    loss_ref = torch.nn.CrossEntropyLoss()(ref(x), labels)
    loss_ref.backward()

    assert isinstance(loss.item(), float)
    assert_parity(loss, loss_ref, "model + CrossEntropyLoss forward")
    params_ref = dict(ref.named_parameters())
    for param_name, param in ours.named_parameters():
        assert_parity(param.grad, params_ref[param_name].grad, f"d{param_name}")


# --------------------------------------------------------------------------------------
# bad input


LOGITS = torch.randn(4, 5)
LABELS = torch.tensor([0, 4, 2, 1])


@pytest.mark.parametrize(("error", "match", "call"), [
    pytest.param(TargetError, r"target 5 is out of bounds.*\[0, 5\).*C = 5",
                 lambda: F.cross_entropy(LOGITS, torch.tensor([0, 5, 2, 1])),
                 id="index-too-large"),
    pytest.param(TargetError, r"target -1 is out of bounds.*\[0, 5\)",
                 lambda: F.nll_loss(LOGITS, torch.tensor([0, -1, 2, 1])),
                 id="index-negative"),
    pytest.param(TargetError, r"target -100 is out of bounds",
                 lambda: F.cross_entropy(LOGITS, torch.tensor([0, -100, 2, 1]),
                                         ignore_index=3), id="index-default-ignore-not-set"),
    pytest.param(ShapeError, r"float targets are class probabilities.*\(4, 5\).*\(4, 3\)",
                 lambda: F.cross_entropy(LOGITS, torch.rand(4, 3)), id="prob-shape"),
    pytest.param(ShapeError, r"class-index targets of shape \(4,\).*got \(3,\)",
                 lambda: F.cross_entropy(LOGITS, torch.tensor([0, 1, 2])),
                 id="index-shape"),
    pytest.param(ShapeError, r"targets of shape \(2, 7\).*got \(2, 6\)",
                 lambda: F.nll_loss(torch.randn(2, 3, 7), torch.zeros(2, 6, dtype=torch.long)),
                 id="index-shape-kdim"),
    pytest.param(ShapeError, r"shape \(\).*got \(1,\)",
                 lambda: F.cross_entropy(torch.randn(5), torch.tensor([1])),
                 id="index-shape-unbatched"),
    pytest.param(TargetError, r"int64 \(torch.long\), got torch.int32",
                 lambda: F.cross_entropy(LOGITS, LABELS.int()), id="index-int32"),
    pytest.param(TargetError, r"int64 class indices, got torch.float32",
                 lambda: F.nll_loss(LOGITS, torch.rand(4, 5)), id="nll-float-target"),
    pytest.param(DTypeError, r"target dtype torch.float64 does not match.*float32",
                 lambda: F.cross_entropy(LOGITS, torch.rand(4, 5, dtype=torch.float64)),
                 id="prob-dtype"),
    pytest.param(DTypeError, r"input must be floating point, got torch.int64",
                 lambda: F.cross_entropy(LABELS, LABELS), id="int-input"),
    pytest.param(OptionError, r"reduction='avg' is not a valid",
                 lambda: F.cross_entropy(LOGITS, LABELS, reduction="avg"),
                 id="reduction"),
    pytest.param(OptionError, r"reduction='batchmean'",
                 lambda: F.mse_loss(LOGITS, LOGITS, reduction="batchmean"),
                 id="mse-reduction"),
    pytest.param(OptionError, r"label_smoothing must be between 0.0 and 1.0, got -0.1",
                 lambda: F.cross_entropy(LOGITS, LABELS, label_smoothing=-0.1),
                 id="smoothing-negative"),
    pytest.param(OptionError, r"label_smoothing .* got 1.5",
                 lambda: F.cross_entropy(LOGITS, LABELS, label_smoothing=1.5),
                 id="smoothing-above-one"),
    pytest.param(OptionError, r"ignore_index=0 is not supported with class-probability",
                 lambda: F.cross_entropy(LOGITS, torch.rand(4, 5), ignore_index=0),
                 id="prob-ignore-index"),
    pytest.param(ShapeError, r"weight must have shape \(C,\) = \(5,\).*got \(4,\)",
                 lambda: F.cross_entropy(LOGITS, LABELS, weight=torch.ones(4)),
                 id="weight-shape"),
    pytest.param(ShapeError, r"weight must have shape \(C,\) = \(5,\).*got \(1, 5\)",
                 lambda: F.nll_loss(LOGITS, LABELS, weight=torch.ones(1, 5)),
                 id="weight-shape-2d"),
    pytest.param(DTypeError, r"weight dtype torch.float64 does not match",
                 lambda: F.cross_entropy(LOGITS, LABELS, weight=torch.ones(5).double()),
                 id="weight-dtype"),
    pytest.param(ShapeError, r"target of shape \(4, 1\) does not match the input's \(4, 5\)",
                 lambda: F.mse_loss(LOGITS, torch.randn(4, 1)), id="mse-no-broadcast"),
    pytest.param(ShapeError, r"weight of shape \(5,\)",
                 lambda: F.mse_loss(LOGITS, LOGITS, weight=torch.ones(5)),
                 id="mse-weight-shape"),
    pytest.param(DTypeError, r"target dtype torch.float64",
                 lambda: F.mse_loss(LOGITS, LOGITS.double()), id="mse-dtype"),
    pytest.param(OptionError, r"reduction='avg'",
                 lambda: nn.NLLLoss(reduction="avg"), id="module-reduction"),
    pytest.param(OptionError, r"label_smoothing .* got 2",
                 lambda: nn.CrossEntropyLoss(label_smoothing=2), id="module-smoothing"),
])
def test_bad_input_raises_a_named_error(error, match, call):
    with pytest.raises(error, match=match):
        call()


def test_module_error_names_the_loss():
    with pytest.raises(TargetError, match=r"^CrossEntropyLoss\(\): cross_entropy: target 9"):
        nn.CrossEntropyLoss()(LOGITS, torch.tensor([0, 9, 2, 1]))


def test_targets_and_weight_on_the_tape_are_refused_not_dropped():
    """No backward flows to targets or weight; one that wants a gradient would
    lose it silently, so it is refused. Captured module inputs are data and pass."""
    probabilities = scratchnet.leaf(torch.softmax(torch.randn(4, 5), dim=1))
    with pytest.raises(NotDifferentiableError, match="no gradient flows to target"):
        F.cross_entropy(LOGITS, probabilities)
    with pytest.raises(NotDifferentiableError, match="no gradient flows to weight"):
        F.nll_loss(LOGITS, LABELS, weight=scratchnet.leaf(torch.ones(5)))
    loss = nn.CrossEntropyLoss()(scratchnet.leaf(LOGITS.clone()),
                                 torch.softmax(torch.randn(4, 5), dim=1))
    loss.backward()


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 5000), seed=st.integers(0, 2**31 - 1),
       dtype=st.sampled_from([torch.float32, torch.float64]),
       reduction=st.sampled_from(["mean", "sum"]), ignore_some=st.booleans())
def test_nll_loss_value_sums_in_torchs_order(rows, seed, dtype, reduction,
                                             ignore_some) -> None:
    """On CPU, nll_loss's batch sum follows aten's cascade of partial sums
    (vecmath.nll_cascade_sum): the value equals torch's bit for bit, where a
    plain sum() differs in the last bits for most batches above 16 rows."""
    gen = torch.Generator().manual_seed(seed)
    log_probs = torch.log_softmax(torch.randn(rows, 7, generator=gen, dtype=dtype) * 3, 1)
    target = torch.randint(0, 7, (rows,), generator=gen)
    if ignore_some:
        target[torch.rand(rows, generator=gen) < 0.3] = -100
    ours = plain(F.nll_loss(log_probs, target, reduction=reduction))
    expected = torch.nn.functional.nll_loss(log_probs, target, reduction=reduction)
    assert torch.equal(ours, expected) or (ours.isnan() and expected.isnan())
    if not ignore_some:  # the all-kept shortcut (FastTrainer's loss) sums alike
        rows_loss = -log_probs.gather(1, target.unsqueeze(1)).squeeze(1)
        assert torch.equal(vecmath.nll_cascade_sum(rows_loss, None),
                           torch.nn.functional.nll_loss(log_probs, target,
                                                        reduction="sum"))
