"""The training loop (scratchnet/train.py): models built alike on both backends,
scratchnet and torch.nn trained in lockstep agree (float32 within assert_close's
defaults, float64 to 1e-9), evaluation counts what it should, training resumes
bit for bit, and bad options are refused.

The data is a tiny IDX dataset written here (class templates + noise: learnable,
not trivial), so every run takes well under a second of training.
"""

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import scratchnet
from reference.models import MODELS
from scratchnet.data import TensorLoader, load_dataset, write_idx
from scratchnet.errors import CheckpointError, OptionError
from scratchnet.train import (
    MODEL_NAMES,
    TrainConfig,
    build_model,
    compare,
    evaluate,
    fit,
    resolve_model,
    resumed_config,
    rng_state,
    set_rng_state,
    takes_flat_input,
)

FLAT_INPUT_MODELS = {"Network", "FunctionalNetwork", "FCNetwork", "SequentialNetwork"}


def write_tiny_dataset(directory: Path, n_train: int = 256, n_test: int = 128,
                       seed: int = 0) -> Path:
    """The four IDX files of a 10-class dataset of 28×28 images: each image is
    0.4 × its class's random template + 0.6 × noise."""
    directory.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    templates = torch.rand(10, 28, 28, generator=generator) * 255  # (10, 28, 28)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = torch.randint(0, 10, (n,), generator=generator)  # (N,)
        noise = torch.rand(n, 28, 28, generator=generator) * 255  # (N, 28, 28)
        images = (0.4 * templates[labels] + 0.6 * noise).round().to(torch.uint8)
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", labels.to(torch.uint8))
    return directory


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny"))


def tiny_config(data_dir: Path, **overrides) -> TrainConfig:
    """A run on the tiny dataset; a small model unless the test needs another (the
    machine is shared: keep every step cheap)."""
    options = {"dataset": "mnist", "data_dir": str(data_dir), "epochs": 2,
               "model": "784-32-10", **overrides}
    return TrainConfig(**options)


def quiet_log(_: str) -> None:
    pass


# --------------------------------------------------------------------------------------
# models


@pytest.mark.parametrize("name", [*MODEL_NAMES, "784-64-32-10"])
def test_same_seed_gives_bit_identical_initial_weights(name):
    torch.manual_seed(7)
    ours = build_model(name, "scratchnet")
    torch.manual_seed(7)
    ref = build_model(name, "torch")
    assert list(ours.state_dict()) == list(ref.state_dict()), f"{name}: keys differ"
    for key, value in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), f"{name}: {key} differs"
    assert isinstance(ours, scratchnet.nn.Module) and isinstance(ref, torch.nn.Module)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_torch_backend_builds_the_reference_models(name):
    torch.manual_seed(0)
    ref = MODELS[name]()
    torch.manual_seed(0)
    built = build_model(name.lower(), "torch")  # names are case-insensitive
    assert type(built) is type(ref), f"{name}: {type(built)} is not {type(ref)}"
    assert repr(built) == repr(ref), f"{name}: print(model) differs"


def test_activation_replaces_relu_of_stack_models_only():
    model = build_model("SimpleNN", activation="tanh")
    activations = [type(m).__name__ for m in model.linear_relu_stack]
    assert activations == ["Linear", "Tanh", "Linear", "Tanh", "Linear"], activations
    assert list(model.state_dict()) == list(build_model("SimpleNN").state_dict())
    with pytest.raises(OptionError, match="fixed activations"):
        build_model("Network", activation="relu")
    with pytest.raises(OptionError, match="unknown activation"):
        build_model("784-10", activation="swish")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_flat_input_models_are_the_ones_without_flatten(name):
    assert takes_flat_input(build_model(name)) == (name in FLAT_INPUT_MODELS), name


@pytest.mark.parametrize("spec, reason", [
    ("Bogus", "unknown model"),
    ("784-abc-10", "does not chain"),
    ("784--10", "does not chain"),
    ("784-0-10", "does not chain"),
    ("100-64-10", "must start with 784"),
    ("784-64-5", "end with 10"),
])
def test_bad_model_names_and_specs_are_refused(spec, reason):
    with pytest.raises(OptionError, match=reason) as error:
        resolve_model(spec)
    assert repr(spec) in str(error.value), f"message does not name {spec!r}"


@pytest.mark.parametrize("option, value, reason", [
    ("lr", 0.0, "learning rate"), ("lr", -1e-3, "learning rate"),
    ("lr", math.nan, "learning rate"), ("epochs", 0, "epochs"),
    ("batch_size", 0, "batch size"), ("batch_size", -64, "batch size"),
    ("limit", 0, "limit"), ("optimizer", "rmsprop", "optimizer"),
    ("dtype", "float16", "dtype"), ("device", "tpu", "device"),
    ("backend", "jax", "backend"), ("dataset", "cifar10", "dataset"),
])
def test_bad_options_are_refused(option, value, reason):
    with pytest.raises(OptionError, match=reason):
        TrainConfig(**{option: value}).validate()


# --------------------------------------------------------------------------------------
# compare: the two backends in lockstep


@pytest.fixture(scope="module")
def float32_results(tiny_dir):
    # the seed tutorial's model, as `scratchnet compare` trains it
    return compare(tiny_config(tiny_dir, epochs=2, model="NeuralNetwork"), quiet=True)


def test_compare_float32_losses_and_accuracies_agree(float32_results):
    ours, theirs = float32_results["scratchnet"], float32_results["torch"]
    assert float32_results["initial_param_diff"] == 0.0
    # the parity contract for float32: assert_close's defaults, per epoch and per step
    for epoch, (a, b) in enumerate(zip(ours["epoch_loss"], theirs["epoch_loss"],
                                       strict=True), 1):
        torch.testing.assert_close(torch.tensor(a, dtype=torch.float32),
                                   torch.tensor(b, dtype=torch.float32),
                                   msg=lambda m, e=epoch: f"epoch {e} mean loss: {m}")
    torch.testing.assert_close(torch.tensor(ours["step_loss"], dtype=torch.float32),
                               torch.tensor(theirs["step_loss"], dtype=torch.float32),
                               msg=lambda m: f"per-step losses: {m}")
    # on 128 test images no prediction is borderline enough to flip: equal predictions
    assert float32_results["same_predictions"] == [100.0] * 2
    assert ours["test_accuracy"] == theirs["test_accuracy"]
    assert float32_results["verdict"]["agree"]


def test_compare_trains(float32_results):
    losses = float32_results["scratchnet"]["epoch_loss"]
    assert losses[-1] < losses[0] - 0.1, f"loss did not fall: {losses}"
    # twice chance (10%) after 8 steps on noisy templates
    assert float32_results["scratchnet"]["test_accuracy"][-1] > 20.0


def test_compare_results_schema(float32_results):
    assert float32_results["config"]["model"] == "NeuralNetwork"
    for side in ("scratchnet", "torch"):
        for key in ("epoch_loss", "test_accuracy", "epoch_seconds", "test_loss"):
            values = float32_results[side][key]
            assert len(values) == 2 and all(isinstance(v, float) for v in values), key
        assert len(float32_results[side]["step_loss"]) == 2 * 4  # 256 / 64 per epoch
    assert len(float32_results["max_param_diff"]) == 2


def test_compare_float64_params_within_1e9(tiny_dir):
    results = compare(tiny_config(tiny_dir, epochs=1, dtype="float64",
                                  model="NeuralNetwork"), quiet=True)
    assert results["initial_param_diff"] == 0.0
    assert results["max_param_diff"][0] <= 1e-9, results["max_param_diff"]
    assert results["verdict"]["losses_agree"], results["verdict"]


@pytest.mark.parametrize("model, optimizer, activation", [
    ("SimpleNN", "sgd", None), ("SingleLayerNN", "adamw", None), ("Network", "adam", None),
    ("FunctionalNetwork", "adam", None), ("FCNetwork", "adam", None),
    ("SequentialNetwork", "adam", None), ("784-32-10", "adam", "sigmoid"),
])
def test_compare_agrees_for_every_model_and_optimizer(tiny_dir, model, optimizer,
                                                      activation):
    config = tiny_config(tiny_dir, epochs=1, limit=128, model=model, optimizer=optimizer,
                         activation=activation)
    results = compare(config, quiet=True)
    ours, theirs = results["scratchnet"], results["torch"]
    torch.testing.assert_close(torch.tensor(ours["step_loss"], dtype=torch.float32),
                               torch.tensor(theirs["step_loss"], dtype=torch.float32),
                               msg=lambda m: f"{model}/{optimizer} step losses: {m}")
    assert results["same_predictions"] == [100.0], f"{model}/{optimizer}"


def synthetic_results(dtype, ours_loss, theirs_loss, ours_acc, theirs_acc):
    side = {"epoch_seconds": [1.0], "step_loss": []}
    return {"config": {"dtype": dtype},
            "scratchnet": {**side, "epoch_loss": ours_loss, "test_accuracy": ours_acc,
                           "step_loss": ours_loss},
            "torch": {**side, "epoch_loss": theirs_loss, "test_accuracy": theirs_acc,
                      "step_loss": theirs_loss}}


@pytest.mark.parametrize("dtype, ours, theirs, acc_gap, agree, steps_agreeing", [
    ("float32", [0.5, 0.4], [0.5 + 9e-6, 0.4], 0.0, True, 2),  # inside atol + rtol·|b|
    ("float32", [0.5, 0.4], [0.5, 0.4 + 2e-5], 0.0, False, 1),  # outside at step 2
    ("float32", [0.5, 0.4], [0.5, 0.4], 0.31, False, 2),  # accuracy gap > 0.3 points
    ("float32", [0.5, 0.4], [0.5, 0.4], 0.3, True, 2),
    ("float64", [0.5, 0.4], [0.5 + 9e-6, 0.4], 0.0, False, 0),  # float64 is tighter
])
def test_verdict_applies_the_parity_contract(dtype, ours, theirs, acc_gap, agree,
                                             steps_agreeing):
    from scratchnet.train import verdict

    result = verdict(synthetic_results(dtype, ours, theirs, [80.0, 85.0],
                                       [80.0, 85.0 + acc_gap]))
    assert result["agree"] is agree, result
    assert result["steps_agreeing"] == steps_agreeing, result


# --------------------------------------------------------------------------------------
# evaluation


def test_evaluate_counts_match_a_direct_computation(tiny_dir):
    images, labels = load_dataset("mnist", train=False, data_dir=tiny_dir)
    loader = TensorLoader(images, labels, batch_size=50)  # 128 = 50 + 50 + 28
    torch.manual_seed(3)
    model = build_model("SingleLayerNN")
    result = evaluate(model, loader)

    torch.manual_seed(3)
    ref = MODELS["SingleLayerNN"]()
    x = images.to(torch.float32).div(255).unsqueeze(1)  # (N, 1, 28, 28), ToTensor
    with torch.no_grad():
        logits = ref(x)  # (N, 10)
    predicted = logits.argmax(dim=1)
    expected_confusion = torch.zeros(10, 10, dtype=torch.int64)
    for true, guess in zip(labels.tolist(), predicted.tolist(), strict=True):
        expected_confusion[true, guess] += 1
    assert result.confusion == expected_confusion.tolist()
    assert result.total == 128
    assert result.accuracy == pytest.approx(100.0 * (predicted == labels).sum().item() / 128)
    for c in range(10):
        mask = labels == c
        expected = 100.0 * (predicted[mask] == c).sum().item() / mask.sum().item()
        assert result.per_class_accuracy[c] == pytest.approx(expected), f"class {c}"
    torch.testing.assert_close(torch.tensor(result.loss),
                               torch.nn.functional.cross_entropy(logits, labels),
                               msg=lambda m: f"mean test loss: {m}")
    assert not model.training and scratchnet.is_recording()


def test_evaluate_gives_the_same_numbers_on_both_backends(tiny_dir):
    images, labels = load_dataset("mnist", train=False, data_dir=tiny_dir)
    loader = TensorLoader(images, labels, batch_size=64)
    torch.manual_seed(5)
    ours = evaluate(build_model("FCNetwork"), loader)
    torch.manual_seed(5)
    theirs = evaluate(build_model("FCNetwork", "torch"), loader)
    assert ours.confusion == theirs.confusion
    assert torch.equal(ours.predictions, theirs.predictions)


# --------------------------------------------------------------------------------------
# fit: checkpoints and resume


def test_checkpoint_loads_into_the_reference_model_with_the_same_accuracy(tiny_dir,
                                                                          tmp_path):
    metrics = fit(tiny_config(tiny_dir, model="FCNetwork"), tmp_path, quiet=True,
                  log=quiet_log)
    assert {p.name for p in tmp_path.iterdir()} >= {"checkpoint.pt", "model.pt",
                                                    "metrics.json"}
    images, labels = load_dataset("mnist", train=False, data_dir=tiny_dir)
    loader = TensorLoader(images, labels, batch_size=64)
    for state in (torch.load(tmp_path / "model.pt", weights_only=True),
                  torch.load(tmp_path / "checkpoint.pt",
                             weights_only=True)["model_state_dict"]):
        ref = MODELS["FCNetwork"]()
        ref.load_state_dict(state)  # torch.nn's own strict load
        assert evaluate(ref, loader).accuracy == metrics["final"]["accuracy"]


@pytest.mark.parametrize("backend", ["scratchnet", "torch"])
def test_resume_after_epoch_2_equals_an_uninterrupted_run_bit_for_bit(tiny_dir, tmp_path,
                                                                      backend):
    interrupted, straight = tmp_path / "interrupted", tmp_path / "straight"
    fit(tiny_config(tiny_dir, epochs=2, backend=backend), interrupted, quiet=True,
        log=quiet_log)
    # resumed in a fresh state: other draws from the global RNGs in between
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    resumed = fit(tiny_config(tiny_dir, epochs=4, backend=backend), interrupted,
                  resume=interrupted / "checkpoint.pt", quiet=True, log=quiet_log)
    uninterrupted = fit(tiny_config(tiny_dir, epochs=4, backend=backend), straight,
                        quiet=True, log=quiet_log)
    a = torch.load(interrupted / "checkpoint.pt", weights_only=True)
    b = torch.load(straight / "checkpoint.pt", weights_only=True)
    for key, value in b["model_state_dict"].items():
        assert torch.equal(a["model_state_dict"][key], value), f"{backend}: {key}"
    for index, state in b["optimizer_state_dict"]["state"].items():
        for name, value in state.items():
            assert torch.equal(a["optimizer_state_dict"]["state"][index][name], value), \
                f"{backend}: optimizer state {index}.{name}"
    assert a["checksum"] == b["checksum"]
    assert resumed["epoch_loss"] == uninterrupted["epoch_loss"]
    assert resumed["test_accuracy"] == uninterrupted["test_accuracy"]
    assert a["epoch"] == 4 and len(resumed["epoch_loss"]) == 4


def test_resume_refuses_a_different_run_and_a_finished_one(tiny_dir, tmp_path):
    fit(tiny_config(tiny_dir, epochs=1), tmp_path, quiet=True, log=quiet_log)
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["config"]
    with pytest.raises(CheckpointError, match="--lr"):
        resumed_config(saved, {"lr": 0.01}, "ckpt")
    with pytest.raises(CheckpointError, match="--model"):
        resumed_config(saved, {"model": "SimpleNN"}, "ckpt")
    assert resumed_config(saved, {"epochs": 3, "model": "784-032-10"}, "c").epochs == 3
    with pytest.raises(OptionError, match="already trained 1 epochs"):
        fit(tiny_config(tiny_dir, epochs=1), tmp_path, resume=tmp_path / "checkpoint.pt",
            quiet=True, log=quiet_log)


def test_rng_state_round_trip():
    device = torch.device("cpu")
    state = rng_state(device)
    first = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(state, device)
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0])
    assert np.array_equal(first[1], second[1]) and first[2] == second[2]
