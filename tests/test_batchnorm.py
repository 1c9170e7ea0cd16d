"""BatchNorm1d against torch.nn.BatchNorm1d: over a few training steps then
evaluation, for (N, C) and (N, C, L) inputs, momentum (including None), eps,
affine or not, with or without running statistics, float32 and float64 — the
output, dx, dweight, dbias, and the running statistics after every step; the
backward against central differences; state_dict, repr and bad input."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import scratchnet
from scratchnet import nn
from scratchnet.errors import OptionError, ShapeError
from scratchnet.nn.functional import batchnorm
from tests.oracles import (
    assert_close_to_finite_differences,
    assert_parity,
    device_params,
    finite_difference_vjp,
    num_threads,
)
from tests.strategies import dtypes, scales, seeded

F = nn.functional
momenta = st.sampled_from([0.1, 0.0, 1.0, None]) | st.floats(0.01, 0.99)
epsilons = st.sampled_from([1e-5, 1e-3, 0.5])


@st.composite
def input_shapes(draw) -> tuple[int, ...]:
    """(N, C) or (N, C, L), with at least two values per channel (training)."""
    channels = draw(st.integers(1, 5))
    if draw(st.booleans()):
        return (draw(st.integers(2, 7)), channels)
    length = draw(st.integers(1, 4))
    batch = draw(st.integers(2 if length == 1 else 1, 5))
    return (batch, channels, length)


def layer_pair(channels: int, dtype: torch.dtype, device: str, seed: int, **options):
    """The same BatchNorm1d in scratchnet and torch; with affine, γ and β are
    random (not the 1, 0 they start as) so that they matter."""
    ours = nn.BatchNorm1d(channels, **options).to(device, dtype)
    ref = torch.nn.BatchNorm1d(channels, **options).to(device, dtype)
    if ours.affine:
        state = {"weight": seeded((channels,), seed, dtype, device=device),
                 "bias": seeded((channels,), seed + 1, dtype, device=device)}
        ours.load_state_dict(state, strict=False)
        ref.load_state_dict(state, strict=False)
    return ours, ref


def dx_term_scale(ref, x: torch.Tensor, dout: torch.Tensor) -> float:
    """The size of the terms whose difference dx is: max |dout| · |w| / √(σ² + eps).

    In training dx = (dout − mean(dout) − x̂ · mean(dout · x̂)) · w / √(σ² + eps):
    the projection removes most of dout, and with few values per channel
    nearly all of it (for M = 2, x̂ = ±1 and dx is only the eps-sized
    remainder, ~1e-7 of dout). Every implementation then carries an absolute
    rounding error of ~1e-16 × this scale in a result far smaller than it, so
    the result's own size is no yardstick. Checked by mpmath at 300 bits on
    such a case (shape (2, 4), scale 10): scratchnet's and torch's dx both miss
    the exact value by ≤ 1.5e-16 absolute on entries of 1e-8..1e-6 — relative
    differences of up to 4e-10 between them that are rounding, not a wrong
    formula (a wrong term would be off by the order of this scale itself).
    """
    dims = [0] if x.dim() == 2 else [0, 2]
    var = x.var(dim=dims, correction=0) if ref.training or ref.running_var is None \
        else ref.running_var
    gain = (var + ref.eps).rsqrt()
    if ref.weight is not None:
        gain = gain * ref.weight.detach().abs()
    return dout.abs().max().item() * gain.max().item()


def step_both(ours, ref, x: torch.Tensor, dout: torch.Tensor, what: str) -> None:
    """One forward and backward through each; compare everything they produce."""
    x_leaf = scratchnet.leaf(x.clone())
    out = ours(x_leaf)
    out.backward(dout)
    term_scale = dx_term_scale(ref, x, dout)  # before ref's buffers move
    x_ref = x.clone().requires_grad_(True)
    out_ref = ref(x_ref)
    out_ref.backward(dout)
    assert_parity(out, out_ref, f"{what} forward")
    if x.dtype == torch.float64:  # relative 1e-12 of the terms dx is made of
        torch.testing.assert_close(x_leaf.grad, x_ref.grad, rtol=1e-12,
                                   atol=1e-12 * term_scale,
                                   msg=lambda m: f"{what} dx (float64): {m}")
    else:
        assert_parity(x_leaf.grad, x_ref.grad, f"{what} dx")
    if ours.affine:
        assert_parity(ours.weight.grad, ref.weight.grad, f"{what} dweight")
        assert_parity(ours.bias.grad, ref.bias.grad, f"{what} dbias")
    for name, buffer in ref.named_buffers():
        if buffer.is_floating_point():
            assert_parity(getattr(ours, name), buffer, f"{what} {name}")
        else:
            assert torch.equal(getattr(ours, name), buffer), f"{what} {name}"
    assert list(ours.state_dict()) == list(ref.state_dict())


@pytest.mark.parametrize("device", device_params())
@given(shape=input_shapes(), dtype=dtypes, scale=scales, offset=st.sampled_from([0, 5]),
       momentum=momenta, eps=epsilons, affine=st.booleans(),
       track_running_stats=st.booleans(), steps=st.integers(1, 3),
       seed=st.integers(0, 2**16))
def test_training_steps_then_eval_match_torch(device, shape, dtype, scale, offset,
                                              momentum, eps, affine,
                                              track_running_stats, steps, seed):
    """``offset`` shifts each channel's mean to ``offset`` standard deviations
    (float64 only: see :func:`test_float32_far_from_zero_is_closer_to_the_truth`)."""
    offset = offset if dtype == torch.float64 else 0
    options = dict(momentum=momentum, eps=eps, affine=affine,
                   track_running_stats=track_running_stats)
    ours, ref = layer_pair(shape[1], dtype, device, seed, **options)
    for step in range(steps + 1):
        training = step < steps
        ours.train(training)
        ref.train(training)
        x = (seeded(shape, seed + 10 * step + 2, dtype, scale, device)
             + offset * scale)
        dout = seeded(shape, seed + 10 * step + 3, dtype, 1.0, device)
        mode = "train" if training else "eval"
        step_both(ours, ref, x, dout, f"BatchNorm1d({options}) {mode} step {step}")


@given(shape=input_shapes(), steps=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_cumulative_average_is_the_mean_of_the_batch_statistics(shape, steps, seed):
    """momentum=None: after k batches the running mean is exactly their average
    (up to rounding), and the running variance that of the unbiased variances."""
    layer = nn.BatchNorm1d(shape[1], momentum=None).double()
    means, variances = [], []
    for step in range(steps):
        x = seeded(shape, seed + step)
        with scratchnet.no_grad():
            layer(x)
        values = x.transpose(0, 1).reshape(shape[1], -1)  # (C, N·L)
        means.append(values.mean(1))
        variances.append(values.var(1, correction=1))
    assert int(layer.num_batches_tracked) == steps
    torch.testing.assert_close(layer.running_mean, torch.stack(means).mean(0))
    torch.testing.assert_close(layer.running_var, torch.stack(variances).mean(0))


def test_float32_far_from_zero_is_closer_to_the_truth_than_torch():
    """A float32 channel whose mean is far from zero against its spread
    (|μ|/σ ≈ 65 here) is ill-conditioned: x − μ keeps only log2(σ/(ε|μ|)) bits,
    so any rounding of μ is magnified 65 times, and two ways of summing the
    batch differ by up to ~9e-5 in dx — beyond the float32 tolerance. So the
    property test keeps float32 inputs centred, and this case is checked against
    the float64 truth. scratchnet now sums as torch's (N, C) kernel does
    (per-thread float32 partial sums), so on torch's AVX2 / AVX-512 builds the
    two errors are equal (5.9e-5 in dx; summing in float64 gave 2.9e-5)."""
    shape, seed = (3, 4), 1295  # found by hypothesis: channel 3 has σ = 0.077
    x = seeded(shape, seed + 2, torch.float32) + 5
    dout = seeded(shape, seed + 3, torch.float32)
    results = {}
    for name, lib, dtype in (("ours", nn, torch.float32), ("torch", torch.nn, torch.float32),
                             ("truth", torch.nn, torch.float64)):
        layer = lib.BatchNorm1d(4, track_running_stats=False).to(dtype)
        x_in = x.to(dtype).clone()
        x_in = (scratchnet.leaf(x_in) if lib is nn else x_in.requires_grad_(True))
        out = layer(x_in)
        out.backward(dout.to(dtype))
        results[name] = (scratchnet.autodiff.plain(out).double(), x_in.grad.double())
    for i, what in enumerate(("forward", "dx")):
        truth = results["truth"][i]
        ours_error = (results["ours"][i] - truth).abs().max().item()
        torch_error = (results["torch"][i] - truth).abs().max().item()
        assert ours_error <= torch_error, f"{what}: {ours_error:.2e} > {torch_error:.2e}"
        assert ours_error < 1e-5 * 65, f"{what}: beyond ε32 · |μ|/σ"


# ---------------------------------------------------------- float32: torch's bits

bit_for_bit = pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"),
    reason="torch's float32 CPU batch norm is reproduced (measured) on its AVX2 / "
           "AVX-512 kernels")


@bit_for_bit
def test_running_mean_of_the_falsifying_example_is_torchs():
    """Found by hypothesis at 2 threads: float32 (3, 5) at scale 1e4, two steps.
    torch's (N, C) kernel sums each thread's rows in float32 (rows 0–1, then 2)
    and adds the two partial sums in double; summing the batch in float64 left
    running_mean 9e-5 (24 ulps) from torch's on −42.33 after step 2."""
    shape, seed = (3, 5), 809
    ours, ref = layer_pair(shape[1], torch.float32, "cpu", seed, momentum=0.1, eps=1e-5,
                           affine=False, track_running_stats=True)
    with num_threads(2):
        for step in range(2):
            x = seeded(shape, seed + 10 * step + 2, torch.float32, 1e4)
            dout = seeded(shape, seed + 10 * step + 3, torch.float32)
            ours(scratchnet.leaf(x.clone())).backward(dout)
            ref(x.clone().requires_grad_(True)).backward(dout)
            assert torch.equal(ours.running_mean, ref.running_mean), f"step {step}"
            assert torch.equal(ours.running_var, ref.running_var), f"step {step}"


@bit_for_bit
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(2, 3), (2, 20), (3, 5), (5, 17), (64, 20)])
def test_float32_forward_statistics_are_torchs_bit_for_bit(threads, shape):
    """μ and 1/√(σ² + eps) of an (N, C) batch, with N ≤ and > the thread count:
    torch's kernel takes three paths (N > threads: per-thread float32 sums; N ≤
    threads: one float32 pass, or with C > 16 a double per channel). Then the
    output and the running statistics built from them."""
    x = seeded(shape, 7, torch.float32, 1e4) + 3e4  # (N, C), sums far from exact
    running = (seeded((shape[1],), 8, torch.float32),
               seeded((shape[1],), 9).abs().float())  # running_mean, running_var
    with num_threads(threads):
        mean, var_sum = batchnorm._stats_cpu(x.view(*shape, 1))
        invstd = batchnorm._invstd_cpu(var_sum, shape[0], 1e-5)
        _, ref_mean, ref_invstd = torch.native_batch_norm(x, None, None, None, None,
                                                          True, 0.1, 1e-5)
        ours_buffers = [b.clone() for b in running]
        ref_buffers = [b.clone() for b in running]
        out = F.batch_norm(x, *ours_buffers, training=True, momentum=0.3)
        out_ref = torch.nn.functional.batch_norm(x, *ref_buffers, training=True,
                                                 momentum=0.3)
    assert torch.equal(mean, ref_mean)
    assert torch.equal(invstd, ref_invstd)
    assert torch.equal(out, out_ref)
    for name, a, b in zip(("running_mean", "running_var"), ours_buffers, ref_buffers,
                          strict=True):
        assert torch.equal(a, b), name


@bit_for_bit
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(5, 3), (9, 19), (2, 4, 3), (3, 5, 8), (2, 3, 21)])
def test_float32_gradients_are_torchs_bit_for_bit(training, shape):
    """dx, dweight and dbias of the (N, C) kernel (per-thread sums; C = 19: a
    partial last vector of channels) and of the (N, C, L) one (L < 8 summed left
    to right, L ≥ 8 in lanes, L = 21 with a partial last vector)."""
    channels = shape[1]
    x = seeded(shape, 1, torch.float32, 10.0) + 20
    dout = seeded(shape, 2, torch.float32)
    weight = seeded((channels,), 3, torch.float32)
    bias = seeded((channels,), 4, torch.float32)
    running_mean = seeded((channels,), 5, torch.float32, 10.0) + 20
    running_var = seeded((channels,), 6, torch.float32).abs() * 100
    leaves = [scratchnet.leaf(t.clone()) for t in (x, weight, bias)]
    refs = [t.clone().requires_grad_(True) for t in (x, weight, bias)]
    F.batch_norm(leaves[0], running_mean.clone(), running_var.clone(), leaves[1],
                 leaves[2], training).backward(dout)
    torch.nn.functional.batch_norm(refs[0], running_mean.clone(), running_var.clone(),
                                   refs[1], refs[2], training).backward(dout)
    for name, ours, ref in zip(("dx", "dweight", "dbias"), leaves, refs, strict=True):
        assert torch.equal(ours.grad, ref.grad), name


# ---------------------------------------------------------- central differences


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@given(shape=input_shapes(), affine=st.booleans(), eps=epsilons,
       seed=st.integers(0, 2**16))
def test_backward_matches_finite_differences(training, shape, affine, eps, seed):
    channels = shape[1]
    x = seeded(shape, seed, scale=2.0)
    weight = seeded((channels,), seed + 1)
    bias = seeded((channels,), seed + 2)
    dout = seeded(shape, seed + 3)
    running_mean = seeded((channels,), seed + 4)
    running_var = seeded((channels,), seed + 5).abs() + 0.5

    def op(x, weight=None, bias=None):
        # training uses no running buffers, so repeated calls change nothing
        if training:
            return F.batch_norm(x, None, None, weight, bias, True, 0.1, eps)
        return F.batch_norm(x, running_mean, running_var, weight, bias, False, 0.1, eps)

    inputs = [x, weight, bias] if affine else [x]
    leaves = [scratchnet.leaf(t.clone()) for t in inputs]
    grads = scratchnet.grad(op(*leaves), leaves, dout)
    numeric = finite_difference_vjp(op, inputs, dout)
    for name, g, n in zip(("dx", "dweight", "dbias"), grads, numeric, strict=False):
        assert_close_to_finite_differences(g, n, f"batch_norm training={training} {name}")


def test_gradients_accumulate_across_backward_calls():
    layer = nn.BatchNorm1d(3)
    x = scratchnet.leaf(seeded((4, 3), 0, torch.float32))
    dout = seeded((4, 3), 1, torch.float32)
    layer(x).backward(dout)
    first = (x.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone())
    layer(x).backward(dout)
    for name, now, before in zip(("dx", "dweight", "dbias"),
                                 (x.grad, layer.weight.grad, layer.bias.grad), first,
                                 strict=True):
        torch.testing.assert_close(now, 2 * before, msg=f"{name} should accumulate")


def test_no_grad_updates_running_stats_and_returns_a_plain_tensor():
    layer, ref = nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    x = seeded((5, 3), 0, torch.float32)
    with scratchnet.no_grad():
        out = layer(x)
    with torch.no_grad():
        out_ref = ref(x)
    assert type(out) is torch.Tensor
    assert_parity(out, out_ref, "forward under no_grad")
    assert_parity(layer.running_mean, ref.running_mean, "running_mean under no_grad")


# ---------------------------------------------------------- module API


@pytest.mark.parametrize("options", [
    {}, {"affine": False}, {"momentum": None}, {"track_running_stats": False},
    {"eps": 1e-3, "momentum": 0.5}, {"bias": False},
])
def test_repr_and_state_dict_match_torch(options):
    ours, ref = nn.BatchNorm1d(6, **options), torch.nn.BatchNorm1d(6, **options)
    assert repr(ours) == repr(ref)
    assert [(k, v.shape, v.dtype) for k, v in ours.state_dict().items()] == [
        (k, v.shape, v.dtype) for k, v in ref.state_dict().items()]
    ref.train()
    ref(torch.randn(4, 6))  # moves the running statistics away from 0 and 1
    ours.load_state_dict(ref.state_dict())
    for key, value in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    ref.load_state_dict(ours.state_dict())


def test_in_a_sequential_model_prints_like_torch():
    ours = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU())
    ref = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3),
                              torch.nn.ReLU())
    assert repr(ours) == repr(ref)


# ---------------------------------------------------------- bad input


@pytest.mark.parametrize("shape", [(1, 4), (1, 4, 1)])
def test_one_value_per_channel_in_training_is_refused_like_torch(shape):
    layer = nn.Sequential(nn.BatchNorm1d(4))
    message = r"0 \(BatchNorm1d\(4.*Expected more than 1 value per channel when training"
    with pytest.raises(ShapeError, match=message):
        layer(torch.randn(shape))
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        torch.nn.BatchNorm1d(4)(torch.randn(shape))
    layer.eval()
    assert layer(torch.randn(shape)).shape == shape, "evaluation needs no batch"


@pytest.mark.parametrize("shape", [(4,), (2, 4, 3, 3)])
def test_wrong_number_of_dimensions_is_named(shape):
    with pytest.raises(ShapeError, match=rf"BatchNorm1d.*expected 2D or 3D input \(got "
                                         rf"{len(shape)}D"):
        nn.BatchNorm1d(4)(torch.randn(shape))


def test_channel_mismatch_is_named():
    with pytest.raises(ShapeError, match=r"BatchNorm1d.*\(3,\).*input's 5 channels"):
        nn.BatchNorm1d(3)(torch.randn(4, 5))


@pytest.mark.parametrize("training, eps, message", [
    (True, 0.0, "must be positive during training"),
    (False, -1.0, "must be non-negative"),
])
def test_bad_eps_is_refused(training, eps, message):
    x = torch.randn(4, 3)
    with pytest.raises(OptionError, match=message):
        F.batch_norm(x, torch.zeros(3), torch.ones(3), training=training, eps=eps)


def test_eval_without_running_statistics_is_refused():
    with pytest.raises(OptionError, match="needs running_mean and running_var"):
        F.batch_norm(torch.randn(4, 3), None, None, training=False)


def test_momentum_one_and_zero_mean_replace_and_keep():
    x = seeded((6, 2), 0)
    for momentum, expected in ((1.0, x.mean(0)), (0.0, torch.zeros(2, dtype=x.dtype))):
        layer = nn.BatchNorm1d(2, momentum=momentum).double()
        layer(x)
        torch.testing.assert_close(layer.running_mean, expected)
    assert not math.isnan(float(layer.running_var.sum()))
