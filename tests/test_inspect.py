"""``scratchnet inspect`` (scratchnet/inspect.py): the ULP and tolerance columns
against an independent recomputation, the rows against the model's layers, the
higher-precision oracle on constructed cases where each side is the wrong one,
the command line, the JSON and the PNG.

The oracle's headline case is torch's float64 sigmoid backward at x = 37.4:
σ(37.4) = 1 / (1 + e^−37.4) rounds to exactly 1.0 (e^−37.4 ≈ 5.7e-17 is below
half an ulp of 1, 1.1e-16), so ``dout · (1 − out) · out`` is 0, while the true
derivative e^−x / (1 + e^−x)² ≈ 5.72e-17 is an ordinary float64.
"""

import json
import math
import time

import mpmath
import numpy as np
import pytest
import torch

import scratchnet
import scratchnet.nn
from scratchnet import cli
from scratchnet import inspect as inspection
from scratchnet.autodiff import Context, Function, plain
from scratchnet.train import build_model, model_input, takes_flat_input

# --------------------------------------------------------------------------------------
# helpers


def model_pair(name: str, dtype: torch.dtype = torch.float32, seed: int = 0):
    """scratchnet's seed model and torch.nn's with the same weights."""
    torch.manual_seed(seed)
    ours = build_model(name, "scratchnet").to(dtype=dtype)
    theirs = build_model(name, "torch").to(dtype=dtype)
    theirs.load_state_dict({k: plain(v).detach().clone()
                            for k, v in ours.state_dict().items()})
    return ours, theirs


def random_batch(model, batch: int = 8, dtype: torch.dtype = torch.float32,
                 seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand((batch, 1, 28, 28), generator=generator, dtype=torch.float64)
    y = torch.randint(0, 10, (batch,), generator=generator)
    return model_input(x.to(dtype), takes_flat_input(model)), y


def numpy_ulps(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |s − t| / ulp(t), ulp(t) = nextafter(|t|, inf) − |t| in t's dtype,
    written independently of scratchnet.inspect (numpy, not torch)."""
    magnitude = np.abs(expected)
    gap = (np.nextafter(magnitude, np.inf) - magnitude).astype(np.float64)
    difference = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    return float(np.max(np.where(difference == 0, 0.0, difference / gap)))


def torch_tensors_independently(model: torch.nn.Module, x: torch.Tensor,
                                y: torch.Tensor) -> dict[str, torch.Tensor]:
    """torch.nn's outputs, d outputs and parameter gradients by '<path>:<row>',
    recorded with plain forward hooks and retain_grad (not scratchnet.inspect)."""
    outputs = {}
    handles = [module.register_forward_hook(
        lambda m, args, out, path=path: outputs.__setitem__(path, out))
        for path, module in model.named_modules() if not list(module.children())]
    model.zero_grad(set_to_none=True)
    batch = x.clone().requires_grad_(True)  # so that every layer has a d output
    loss = torch.nn.functional.cross_entropy(model(batch), y)
    for out in outputs.values():
        out.retain_grad()
    loss.backward()
    for handle in handles:
        handle.remove()
    found = {}
    for path, out in outputs.items():
        found[f"{path}:output"] = out.detach()
        found[f"{path}:d output"] = out.grad
    for name, param in model.named_parameters():
        path, _, param_name = name.rpartition(".")
        found[f"{path}:d {param_name}"] = param.grad
    return found


# --------------------------------------------------------------------------------------
# ULPs and tolerance


def test_ulp_of_hand_picked_values_is_the_gap_to_the_next_float():
    values = torch.tensor([1.0, -1.0, 0.0, 2.0**-1074, 3.5e300], dtype=torch.float64)
    expected = np.nextafter(np.abs(values.numpy()), np.inf) - np.abs(values.numpy())
    assert inspection.ulp(values).tolist() == expected.tolist()
    assert inspection.ulp(torch.tensor([1.0], dtype=torch.float32)).item() == 2.0**-23


def test_parity_counts_ulps_and_tolerance_on_a_constructed_case():
    expected = torch.tensor([1.0, 4.0, -2.0], dtype=torch.float32)
    actual = expected.clone()
    actual[1] = float(np.nextafter(np.nextafter(np.float32(4.0), np.float32(9)),
                                   np.float32(9)))  # two ulps of 4 above: 4 + 2·2⁻²¹
    result = inspection.parity(actual, expected)
    assert result.max_ulps == 2.0
    assert result.max_abs == 2 * 2.0**-21
    assert result.tolerance_share == pytest.approx(2 * 2.0**-21 / (1e-5 + 1.3e-6 * 4))
    assert result.within


def test_parity_of_nan_and_inf_follows_equal_nan():
    expected = torch.tensor([math.nan, math.inf, 1.0], dtype=torch.float64)
    assert inspection.parity(expected.clone(), expected).max_abs == 0.0
    actual = torch.tensor([1.0, math.inf, 1.0], dtype=torch.float64)
    assert inspection.parity(actual, expected).tolerance_share == math.inf


def test_float64_tolerance_floor_is_1e_minus_12_of_the_largest_value():
    expected = torch.tensor([1e3, 0.0], dtype=torch.float64)
    actual = torch.tensor([1e3, 5e-10], dtype=torch.float64)  # 5e-10 < 1e-12·1e3·1
    assert inspection.parity(actual, expected).tolerance_share == pytest.approx(0.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_ulp_column_equals_an_independent_numpy_recomputation(dtype, monkeypatch):
    # float32 on an AVX2 or AVX-512 CPU is bit-identical to torch (vecmath): switch the
    # emulation off so that there are rounding differences for the column to count
    from scratchnet.nn.functional import vecmath

    monkeypatch.setattr(vecmath, "matches_torch_kernels", lambda x: False)
    ours, theirs = model_pair("NeuralNetwork", dtype)
    x, y = random_batch(ours, 16, dtype)
    report = inspection.inspect_models(ours, theirs, x, y)
    _, reference = model_pair("NeuralNetwork", dtype)
    torch_values = torch_tensors_independently(reference, x, y)
    checked = 0
    for layer in report.layers:
        for row in layer.rows:
            key = f"{layer.path}:{row.name}"
            if key not in torch_values:
                continue
            expected = torch_values[key].numpy()
            recomputed = numpy_ulps(row.values.numpy(), expected)
            assert row.parity.max_ulps == recomputed, key
            checked += 1
    # every layer's output and d output, and d weight / d bias of the three Linears
    assert checked == 6 * 2 + 3 * 2
    nonzero = [row.parity.max_ulps for layer in report.layers for row in layer.rows
               if row.parity is not None and row.parity.max_ulps > 0]
    assert nonzero, "some gradient should differ by rounding, else the test is empty"


# --------------------------------------------------------------------------------------
# rows


@pytest.mark.parametrize("name", ["NeuralNetwork", "Network", "FCNetwork",
                                  "SequentialNetwork"])
def test_rows_are_the_models_leaf_modules_in_call_order_then_the_loss(name):
    ours, theirs = model_pair(name)
    x, y = random_batch(ours, 4)
    report = inspection.inspect_models(ours, theirs, x, y)
    paths = [layer.path for layer in report.layers]
    leaves = [path for path, module in theirs.named_modules()
              if not list(module.children())]
    assert paths[-1] == "loss"
    assert sorted(paths[:-1]) == sorted(leaves)
    order = []
    hooks = [module.register_forward_hook(lambda m, a, o, p=path: order.append(p))
             for path, module in theirs.named_modules() if not list(module.children())]
    theirs(x)
    for hook in hooks:
        hook.remove()
    assert paths[:-1] == order
    for layer in report.layers:
        module = dict(ours.named_modules()).get(layer.path)
        if module is None:
            continue
        names = [row.name for row in layer.rows]
        assert names[:3] == ["output", "d output", "d input"]
        assert names[3:] == [f"d {n}" for n, _ in module.named_parameters()]
        assert layer.parameters == sum(p.numel() for p in module.parameters())


def test_neural_network_shapes_parameters_and_flops():
    ours, theirs = model_pair("NeuralNetwork")
    x, y = random_batch(ours, 64)
    layers = {layer.path: layer for layer in
              inspection.inspect_models(ours, theirs, x, y).layers}
    first = layers["linear_relu_stack.0"]
    assert first.output_shape == (64, 512)
    assert first.parameters == 784 * 512 + 512
    assert first.flops_forward == 2 * 64 * 784 * 512 + 64 * 512
    # no dx for the first Linear: a training step never needs d(image)
    assert first.flops_backward == 2 * 64 * 512 * 784 + 64 * 512
    second = layers["linear_relu_stack.2"]
    assert second.flops_backward == 2 * (2 * 64 * 512 * 512) + 64 * 512
    assert layers["flatten"].flops_forward == 0
    assert layers["linear_relu_stack.1"].flops_forward == 64 * 512


def test_statistics_are_those_of_scratchnets_tensors():
    ours, theirs = model_pair("NeuralNetwork")
    x, y = random_batch(ours, 8)
    report = inspection.inspect_models(ours, theirs, x, y)
    relu = next(layer for layer in report.layers if layer.path == "linear_relu_stack.1")
    output = relu.rows[0]
    expected = torch.relu(theirs.linear_relu_stack[0](theirs.flatten(x))).detach().double()
    assert output.zeros == pytest.approx(float((expected == 0).double().mean()))
    assert output.mean == pytest.approx(float(expected.mean()), rel=1e-6)
    assert output.std == pytest.approx(float(expected.std()), rel=1e-6)
    assert output.norm == pytest.approx(float(expected.norm()), rel=1e-6)


def test_hooks_and_wrapped_forwards_record_the_same():
    ours, theirs = model_pair("FCNetwork")
    x, y = random_batch(ours, 4)
    wrapped = inspection.inspect_models(ours, theirs, x, y, use_hooks=False)
    hooked = inspection.inspect_models(ours, theirs, x, y, use_hooks=True)
    assert [layer.to_dict() for layer in wrapped.layers] == \
        [layer.to_dict() for layer in hooked.layers]
    assert "forward" not in ours.fc1.__dict__  # the wrapper is gone afterwards


# --------------------------------------------------------------------------------------
# the third oracle


def test_torch_float64_sigmoid_backward_is_0_at_37_4_where_the_truth_is_not():
    x = torch.tensor([37.4], dtype=torch.float64, requires_grad=True)
    out = torch.nn.Sigmoid()(x)
    out.backward(torch.ones_like(out))
    assert out.item() == 1.0  # 1 + e^-37.4 rounds to 1
    assert x.grad.item() == 0.0  # dout · (1 − out) · out
    with mpmath.workdps(60):
        e = mpmath.exp(-mpmath.mpf(37.4))
        truth = float(e / (1 + e) ** 2)
    assert truth > np.finfo(np.float64).tiny  # a normal float64, not even subnormal
    assert truth == pytest.approx(math.exp(-37.4), rel=1e-15)  # e^-x (1 − 2e^-x + …)


class _StableSigmoid(Function):
    """σ with a backward formed from e^{−|x|}, which does not cancel at large x:
    dx = dout · e^{−|x|} / (1 + e^{−|x|})²."""

    @staticmethod
    def forward(ctx: Context, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.sigmoid(x)

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        (x,) = ctx.saved_tensors
        decay = torch.exp(-x.abs())
        return (dout * decay / (1 + decay) ** 2,)


class StableSigmoid(scratchnet.nn.Sigmoid):
    def forward(self, x):
        return _StableSigmoid.apply(x)


class SkewedLinear(scratchnet.nn.Linear):
    """A Linear whose output is off by a relative ``skew``: the wrong side."""

    skew = 1e-9

    def forward(self, x):
        return super().forward(x) * (1 + self.skew)


def test_oracle_names_scratchnet_where_torchs_sigmoid_backward_cancels():
    ours = scratchnet.nn.Sequential(StableSigmoid())
    theirs = torch.nn.Sequential(torch.nn.Sigmoid())
    x = 37.4 + torch.arange(6, dtype=torch.float64).reshape(2, 3) / 8  # (2, 3)
    y = torch.tensor([0, 2])
    report = inspection.inspect_models(ours, theirs, x, y)
    rows = {row.name: row for row in report.layers[0].rows}
    assert rows["output"].parity.max_abs == 0.0
    assert not rows["d input"].parity.within  # torch's are all 0: no floor at all
    assert rows["d input"].oracle.startswith("scratchnet is closer to the truth")
    verdict = inspection.judge_layer(ours[0], theirs[0], (x,), torch.ones_like(x),
                                     ["d input"])["d input"]
    assert verdict.closer == "scratchnet"


def test_judge_values_measures_errors_against_the_truth():
    with mpmath.workdps(60):
        e = mpmath.exp(-mpmath.mpf(37.4))
        truth = e / (1 + e) ** 2
    verdict = inspection.judge_values([float(truth)], [0.0], [truth], torch.float64)
    assert verdict.closer == "scratchnet"
    assert "scratchnet 0" in verdict.text or "scratchnet 0.0" in verdict.text
    verdict = inspection.judge_values([0.0], [float(truth)], [truth], torch.float64)
    assert verdict.closer == "torch"
    assert inspection.judge_values([1.0], [1.0], [1.0], torch.float64).closer == "equal"


@pytest.mark.parametrize("dtype, skew", [(torch.float64, 1e-9), (torch.float32, 1e-4)],
                         ids=["float64-exact", "float32-via-float64"])
def test_oracle_names_torch_where_scratchnet_is_the_wrong_one(dtype, skew, monkeypatch):
    monkeypatch.setattr(SkewedLinear, "skew", skew)
    torch.manual_seed(0)
    ours = scratchnet.nn.Sequential(SkewedLinear(6, 5), scratchnet.nn.ReLU()).to(dtype)
    theirs = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU()).to(dtype)
    theirs.load_state_dict({k: plain(v).detach().clone()
                            for k, v in ours.state_dict().items()})
    x = torch.randn(4, 6, dtype=torch.float64).mul(100).to(dtype)  # (4, 6)
    y = torch.tensor([0, 1, 2, 3])
    report = inspection.inspect_models(ours, theirs, x, y)
    linear, relu = ({row.name: row for row in layer.rows} for layer in report.layers[:2])
    assert not linear["output"].parity.within
    assert linear["output"].oracle.startswith("torch is closer to the truth")
    # ReLU computes its part right: on torch's input alone it agrees
    assert not relu["output"].parity.within
    assert relu["output"].oracle.startswith("inherited")


def test_exact_linear_value_is_the_rational_sum():
    torch.manual_seed(3)
    layer = scratchnet.nn.Linear(3, 2).double()
    x = torch.randn(2, 3, dtype=torch.float64)
    g = torch.randn(2, 2, dtype=torch.float64)
    from fractions import Fraction

    weight, bias = plain(layer.weight).detach(), plain(layer.bias).detach()
    expected = sum(Fraction(x[1, j].item()) * Fraction(weight[0, j].item())
                   for j in range(3)) + Fraction(bias[0].item())
    value = inspection.exact_value(layer, (x,), g, "output", 2)  # row 1, unit 0
    with mpmath.workdps(60):  # the oracle's precision: 200 bits
        assert value == mpmath.mpf(expected.numerator) / expected.denominator
    d_weight = inspection.exact_value(layer, (x,), g, "d weight", 1)  # unit 0, feature 1
    assert float(d_weight) == pytest.approx(float(g[0, 0] * x[0, 1] + g[1, 0] * x[1, 1]))


# --------------------------------------------------------------------------------------
# the command


def test_cli_prints_a_table_and_writes_json_and_a_non_blank_png(tmp_path, capsys):
    json_path, png_path = tmp_path / "inspect.json", tmp_path / "hist.png"
    code = cli.main(["inspect", "--model", "784-32-10", "--dataset", "random",
                     "--batch-size", "8", "--dtype", "float64", "--json",
                     str(json_path), "--plot", str(png_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "linear_relu_stack.0  Linear(in_features=784, out_features=32" in out
    assert "beyond the parity tolerance" in out
    report = json.loads(json_path.read_text())
    assert [layer["path"] for layer in report["layers"]] == [
        "flatten", "linear_relu_stack.0", "linear_relu_stack.1",
        "linear_relu_stack.2", "loss"]
    assert report["loss"]["scratchnet"] == pytest.approx(report["loss"]["torch"],
                                                          rel=1e-12)
    import matplotlib.image

    pixels = matplotlib.image.imread(str(png_path))  # (H, W, 4) floats in [0, 1]
    assert pixels.shape[0] > 300 and pixels.shape[1] > 300
    coloured = (pixels[..., :3].std(axis=2) > 0.1).mean()  # bars are not grey
    assert coloured > 0.01, f"only {coloured:.2%} of the PNG is coloured"


def test_cli_reads_a_checkpoints_weights(tmp_path, capsys):
    torch.manual_seed(5)
    model = build_model("784-16-10", "scratchnet")
    state = {k: plain(v).detach().clone() for k, v in model.state_dict().items()}
    torch.save(state, tmp_path / "model.pt")
    code = cli.main(["inspect", "--checkpoint", str(tmp_path / "model.pt"), "--model",
                     "784-16-10", "--dataset", "random", "--batch-size", "4", "--json",
                     str(tmp_path / "r.json")])
    assert code == 0
    first = json.loads((tmp_path / "r.json").read_text())["layers"][1]
    assert first["module"].startswith("Linear(in_features=784, out_features=16")
    capsys.readouterr()


@pytest.mark.parametrize("argv", [["--model", "nope"], ["--batch-size", "0"],
                                  ["--dtype", "float16"], ["--dataset", "cifar"]])
def test_cli_bad_input_exits_2_with_one_line(argv, capsys):
    assert cli.main(["inspect", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("scratchnet: error:") and err.count("\n") == 1


@pytest.mark.slow
def test_tutorial_model_table_in_under_5_seconds(capsys):
    """NeuralNetwork, batch 64, float32, Fashion-MNIST, in-process (the interpreter
    and ``import torch`` are not counted: they are the same for every command).

    Measured as this process's CPU time: on a shared machine the wall clock
    mostly measures the neighbours (2 cores at load 7 gave 12-20 s of wall time
    for 3.6 s of CPU); on an idle machine the two agree (torch's extra threads
    only add to the CPU time, so the bound is conservative)."""
    wall, cpu = time.perf_counter(), time.process_time()
    code = cli.main(["inspect"])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    out = capsys.readouterr().out
    assert code == 0 and "linear_relu_stack.4" in out
    assert cpu < 5.0, f"scratchnet inspect took {cpu:.2f} s of CPU ({wall:.2f} s wall)"


@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
def test_exact_batch_norm_values_agree_with_torch_float64(training):
    torch.manual_seed(7)
    layer = scratchnet.nn.BatchNorm1d(3).double()
    reference = torch.nn.BatchNorm1d(3).double()
    with torch.no_grad():
        for module in (layer, reference):  # non-trivial affine and running stats
            module.weight.copy_(torch.tensor([0.5, -2.0, 1.5]))
            module.bias.copy_(torch.tensor([0.1, 0.0, -0.3]))
            module.running_mean.copy_(torch.tensor([0.2, -0.1, 0.4]))
            module.running_var.copy_(torch.tensor([1.5, 0.7, 2.0]))
    layer.train(training)
    reference.train(training)
    x = torch.randn(5, 3, dtype=torch.float64) * 3 + 1  # (5, 3)
    g = torch.randn(5, 3, dtype=torch.float64)  # (5, 3)
    leaf = x.clone().requires_grad_(True)
    out = reference(leaf)
    d_input, d_weight, d_bias = torch.autograd.grad(
        out, [leaf, reference.weight, reference.bias], g)
    expected = {"output": out.detach(), "d input": d_input, "d weight": d_weight,
                "d bias": d_bias}
    for name, values in expected.items():
        for index in range(values.numel()):
            exact = inspection.exact_value(layer, (x,), g, name, index)
            assert float(exact) == pytest.approx(values.reshape(-1)[index].item(),
                                                 rel=1e-12, abs=1e-14), (name, index)
