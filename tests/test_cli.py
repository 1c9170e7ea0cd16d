"""The ``scratchnet`` command (scratchnet/cli.py): compare's JSON and plot, train
→ checkpoint → evaluate, --resume bit for bit, every flag documented, and every
bad input answered with one ``scratchnet: error:`` line and exit code 2.

Runs use the tiny IDX dataset of tests/test_train.py (``--dataset mnist
--data-dir DIR``) and a small model where the model does not matter.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scratchnet import cli
from scratchnet.checkpoint import CHECKPOINT_NAME
from tests.test_train import write_tiny_dataset

ROOT = Path(__file__).resolve().parents[1]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """No download attempts and an empty user cache: a missing dataset is missing."""
    monkeypatch.setenv("SCRATCHNET_NO_DOWNLOAD", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SCRATCHNET_DATA", raising=False)


def data_args(data_dir: Path) -> list[str]:
    return ["--dataset", "mnist", "--data-dir", str(data_dir)]


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --------------------------------------------------------------------------------------
# compare


@pytest.fixture(scope="module")
def compare_run(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    code = cli.main(["compare", *data_args(tiny_dir), "--epochs", "2", "--model",
                     "SingleLayerNN", "--out", str(out), "--plot", str(out / "loss.png")])
    return code, out


def test_compare_writes_the_json_schema(compare_run):
    code, out = compare_run
    assert code == 0
    results = json.loads((out / "compare.json").read_text())
    assert results["config"]["model"] == "SingleLayerNN"
    assert results["config"]["epochs"] == 2 and results["config"]["lr"] == 1e-3
    for side in ("scratchnet", "torch"):
        for key in ("epoch_loss", "test_accuracy", "epoch_seconds"):
            assert len(results[side][key]) == 2, f"{side}.{key}"
            assert all(isinstance(v, float) for v in results[side][key]), f"{side}.{key}"
    assert len(results["max_param_diff"]) == 2
    assert all(0 <= d < 1e-3 for d in results["max_param_diff"]), results["max_param_diff"]
    assert results["verdict"]["agree"] is True


def test_compare_plot_is_a_png_with_content(compare_run):
    import matplotlib.image

    _, out = compare_run
    pixels = matplotlib.image.imread(out / "loss.png")  # (H, W, 4) floats in [0, 1]
    assert pixels.shape[0] >= 300 and pixels.shape[1] >= 800, pixels.shape
    assert float(np.var(pixels[..., :3])) > 1e-3, "the plot is blank"
    # both curves are drawn: the two line colours (tab:blue, tab:orange) appear
    rgb = pixels[..., :3].reshape(-1, 3)
    for colour in ((0.12, 0.47, 0.71), (1.0, 0.50, 0.05)):
        assert (np.abs(rgb - colour).max(axis=1) < 0.05).any(), f"no {colour} pixels"


def test_compare_prints_a_table_and_a_verdict(tiny_dir, tmp_path, capsys):
    code, out, _ = run_main(capsys, *data_args(tiny_dir), "--epochs", "1", "--model",
                            "784-16-10", "--out", str(tmp_path))
    assert code == 0  # options without a command run `compare`
    assert "max" in out and "|Δparam|" in out
    assert "verdict: AGREE" in out
    assert (tmp_path / "compare.json").is_file() and (tmp_path / "compare_loss.png").is_file()


def test_strict_exits_1_on_disagreement(tiny_dir, tmp_path, monkeypatch, capsys):
    import scratchnet.train

    real_verdict = scratchnet.train.verdict
    monkeypatch.setattr(scratchnet.train, "verdict",
                        lambda results: {**real_verdict(results), "agree": False})
    argv = ["compare", *data_args(tiny_dir), "--epochs", "1", "--model", "784-16-10",
            "--out", str(tmp_path), "--quiet"]
    assert cli.main(argv) == 0  # the run completed; the verdict says DISAGREE
    assert "verdict: DISAGREE" in capsys.readouterr().out
    assert cli.main([*argv, "--strict"]) == 1


def test_no_arguments_runs_compare_with_the_seed_settings(monkeypatch):
    seen = {}
    monkeypatch.setitem(cli.COMMANDS, "compare", lambda args: seen.update(vars(args)) or 0)
    assert cli.main([]) == 0
    config = cli._config_from_args(type("Args", (), seen)())
    assert (config.model, config.dataset, config.optimizer, config.lr, config.batch_size,
            config.epochs) == ("NeuralNetwork", "fashion-mnist", "adam", 1e-3, 64, 5)


def test_every_flag_has_help():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name, subparser in subparsers.items():
        for action in subparser._actions:
            assert action.help, f"`scratchnet {name}` {action.option_strings} has no help"


# --------------------------------------------------------------------------------------
# train, resume, evaluate


def test_resume_after_epoch_2_equals_an_uninterrupted_run(tiny_dir, tmp_path, capsys):
    common = [*data_args(tiny_dir), "--model", "784-32-10", "--quiet"]
    stopped, straight = tmp_path / "stopped", tmp_path / "straight"
    assert cli.main(["train", *common, "--epochs", "2", "--out", str(stopped)]) == 0
    assert cli.main(["train", *common, "--epochs", "4", "--out", str(stopped),
                     "--resume"]) == 0
    assert cli.main(["train", *common, "--epochs", "4", "--out", str(straight),
                     "--json", str(tmp_path / "straight.json")]) == 0
    capsys.readouterr()
    a = torch.load(stopped / "model.pt", weights_only=True)
    b = torch.load(straight / "model.pt", weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after resume"
    metrics = [json.loads(path.read_text())
               for path in (stopped / "metrics.json", tmp_path / "straight.json")]
    assert metrics[0]["epoch_loss"] == metrics[1]["epoch_loss"]
    assert len(metrics[0]["epoch_loss"]) == 4


def test_train_then_evaluate_prints_class_names_and_confusion(tiny_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, printed, _ = run_main(capsys, "train", *data_args(tiny_dir), "--model",
                                "FCNetwork", "--epochs", "1", "--out", str(out),
                                "--backend", "torch")
    assert code == 0 and "epoch 1/1" in printed
    trained = json.loads((out / "metrics.json").read_text())
    for checkpoint in (out / CHECKPOINT_NAME, out / "model.pt"):
        code, printed, _ = run_main(capsys, "evaluate", "--checkpoint", str(checkpoint),
                                    "--data-dir", str(tiny_dir), "--dataset", "mnist",
                                    "--model", "FCNetwork", "--json",
                                    str(tmp_path / "eval.json"))
        assert code == 0
        assert f"accuracy {trained['final']['accuracy']:.2f}%" in printed
        assert "confusion matrix" in printed and "per-class accuracy" in printed
        report = json.loads((tmp_path / "eval.json").read_text())
        assert report["confusion"] == trained["final"]["confusion"]
        assert sum(map(sum, report["confusion"])) == 128


def test_evaluate_names_fashion_mnist_classes(tiny_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--dataset", "fashion-mnist", "--data-dir", str(tiny_dir),
                     "--model", "784-16-10", "--epochs", "1", "--quiet", "--out",
                     str(out)]) == 0
    code, printed, _ = run_main(capsys, "evaluate", "--checkpoint",
                                str(out / CHECKPOINT_NAME), "--data-dir", str(tiny_dir))
    assert code == 0
    for name in ("T-shirt/top", "Trouser", "Ankle boot"):
        assert name in printed, name


# --------------------------------------------------------------------------------------
# bad input: one line, exit code 2


@pytest.fixture(scope="module")
def small_checkpoint(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("small")
    assert cli.main(["train", *data_args(tiny_dir), "--model", "784-16-10", "--epochs",
                     "1", "--quiet", "--out", str(out)]) == 0
    return out / CHECKPOINT_NAME


def bad_data_dir(tmp_path: Path, tiny_dir: Path, damage: str) -> Path:
    """A copy of the tiny dataset with its training images damaged."""
    directory = tmp_path / damage
    directory.mkdir()
    for file in tiny_dir.iterdir():
        (directory / file.name).write_bytes(file.read_bytes())
    images = directory / "train-images-idx3-ubyte.gz"
    import gzip

    raw = gzip.decompress(images.read_bytes())
    if damage == "truncated":
        images.write_bytes(gzip.compress(raw[: len(raw) - 1000]))
    else:  # corrupt: not an IDX header
        images.write_bytes(gzip.compress(b"\x12\x34" + raw[2:]))
    return directory


BAD_INPUTS = {
    "unknown model": (["compare", "--model", "ResNet50"], "unknown model 'ResNet50'"),
    "unknown dataset": (["compare", "--dataset", "cifar10"], "unknown dataset"),
    "spec does not chain": (["compare", "--model", "784-x-10"], "does not chain"),
    "spec not 784-…-10": (["train", "--model", "784-64-7"], "end with 10 outputs"),
    "spec not from 784": (["compare", "--model", "28-10"], "start with 784"),
    "lr 0": (["compare", "--lr", "0"], "learning rate"),
    "lr negative": (["train", "--lr", "-0.1"], "learning rate"),
    "epochs 0": (["compare", "--epochs", "0"], "epochs"),
    "batch size 0": (["train", "--batch-size", "0"], "batch size"),
    "batch size not a number": (["compare", "--batch-size", "many"], "invalid int"),
    "unknown option": (["compare", "--bogus"], "unrecognized arguments"),
    "unknown command": (["fit"], "invalid choice"),
    "unknown optimizer": (["compare", "--optimizer", "rmsprop"], "unknown optimizer"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_exits_2_with_one_line(case, capsys):
    argv, reason = BAD_INPUTS[case]
    code, out, err = run_main(capsys, *argv)
    assert code == 2, f"{case}: exit code {code}"
    assert err.count("\n") == 1 and err.startswith("scratchnet: error: "), f"{case}: {err!r}"
    assert reason in err, f"{case}: {err!r}"
    assert "Traceback" not in out + err


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_damaged_idx_file_exits_2(damage, tiny_dir, tmp_path, capsys):
    directory = bad_data_dir(tmp_path, tiny_dir, damage)
    code, _, err = run_main(capsys, "compare", *data_args(directory), "--epochs", "1",
                            "--out", str(tmp_path / "out"))
    assert code == 2 and err.count("\n") == 1, err
    assert "train-images-idx3-ubyte" in err, err


def test_missing_dataset_exits_2(tmp_path, capsys):
    code, _, err = run_main(capsys, "train", *data_args(tmp_path / "empty"), "--out",
                            str(tmp_path / "out"))
    assert code == 2 and err.count("\n") == 1, err
    assert "not found" in err, err


def test_checkpoint_of_another_architecture_exits_2(small_checkpoint, tiny_dir, tmp_path,
                                                    capsys):
    code, _, err = run_main(capsys, "evaluate", "--checkpoint", str(small_checkpoint),
                            "--model", "SingleLayerNN", *data_args(tiny_dir))
    assert code == 2 and err.count("\n") == 1, err
    assert "another architecture" in err, err
    code, _, err = run_main(capsys, "train", "--resume", str(small_checkpoint), "--model",
                            "784-32-10", "--epochs", "2", *data_args(tiny_dir),
                            "--out", str(tmp_path))
    assert code == 2 and "--model" in err, err


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_damaged_checkpoint_exits_2(damage, small_checkpoint, tiny_dir, tmp_path, capsys):
    content = bytearray(small_checkpoint.read_bytes())
    if damage == "truncated":
        content = content[: len(content) * 2 // 3]
    else:
        middle = len(content) // 2
        content[middle:middle + 16] = bytes(16)
    path = tmp_path / "damaged.pt"
    path.write_bytes(bytes(content))
    for argv in (["evaluate", "--checkpoint", str(path), *data_args(tiny_dir)],
                 ["train", "--resume", str(path), "--epochs", "3", *data_args(tiny_dir),
                  "--out", str(tmp_path / "out")]):
        code, _, err = run_main(capsys, *argv)
        assert code == 2 and err.count("\n") == 1, f"{argv[0]}: {err!r}"
        assert "corrupt" in err, err


def test_the_installed_entry_points_give_one_line_and_no_traceback(tmp_path):
    environment = {**os.environ, "SCRATCHNET_NO_DOWNLOAD": "1"}
    for command in ([sys.executable, "-m", "scratchnet", "compare", "--lr", "-1"],
                    [sys.executable, "-m", "scratchnet", "evaluate", "--checkpoint",
                     str(tmp_path / "missing.pt")]):
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                              env=environment, timeout=120)
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.startswith("scratchnet: error: ")
    done = subprocess.run([sys.executable, "-m", "scratchnet", "--help"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0 and "compare" in done.stdout


# --------------------------------------------------------------------------------------
# the real thing


@pytest.mark.slow
@pytest.mark.skipif(not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Fashion-MNIST not installed (apt-get install "
                    "dataset-fashion-mnist)")
def test_real_compare_on_fashion_mnist(tmp_path, capsys):
    code, out, _ = run_main(capsys, "compare", "--epochs", "1", "--limit", "6000",
                            "--data-dir", str(FASHION_MNIST), "--out", str(tmp_path))
    results = json.loads((tmp_path / "compare.json").read_text())
    gap = abs(results["scratchnet"]["test_accuracy"][0] - results["torch"]["test_accuracy"][0])
    assert gap <= 0.3, f"accuracy gap {gap:.2f} points\n{out}"
    assert results["test_size"] == 10000 and results["train_size"] == 6000
    assert results["scratchnet"]["test_accuracy"][0] > 70.0, out
    assert code == 0, out
