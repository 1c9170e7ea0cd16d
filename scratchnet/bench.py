"""The benchmark behind ``scratchnet bench``: scratchnet against torch.nn and
against the machine's floor, each figure checked for correctness.

Sides, all measured in one process, interleaved step by step, on the same
batches from the same initial weights:

    torch          torch.nn + torch.optim.Adam (defaults: the single-tensor loop)
    torch_fused    torch.nn + torch.optim.Adam(fused=True)
    torch_compile  torch.compile(torch.nn model) + Adam (optional: slow to compile)
    tape           scratchnet.nn + scratchnet.optim.Adam, through the tape
    fast           scratchnet.fast.FastTrainer (flat buffers, fused loss backward)
    fast_compiled  FastTrainer(compile_optimizer=True, exact_loss=False): Adam as
                   one compiled loop (C on the CPU, scratchnet/native/adam.c;
                   torch.compile elsewhere), the loss without the float32
                   emulation of torch's softmax kernel (optional, with compile)

For each model and batch size: forward (with the loss), backward, optimizer step
and the whole step (zero_grad included), the median over ``repeats`` timed steps
after ``warmup`` untimed ones (nanoGPT's bench.py: never the first step, clocks
read after a CUDA synchronize). Every side starts from the same mid-training
state (:func:`warm_start`: torch.nn's weights and Adam state one epoch in,
subnormals included), and in each repeat each side takes one untimed step
before its timed ones, so that its working set is in cache as in its own
training loop rather than evicted by the side before it. The floor is what the
step cannot avoid: its matrix products alone (forward, weight gradients, input
gradients, with preallocated outputs, each run the fastest way known here:
torch's BLAS on hand-split blocks where that is faster, see
:mod:`scratchnet.native.gemm`) plus one fused pass over Adam's state (torch's
fused kernel over one flat buffer). Everything runs once with denormals kept and once
flushed (``torch.set_flush_denormal``), the same for every side.

Correctness: after the timed steps each scratchnet side takes torch's weights
and Adam state, all sides take one more step on a fresh batch, and the loss and
every parameter must equal torch's within the parity contract (float64: rtol
1e-12; float32: assert_close's defaults) — or the run fails with
:class:`BenchmarkError`.

Also: one Fashion-MNIST epoch end to end (data, training, evaluation) for the
seed's pipeline (torchvision + ToTensor + DataLoader + torch.nn + Adam) and
scratchnet's (in-memory uint8 loader + FastTrainer, eager and, with compile,
compiled); peak memory of each side
(RSS of a fresh process on CPU, ``max_memory_allocated`` on CUDA); the machine
(CPU model, threads, torch version, ``torch.__config__.show()``).

This module uses torch.nn and torch.optim as the peers it is measured against
(as :mod:`scratchnet.train` does for ``compare``); scratchnet itself does not.

B = batch, C = classes.
"""

from __future__ import annotations

import copy
import functools
import json
import multiprocessing
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from scratchnet.errors import ScratchnetError

SIDES = ("torch", "torch_fused", "torch_compile", "tape", "fast", "fast_compiled")
SCRATCHNET_SIDES = ("tape", "fast", "fast_compiled")
PHASES = ("forward", "backward", "optimizer", "step")
MODELS = ("NeuralNetwork", "SimpleNN", "SingleLayerNN")  # the seed MLPs


class BenchmarkError(ScratchnetError, RuntimeError):
    """A benchmarked side disagrees with torch.nn: its figures cannot be trusted."""


@dataclass
class BenchConfig:
    """What to measure. ``quick()`` gives a run of a minute or two."""

    name: str = "cpu"
    models: tuple[str, ...] = MODELS
    batches: tuple[int, ...] = (1, 64, 256, 1024, 4096)
    repeats: int = 30  # timed steps per side (fewer for big batches: see budget)
    warmup: int = 10  # untimed steps per side first
    # every side starts from the weights and Adam state of a torch.nn run this many
    # steps in (batch 64): mid-training state, with the subnormal numbers that
    # Adam's first moment acquires where gradients are rare (none in the first
    # few hundred steps, so a run from step 0 would not see their cost)
    state_warmup_steps: int = 938  # one Fashion-MNIST epoch at batch 64
    budget_s: float = 3.0  # at most about this long timing one side at one batch size
    threads: int = 2
    denormals: tuple[bool, ...] = (False, True)  # flush denormals?
    dtype: str = "float32"
    device: str = "cpu"
    lr: float = 1e-3
    compile: bool = True  # measure torch.compile (the torch.nn model) and fast_compiled
    # the batch sizes at which the torch.compile side runs (None: every batch;
    # each cell compiles the model afresh, 2–9 s on this 2-core machine)
    compile_batches: tuple[int, ...] | None = None
    epoch: bool = True  # a whole Fashion-MNIST epoch, data included
    epoch_limit: int | None = None  # first N training images only
    epoch_rounds: int = 9  # every pipeline's epoch this many times, interleaved
    memory: bool = True
    memory_batch: int = 64
    data: str = "fashion-mnist"  # or "synthetic"
    out_dir: str = "benchmarks/results"

    @classmethod
    def quick(cls, **overrides: Any) -> BenchConfig:
        values: dict[str, Any] = {
            "name": "quick", "models": ("NeuralNetwork",), "batches": (1, 64),
            "repeats": 10, "warmup": 3, "budget_s": 1.0, "compile": False,
            "epoch_limit": 4096, "epoch_rounds": 1, "state_warmup_steps": 100}
        values.update(overrides)
        return cls(**values)

    @property
    def torch_dtype(self) -> torch.dtype:
        return {"float32": torch.float32, "float64": torch.float64}[self.dtype]


# --------------------------------------------------------------------------------------
# timing


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _median_ms(seconds: list[float]) -> float:
    return 1e3 * statistics.median(seconds)


# --------------------------------------------------------------------------------------
# the sides: each runs one step as phases (forward, backward, optimizer) or whole


class _LoopSide:
    """A side trained by the seed's loop: zero_grad, loss(run_model(x), y),
    backward, optimizer.step(). Subclasses set model, run_model, optimizer,
    loss_fn."""

    def phases(self, x: torch.Tensor, y: torch.Tensor, clock: Callable[[], float]
               ) -> tuple[float, float, float]:
        self.optimizer.zero_grad()
        start = clock()
        loss = self.loss_fn(self.run_model(x), y)
        after_forward = clock()
        loss.backward()
        after_backward = clock()
        self.optimizer.step()
        end = clock()
        return after_forward - start, after_backward - after_forward, end - after_backward

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad()
        loss = self.loss_fn(self.run_model(x), y)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def load_state(self, model_state: dict, optimizer_state: dict) -> None:
        self.model.load_state_dict(model_state)
        self.optimizer.load_state_dict(copy.deepcopy(optimizer_state))


class _TorchSide(_LoopSide):
    """torch.nn + torch.optim.Adam (default, fused) or a torch.compile'd model."""

    def __init__(self, model: torch.nn.Module, fused: bool, compiled: bool,
                 lr: float) -> None:
        self.model = model
        self.run_model = torch.compile(model) if compiled else model
        self.fused = True if fused else None
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=self.fused)
        self.loss_fn = torch.nn.CrossEntropyLoss()

    def load_state(self, model_state: dict, optimizer_state: dict) -> None:
        super().load_state(model_state, optimizer_state)
        for group in self.optimizer.param_groups:  # load_state_dict takes the saved
            group["fused"] = self.fused  # group's options: keep this side's kernel


class _TapeSide(_LoopSide):
    """scratchnet.nn + scratchnet.optim.Adam through the tape (the seed's loop)."""

    def __init__(self, model: Any, lr: float) -> None:
        import scratchnet.nn
        import scratchnet.optim

        self.model = self.run_model = model
        self.optimizer = scratchnet.optim.Adam(model.parameters(), lr=lr)
        self.loss_fn = scratchnet.nn.CrossEntropyLoss()

    def load_from(self, peer: _TorchSide) -> None:
        self.load_state(peer.model.state_dict(), peer.optimizer.state_dict())


class _FastSide(_TapeSide):
    """scratchnet.fast.FastTrainer over the same model and optimizer."""

    def __init__(self, model: Any, lr: float, compile_optimizer: bool = False) -> None:
        from scratchnet.fast import FastTrainer

        super().__init__(model, lr)
        self.trainer = FastTrainer(model, self.optimizer, self.loss_fn,
                                   compile_optimizer=compile_optimizer,
                                   exact_loss=not compile_optimizer)

    def phases(self, x: torch.Tensor, y: torch.Tensor, clock: Callable[[], float]
               ) -> tuple[float, float, float]:
        """Forward with the loss, backward, optimizer.step(), apart: its step
        may run each layer's update inside the backward instead
        (FastTrainer.update_in_backward), so the phases need not add up to it."""
        trainer = self.trainer
        if trainer._batch != x.shape[0]:  # allocate the buffers, check the forward
            trainer.step(x, y)
        start = clock()
        trainer.loss.forward(trainer.forward(x), y)
        after_forward = clock()
        trainer.backward(trainer.loss.backward())
        after_backward = clock()
        self.optimizer.step()
        end = clock()
        return after_forward - start, after_backward - after_forward, end - after_backward

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.trainer.step(x, y)


def build_scratchnet_model(name: str) -> Any:
    """scratchnet's twin of the torch.nn model (tests swap it for a wrong one)."""
    from scratchnet.train import build_model

    return build_model(name, "scratchnet")


_warm_states: dict[tuple, tuple[dict, dict, dict[str, float]]] = {}


def warm_start(config: BenchConfig, model_name: str
               ) -> tuple[dict, dict, dict[str, float]]:
    """The state every side starts from: torch.nn + default Adam trained
    ``state_warmup_steps`` steps at batch 64 from seed 0 on shuffled training
    data — its model and optimizer state_dicts, and the share of Adam's state
    entries that are subnormal. Computed once per model and settings, under the
    denormal setting in force (run_benchmark computes it first, with denormals
    kept, so that the state holds the subnormals a real run has)."""
    from scratchnet.train import build_model, seed_everything

    key = (model_name, config.dtype, config.device, config.data,
           config.state_warmup_steps, config.lr)
    if key not in _warm_states:
        device = torch.device(config.device)
        seed_everything(0)
        side = _TorchSide(build_model(model_name, "torch").to(device, config.torch_dtype),
                          fused=False, compiled=False, lr=config.lr)
        for x, y in _shuffled_batches(config, 64, config.state_warmup_steps):
            side.step(x, y)
        _warm_states[key] = (copy.deepcopy(side.model.state_dict()),
                             copy.deepcopy(side.optimizer.state_dict()),
                             subnormal_shares(side.optimizer))
    return _warm_states[key]


def subnormal_shares(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """Share of the entries of each Adam state tensor that are subnormal."""
    counts: dict[str, list[int]] = {}
    for state in optimizer.state.values():
        for name in ("exp_avg", "exp_avg_sq"):
            values = state[name]
            tiny = torch.finfo(values.dtype).tiny
            subnormal = int(((values != 0) & (values.abs() < tiny)).sum())
            total = counts.setdefault(name, [0, 0])
            total[0] += subnormal
            total[1] += values.numel()
    return {name: subnormal / max(numel, 1) for name, (subnormal, numel) in counts.items()}


def _compiles_torch(config: BenchConfig, batch: int) -> bool:
    """Whether the torch.compile side runs at this batch size."""
    return config.compile and (config.compile_batches is None
                               or batch in config.compile_batches)


def _make_sides(config: BenchConfig, model_name: str, batch: int,
                only: tuple[str, ...] = SIDES) -> dict[str, Any]:
    """Every side (or those in ``only``), from the same initial weights (torch's
    RNG seeded alike), then all from the same warm state (:func:`warm_start`)."""
    from scratchnet.train import build_model, seed_everything

    device, dtype = torch.device(config.device), config.torch_dtype
    sides: dict[str, Any] = {}
    wanted = [s for s in only if (s != "torch_compile" or _compiles_torch(config, batch))
              and (config.compile or s not in ("torch_compile", "fast_compiled"))]
    for side in wanted:
        seed_everything(0)
        if side.startswith("torch"):
            model = build_model(model_name, "torch").to(device, dtype)
            sides[side] = _TorchSide(model, fused=side == "torch_fused",
                                     compiled=side == "torch_compile", lr=config.lr)
        else:
            model = build_scratchnet_model(model_name).to(device, dtype)
            sides[side] = (_TapeSide(model, config.lr) if side == "tape" else
                           _FastSide(model, config.lr, side == "fast_compiled"))
    if config.state_warmup_steps > 0:
        model_state, optimizer_state, _ = warm_start(config, model_name)
        for side in sides.values():
            side.load_state(model_state, optimizer_state)
    return sides


# --------------------------------------------------------------------------------------
# data


def _shuffled_batches(config: BenchConfig, batch: int, count: int
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` batches as a shuffled training epoch gives them (and on into the
    next epoch), converted one at a time from the uint8 images."""
    images, labels = _training_images(config)
    generator = torch.Generator().manual_seed(0)
    order = torch.cat([torch.randperm(images.shape[0], generator=generator)
                       for _ in range(-(-count * batch // images.shape[0]))])
    for i in range(count):
        index = order[i * batch:(i + 1) * batch]
        x = images[index].to(config.device, config.torch_dtype).div_(255).unsqueeze(1)
        yield x, labels[index].to(config.device)  # (B, 1, 28, 28), (B,)


def _training_images(config: BenchConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The uint8 training images (N, 28, 28) and labels (N,): Fashion-MNIST, or
    8192 of random pixels and labels with ``data="synthetic"``."""
    if config.data == "synthetic":
        generator = torch.Generator().manual_seed(0)
        return (torch.randint(0, 256, (8192, 28, 28), generator=generator,
                              dtype=torch.uint8),
                torch.randint(0, 10, (8192,), generator=generator))
    from scratchnet.data import load_dataset

    return load_dataset(config.data, train=True)


def training_batches(config: BenchConfig, batch: int, count: int
                     ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` consecutive batches of training images as ToTensor gives them
    ((B, 1, 28, 28) in [0, 1]; the images repeat if there are too few)."""
    images, labels = _training_images(config)
    needed = batch * count
    repeat = -(-needed // images.shape[0])
    images, labels = images.repeat(repeat, 1, 1)[:needed], labels.repeat(repeat)[:needed]
    x = images.to(config.device, config.torch_dtype).div_(255).unsqueeze(1)  # (N, 1, 28, 28)
    y = labels.to(config.device)
    return [(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch])
            for i in range(count)]


# --------------------------------------------------------------------------------------
# one (model, batch) cell: time every side, interleaved; then check correctness


def _repeats_within_budget(config: BenchConfig, sides: dict[str, Any],
                           batches: list, clock: Callable[[], float]) -> int:
    """Warm every side up; then as many repeats as fit in the budget (≥ 3)."""
    slowest = 0.0
    for side in sides.values():
        for i in range(config.warmup):
            start = clock()
            side.step(*batches[i % len(batches)])
            slowest = max(slowest, clock() - start)
    per_repeat = 3 * max(slowest, 1e-6)  # an untimed, a phased and a whole step
    return max(3, min(config.repeats, int(config.budget_s / per_repeat)))


def time_cell(config: BenchConfig, model_name: str, batch: int) -> dict[str, Any]:
    """Median phase and step times of every side, and of the floor, at one model
    and batch size: each repeat runs every side and the floor once, in turn."""
    device = torch.device(config.device)

    def clock() -> float:
        return _now(device)

    batches = training_batches(config, batch, 4)
    setup_started = time.perf_counter()
    sides = _make_sides(config, model_name, batch)
    repeats = _repeats_within_budget(config, sides, batches, clock)
    setup_s = time.perf_counter() - setup_started
    products, adam_pass, n_products = floor_functions(config, sides["torch"].model, batch)
    times: dict[str, dict[str, list[float]]] = {
        name: {phase: [] for phase in PHASES} for name in sides}
    floor: dict[str, list[float]] = {"matmul": [], "optimizer_pass": []}
    for i in range(repeats):
        x, y = batches[i % len(batches)]
        for name, side in sides.items():  # interleaved: drift hits every side alike
            side.step(x, y)  # untimed: its working set back in cache, as in a loop
            forward, backward, optimizer = side.phases(x, y, clock)
            start = clock()
            side.step(x, y)
            step = clock() - start
            for phase, seconds in zip(PHASES, (forward, backward, optimizer, step),
                                      strict=True):
                times[name][phase].append(seconds)
        for part, function in (("matmul", products), ("optimizer_pass", adam_pass)):
            function()  # untimed, as for the sides
            start = clock()
            function()
            floor[part].append(clock() - start)
    floor_ms = {f"{part}_ms": _median_ms(values) for part, values in floor.items()}
    cell = {"model": model_name, "batch": batch, "repeats": repeats,
            "setup_seconds": setup_s,
            "sides": {name: {**{f"{phase}_ms": _median_ms(values)
                                for phase, values in phases.items()},
                             "step_min_ms": 1e3 * min(phases["step"])}
                      for name, phases in times.items()},
            "floor": {**floor_ms, "total_ms": sum(floor_ms.values()),
                      "products": n_products}}
    for name, side in sides.items():  # how the last timed step ran its optimizer
        if hasattr(side, "trainer"):
            cell["sides"][name]["updated_in_backward"] = side.trainer.updated_in_backward
    cell["ratios"] = _ratios(cell)
    cell["correctness"] = check_correctness(config, sides, batches[0])
    return cell


def _ratios(cell: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each side's whole step over each peer's and over the floor."""
    steps = {name: side["step_ms"] for name, side in cell["sides"].items()}
    floor = cell["floor"]["total_ms"]
    return {name: {**{f"vs_{peer}": ms / steps[peer] for peer in steps if peer != name},
                   "vs_floor": ms / floor}
            for name, ms in steps.items()}


# --------------------------------------------------------------------------------------
# the floor: matrix products alone, plus one fused pass over Adam's state


def _linear_shapes(model: torch.nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in model.modules()
            if isinstance(m, torch.nn.Linear)]


def floor_functions(config: BenchConfig, model: torch.nn.Module, batch: int
                    ) -> tuple[Callable[[], None], Callable[[], None], int]:
    """What one step cannot avoid, as two functions: its matrix products (per
    Linear: out = x·Wᵀ + b, dW = doutᵀ·x, and dx = dout·W except for the first)
    into preallocated outputs, each the fastest way this machine has (torch's
    BLAS called directly and split between the threads where that is faster:
    :mod:`scratchnet.native.gemm`, which the fast step uses too; torch's ops
    where that is unavailable), and torch's fused Adam kernel over one flat
    buffer of the model's size. Also returns the number of products."""
    from scratchnet.native import gemm

    device, dtype = torch.device(config.device), config.torch_dtype
    products = []
    for i, (d_in, d_out) in enumerate(_linear_shapes(model)):
        x, dout = torch.rand(batch, d_in, device=device, dtype=dtype), \
            torch.rand(batch, d_out, device=device, dtype=dtype)
        weight = torch.rand(d_out, d_in, device=device, dtype=dtype)
        bias = torch.rand(d_out, device=device, dtype=dtype)
        out, dweight = torch.empty_like(dout), torch.empty_like(weight)
        fastest = gemm.linear_products(batch, d_in, d_out, dtype, True, device)
        products.append(functools.partial(fastest.forward, x, weight, bias, out))
        products.append(functools.partial(fastest.weight_grad, dout, x, dweight))
        if i > 0:
            products.append(functools.partial(fastest.input_grad, dout, weight,
                                              torch.empty_like(x)))
    numel = sum(p.numel() for p in model.parameters())
    state = [torch.rand(numel, device=device, dtype=dtype) * 1e-3 for _ in range(4)]
    steps = [torch.zeros((), device=device if device.type == "cuda" else "cpu")]

    def adam_pass() -> None:
        torch._fused_adam_([state[0]], [state[1]], [state[2]], [state[3]], [], steps,
                           lr=1e-3, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8,
                           amsgrad=False, maximize=False)

    def all_products() -> None:
        for product in products:
            product()

    return all_products, adam_pass, len(products)


# --------------------------------------------------------------------------------------
# correctness: one more step from torch's state, compared within the parity contract


def assert_parity(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """tests/oracles.py's contract: float64 rtol 1e-12 (absolute floor 1e-12 × the
    largest magnitude), float32 assert_close's defaults. Raises BenchmarkError."""
    actual, expected = actual.detach().as_subclass(torch.Tensor), expected.detach()
    try:
        if expected.dtype == torch.float64:
            scale = expected.abs().max().item() if expected.numel() else 0.0
            torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12 * scale)
        else:
            torch.testing.assert_close(actual, expected)
    except AssertionError as error:
        raise BenchmarkError(f"{what} differs from torch.nn's: {error}") from None


def check_correctness(config: BenchConfig, sides: dict[str, Any],
                      batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
    """Each scratchnet side takes the torch side's weights and Adam state (after
    the timed steps: warm state, denormals and all), then every side steps once
    on ``batch``; loss and parameters must agree."""
    reference = sides["torch"]
    ours = [name for name in sides if name in SCRATCHNET_SIDES]
    for name in ours:
        sides[name].load_from(reference)
    x, y = batch
    expected_loss = reference.step(x, y)
    report = {}
    for name in ours:
        loss = sides[name].step(x, y)
        assert_parity(loss, expected_loss, f"{name}: loss")
        worst = 0.0
        for (key, ours), theirs in zip(sides[name].model.named_parameters(),
                                       reference.model.parameters(), strict=True):
            assert_parity(ours, theirs, f"{name}: parameter {key}")
            worst = max(worst, (ours.detach().as_subclass(torch.Tensor)
                                - theirs.detach()).abs().max().item())
        report[name] = {"ok": True, "loss": float(loss),
                        "torch_loss": float(expected_loss), "max_param_diff": worst}
    return report


# --------------------------------------------------------------------------------------
# a whole epoch, data included


def _torchvision_root(tmp: Path) -> Path:
    """torchvision wants the four files uncompressed in FashionMNIST/raw/."""
    import gzip
    import shutil

    from scratchnet.data import find_dataset

    source = find_dataset("fashion-mnist", download=False)
    raw = tmp / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        target = raw / path.name.removesuffix(".gz")
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as packed, open(target, "wb") as unpacked:
                shutil.copyfileobj(packed, unpacked)
        else:
            shutil.copy(path, target)
    return tmp


def _limited(loader: Any, limit: int | None, batch: int) -> Iterator:
    for i, item in enumerate(loader):
        if limit is not None and i * batch >= limit:
            return
        yield item


def seed_pipeline_epoch(config: BenchConfig, root: Path) -> dict[str, float]:
    """The seed tutorial: torchvision + ToTensor + DataLoader + torch.nn + Adam,
    one training epoch and one pass over the test set."""
    from torch.utils.data import DataLoader
    from torchvision import datasets
    from torchvision.transforms import ToTensor

    from scratchnet.train import build_model, seed_everything

    start = time.perf_counter()
    seed_everything(0)
    train = datasets.FashionMNIST(str(root), train=True, download=False,
                                  transform=ToTensor())
    test = datasets.FashionMNIST(str(root), train=False, download=False,
                                 transform=ToTensor())
    model = build_model("NeuralNetwork", "torch")
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    for x, y in _limited(DataLoader(train, batch_size=64, shuffle=True),
                         config.epoch_limit, 64):
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
    trained = time.perf_counter()
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in DataLoader(test, batch_size=64):
            correct += int((model(x).argmax(1) == y).sum())
    end = time.perf_counter()
    return {"train_seconds": trained - start, "total_seconds": end - start,
            "test_accuracy": 100.0 * correct / len(test)}


def scratchnet_epoch(config: BenchConfig, root: Path | None = None,
                     compiled: bool = False) -> dict[str, float]:
    """scratchnet: uint8 images held in memory (TensorLoader) + FastTrainer, one
    training epoch and scratchnet's evaluation of the test set, reading the IDX
    files from ``root`` (the seed pipeline's, so both read the same uncompressed
    files; None: wherever find_dataset finds them, maybe gzipped). ``compiled``: the
    fast_compiled side's trainer (compiled Adam, plain loss); measure_epoch
    compiles its kernel first (:func:`_compile_fast_step`), so its first step
    here is an ordinary one."""
    import scratchnet.optim
    from scratchnet.data import TensorLoader, load_dataset
    from scratchnet.fast import FastTrainer
    from scratchnet.train import build_model, evaluate, seed_everything

    start = time.perf_counter()
    seed_everything(0)
    train_images, train_labels = load_dataset("fashion-mnist", train=True, data_dir=root)
    test_images, test_labels = load_dataset("fashion-mnist", train=False, data_dir=root)
    model = build_model("NeuralNetwork", "scratchnet")
    trainer = FastTrainer(model, scratchnet.optim.Adam(model.parameters(), lr=config.lr),
                          compile_optimizer=compiled, exact_loss=not compiled)
    loader = TensorLoader(train_images, train_labels, batch_size=64, shuffle=True,
                          generator=torch.Generator().manual_seed(0))
    first_step_seconds = None
    for x, y in _limited(loader, config.epoch_limit, 64):
        step_started = time.perf_counter()
        trainer.step(x, y)
        if first_step_seconds is None:  # checks, buffers and (compiled) the compile
            first_step_seconds = time.perf_counter() - step_started
    trained = time.perf_counter()
    evaluation = evaluate(model, TensorLoader(test_images, test_labels, batch_size=1000))
    end = time.perf_counter()
    return {"train_seconds": trained - start, "total_seconds": end - start,
            "first_step_seconds": first_step_seconds, "test_accuracy": evaluation.accuracy}


def _compile_fast_step(config: BenchConfig) -> float:
    """Seconds of fast_compiled's first step on a fresh model: building or
    loading its Adam loop and the other C loops, and choosing the products'
    splits (0.3 s in a new process with the C loops in their cache, 1.2 s where
    they are built; torch.compile's Adam: about 2 s from inductor's disk cache,
    15 s cold, on 2 cores; a fraction of a second where this process has them)."""
    import scratchnet.optim
    from scratchnet.fast import FastTrainer

    model = build_scratchnet_model("NeuralNetwork")
    trainer = FastTrainer(model, scratchnet.optim.Adam(model.parameters(), lr=config.lr),
                          compile_optimizer=True, exact_loss=False)
    x, y = training_batches(config, 64, 1)[0]
    started = time.perf_counter()
    trainer.step(x, y)
    return time.perf_counter() - started


def measure_epoch(config: BenchConfig) -> dict[str, Any]:
    """Every pipeline's epoch ``epoch_rounds`` times, interleaved (seed, fast,
    fast_compiled, seed, …: a slow spell of the machine hits each alike). Each
    pipeline's row is its median round (by total time); its speedup is the
    median over rounds of seed total / its total in the same round. The
    compiled kernel is compiled before the rounds (``compile_seconds``: what a
    new process adds to its first epoch)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="scratchnet-bench-") as tmp:
        root = _torchvision_root(Path(tmp))
        pipelines: dict[str, Callable[[], dict[str, float]]] = {
            "seed_pipeline": lambda: seed_pipeline_epoch(config, root),
            "scratchnet_fast": lambda: scratchnet_epoch(config, root)}
        if config.compile:
            pipelines["scratchnet_fast_compiled"] = lambda: scratchnet_epoch(
                config, root, compiled=True)
        compile_seconds = _compile_fast_step(config) if config.compile else None
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in pipelines}
        for _ in range(max(1, config.epoch_rounds)):
            for name, run_epoch in pipelines.items():
                rounds[name].append(run_epoch())
    result: dict[str, Any] = {"limit": config.epoch_limit, "rounds": len(rounds[
        "seed_pipeline"]), "compile_seconds": compile_seconds, "speedup": {},
        "speedup_range": {}}
    for name, runs in rounds.items():
        totals = [run["total_seconds"] for run in runs]
        median_run = sorted(runs, key=lambda run: run["total_seconds"])[len(runs) // 2]
        result[name] = {**median_run, "total_seconds_per_round": totals}
        if name != "seed_pipeline":
            ratios = [seed["total_seconds"] / run["total_seconds"]
                      for seed, run in zip(rounds["seed_pipeline"], runs, strict=True)]
            result["speedup"][name] = statistics.median(ratios)
            result["speedup_range"][name] = [min(ratios), max(ratios)]
    return result


# --------------------------------------------------------------------------------------
# peak memory: each side in a fresh process (RSS only grows within one)


def _status_mib(field: str) -> float:
    """A line of /proc/self/status (VmRSS: resident now, VmHWM: its peak), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _memory_child(config: BenchConfig, side_name: str, model_name: str,
                  batch: int) -> dict[str, float]:
    """In a fresh process: the data first, then reset the peak-RSS mark (Linux:
    ``echo 5 > /proc/self/clear_refs``), build one side, train it a few steps,
    read the peak. ``used_mib`` is what the model, optimizer and steps added."""
    torch.set_num_threads(config.threads)
    device = torch.device(config.device)
    batches = training_batches(config, batch, 4)
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_mib("VmRSS")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    side = _make_sides(config, model_name, batch, only=(side_name,))[side_name]
    for x, y in batches * 3:
        side.step(x, y)
    peak = _status_mib("VmHWM")
    result = {"rss_peak_mib": peak, "rss_before_mib": before, "used_mib": peak - before}
    if device.type == "cuda":
        result["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def measure_memory(config: BenchConfig, model_name: str) -> dict[str, Any]:
    """Each side's peak memory, each in a fresh Python process."""
    import subprocess
    import sys

    package_root = str(Path(__file__).resolve().parent.parent)
    results = {}
    sides = ("torch", "torch_fused", "tape", "fast") + (("fast_compiled",)
                                                         if config.compile else ())
    for side in sides:
        request = json.dumps({"config": asdict(config), "side": side,
                              "model": model_name, "batch": config.memory_batch})
        completed = subprocess.run(
            [sys.executable, "-c", "import scratchnet.bench as b; b._memory_main()"],
            input=request, capture_output=True, text=True, check=False,
            env={**os.environ, "PYTHONPATH": package_root})
        if completed.returncode != 0:
            raise BenchmarkError(f"memory measurement of {side} failed:\n"
                                 f"{completed.stderr[-2000:]}")
        results[side] = json.loads(completed.stdout.strip().splitlines()[-1])
    return {"model": model_name, "batch": config.memory_batch, "sides": results}


def _memory_main() -> None:
    """Entry point of the child process: a JSON request on stdin, the result as
    the last line of stdout."""
    import sys

    request = json.loads(sys.stdin.read())
    values = request["config"]
    config = BenchConfig(**{key: tuple(value) if isinstance(value, list) else value
                            for key, value in values.items()})
    config.state_warmup_steps = 0  # the state's values do not change its memory
    print(json.dumps(_memory_child(config, request["side"], request["model"],
                                   request["batch"])))


# --------------------------------------------------------------------------------------
# the machine, the whole run, and the files


def machine_info(config: BenchConfig) -> dict[str, Any]:
    cpu_model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu_model": cpu_model, "logical_cpus": multiprocessing.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "torch_config": torch.__config__.show()}
    if config.device.startswith("cuda"):
        info["cuda_device"] = torch.cuda.get_device_name(torch.device(config.device))
    return info


def run_benchmark(config: BenchConfig, log: Callable[[str], None] = print
                  ) -> dict[str, Any]:
    """Every cell in both denormal settings, the epoch and the memory; returns
    the results (see :func:`write_results`). Raises BenchmarkError if any side
    disagrees with torch.nn."""
    torch.set_num_threads(config.threads)
    results: dict[str, Any] = {"name": config.name, "config": asdict(config),
                               "machine": machine_info(config), "cells": [],
                               "notes": []}
    flush_before = False
    torch.set_flush_denormal(False)  # the warm states keep their subnormals
    if config.state_warmup_steps > 0:
        results["warm_state"] = {model_name: {
            "steps": config.state_warmup_steps, "batch": 64,
            "subnormal_share": warm_start(config, model_name)[2]}
            for model_name in config.models}
    try:
        for flush in config.denormals:
            torch.set_flush_denormal(flush)
            for model_name in config.models:
                for batch in config.batches:
                    cell = _safe_cell(config, model_name, batch, results["notes"])
                    cell["denormals_flushed"] = flush
                    results["cells"].append(cell)
                    log(_cell_line(cell))
    finally:
        torch.set_flush_denormal(flush_before)
    if config.epoch and config.data != "synthetic":
        results["epoch"] = measure_epoch(config)
        epoch = results["epoch"]
        log(f"epoch: seed pipeline {epoch['seed_pipeline']['total_seconds']:.2f} s, "
            + ", ".join(f"{name} {epoch[name]['total_seconds']:.2f} s"
                        for name in epoch["speedup"]))
    if config.memory:
        results["memory"] = measure_memory(config, config.models[0])
    if config.compile:
        results["notes"].extend(_adam_loop_notes(config, results["cells"]))
    results["notes"].append(_products_note(config))
    return results


def _products_note(config: BenchConfig) -> str:
    """How fast's, fast_compiled's and the floor's matrix products ran."""
    from scratchnet import native
    from scratchnet.native import gemm

    who = "fast, fast_compiled and the floor"
    if config.device != "cpu":
        return f"{who}: the matrix products ran torch's ops (not on the CPU)"
    if gemm.why_unavailable(config.torch_dtype):
        return (f"{who}: the matrix products ran torch's ops "
                f"({gemm.why_unavailable(config.torch_dtype)})")
    ways: dict[str, int] = {}
    for (_, _, dtype, _, _), split in gemm.chosen_splits().items():
        if dtype == config.torch_dtype:
            way = "torch's op" if split is None else split
            ways[way] = ways.get(way, 0) + 1
    return (f"{who}: the matrix products called torch's BLAS, or scratchnet's own "
            f"float32 loops (the ways named kernel), through scratchnet/native/gemm.c "
            f"({native.built_with('gemm')}); the way chosen per product shape: "
            + ", ".join(f"{way} {count}" for way, count in sorted(ways.items())))


def _adam_loop_notes(config: BenchConfig, cells: list[dict[str, Any]]) -> list[str]:
    """Which loop fast_compiled's Adam ran, and why where it fell back; in which
    cells its step ran each layer's update inside the backward."""
    from scratchnet import native
    from scratchnet.optim.adam import _compiled_kernel

    notes = []
    if config.device == "cpu":
        if native.load("adam") is not None:
            notes.append(f"fast_compiled: Adam ran the C loop (scratchnet/native/"
                         f"adam.c, {native.built_with('adam')})")
        else:
            notes.append(f"fast_compiled: the C Adam loop is unavailable "
                         f"({native.why_unavailable('adam')}); torch.compile's ran")
    if _compiled_kernel == [None]:
        notes.append("fast_compiled: torch.compile failed; its Adam ran the eager "
                     "flat update")
    inside = [f"{cell['model']} batch {cell['batch']}" for cell in cells
              if cell["sides"].get("fast_compiled", {}).get("updated_in_backward")]
    if inside:
        notes.append("fast_compiled: its step ran each Linear's Adam update right after "
                     "that layer's backward (scratchnet.optim.adam.update_in_parts; "
                     f"{len(inside)} of {len(cells)} cells); its phases run "
                     "optimizer.step() after the whole backward, so they need not add "
                     "up to its step")
    return notes


def _safe_cell(config: BenchConfig, model_name: str, batch: int,
               notes: list[str]) -> dict[str, Any]:
    """time_cell, retried without torch.compile if compiling fails."""
    try:
        return time_cell(config, model_name, batch)
    except BenchmarkError:
        raise
    except Exception as error:  # noqa: BLE001 - torch.compile's failures vary
        if not _compiles_torch(config, batch):
            raise
        notes.append(f"torch.compile skipped at {model_name} batch {batch}: "
                     f"{type(error).__name__}: {str(error)[:200]}")
        return time_cell(_without_compile(config), model_name, batch)


def _without_compile(config: BenchConfig) -> BenchConfig:
    changed = copy.copy(config)
    changed.compile = False
    return changed


def _cell_line(cell: dict[str, Any]) -> str:
    sides = cell["sides"]
    parts = [f"{name} {values['step_ms']:.3f}" for name, values in sides.items()]
    return (f"{cell['model']} B={cell['batch']} flush={cell['denormals_flushed']}: "
            f"step ms {', '.join(parts)}; floor {cell['floor']['total_ms']:.3f}")


def markdown_table(results: dict[str, Any]) -> str:
    """The results as the README shows them: one row per side and cell."""
    machine = results["machine"]
    lines = [f"# scratchnet benchmark: {results['name']}", "",
             f"{machine['cpu_model']}, {machine['threads']} threads, torch "
             f"{machine['torch']}, {results['config']['dtype']}, Adam lr "
             f"{results['config']['lr']}. Median of the repeats, in ms per training "
             "step; ratios are the whole step over torch's (default Adam), torch "
             "fused Adam's, and the floor's (matrix products + one fused Adam pass).",
             *_warm_state_lines(results),
             "", "| model | batch | denormals | side | forward | backward | optimizer "
             "| step | step (min) | × torch | × fused | × floor |", "|" + "---|" * 12]
    for cell in results["cells"]:
        flushed = "flushed" if cell["denormals_flushed"] else "kept"
        for name, values in cell["sides"].items():
            ratios = cell["ratios"][name]
            lines.append(
                f"| {cell['model']} | {cell['batch']} | {flushed} | {name} | "
                f"{values['forward_ms']:.3f} | {values['backward_ms']:.3f} | "
                f"{values['optimizer_ms']:.3f} | **{values['step_ms']:.3f}** | "
                f"{values['step_min_ms']:.3f} | "
                f"{ratios.get('vs_torch', 1.0):.2f} | "
                f"{ratios.get('vs_torch_fused', 1.0):.2f} | {ratios['vs_floor']:.2f} |")
        floor = cell["floor"]
        lines.append(f"| {cell['model']} | {cell['batch']} | {flushed} | *floor* | | | "
                     f"{floor['optimizer_pass_ms']:.3f} | {floor['total_ms']:.3f} "
                     f"({floor['products']} products {floor['matmul_ms']:.3f}) | | | | |")
    lines += _epoch_and_memory_lines(results)
    lines += ["", *[f"- note: {note}" for note in results["notes"]]]
    return "\n".join(lines) + "\n"


def _warm_state_lines(results: dict[str, Any]) -> list[str]:
    if not results.get("warm_state"):
        return ["", "Every side starts from the same initial weights (no warm state)."]
    lines = ["", "Every side starts from the weights and Adam state of torch.nn + Adam "
             "trained at batch 64, from seed 0, with denormals kept:"]
    for model_name, warm in results["warm_state"].items():
        shares = ", ".join(f"{name} {100 * share:.2f}%"
                           for name, share in warm["subnormal_share"].items())
        lines.append(f"{model_name}: {warm['steps']} steps; subnormal entries: {shares}.")
    return lines


def _epoch_and_memory_lines(results: dict[str, Any]) -> list[str]:
    lines = []
    if "epoch" in results:
        epoch = results["epoch"]
        limit = epoch["limit"] or "all 60000"
        rounds = epoch.get("rounds", 1)
        lines += ["", f"Fashion-MNIST epoch ({limit} training images, then the test "
                  f"set), data loading included; {rounds} round(s), interleaved, the "
                  "median round shown:", "",
                  "| pipeline | train s | total s | of which the first step s | test "
                  "accuracy | total s, each round |", "|---|---|---|---|---|---|"]
        for name in ("seed_pipeline", *epoch["speedup"]):
            row = epoch[name]
            first = row.get("first_step_seconds")
            each = ", ".join(f"{seconds:.2f}" for seconds in
                             row.get("total_seconds_per_round", [row["total_seconds"]]))
            lines.append(f"| {name} | {row['train_seconds']:.2f} | "
                         f"{row['total_seconds']:.2f} | "
                         f"{'' if first is None else f'{first:.2f}'} | "
                         f"{row['test_accuracy']:.2f}% | {each} |")
        lines.append("")
        if epoch.get("compile_seconds") is not None:
            lines += [f"fast_compiled's first step (building or loading its Adam loop) "
                      f"ran before the rounds, in {epoch['compile_seconds']:.2f} s, not "
                      "in these times (a new process: about 0.3 s with the C loops in "
                      "their cache, most of it choosing the products' splits; 1.2 s on "
                      "a new machine, which builds them; torch.compile's Adam, off the "
                      "CPU or without a C compiler, about 2 s from inductor's disk "
                      "cache, 15 s cold).", ""]
        for name, speedup in epoch["speedup"].items():
            low, high = epoch.get("speedup_range", {}).get(name, (speedup, speedup))
            lines.append(f"{name}: {speedup:.2f}× faster than the seed pipeline "
                         f"(median over rounds; {low:.2f}–{high:.2f}).")
    if "memory" in results:
        memory = results["memory"]
        lines += ["", f"Peak memory ({memory['model']}, batch {memory['batch']}, 12 "
                  "steps, a fresh process per side; used = peak RSS − RSS before the "
                  "model was built):", "", "| side | used MiB | peak RSS MiB |",
                  "|---|---|---|"]
        for name, row in memory["sides"].items():
            lines.append(f"| {name} | {row['used_mib']:.1f} | "
                         f"{row['rss_peak_mib']:.0f} |")
    return lines


def write_results(results: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """``out_dir/<name>.json`` and ``out_dir/<name>.md``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{results['name']}.json", out / f"{results['name']}.md"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    md_path.write_text(markdown_table(results))
    return json_path, md_path


# --------------------------------------------------------------------------------------
# command line (``scratchnet bench``; benchmarks/bench.py runs the same)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))


def add_arguments(parser: Any) -> None:
    """``scratchnet bench``'s options (defaults: :class:`BenchConfig`'s)."""
    parser.add_argument("--quick", action="store_true", help="a short run: one model, "
                        "batches 1 and 64, few repeats, no torch.compile, a partial "
                        "epoch")
    parser.add_argument("--name", help="results file name (default: cpu, or quick)")
    parser.add_argument("--models", help="comma-separated seed models or layer specs "
                        "(default: NeuralNetwork,SimpleNN,SingleLayerNN)")
    parser.add_argument("--batches", type=_ints, help="comma-separated batch sizes "
                        "(default: 1,64,256,1024,4096)")
    parser.add_argument("--repeats", type=int, help="timed steps per side and cell "
                        "(default: 30)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default: 10)")
    parser.add_argument("--budget", type=float, dest="budget_s", help="seconds to "
                        "spend timing one side at one cell, at most (default: 3)")
    parser.add_argument("--threads", type=int, help="torch threads for every side "
                        "(default: 2)")
    parser.add_argument("--denormals", choices=("both", "kept", "flushed"),
                        default="both", help="torch.set_flush_denormal setting(s) to "
                        "run (default: both)")
    parser.add_argument("--dtype", choices=("float32", "float64"), help="default: "
                        "float32")
    parser.add_argument("--device", help="cpu or cuda (default: cpu)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--compile-batches", type=_ints, help="comma-separated batch "
                        "sizes at which to time torch.compile of the torch.nn model "
                        "(default: every batch; each cell compiles it afresh)")
    parser.add_argument("--no-epoch", action="store_true", help="skip the whole epoch")
    parser.add_argument("--epoch-limit", type=int, help="train the epoch on the first "
                        "N images only")
    parser.add_argument("--epoch-rounds", type=int, help="epochs per pipeline, "
                        "interleaved (default: 9)")
    parser.add_argument("--no-memory", action="store_true", help="skip peak memory")
    parser.add_argument("--synthetic", action="store_true", help="random pixels "
                        "instead of Fashion-MNIST (no epoch)")
    parser.add_argument("--out", default="benchmarks/results", help="output directory "
                        "(default: benchmarks/results)")


def config_from_args(args: Any) -> BenchConfig:
    given: dict[str, Any] = {}
    for key in ("name", "batches", "repeats", "warmup", "budget_s", "threads", "dtype",
                "device", "epoch_limit", "epoch_rounds", "compile_batches"):
        if getattr(args, key, None) is not None:
            given[key] = getattr(args, key)
    if args.models:
        given["models"] = tuple(args.models.split(","))
    given["denormals"] = {"both": (False, True), "kept": (False,),
                          "flushed": (True,)}[args.denormals]
    if args.no_compile:
        given["compile"] = False
    if args.no_epoch:
        given["epoch"] = False
    if args.no_memory:
        given["memory"] = False
    if args.synthetic:
        given["data"] = "synthetic"
    given["out_dir"] = args.out
    return BenchConfig.quick(**given) if args.quick else BenchConfig(**given)
