"""The training loop, written once for both backends.

A backend is a namespace of layers and optimizers: ``"scratchnet"``
(scratchnet.nn + scratchnet.optim, gradients from scratchnet's tape) or
``"torch"`` (torch.nn + torch.optim + torch.autograd, the oracle). Everything
here — building a model, one step, one epoch, evaluation — is the seed
tutorial's code (``optimizer.zero_grad(); loss = loss_fn(model(x), y);
loss.backward(); optimizer.step()``) and runs unchanged on either.

Two drivers use it:

- :func:`fit` (``scratchnet train``) trains one backend, checkpoints every epoch
  (:mod:`scratchnet.checkpoint`) and resumes bit for bit.
- :func:`compare` (``scratchnet compare``) trains the same model with both
  backends from the same initial weights on the same batches, stepping them in
  lockstep, and reports how far apart they drift.

B = batch, C = classes (10), D = 784 = 28 × 28 input features.
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from scratchnet import checkpoint as ckpt
from scratchnet.errors import CheckpointError, OptionError

# --------------------------------------------------------------------------------------
# names the command line accepts

MODEL_NAMES = ("NeuralNetwork", "SimpleNN", "SingleLayerNN", "Network",
               "FunctionalNetwork", "FCNetwork", "SequentialNetwork")
# Seed models that are exactly a layer spec with ReLU (``flatten`` + ``linear_relu_stack``,
# the same keys as mlp_from_spec builds): --activation swaps their ReLUs.
SPEC_OF_MODEL = {"NeuralNetwork": "784-512-512-10", "SimpleNN": "784-512-256-10",
                 "SingleLayerNN": "784-256-10"}
BACKENDS = ("scratchnet", "torch")
OPTIMIZERS = ("adam", "sgd", "adamw")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
INPUT_FEATURES = 28 * 28
EVAL_BATCH_SIZE = 1000  # evaluation only; both sides of a comparison see the same batches


# --------------------------------------------------------------------------------------
# configuration


@dataclass
class TrainConfig:
    """Everything that decides a run's numbers (saved in checkpoints and JSON).

    ``activation=None`` keeps the model's own activations (ReLU for layer specs).
    ``limit`` keeps the first N training images. ``world_size`` is the number of
    data-parallel processes (set by :func:`fit`); ``batch_size`` is per process.
    """

    model: str = "NeuralNetwork"
    activation: str | None = None
    dataset: str = "fashion-mnist"
    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    limit: int | None = None
    data_dir: str | None = None
    backend: str = "scratchnet"
    world_size: int = 1
    fast: bool = False  # scratchnet.fast.FastTrainer's step (same numbers, tape-free)

    def validate(self) -> TrainConfig:
        """Check every option; canonicalise names. Raises OptionError."""
        from scratchnet.data import dataset_info

        self.dataset = dataset_info(self.dataset).name
        self.model = resolve_model(self.model, len(dataset_info(self.dataset).classes))
        _check_activation(self.model, self.activation)
        _check_positive_int("epochs", self.epochs)
        _check_positive_int("batch size", self.batch_size)
        _check_positive_int("world size", self.world_size)
        if self.limit is not None:
            _check_positive_int("limit", self.limit)
        if not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) \
                or self.lr <= 0:
            raise OptionError(f"learning rate must be a positive number, got {self.lr}")
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("dtype", self.dtype, tuple(DTYPES))
        _check_choice("backend", self.backend, BACKENDS)
        if self.fast and self.backend != "scratchnet":
            raise OptionError("--fast is scratchnet's fast step; use --backend scratchnet")
        self.device = str(check_device(self.device))
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise OptionError(f"{name} must be a positive integer, got {value!r}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise OptionError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


def check_device(device: str) -> torch.device:
    """``torch.device(device)``, refusing what this machine cannot run."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise OptionError(f"unknown device {device!r}; expected cpu, cuda or "
                          "cuda:N") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"device {device!r} requested but CUDA is not available "
                          "on this machine; use --device cpu")
    if parsed.type not in ("cpu", "cuda"):
        raise OptionError(f"device {device!r} is not supported; use cpu or cuda")
    return parsed


# --------------------------------------------------------------------------------------
# models


def resolve_model(name_or_spec: str, num_classes: int = 10) -> str:
    """The canonical seed model name (case-insensitive match) or the layer spec
    ``"784-…-C"`` with its sizes checked. Raises OptionError otherwise."""
    by_lower = {name.lower(): name for name in MODEL_NAMES}
    text = str(name_or_spec).strip()
    if text.lower() in by_lower:
        return by_lower[text.lower()]
    if "-" not in text and not text.isdigit():
        raise OptionError(f"unknown model {name_or_spec!r}; choose one of "
                          f"{', '.join(MODEL_NAMES)}, or a layer spec like "
                          "784-512-512-10")
    parts = text.split("-")
    if len(parts) < 2 or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise OptionError(f"layer spec {name_or_spec!r} does not chain: expected two "
                          "or more positive sizes joined by '-', like 784-512-512-10")
    sizes = [int(part) for part in parts]
    if sizes[0] != INPUT_FEATURES or sizes[-1] != num_classes:
        raise OptionError(f"layer spec {name_or_spec!r} must start with "
                          f"{INPUT_FEATURES} inputs (28×28 pixels) and end with "
                          f"{num_classes} outputs (one per class), like "
                          f"{INPUT_FEATURES}-512-512-{num_classes}")
    return "-".join(str(size) for size in sizes)


def _check_activation(model: str, activation: str | None) -> None:
    from scratchnet.models import ACTIVATIONS

    if activation is None:
        return
    _check_choice("activation", activation, ACTIVATIONS)
    if model in MODEL_NAMES and model not in SPEC_OF_MODEL:
        raise OptionError(f"model {model} has fixed activations; --activation applies "
                          f"to {', '.join(SPEC_OF_MODEL)} and layer specs")


@dataclass(frozen=True)
class Backend:
    """One side of the comparison: its layers, optimizers and no-grad switch."""

    name: str
    nn: ModuleType
    optim: ModuleType
    no_grad: Callable[[], contextlib.AbstractContextManager]


@cache
def get_backend(name: str) -> Backend:
    """``"scratchnet"`` or ``"torch"``."""
    if name == "scratchnet":
        import scratchnet
        import scratchnet.nn
        import scratchnet.optim

        return Backend("scratchnet", scratchnet.nn, scratchnet.optim, scratchnet.no_grad)
    if name == "torch":
        import torch.nn
        import torch.optim

        return Backend("torch", torch.nn, torch.optim, torch.no_grad)
    raise OptionError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def backend_of(model: Any) -> Backend:
    """The backend whose ``nn.Module`` ``model`` is."""
    import scratchnet.nn

    return get_backend("scratchnet" if isinstance(model, scratchnet.nn.Module) else "torch")


@cache
def _seed_classes(backend: str) -> Mapping[str, Callable[[], Any]]:
    if backend == "torch":
        from reference.models import MODELS

        return MODELS
    import scratchnet.nn
    import scratchnet.nn.functional
    from scratchnet.models import seed_models, sequential_network

    classes = vars(seed_models(scratchnet.nn, scratchnet.nn.functional))
    return {**classes, "SequentialNetwork": lambda: sequential_network(scratchnet.nn)}


def build_model(name_or_spec: str, backend: str = "scratchnet",
                activation: str | None = None, num_classes: int = 10) -> Any:
    """A fresh model: a seed class by name (``NeuralNetwork``, ``SimpleNN``, …,
    any case) or a Flatten + Linear stack from a layer spec (``784-512-512-10``).

    Initialisation draws from torch's global RNG in the same order on both
    backends, so after the same ``torch.manual_seed`` the two are bit-identical.
    ``activation`` (None: the model's own) replaces the ReLUs of specs and of
    NeuralNetwork / SimpleNN / SingleLayerNN.
    """
    from scratchnet.models import mlp_from_spec

    model = resolve_model(name_or_spec, num_classes)
    _check_activation(model, activation)
    nn = get_backend(backend).nn
    if model in MODEL_NAMES and (activation in (None, "relu")
                                 or model not in SPEC_OF_MODEL):
        return _seed_classes(backend)[model]()
    spec = SPEC_OF_MODEL.get(model, model)
    return mlp_from_spec(nn, spec, activation or "relu")


def takes_flat_input(model: Any) -> bool:
    """True for models without a Flatten layer (Network, FCNetwork, the
    Sequential, …): the loop hands them (B, 784) instead of (B, 1, 28, 28)."""
    import scratchnet.nn

    flatten_types = (scratchnet.nn.Flatten, torch.nn.Flatten)
    return not any(isinstance(module, flatten_types) for module in model.modules())


def build_optimizer(model: Any, name: str, lr: float) -> Any:
    """``Adam`` / ``SGD`` / ``AdamW`` of the model's backend over its parameters."""
    optim = backend_of(model).optim
    _check_choice("optimizer", name, OPTIMIZERS)
    optimizer_class = {"adam": optim.Adam, "sgd": optim.SGD, "adamw": optim.AdamW}[name]
    return optimizer_class(model.parameters(), lr=lr)


def seed_everything(seed: int) -> None:
    """Seed torch's, numpy's and Python's global RNGs."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


# --------------------------------------------------------------------------------------
# data


@dataclass
class Data:
    """Both splits as uint8 images (N, 28, 28) and int64 labels (N,)."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]


def load_data(config: TrainConfig) -> Data:
    """The dataset's train (first ``limit`` images) and test splits."""
    from scratchnet.data import dataset_info, load_dataset

    train_images, train_labels = load_dataset(config.dataset, True, config.data_dir)
    test_images, test_labels = load_dataset(config.dataset, False, config.data_dir)
    if config.limit is not None:
        train_images, train_labels = (train_images[: config.limit],
                                      train_labels[: config.limit])
    return Data(train_images, train_labels, test_images, test_labels,
                dataset_info(config.dataset).classes)


def make_loaders(config: TrainConfig, data: Data) -> tuple[Any, Any]:
    """The shuffled training loader (its own generator, seeded with
    ``config.seed``) and the test loader (in order). Pixels are ToTensor's
    ``p / 255``, as in the seeds."""
    from scratchnet.data import TensorLoader

    common = {"device": config.device, "dtype": config.torch_dtype}
    train_loader = TensorLoader(
        data.train_images, data.train_labels, batch_size=config.batch_size,
        shuffle=True, generator=torch.Generator().manual_seed(config.seed), **common)
    # its own generator too, so evaluating never draws from the global RNG
    test_loader = TensorLoader(
        data.test_images, data.test_labels, batch_size=EVAL_BATCH_SIZE,
        generator=torch.Generator().manual_seed(config.seed), **common)
    return train_loader, test_loader


# --------------------------------------------------------------------------------------
# one step, one epoch, evaluation


def model_input(x: torch.Tensor, flat: bool) -> torch.Tensor:
    """(B, 1, 28, 28) → (B, 784) for models that take flat input."""
    return x.reshape(x.shape[0], -1) if flat else x


def train_step(model: Any, optimizer: Any, loss_fn: Any, x: torch.Tensor,
               y: torch.Tensor, after_backward: Callable[[], None] | None = None
               ) -> float:
    """One optimisation step, the seed's four lines; returns the batch's loss.
    ``after_backward`` runs between backward and step (data parallel: average the
    gradients across processes)."""
    optimizer.zero_grad(set_to_none=True)
    logits = model(x)  # (B, C)
    loss = loss_fn(logits, y)  # ()
    loss.backward()
    if after_backward is not None:
        after_backward()
    optimizer.step()
    return loss.item()


def _progress(iterable: Iterable, total: int, description: str, quiet: bool) -> Any:
    """A tqdm bar on stderr, shown only on a terminal and when not quiet."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=description, unit="batch", leave=False,
                file=sys.stderr, disable=quiet or not sys.stderr.isatty())


def train_epoch(model: Any, optimizer: Any, loader: Iterable, loss_fn: Any = None,
                description: str = "", quiet: bool = True,
                after_backward: Callable[[], None] | None = None,
                fast: bool = False) -> list[float]:
    """One pass over ``loader`` in training mode; returns every step's loss.
    ``fast``: run each step with :class:`scratchnet.fast.FastTrainer`."""
    loss_fn = loss_fn if loss_fn is not None else backend_of(model).nn.CrossEntropyLoss()
    flat = takes_flat_input(model)
    model.train()
    step_loss = []
    fast_trainer = _fast_trainer(model, optimizer, loss_fn, after_backward) if fast \
        else None
    bar = _progress(loader, len(loader), description, quiet)
    for x, y in bar:
        if fast_trainer is not None:
            step_loss.append(fast_trainer.step(model_input(x, flat), y).item())
        else:
            step_loss.append(train_step(model, optimizer, loss_fn, model_input(x, flat),
                                        y, after_backward))
        if len(step_loss) % 50 == 0:
            bar.set_postfix(loss=f"{step_loss[-1]:.4f}", refresh=False)
    return step_loss


def _fast_trainer(model: Any, optimizer: Any, loss_fn: Any,
                  after_backward: Callable[[], None] | None) -> Any:
    from scratchnet.fast import FastTrainer

    if after_backward is not None:
        raise OptionError("--fast does not support data-parallel training (--nproc)")
    return FastTrainer(model, optimizer, loss_fn)


@dataclass
class Evaluation:
    """Test-set results. accuracy and per_class_accuracy in percent (None for a
    class absent from the set); confusion[true][predicted] counts."""

    accuracy: float
    per_class_accuracy: list[float | None]
    confusion: list[list[int]]
    loss: float
    total: int
    predictions: torch.Tensor = field(repr=False)  # (N,) predicted class, CPU int64

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready numbers (without the predictions)."""
        return {key: value for key, value in asdict(self).items()
                if key != "predictions"}


def evaluate(model: Any, loader: Iterable, num_classes: int = 10,
             gather_counts: Callable | None = None) -> Evaluation:
    """Accuracy, per-class accuracy, confusion matrix and mean loss, in eval mode
    with recording off (scratchnet.no_grad / torch.no_grad). ``gather_counts``
    (data parallel, each process holding a block of the test set) adds up the
    processes' ``(confusion, loss_sum, total, predictions)`` before the summary."""
    backend = backend_of(model)
    loss_fn = backend.nn.CrossEntropyLoss(reduction="sum")
    flat = takes_flat_input(model)
    model.eval()
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64)  # (C·C,)
    loss_sum, total, predictions = 0.0, 0, []
    with backend.no_grad():
        for x, y in loader:
            output = model(model_input(x, flat))  # (B, C)
            loss_sum += float(loss_fn(output, y).item())
            predicted = output.argmax(dim=1)  # (B,)
            pairs = (y * num_classes + predicted).to("cpu")  # (B,) true·C + predicted
            confusion += torch.bincount(pairs, minlength=num_classes * num_classes)
            predictions.append(predicted.to("cpu"))
            total += y.shape[0]
    predictions = torch.cat(predictions)  # (N,)
    if gather_counts is not None:
        confusion, loss_sum, total, predictions = gather_counts(
            confusion, loss_sum, total, predictions)
    confusion = confusion.reshape(num_classes, num_classes)  # (C, C) rows: true class
    per_class_total = confusion.sum(dim=1)  # (C,)
    per_class = [100.0 * int(confusion[c, c]) / int(per_class_total[c])
                 if per_class_total[c] > 0 else None for c in range(num_classes)]
    return Evaluation(accuracy=100.0 * int(confusion.diag().sum()) / max(total, 1),
                      per_class_accuracy=per_class, confusion=confusion.tolist(),
                      loss=loss_sum / max(total, 1), total=total,
                      predictions=predictions)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------
# RNG state (saved in checkpoints so a resumed run draws what the uninterrupted one would)


def rng_state(device: torch.device) -> dict[str, Any]:
    """torch's (and CUDA's), numpy's and Python's global RNG states, in types that
    ``torch.load(weights_only=True)`` reads back."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(position), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached_gaussian)},
        "python": {"version": version, "internal": list(internal),
                   "gauss_next": gauss_next},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["name"], numpy_state["keys"].numpy().astype(np.uint32),
                         numpy_state["pos"], numpy_state["has_gauss"],
                         numpy_state["cached_gaussian"]))
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["internal"]),
                     python_state["gauss_next"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# --------------------------------------------------------------------------------------
# scratchnet train: one backend, checkpoints, resume


@dataclass
class History:
    """Per-epoch numbers of a training run (what metrics.json holds)."""

    epoch_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[float]]:
        return asdict(self)


def resumed_config(saved: Mapping[str, Any], requested: Mapping[str, Any],
                   source: str) -> TrainConfig:
    """The checkpoint's config, with ``requested`` overrides for what may change
    on resume (epochs, device, data_dir). Any other option given must equal the
    saved one. Raises CheckpointError naming the conflict."""
    config = TrainConfig.from_dict(saved)
    for key, value in requested.items():
        if value is None:
            continue
        if key in ("epochs", "device", "data_dir"):
            setattr(config, key, value)
            continue
        saved_value = saved.get(key)
        if key == "model":
            value = resolve_model(value)
        if value != saved_value:
            flag = "--" + key.replace("_", "-")
            raise CheckpointError(f"{source} was trained with {flag} {saved_value}; "
                                  f"cannot resume it with {flag} {value}")
    return config


class _Run:
    """The live objects of one training run (model, optimizer, loaders).

    With ``parallel`` (a :class:`scratchnet.distributed.DistributedContext`) the
    model is wrapped in DistributedDataParallel (``self.ddp``: it trains, and
    ``self.after_backward`` averages the gradients), the training loader reads
    this process's shard and the test loader its block of the test set.
    """

    def __init__(self, config: TrainConfig, data: Data, parallel: Any = None) -> None:
        self.config = config
        self.parallel = parallel
        self.device = (torch.device(config.device) if parallel is None
                       else parallel.device(config.device))
        seed_everything(config.seed)
        self.model = build_model(config.model, config.backend, config.activation,
                                 len(data.classes))
        self.model.to(device=self.device, dtype=config.torch_dtype)
        self.ddp = None if parallel is None else parallel.wrap(self.model)
        self.after_backward = None if parallel is None \
            else self.ddp.synchronize_gradients
        self.optimizer = build_optimizer(self.model, config.optimizer, config.lr)
        self.train_loader, self.test_loader = (
            make_loaders(config, data) if parallel is None
            else parallel.make_loaders(config, data))
        self.loss_fn = backend_of(self.model).nn.CrossEntropyLoss()
        self.history = History()
        self.epoch = 0

    def restore(self, checkpoint: Mapping[str, Any], source: str) -> None:
        ckpt.verify_architecture(checkpoint["model_state_dict"], self.model, source,
                                 self.config.model)
        self.model.load_state_dict(checkpoint["model_state_dict"])
        self.optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
        self.train_loader.load_state_dict(checkpoint["loader_state"])
        set_rng_state(checkpoint["rng_state"], self.device)
        self.history = History(**checkpoint["metrics"].get("history", {}))
        self.epoch = int(checkpoint["epoch"])

    def save(self, out_dir: Path, evaluation: Evaluation) -> Path:
        metrics = {"history": self.history.to_dict(), "final": evaluation.to_dict()}
        return ckpt.save_checkpoint(
            out_dir, model_state_dict=ckpt.plain_state_dict(self.model),
            optimizer_state_dict=self.optimizer.state_dict(), epoch=self.epoch,
            config=self.config.to_dict(), loader_state=self.train_loader.state_dict(),
            rng_state=rng_state(self.device), metrics=metrics)


def fit(config: TrainConfig, out_dir: str | Path,
        resume: str | Path | Mapping[str, Any] | None = None, quiet: bool = False,
        log: Callable[[str], None] = print,
        metrics_path: str | Path | None = None, parallel: Any = None
        ) -> dict[str, Any]:
    """Train ``config.backend``'s model for ``config.epochs`` epochs (in total,
    counting those a resumed checkpoint already did), checkpointing into
    ``out_dir`` after every epoch and writing the metrics as JSON to
    ``metrics_path`` (default ``out_dir/metrics.json``).

    ``resume`` is a checkpoint's path or the dict :func:`load_checkpoint`
    returned. Returns the metrics dict: config, history, final evaluation.

    ``parallel`` (a :class:`scratchnet.distributed.DistributedContext`, from
    torchrun or ``--nproc``) trains data-parallel: every process runs this, with
    ``batch_size`` per process; only rank 0 logs and writes files.
    """
    out_dir = Path(out_dir)
    metrics_path = Path(metrics_path) if metrics_path else out_dir / "metrics.json"
    checkpoint, source = None, ""
    if resume is not None:
        source = "the checkpoint" if isinstance(resume, Mapping) else str(resume)
        checkpoint = resume if isinstance(resume, Mapping) else ckpt.load_checkpoint(resume)
        if config.epochs <= checkpoint["epoch"]:
            raise OptionError(f"{source} has already trained {checkpoint['epoch']} "
                              f"epochs; pass --epochs above {checkpoint['epoch']} to "
                              "continue")
    is_main = parallel is None or parallel.is_main
    quiet = quiet or not is_main
    _check_world_size(config, checkpoint, parallel, source)
    config.validate()
    data = load_data(config)
    run = _Run(config, data, parallel)
    if parallel is not None and not quiet:
        log(f"data parallel ({parallel.backend}): {parallel.world_size} processes × "
            f"batch {config.batch_size} = global batch "
            f"{parallel.world_size * config.batch_size}")
    if checkpoint is not None:
        run.restore(checkpoint, source)
        if not quiet:
            log(f"resumed {source} after epoch {run.epoch}")
    metrics: dict[str, Any] = {}
    for epoch in range(run.epoch + 1, config.epochs + 1):
        evaluation = _fit_epoch(run, epoch, data, quiet)
        checkpoint_path = (run.save(out_dir, evaluation) if is_main
                           else out_dir / ckpt.CHECKPOINT_NAME)
        metrics = _fit_metrics(run, evaluation, data, checkpoint_path)
        if is_main:
            ckpt.atomic_write_json(metrics, metrics_path)
        if not quiet:
            log(f"epoch {epoch}/{config.epochs}  loss {run.history.epoch_loss[-1]:.6f}  "
                f"test accuracy {evaluation.accuracy:.2f}%  test loss "
                f"{evaluation.loss:.6f}  {run.history.epoch_seconds[-1]:.1f} s")
    return metrics


def _check_world_size(config: TrainConfig, checkpoint: Mapping[str, Any] | None,
                      parallel: Any, source: str) -> None:
    """Set ``config.world_size`` to the processes running; a checkpoint resumes
    only with as many processes as trained it (the batches depend on it)."""
    config.world_size = 1 if parallel is None else parallel.world_size
    saved = (checkpoint["config"] or {}).get("world_size", 1) if checkpoint else None
    if saved is not None and saved != config.world_size:
        raise OptionError(f"{source} was trained by {saved} process(es); resume it "
                          f"with --nproc {saved} (this run has {config.world_size})")


def _fit_epoch(run: _Run, epoch: int, data: Data, quiet: bool) -> Evaluation:
    parallel = run.parallel
    if parallel is not None:
        parallel.begin_epoch(run.train_loader, epoch)
    start = time.perf_counter()
    trained = run.model if run.ddp is None else run.ddp  # DDP: forwards to run.model
    step_loss = train_epoch(trained, run.optimizer, run.train_loader,
                            run.loss_fn, f"epoch {epoch}/{run.config.epochs}", quiet,
                            run.after_backward, fast=run.config.fast)
    _sync(run.device)
    seconds = time.perf_counter() - start
    if parallel is not None:  # each rank's loss was its shard's: the global batch's
        step_loss = parallel.average_across_ranks(step_loss)
    evaluation = evaluate(run.model, run.test_loader, len(data.classes),
                          None if parallel is None else parallel.gather_counts)
    run.epoch = epoch
    run.history.epoch_loss.append(sum(step_loss) / len(step_loss))
    run.history.test_accuracy.append(evaluation.accuracy)
    run.history.test_loss.append(evaluation.loss)
    run.history.epoch_seconds.append(seconds)
    return evaluation


def _fit_metrics(run: _Run, evaluation: Evaluation, data: Data,
                 checkpoint_path: Path) -> dict[str, Any]:
    return {"config": run.config.to_dict(), "epochs_done": run.epoch,
            "train_size": int(data.train_images.shape[0]),
            "test_size": int(data.test_images.shape[0]),
            **run.history.to_dict(), "final": evaluation.to_dict(),
            "classes": list(data.classes), "checkpoint": str(checkpoint_path)}


def evaluate_checkpoint(path: str | Path, model: str | None = None,
                        activation: str | None = None, backend: str = "scratchnet",
                        dataset: str | None = None, data_dir: str | None = None,
                        device: str = "cpu") -> dict[str, Any]:
    """Load a checkpoint (or a bare model.pt state_dict) into a fresh ``backend``
    model, checking its architecture, and evaluate it on the test set.

    The model, activation, dataset and dtype default to the checkpoint's config
    (for a bare state_dict: NeuralNetwork, fashion-mnist, the tensors' dtype).
    Raises CheckpointError for a damaged file or another architecture.
    """
    from scratchnet.data import TensorLoader, dataset_info, load_dataset

    checkpoint = ckpt.load_checkpoint(path, allow_bare=True)
    saved = checkpoint["config"] or {}
    state = checkpoint["model_state_dict"]
    first_tensor = next(iter(state.values()))
    dtype = saved.get("dtype") or next(
        (name for name, value in DTYPES.items() if value == first_tensor.dtype), "float32")
    config = TrainConfig(
        model=model or saved.get("model", "NeuralNetwork"),
        activation=activation if model is not None else saved.get("activation"),
        dataset=dataset or saved.get("dataset", "fashion-mnist"), device=device,
        dtype=dtype, data_dir=data_dir, backend=backend).validate()
    images, labels = load_dataset(config.dataset, False, config.data_dir)
    num_classes = len(dataset_info(config.dataset).classes)
    network = build_model(config.model, backend, config.activation, num_classes)
    network.to(device=config.device, dtype=config.torch_dtype)
    ckpt.verify_architecture(state, network, f"checkpoint {path}", config.model)
    network.load_state_dict(state)
    loader = TensorLoader(images, labels, batch_size=EVAL_BATCH_SIZE,
                          generator=torch.Generator(), device=config.device,
                          dtype=config.torch_dtype)
    evaluation = evaluate(network, loader, num_classes)
    return {"checkpoint": str(path), "model": config.model, "backend": backend,
            "dataset": config.dataset, "epoch": checkpoint.get("epoch"),
            "classes": list(dataset_info(config.dataset).classes), **evaluation.to_dict()}


# --------------------------------------------------------------------------------------
# scratchnet compare: both backends in lockstep


class _Side:
    """One backend's model, optimizer, loss and running numbers in a comparison."""

    def __init__(self, backend: str, config: TrainConfig, num_classes: int) -> None:
        self.name = backend
        torch.manual_seed(config.seed)  # the same draws on both sides
        self.model = build_model(config.model, backend, config.activation, num_classes)
        self.model.to(device=config.device, dtype=config.torch_dtype)
        self.optimizer = build_optimizer(self.model, config.optimizer, config.lr)
        self.loss_fn = backend_of(self.model).nn.CrossEntropyLoss()
        self.flat = takes_flat_input(self.model)
        self.results: dict[str, list[float]] = {
            "epoch_loss": [], "test_accuracy": [], "test_loss": [], "epoch_seconds": [],
            "step_loss": []}


def max_param_diff(first: Any, second: Any) -> float:
    """max |first − second| over all parameters, computed in float64."""
    second_state = second.state_dict()
    return max(float((value.double() - second_state[name].double()).abs().max())
               for name, value in first.state_dict().items())


def _lockstep_epoch(sides: list[_Side], loader: Any, device: torch.device,
                    description: str, quiet: bool) -> None:
    """Each batch is fed to every side in turn; each side's step alone is timed."""
    seconds = dict.fromkeys((side.name for side in sides), 0.0)
    losses: dict[str, list[float]] = {side.name: [] for side in sides}
    for side in sides:
        side.model.train()
    bar = _progress(loader, len(loader), description, quiet)
    for x, y in bar:
        for side in sides:
            model_x = model_input(x, side.flat)
            _sync(device)
            start = time.perf_counter()
            losses[side.name].append(
                train_step(side.model, side.optimizer, side.loss_fn, model_x, y))
            _sync(device)
            seconds[side.name] += time.perf_counter() - start
        if len(losses[sides[0].name]) % 50 == 0:
            bar.set_postfix(refresh=False, **{name: f"{values[-1]:.4f}"
                                             for name, values in losses.items()})
    for side in sides:
        side.results["step_loss"] += losses[side.name]
        side.results["epoch_loss"].append(sum(losses[side.name]) / len(losses[side.name]))
        side.results["epoch_seconds"].append(seconds[side.name])


def compare(config: TrainConfig, quiet: bool = False,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train ``config.model`` with scratchnet and with torch.nn side by side.

    Both start from the same weights (same seed, bit-identical init) and see the
    same batches in the same order (one shared TensorLoader); after every epoch
    both are evaluated and the largest parameter difference is recorded.

    Returns ``{"config", "scratchnet": {...}, "torch": {...}, "max_param_diff",
    "initial_param_diff", "verdict", ...}`` (see :func:`verdict`).
    """
    config.validate()
    wall_start = time.perf_counter()
    data = load_data(config)
    device = torch.device(config.device)
    seed_everything(config.seed)
    sides = [_Side(backend, config, len(data.classes)) for backend in BACKENDS]
    train_loader, test_loader = make_loaders(config, data)
    results: dict[str, Any] = {
        "config": config.to_dict(), "train_size": int(data.train_images.shape[0]),
        "test_size": int(data.test_images.shape[0]), "steps_per_epoch": len(train_loader),
        "initial_param_diff": max_param_diff(sides[0].model, sides[1].model),
        "max_param_diff": [], "same_predictions": []}
    report = _Report(config, results, log, quiet)
    report.header()
    for epoch in range(1, config.epochs + 1):
        _lockstep_epoch(sides, train_loader, device, f"epoch {epoch}/{config.epochs}",
                        quiet)
        evaluations = [evaluate(side.model, test_loader, len(data.classes))
                       for side in sides]
        for side, evaluation in zip(sides, evaluations, strict=True):
            side.results["test_accuracy"].append(evaluation.accuracy)
            side.results["test_loss"].append(evaluation.loss)
        same = (evaluations[0].predictions == evaluations[1].predictions).double()
        results["same_predictions"].append(100.0 * float(same.mean()))
        results["max_param_diff"].append(max_param_diff(sides[0].model, sides[1].model))
        for side in sides:
            results[side.name] = side.results
        report.epoch(epoch)
    results["wall_seconds"] = time.perf_counter() - wall_start
    results["verdict"] = verdict(results)
    report.verdict()
    return results


# The agreement a comparison must show. Losses: torch.testing.assert_close's
# defaults for the dtype (the parity contract of tests/oracles.py). Accuracy:
# 0.3 points, the brief's bound — two float32 runs whose weights differ by
# rounding can flip a handful of borderline test predictions.
LOSS_TOLERANCE = {"float32": (1.3e-6, 1e-5), "float64": (1e-7, 1e-7)}  # (rtol, atol)
ACCURACY_GAP = 0.3  # percentage points


def verdict(results: Mapping[str, Any]) -> dict[str, Any]:
    """Do the two sides agree? Epoch losses within assert_close's tolerance for
    the dtype, test accuracies within ACCURACY_GAP points.

    Also counts the leading training steps whose losses agree within the same
    tolerance (``steps_agreeing``): where float32 runs part, this says when. A
    float32 run can follow torch.nn's trajectory for a while and then drift off
    it: last-bit differences in a gradient are amplified by Adam (which divides
    by the gradient's running scale) and by ReLU kinks, and training is chaotic.
    ``--dtype float64`` shrinks the rounding by 2⁻²⁹ and checks the math itself.
    """
    rtol, atol = LOSS_TOLERANCE[results["config"]["dtype"]]
    ours, theirs = results["scratchnet"], results["torch"]

    def within(a: float, b: float) -> bool:
        return abs(a - b) <= atol + rtol * abs(b)

    loss_ok = [within(a, b) for a, b in zip(ours["epoch_loss"], theirs["epoch_loss"],
                                            strict=True)]
    step_ok = [within(a, b) for a, b in zip(ours["step_loss"], theirs["step_loss"],
                                            strict=True)]
    gaps = [abs(a - b) for a, b in zip(ours["test_accuracy"], theirs["test_accuracy"],
                                       strict=True)]
    max_loss_diff = max(abs(a - b) for a, b in zip(ours["epoch_loss"],
                                                   theirs["epoch_loss"], strict=True))
    return {"agree": all(loss_ok) and max(gaps) <= ACCURACY_GAP,
            "losses_agree": all(loss_ok), "loss_rtol": rtol, "loss_atol": atol,
            "max_epoch_loss_diff": max_loss_diff, "max_accuracy_gap": max(gaps),
            "accuracy_gap_allowed": ACCURACY_GAP,
            "steps_agreeing": step_ok.index(False) if False in step_ok else len(step_ok),
            "steps": len(step_ok),
            "speed_ratio": sum(ours["epoch_seconds"]) / sum(theirs["epoch_seconds"])}


class _Report:
    """The text ``scratchnet compare`` prints: a header, one table row per epoch,
    a verdict."""

    # (group, column, width): the table's two header lines
    COLUMNS = (("", "epoch", 5), ("training loss", "scratchnet", 11), ("", "torch", 11),
               ("test accuracy", "scratchnet", 10), ("", "torch", 7),
               ("same", "preds", 7), ("max", "|Δparam|", 9),
               ("epoch time", "scratchnet", 10), ("", "torch", 8))

    def __init__(self, config: TrainConfig, results: dict[str, Any],
                 log: Callable[[str], None], quiet: bool) -> None:
        self.config, self.results, self.log, self.quiet = config, results, log, quiet

    def _row(self, cells: Iterable[str]) -> str:
        return "  ".join(f"{cell:>{width}}" for cell, (_, _, width)
                         in zip(cells, self.COLUMNS, strict=True)).rstrip()

    def header(self) -> None:
        if self.quiet:
            return
        c = self.config
        self.log(f"scratchnet vs torch.nn: {c.model} on {c.dataset} "
                 f"({self.results['train_size']} train / {self.results['test_size']} "
                 f"test images), {c.optimizer} lr {c.lr:g}, batch {c.batch_size}, "
                 f"{c.epochs} epochs, {c.dtype} on {c.device}, seed {c.seed}")
        self.log("initial weights: max |Δparam| = "
                 f"{self.results['initial_param_diff']:.3g} (same seed on both sides)")
        groups = "  ".join(f"{group:<{width}}" for group, _, width in self.COLUMNS)
        self.log(groups.rstrip())
        self.log(self._row(name for _, name, _ in self.COLUMNS))

    def epoch(self, epoch: int) -> None:
        if self.quiet:
            return
        ours, theirs, i = self.results["scratchnet"], self.results["torch"], epoch - 1
        self.log(self._row([
            str(epoch), f"{ours['epoch_loss'][i]:.8f}", f"{theirs['epoch_loss'][i]:.8f}",
            f"{ours['test_accuracy'][i]:.2f}%", f"{theirs['test_accuracy'][i]:.2f}%",
            f"{self.results['same_predictions'][i]:.2f}%",
            f"{self.results['max_param_diff'][i]:.2e}",
            f"{ours['epoch_seconds'][i]:.2f} s", f"{theirs['epoch_seconds'][i]:.2f} s"]))

    def verdict(self) -> None:
        v = self.results["verdict"]
        tolerance = f"rtol {v['loss_rtol']:g}, atol {v['loss_atol']:g}"
        self.log(
            f"verdict: {'AGREE' if v['agree'] else 'DISAGREE'}. Epoch losses differ by "
            f"at most {v['max_epoch_loss_diff']:.3g} "
            f"({'within' if v['losses_agree'] else 'OUTSIDE'} assert_close's "
            f"{self.config.dtype} tolerance, {tolerance}); test accuracies by at most "
            f"{v['max_accuracy_gap']:.2f} points (allowed {v['accuracy_gap_allowed']}); "
            f"parameters by {self.results['max_param_diff'][-1]:.3g} after "
            f"{self.config.epochs} epoch(s). Per-step losses agree within that "
            f"tolerance for the first {v['steps_agreeing']} of {v['steps']} steps. "
            f"scratchnet's steps took {v['speed_ratio']:.2f}× torch.nn's time.")
