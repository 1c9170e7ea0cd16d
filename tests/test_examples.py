"""The seed scripts in examples/ run on torch.nn and on scratchnet with only their
imports changed, and print the same things.

Each example is run twice in this process (``runpy``, as ``python examples/x.py``
would run it, with ``--backend torch`` and ``--backend scratchnet``), with the same
``--seed``, on a small MNIST-format IDX dataset this file writes, and the two
printouts are compared:

- everything but torch's autograd annotations must be the same text: the model
  structure, parameter names, sizes and ``param[:2]`` values, the predicted
  classes of the random-input cells, the probabilities view_classify draws.
  Only the annotations differ — torch prints ``grad_fn=<SliceBackward0>`` and
  ``requires_grad=True``, scratchnet (whose tensors never require grad) prints
  ``backward=<...>`` or nothing — so they are removed before comparing;
- training losses (seed 001) agree within float32 tolerance: scratchnet's
  backward rounds a few sums differently from torch's (in the last bit), and the
  difference grows slowly with every Adam step.

Also here: the scripts' backend switch is a block of imports and nothing else
(read from their source), and seed 004's hand-written softmax overflows exactly
where exp does, while scratchnet's F.softmax does not.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import math
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import scratchnet.nn.functional as F
from scratchnet.data import write_idx

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SEED_000 = EXAMPLES / "seed_000_build_the_neural_network.py"
SEED_001 = EXAMPLES / "seed_001_mnist_training.py"
SEED_004 = EXAMPLES / "seed_004_intro_to_nn.py"
SEED_004_BY_HAND = EXAMPLES / "seed_004_by_hand.py"
BACKEND_SCRIPTS = (SEED_000, SEED_001, SEED_004)
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

# torch.testing.assert_close's defaults for float32, applied to losses that the
# scripts print as Python floats (float64): the tolerance of one float32 result.
FLOAT32_RTOL, FLOAT32_ATOL = 1.3e-6, 1e-5


def write_small_mnist(directory: Path, n_train: int = 192, n_test: int = 128) -> Path:
    """The four IDX files of MNIST's layout: 28×28 uint8 images, labels 0..9; each
    image is 0.4 × its class's random template + 0.6 × noise, so a network can
    learn something in a few steps. 192 = 3 training batches of 64."""
    directory.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(4)
    templates = torch.rand(10, 28, 28, generator=generator) * 255  # (10, 28, 28)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = torch.randint(0, 10, (n,), generator=generator)  # (N,)
        noise = torch.rand(n, 28, 28, generator=generator) * 255  # (N, 28, 28)
        images = (0.4 * templates[labels] + 0.6 * noise).round().to(torch.uint8)
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", labels.to(torch.uint8))
    return directory


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory) -> Path:
    return write_small_mnist(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """No downloads and an empty user cache: the data is the test's own."""
    monkeypatch.setenv("SCRATCHNET_NO_DOWNLOAD", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SCRATCHNET_DATA", raising=False)
    monkeypatch.syspath_prepend(str(EXAMPLES))  # `import seed_data`, as the scripts do


def run_example(monkeypatch, script: Path, *argv: str) -> str:
    """Run ``script`` as ``python script argv...`` would, in this process, and
    return what it printed."""
    monkeypatch.setattr(sys, "argv", [str(script), *argv])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        runpy.run_path(str(script), run_name="__main__")
    return printed.getvalue()


def run_both(monkeypatch, script: Path, *argv: str) -> dict[str, str]:
    return {backend: run_example(monkeypatch, script, "--backend", backend, *argv)
            for backend in ("torch", "scratchnet")}


# torch's and scratchnet's autograd annotations, the one thing allowed to differ
AUTOGRAD_ANNOTATION = re.compile(r",\s*(grad_fn=<\w+>|backward=<\w+>|requires_grad=True)")


def without_autograd_annotations(printed: str) -> str:
    """The printout with the annotations removed and each run of whitespace made
    one space (torch wraps ``grad_fn=...`` onto a line of its own)."""
    return " ".join(AUTOGRAD_ANNOTATION.sub("", printed).split())


def parameter_lines(printed: str) -> list[str]:
    """Seed 000's ``Layer: name | Size: ... | Values : param[:2]`` lines, each with
    its values, annotations removed."""
    text = without_autograd_annotations(printed)
    return re.findall(r"Layer: \S+ \| Size: torch\.Size\(\[[\d, ]*\]\) \| Values : "
                      r"tensor\(.*?\)(?= Layer:|$)", text)


def model_structures(printed: str) -> list[str]:
    """Every ``print(model)`` block: a ``Name(`` line up to its closing ``)``."""
    return re.findall(r"^\w+\(\n(?:  .*\n)+\)$", printed, flags=re.MULTILINE)


def predicted_classes(printed: str) -> list[str]:
    return re.findall(r"Predicted class(?:es)?[^:]*: (tensor\(\[[\d,\s]*\]\))", printed)


def floats_after(label: str, printed: str) -> list[float]:
    number = r"([-+]?\d+\.?\d*(?:e[-+]?\d+)?)"
    return [float(value) for value in re.findall(label + r"\s*" + number, printed)]


# --------------------------------------------------------------------------------------
# the backend switch is imports only


def backend_branches(script: Path) -> list[ast.If]:
    tree = ast.parse(script.read_text())
    return [node for node in ast.walk(tree) if isinstance(node, ast.If)
            and "args.backend" in ast.unparse(node.test)]


@pytest.mark.parametrize("script", BACKEND_SCRIPTS, ids=lambda path: path.stem)
def test_backend_switch_is_one_block_of_imports(script):
    """--backend is read in one place, an if/else whose two branches import the
    same names, one side from torch, the other from scratchnet, and do nothing
    else."""
    source = script.read_text()
    assert source.count("args.backend ==") == 1, "the backend is tested more than once"
    (branch,) = backend_branches(script)
    bound = []
    for body, package in ((branch.body, "scratchnet"), (branch.orelse, "torch")):
        assert body and all(isinstance(s, (ast.Import, ast.ImportFrom)) for s in body), (
            f"{script.name}: the {package} branch does more than import")
        modules = [s.module if isinstance(s, ast.ImportFrom) else s.names[0].name
                   for s in body]
        assert all(module.split(".")[0] == package for module in modules), modules
        bound.append(sorted(alias.asname or alias.name for s in body for alias in s.names))
    assert bound[0] == bound[1], f"{script.name}: the branches bind {bound}"
    assert set(bound[0]) <= {"nn", "F", "optim"}


# --------------------------------------------------------------------------------------
# seed 000 / 002 / 003


def test_seed_000_prints_the_same_on_both_backends(monkeypatch):
    printed = run_both(monkeypatch, SEED_000, "--seed", "3")
    torch_lines, scratchnet_lines = (parameter_lines(printed[b])
                                     for b in ("torch", "scratchnet"))
    assert len(torch_lines) == 6, "expected 3 Linear layers × (weight, bias)"
    for torch_line, scratchnet_line in zip(torch_lines, scratchnet_lines, strict=True):
        assert scratchnet_line == torch_line, "parameter name, size or param[:2] differ"
    assert "linear_relu_stack.0.weight | Size: torch.Size([512, 784])" in torch_lines[0]
    structures = {b: model_structures(printed[b]) for b in printed}
    assert len(structures["torch"]) == 1
    assert structures["scratchnet"] == structures["torch"], "print(model) differs"
    assert printed["torch"].count("NeuralNetwork(\n  (flatten): Flatten(") == 2
    classes = {b: predicted_classes(printed[b]) for b in printed}
    assert len(classes["torch"]) == 2  # the random input of In [5] and of In [11]
    assert classes["scratchnet"] == classes["torch"], "predicted classes differ"
    # and everything else (sizes, hidden1 before and after ReLU) word for word
    assert (without_autograd_annotations(printed["scratchnet"])
            == without_autograd_annotations(printed["torch"]))


def test_seed_000_comparison_can_fail(monkeypatch):
    """Different seeds give different param[:2] and outputs: the comparison above
    would see a difference."""
    first = run_example(monkeypatch, SEED_000, "--backend", "scratchnet", "--seed", "3")
    second = run_example(monkeypatch, SEED_000, "--backend", "scratchnet", "--seed", "4")
    assert parameter_lines(first) != parameter_lines(second)
    assert model_structures(first) == model_structures(second)


# --------------------------------------------------------------------------------------
# seed 001


def assert_seed_001_agrees(printed: dict[str, str], accuracy_points: float = 0.0) -> None:
    """The two printouts of seed 001: the same logits shape and first logits, the
    same first loss, epoch losses within float32 tolerance, and test accuracies
    at most ``accuracy_points`` apart (0: the same printed percentage)."""
    text = {b: without_autograd_annotations_keep_lines(printed[b]) for b in printed}
    for label in (r"Shape of the logits tensor: (.*)",
                  r"Sample logits for first image:\n(.*\n.*)"):
        found = {b: re.findall(label, text[b]) for b in printed}
        assert found["torch"], f"nothing printed for {label!r}"
        assert found["scratchnet"] == found["torch"], f"{label!r} differs"
    first_loss = {b: floats_after("Loss value:", printed[b]) for b in printed}
    assert first_loss["scratchnet"] == first_loss["torch"], "first forward's loss"
    for label in (r"Epoch \d+, Loss:", r"Epoch \d+'s training loss:"):
        losses = {b: floats_after(label, printed[b]) for b in printed}
        assert losses["torch"], f"no {label!r} lines"
        torch.testing.assert_close(
            torch.tensor(losses["scratchnet"], dtype=torch.float64),
            torch.tensor(losses["torch"], dtype=torch.float64),
            rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL,
            msg=lambda message, label=label: f"training losses {label!r}: {message}")
    accuracies = {b: [float(a) for a in re.findall(
        r"Accuracy of the model on the [\d,]+ test images: ([\d.]+)%", printed[b])]
        for b in printed}
    assert len(accuracies["torch"]) == 2  # SimpleNN, then SingleLayerNN
    for model, ours, theirs in zip(("SimpleNN", "SingleLayerNN"), accuracies["scratchnet"],
                                   accuracies["torch"], strict=True):
        assert abs(ours - theirs) <= accuracy_points, (
            f"{model}: scratchnet {ours}% vs torch.nn {theirs}%")


def without_autograd_annotations_keep_lines(printed: str) -> str:
    return AUTOGRAD_ANNOTATION.sub("", printed)


def test_seed_001_trains_the_same_on_both_backends(monkeypatch, mnist_dir):
    printed = run_both(monkeypatch, SEED_001, "--dataset", "mnist", "--data-dir",
                       str(mnist_dir), "--epochs", "2", "--seed", "1")
    assert_seed_001_agrees(printed)
    assert "on the 128 test images" in printed["torch"]
    losses = floats_after(r"Epoch \d+, Loss:", printed["scratchnet"])
    assert len(losses) == 2 and losses[1] < losses[0], "SimpleNN did not learn"


def test_seed_001_limit_takes_the_first_images(monkeypatch, mnist_dir):
    printed = run_example(monkeypatch, SEED_001, "--backend", "scratchnet", "--dataset",
                          "mnist", "--data-dir", str(mnist_dir), "--epochs", "1",
                          "--limit", "64")
    assert printed.count("on the 64 test images") == 2


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="Fashion-MNIST not installed")
def test_seed_001_on_fashion_mnist_agrees(monkeypatch):
    """The same on real data: 4,096 Fashion-MNIST training images, 2 epochs."""
    printed = run_both(monkeypatch, SEED_001, "--limit", "4096", "--epochs", "2")
    assert_seed_001_agrees(printed, accuracy_points=0.3)  # the criterion


# --------------------------------------------------------------------------------------
# seed 004


def test_seed_004_prints_and_draws_the_same_on_both_backends(monkeypatch, mnist_dir,
                                                             tmp_path):
    import matplotlib.image

    printed = run_both(monkeypatch, SEED_004, "--dataset", "mnist", "--data-dir",
                       str(mnist_dir), "--limit", "128", "--out-dir", str(tmp_path),
                       "--seed", "2")
    structures = {b: model_structures(printed[b]) for b in printed}
    assert len(structures["torch"]) == 3  # Network, fc1/fc2/fc3 Network, Sequential
    assert structures["scratchnet"] == structures["torch"], "print(model) differs"
    assert "(softmax): Softmax(dim=1)" in structures["torch"][0]
    classes = {b: predicted_classes(printed[b]) for b in printed}
    assert len(classes["torch"]) == 2  # the two Networks the seed never calls
    assert classes["scratchnet"] == classes["torch"], "predicted classes differ"
    probabilities = {b: re.findall(r"Probabilities: (tensor\(.*?\))\n",
                                   without_autograd_annotations_keep_lines(printed[b]),
                                   flags=re.DOTALL) for b in printed}
    assert len(probabilities["torch"]) == 2
    assert probabilities["scratchnet"] == probabilities["torch"], "model.forward(x)"
    # fill_(0), normal_(std=0.01), model[0].weight: word for word
    assert (without_autograd_annotations(printed["scratchnet"])
            == without_autograd_annotations(printed["torch"]))
    for picture in ("image", "view_classify_fc", "view_classify_sequential"):
        drawn = {b: matplotlib.image.imread(tmp_path / f"seed_004_{picture}_{b}.png")
                 for b in printed}
        assert drawn["torch"].std() > 0.05, f"{picture}: blank"
        assert torch.equal(torch.from_numpy(drawn["scratchnet"]),
                           torch.from_numpy(drawn["torch"])), f"{picture} differs"


def test_seed_004_refuses_a_limit_below_one_batch(monkeypatch, mnist_dir):
    """The seed resizes a batch to (64, 1, 784): fewer images would leave it
    reading uninitialised memory."""
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        run_example(monkeypatch, SEED_004, "--dataset", "mnist", "--data-dir",
                    str(mnist_dir), "--limit", "63")


def load_by_hand_script():
    """examples/seed_004_by_hand.py as a module (its cells run only as a script)."""
    spec = importlib.util.spec_from_file_location("seed_004_by_hand", SEED_004_BY_HAND)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seed_004_by_hand_runs(monkeypatch, mnist_dir):
    printed = run_example(monkeypatch, SEED_004_BY_HAND, "--dataset", "mnist",
                          "--data-dir", str(mnist_dir), "--limit", "64")
    assert printed.count("torch.Size([64, 10])") == 2
    sums = re.search(r"tensor\(\[([\d.,\s]*)\]\)", printed.split("torch.Size([64, 10])")[-1])
    assert [float(s) for s in sums.group(1).split(",")] == pytest.approx([1.0] * 64,
                                                                         abs=1e-4)
    difference = floats_after("largest difference", printed)[0]
    assert difference < 1e-6, "seed softmax and F.softmax disagree on finite logits"
    rows = re.findall(r"logits x(\d+)\s*: largest\s+\S+ \| rows with nan: seed softmax "
                      r"(\d+), scratchnet F.softmax (\d+)", printed)
    assert [scratchnet for _, _, scratchnet in rows] == ["0", "0", "0"]
    assert int(rows[-1][1]) > 0, "×100 logits should overflow the seed's softmax"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_seed_softmax_overflows_where_scratchnet_softmax_does_not(dtype):
    """The seed's ``exp(x) / Σ exp(x)`` is finite exactly while exp(max x) is:
    up to log(max float) (88.72 in float32, 709.78 in float64). Past it exp gives
    inf and the row inf / inf = nan; below log(smallest subnormal) (−103.3,
    −744.4) every exp is 0 and the row is 0 / 0 = nan. scratchnet subtracts the
    row's max first, so the same logits give torch.softmax's probabilities."""
    seed_softmax = load_by_hand_script().softmax
    overflow_at = math.log(torch.finfo(dtype).max)
    underflow_at = math.log(torch.finfo(dtype).smallest_normal * torch.finfo(dtype).eps)
    rows = {  # name: (logits (1, 3), does the seed's softmax give nan?)
        "just below overflow": ([overflow_at - 0.01, 0.0, -1.0], False),
        "just above overflow": ([overflow_at + 0.01, 0.0, -1.0], True),
        "far above overflow": ([1e4, 9e3, 0.0], True),
        "every exp underflows": ([underflow_at - 1, underflow_at - 2, underflow_at - 3],
                                 True),
    }
    for name, (values, seed_gives_nan) in rows.items():
        logits = torch.tensor([values], dtype=dtype)  # (1, 3)
        assert seed_softmax(logits).isnan().any().item() == seed_gives_nan, name
        probabilities = F.softmax(logits, dim=1)  # (1, 3)
        assert torch.isfinite(probabilities).all(), f"{name}: scratchnet gave {probabilities}"
        torch.testing.assert_close(probabilities, torch.softmax(logits, dim=1),
                                   msg=lambda message, name=name: f"{name}: {message}")
        torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(1, dtype=dtype))
    below = torch.tensor([rows["just below overflow"][0]], dtype=dtype)
    torch.testing.assert_close(seed_softmax(below), F.softmax(below, dim=1),
                               msg="while exp is finite the two softmaxes agree")


@pytest.mark.slow
@pytest.mark.parametrize("script", [SEED_000, SEED_004_BY_HAND], ids=lambda p: p.stem)
def test_scripts_run_from_the_command_line(script, mnist_dir, tmp_path):
    """As a user runs them: a fresh interpreter, the examples folder not on the
    path (the script's own folder is)."""
    argv = [] if script == SEED_000 else ["--dataset", "mnist", "--data-dir",
                                          str(mnist_dir), "--limit", "64"]
    if script == SEED_000:
        argv += ["--backend", "scratchnet"]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(script), *argv], cwd=tmp_path,
                            capture_output=True, text=True, env=environment,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "torch.Size" in result.stdout


def test_torch_no_grad_evaluation_on_scratchnet():
    """Seed 001 evaluates under ``with torch.no_grad():``. scratchnet's tape
    ignores torch's grad mode (its own switch is ``scratchnet.no_grad()``), so
    there the outputs are still recorded — the same values and predictions,
    plus what a backward would need."""
    from scratchnet import Tensor, nn, no_grad

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    images = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        outputs = model(images)
        _, predicted = torch.max(outputs.data, 1)
    with no_grad():
        plain_outputs = model(images)
    assert isinstance(outputs, Tensor) and outputs._node is not None, "not recorded"
    assert type(plain_outputs) is torch.Tensor, "scratchnet.no_grad() recorded"
    assert torch.equal(outputs.data, plain_outputs)
    assert torch.equal(predicted, plain_outputs.argmax(1))
