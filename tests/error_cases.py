"""The bad-input table: each case is one thing a user can get wrong, the exception
scratchnet answers with, and the words its message must contain (the layer path
or function, and the shapes or values involved).

One list, two readers:

- tests/test_errors.py runs every case and asserts the exception class and the
  words;
- scripts/error_table.py runs every case and writes docs/errors.md (case | input |
  exception | message), which tests/test_errors.py checks is up to date.

Every case gets a fresh temporary directory for the files it damages; messages
show it as ``$TMP``. A command-line case runs ``scratchnet.cli.main`` in-process
and counts as raising :class:`CliExit` (exit code and stderr).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import random
import re
import struct
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import scratchnet
import scratchnet.nn.functional as F
from scratchnet import checkpoint as ckpt
from scratchnet import cli, nn, optim
from scratchnet.data import TensorLoader, load_dataset, read_idx, write_idx
from scratchnet.debug import detect_anomaly
from scratchnet.errors import (
    AnomalyError,
    ArgumentTypeError,
    BackwardError,
    CheckpointError,
    DataError,
    DeviceError,
    DTypeError,
    NotDifferentiableError,
    OptionError,
    ShapeError,
    StateDictError,
    TargetError,
)


class CliExit(Exception):
    """``scratchnet.cli.main`` returned a non-zero code: args are (code, stderr)."""

    @property
    def code(self) -> int:
        return self.args[0]

    @property
    def stderr(self) -> str:
        return self.args[1]


@dataclass(frozen=True)
class ErrorCase:
    """One bad input.

    Attributes:
        area: "layers", "losses", "optimizers", "data files", "checkpoints", "CLI".
        name: what is wrong, in a few words (the table's case column).
        input: the call, as a user would write it (the table's input column).
        call: does it; takes a fresh temporary directory.
        error: the exception class expected (CliExit for the command line).
        names: words the message must contain: where (layer path or function) and
            the shapes / values involved.
    """

    area: str
    name: str
    input: str
    call: Callable[[Path], object]
    error: type[BaseException]
    names: tuple[str, ...]


# --------------------------------------------------------------------------------------
# what the cases are made of


def mlp() -> nn.Module:
    """flatten → linear_relu_stack (Linear 784→32, ReLU, Linear 32→10), the seed
    NeuralNetwork's layout at a small size; its layer paths are the seed's."""
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(
        flatten=nn.Flatten(),
        linear_relu_stack=nn.Sequential(nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10)),
    ))


def images(batch: int = 4, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.zeros(batch, 1, 28, 28, dtype=dtype)  # (B, 1, 28, 28)


def logits(batch: int = 4, classes: int = 10) -> torch.Tensor:
    return torch.linspace(-1, 1, batch * classes).reshape(batch, classes)  # (B, C)


def params() -> list[nn.Parameter]:
    return [nn.Parameter(torch.zeros(3))]


def idx_bytes(shape: tuple[int, ...]) -> bytes:
    """A valid uint8 IDX file of ``shape``: magic 0x0000080<ndim>, sizes, data."""
    header = bytes([0, 0, 0x08, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
    return header + bytes(range(256)) * (torch.Size(shape).numel() // 256) + bytes(
        torch.Size(shape).numel() % 256)


def damaged_idx(directory: Path, content: bytes, name: str = "images-idx3-ubyte"
                ) -> Path:
    path = directory / name
    path.write_bytes(content)
    return path


def tiny_dataset(directory: Path, n: int = 8) -> Path:
    """The four IDX files of a 10-class 28×28 dataset with n images per split."""
    data_dir = directory / "data"
    data_dir.mkdir()
    for prefix in ("train", "t10k"):
        write_idx(data_dir / f"{prefix}-images-idx3-ubyte",
                  torch.arange(n * 784, dtype=torch.int64).remainder(256)
                  .to(torch.uint8).reshape(n, 28, 28))
        write_idx(data_dir / f"{prefix}-labels-idx1-ubyte",
                  torch.arange(n).remainder(10).to(torch.uint8))
    return data_dir


def save_small_checkpoint(directory: Path) -> Path:
    """A real checkpoint (format 2) of a 784-16-10 model after one Adam step, as
    ``scratchnet train --model 784-16-10 --dataset mnist`` writes it."""
    from scratchnet.train import TrainConfig, build_model, rng_state, seed_everything

    seed_everything(0)  # torch, numpy and Python: the saved RNG states are the same
    model = build_model("784-16-10")
    optimizer = optim.Adam(model.parameters())
    F.cross_entropy(model(images(2)), torch.tensor([1, 2])).backward()
    optimizer.step()
    loader = TensorLoader(torch.zeros(8, 28, 28, dtype=torch.uint8),
                          torch.zeros(8, dtype=torch.int64), batch_size=4,
                          generator=torch.Generator().manual_seed(0))
    config = TrainConfig(model="784-16-10", dataset="mnist", epochs=1).to_dict()
    return ckpt.save_checkpoint(
        directory / "run", model_state_dict=ckpt.plain_state_dict(model),
        optimizer_state_dict=optimizer.state_dict(), epoch=1, config=config,
        loader_state=loader.state_dict(), rng_state=rng_state(torch.device("cpu")))


def resaved(directory: Path, change: Callable[[dict], None]) -> Path:
    """The small checkpoint, loaded, changed in place, saved back with torch.save:
    a well-formed file whose stored checksum no longer matches."""
    path = save_small_checkpoint(directory)
    checkpoint = torch.load(path, weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, path)
    return path


def damaged_checkpoint(directory: Path, damage: str) -> Path:
    path = save_small_checkpoint(directory)
    content = bytearray(path.read_bytes())
    if damage == "truncated":
        content = content[: len(content) // 2]
    else:  # 64 bytes inverted in the middle
        middle = len(content) // 2
        content[middle:middle + 64] = bytes(255 - b for b in content[middle:middle + 64])
    path.write_bytes(bytes(content))
    return path


@contextlib.contextmanager
def environment(**variables: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_cli(*argv: str | Callable[[Path], object]) -> Callable[[Path], None]:
    """A case that runs ``scratchnet ARGV`` (an argument may be a function of the
    temporary directory) offline, raising CliExit on a non-zero exit code."""

    def call(directory: Path) -> None:
        args = [str(arg(directory)) if callable(arg) else arg for arg in argv]
        stderr = io.StringIO()
        with environment(SCRATCHNET_NO_DOWNLOAD="1",
                         XDG_CACHE_HOME=str(directory / "cache")), \
                contextlib.redirect_stderr(stderr), \
                contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(args)
        if code != 0:
            raise CliExit(code, stderr.getvalue())

    return call


def _backward_twice(directory: Path) -> None:
    loss = nn.Linear(3, 1)(torch.ones(2, 3)).sum()
    loss.backward()
    loss.backward()


def _inf_weight_forward(directory: Path) -> None:
    model = mlp()
    with scratchnet.no_grad():
        model.linear_relu_stack[2].weight[3, 5] = float("inf")
    with detect_anomaly():
        model(images())


def _nan_gradient_backward(directory: Path) -> None:
    model = mlp()
    with detect_anomaly():
        out = model(images())  # (4, 10)
        out.backward(torch.full((4, 10), float("nan")))


def _state_dict_of_other_size(directory: Path) -> None:
    nn.Linear(3, 2).load_state_dict({"weight": torch.zeros(2, 4), "bias": torch.zeros(2)})


def _optimizer_state_of_other_model(directory: Path) -> None:
    state = optim.Adam([nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2))])
    optim.Adam(params()).load_state_dict(state.state_dict())


def _another_architecture(directory: Path) -> None:
    from scratchnet.train import build_model

    checkpoint = ckpt.load_checkpoint(save_small_checkpoint(directory))
    ckpt.verify_architecture(checkpoint["model_state_dict"], build_model("784-32-10"),
                             "checkpoint run/checkpoint.pt", "784-32-10")


def _change_weight(checkpoint: dict) -> None:
    checkpoint["model_state_dict"]["linear_relu_stack.0.bias"][0] += 1e-3


def _change_rng_state(checkpoint: dict) -> None:
    checkpoint["rng_state"]["torch"][100] ^= 1


def _change_loader_position(checkpoint: dict) -> None:
    checkpoint["loader_state"]["epoch"] = 7


def _save_other_object(directory: Path) -> Path:
    torch.save([1, 2, 3], directory / "list.pt")
    return directory / "list.pt"


def _future_version(checkpoint: dict) -> None:
    checkpoint["format_version"] = 99


def _truncated_train_images(directory: Path) -> Path:
    data_dir = tiny_dataset(directory)
    images_path = data_dir / "train-images-idx3-ubyte"
    images_path.write_bytes(images_path.read_bytes()[:-100])
    return data_dir


def _labels_of_other_length(directory: Path) -> None:
    data_dir = tiny_dataset(directory)
    write_idx(data_dir / "train-labels-idx1-ubyte", torch.zeros(5, dtype=torch.uint8))
    load_dataset("mnist", train=True, data_dir=data_dir, download=False)


# --------------------------------------------------------------------------------------
# the cases

X = images()
Y = torch.tensor([1, 2, 3, 4])  # (4,) class indices
LAYER_CASES = [
    ErrorCase("layers", "Linear given the wrong number of features",
              "mlp(torch.zeros(4, 1, 20, 20))  # 400 features, the layer expects 784",
              lambda d: mlp()(torch.zeros(4, 1, 20, 20)), ShapeError,
              ("linear_relu_stack.0", "(4, 400)", "(32, 784)", "in_features=784")),
    ErrorCase("layers", "float64 input to a float32 model",
              "mlp(images.double())", lambda d: mlp()(images(dtype=torch.float64)),
              DTypeError, ("linear_relu_stack.0", "torch.float64", "torch.float32")),
    ErrorCase("layers", "input on another device",
              "F.linear(x.to('meta'), weight)  # x on meta, weight on cpu",
              lambda d: F.linear(torch.zeros(4, 3, device="meta"), torch.zeros(2, 3)),
              DeviceError, ("linear", "meta", "cpu")),
    ErrorCase("layers", "input is not a tensor", "nn.Linear(3, 2)([1.0, 2.0, 3.0])",
              lambda d: nn.Linear(3, 2)([1.0, 2.0, 3.0]), ArgumentTypeError,
              ("Linear(in_features=3", "linear", "torch.Tensor", "list")),
    ErrorCase("layers", "scalar input to Linear", "nn.Linear(3, 2)(torch.tensor(1.0))",
              lambda d: nn.Linear(3, 2)(torch.tensor(1.0)), ShapeError,
              ("linear", "at least 1 dimension", "scalar")),
    ErrorCase("layers", "bias of the wrong size",
              "F.linear(x (4, 3), weight (2, 3), bias (5,))",
              lambda d: F.linear(torch.zeros(4, 3), torch.zeros(2, 3), torch.zeros(5)),
              ShapeError, ("linear", "(5,)", "out_features=2")),
    ErrorCase("layers", "negative layer size", "nn.Linear(784, -3)",
              lambda d: nn.Linear(784, -3), OptionError, ("Linear", "out_features", "-3")),
    ErrorCase("layers", "layer size not an int", "nn.Linear(784.0, 10)",
              lambda d: nn.Linear(784.0, 10), ArgumentTypeError,
              ("Linear", "in_features", "784.0")),
    ErrorCase("layers", "Flatten dim out of range", "nn.Flatten(start_dim=3)(x (2, 3))",
              lambda d: nn.Flatten(start_dim=3)(torch.zeros(2, 3)), ShapeError,
              ("Flatten(start_dim=3", "flatten", "(2, 3)", "rank 2")),
    ErrorCase("layers", "Flatten start after end", "F.flatten(x (2, 3, 4), 2, 1)",
              lambda d: F.flatten(torch.zeros(2, 3, 4), 2, 1), ShapeError,
              ("flatten", "start_dim=2", "end_dim=1", "(2, 3, 4)")),
    ErrorCase("layers", "softmax dim out of range", "nn.Softmax(dim=2)(logits (4, 10))",
              lambda d: nn.Softmax(dim=2)(logits()), ShapeError,
              ("Softmax(dim=2)", "softmax", "dim=2", "(4, 10)", "[-2, 1]")),
    ErrorCase("layers", "softmax of integers", "F.softmax(torch.arange(4), dim=0)",
              lambda d: F.softmax(torch.arange(4), dim=0), DTypeError,
              ("softmax", "torch.int64")),
    ErrorCase("layers", "log_softmax to an integer dtype",
              "F.log_softmax(logits, dim=1, dtype=torch.int32)",
              lambda d: F.log_softmax(logits(), dim=1, dtype=torch.int32), DTypeError,
              ("log_softmax", "torch.int32")),
    ErrorCase("layers", "dropout probability above 1", "nn.Dropout(p=1.5)",
              lambda d: nn.Dropout(p=1.5), OptionError, ("dropout", "1.5")),
    ErrorCase("layers", "dropout of integers", "F.dropout(torch.arange(4), p=0.5)",
              lambda d: F.dropout(torch.arange(4), p=0.5), DTypeError,
              ("dropout", "torch.int64")),
    ErrorCase("layers", "unknown GELU approximation", "nn.GELU(approximate='fast')",
              lambda d: nn.GELU(approximate="fast"), OptionError, ("gelu", "'fast'")),
    ErrorCase("layers", "LeakyReLU slope not a number",
              "nn.LeakyReLU('0.1')(torch.zeros(2))",
              lambda d: nn.LeakyReLU("0.1")(torch.zeros(2)), ArgumentTypeError,
              ("LeakyReLU", "leaky_relu", "negative_slope", "str")),
    ErrorCase("layers", "state_dict of another shape",
              "nn.Linear(3, 2).load_state_dict({'weight': (2, 4), 'bias': (2,)})",
              _state_dict_of_other_size, StateDictError,
              ("Linear", "size mismatch for weight", "(2, 4)", "(2, 3)")),
    ErrorCase("layers", "backward of a non-scalar without a gradient",
              "nn.Linear(3, 2)(x (4, 3)).backward()",
              lambda d: nn.Linear(3, 2)(torch.ones(4, 3)).backward(), BackwardError,
              ("backward()", "scalar", "(4, 2)")),
    ErrorCase("layers", "gradient of the wrong shape",
              "out (4, 2); out.backward(torch.ones(3))",
              lambda d: nn.Linear(3, 2)(torch.ones(4, 3)).backward(torch.ones(3)),
              ShapeError, ("backward()", "(3,)", "(4, 2)")),
    ErrorCase("layers", "backward twice through a freed tape",
              "loss.backward(); loss.backward()", _backward_twice, BackwardError,
              ("Sum", "second time", "retain_graph")),
    ErrorCase("layers", "Module.backward before forward",
              "nn.Linear(3, 2).backward(torch.ones(4, 2))",
              lambda d: nn.Linear(3, 2).backward(torch.ones(4, 2)), BackwardError,
              ("Linear(in_features=3", "before forward")),
    ErrorCase("layers", "in-place op on the tape",
              "scratchnet.leaf(torch.ones(3)).add_(1)",
              lambda d: scratchnet.leaf(torch.ones(3)).add_(1), NotDifferentiableError,
              ("add_", "in-place")),
    ErrorCase("layers", "torch op without a scratchnet backward",
              "torch.cumsum(scratchnet.leaf(torch.ones(3)), 0)",
              lambda d: torch.cumsum(scratchnet.leaf(torch.ones(3)), 0),
              NotDifferentiableError, ("cumsum", "no scratchnet backward")),
    ErrorCase("layers", "Inf weight, under detect_anomaly",
              "weight[3, 5] = inf; with detect_anomaly(): mlp(x (4, 1, 28, 28))",
              _inf_weight_forward, AnomalyError,
              ("linear_relu_stack.2", "(4, 10)", "batch index 0", "weight")),
    ErrorCase("layers", "NaN gradient, under detect_anomaly",
              "with detect_anomaly(): mlp(x).backward(nan (4, 10))",
              _nan_gradient_backward, AnomalyError,
              ("Linear", "linear_relu_stack.2", "(4, 32)", "nan", "row) 0")),
]

LOSS_CASES = [
    ErrorCase("losses", "class index out of range",
              "F.cross_entropy(logits (4, 10), tensor([1, 2, 3, 10]))",
              lambda d: F.cross_entropy(logits(), torch.tensor([1, 2, 3, 10])),
              TargetError, ("cross_entropy", "target 10", "[0, 10)")),
    ErrorCase("losses", "negative class index",
              "nn.CrossEntropyLoss()(logits (4, 10), tensor([1, -1, 3, 4]))",
              lambda d: nn.CrossEntropyLoss()(logits(), torch.tensor([1, -1, 3, 4])),
              TargetError, ("CrossEntropyLoss()", "target -1", "ignore_index=-100")),
    ErrorCase("losses", "targets of another batch size",
              "F.cross_entropy(logits (4, 10), targets (5,))",
              lambda d: F.cross_entropy(logits(), torch.zeros(5, dtype=torch.int64)),
              ShapeError, ("cross_entropy", "(4, 10)", "(4,)", "(5,)")),
    ErrorCase("losses", "one-hot targets as integers",
              "F.cross_entropy(logits (4, 10), one_hot (4, 10) int64)",
              lambda d: F.cross_entropy(logits(), torch.zeros(4, 10, dtype=torch.int64)),
              ShapeError, ("cross_entropy", "(4, 10)", "(4,)")),
    ErrorCase("losses", "int32 class indices",
              "F.cross_entropy(logits, targets.int())",
              lambda d: F.cross_entropy(logits(), Y.int()), TargetError,
              ("cross_entropy", "torch.int32", "int64")),
    ErrorCase("losses", "float targets of another shape",
              "F.cross_entropy(logits (4, 10), probabilities (4,))",
              lambda d: F.cross_entropy(logits(), torch.zeros(4)), ShapeError,
              ("cross_entropy", "(4, 10)", "(4,)", "probabilities")),
    ErrorCase("losses", "class weight of the wrong size",
              "F.cross_entropy(logits (4, 10), y, weight=torch.ones(3))",
              lambda d: F.cross_entropy(logits(), Y, weight=torch.ones(3)), ShapeError,
              ("cross_entropy", "(10,)", "(3,)", "(4, 10)")),
    ErrorCase("losses", "label_smoothing above 1",
              "nn.CrossEntropyLoss(label_smoothing=1.5)",
              lambda d: nn.CrossEntropyLoss(label_smoothing=1.5), OptionError,
              ("cross_entropy", "label_smoothing", "1.5")),
    ErrorCase("losses", "unknown reduction", "nn.CrossEntropyLoss(reduction='avg')",
              lambda d: nn.CrossEntropyLoss(reduction="avg"), OptionError,
              ("CrossEntropyLoss", "reduction='avg'", "'none', 'mean' or 'sum'")),
    ErrorCase("losses", "integer logits", "F.cross_entropy(torch.ones(4, 10).long(), y)",
              lambda d: F.cross_entropy(torch.ones(4, 10, dtype=torch.int64), Y),
              DTypeError, ("cross_entropy", "torch.int64")),
    ErrorCase("losses", "ignore_index with probability targets",
              "F.cross_entropy(logits, probabilities (4, 10), ignore_index=0)",
              lambda d: F.cross_entropy(logits(), torch.rand(4, 10), ignore_index=0),
              OptionError, ("cross_entropy", "ignore_index=0")),
    ErrorCase("losses", "ignore_index not an int",
              "F.cross_entropy(logits, y, ignore_index=1.5)",
              lambda d: F.cross_entropy(logits(), Y, ignore_index=1.5),
              ArgumentTypeError, ("cross_entropy", "ignore_index", "1.5")),
    ErrorCase("losses", "target that wants a gradient",
              "F.cross_entropy(logits, scratchnet.leaf(probabilities))",
              lambda d: F.cross_entropy(logits(), scratchnet.leaf(torch.rand(4, 10))),
              NotDifferentiableError, ("cross_entropy", "target", "detach")),
    ErrorCase("losses", "nll_loss with float targets",
              "F.nll_loss(log_probs (4, 10), torch.zeros(4))",
              lambda d: F.nll_loss(logits(), torch.zeros(4)), TargetError,
              ("nll_loss", "torch.float32", "int64")),
    ErrorCase("losses", "mse_loss target that would broadcast",
              "F.mse_loss(prediction (4, 1), target (4,))",
              lambda d: F.mse_loss(torch.zeros(4, 1), torch.zeros(4)), ShapeError,
              ("mse_loss", "(4,)", "(4, 1)", "broadcast")),
    ErrorCase("losses", "mse_loss of mixed dtypes",
              "nn.MSELoss()(float32 (4,), float64 (4,))",
              lambda d: nn.MSELoss()(torch.zeros(4), torch.zeros(4, dtype=torch.float64)),
              DTypeError, ("MSELoss()", "mse_loss", "torch.float64", "torch.float32")),
    ErrorCase("losses", "loss of a list", "F.mse_loss([0.5], torch.zeros(1))",
              lambda d: F.mse_loss([0.5], torch.zeros(1)), ArgumentTypeError,
              ("mse_loss", "input", "list")),
]

OPTIMIZER_CASES = [
    ErrorCase("optimizers", "negative learning rate", "optim.Adam(params, lr=-1e-3)",
              lambda d: optim.Adam(params(), lr=-1e-3), OptionError,
              ("Adam", "learning rate", "-0.001")),
    ErrorCase("optimizers", "NaN learning rate", "optim.SGD(params, lr=float('nan'))",
              lambda d: optim.SGD(params(), lr=float("nan")), OptionError,
              ("SGD", "learning rate", "nan")),
    ErrorCase("optimizers", "learning rate as a string", "optim.SGD(params, lr='0.1')",
              lambda d: optim.SGD(params(), lr="0.1"), ArgumentTypeError,
              ("SGD", "lr", "str", "'0.1'")),
    ErrorCase("optimizers", "beta2 of 1", "optim.Adam(params, betas=(0.9, 1.0))",
              lambda d: optim.Adam(params(), betas=(0.9, 1.0)), OptionError,
              ("Adam", "beta parameter at index 1", "1.0")),
    ErrorCase("optimizers", "negative beta1", "optim.AdamW(params, betas=(-0.1, 0.999))",
              lambda d: optim.AdamW(params(), betas=(-0.1, 0.999)), OptionError,
              ("AdamW", "beta parameter at index 0", "-0.1")),
    ErrorCase("optimizers", "betas not a pair", "optim.Adam(params, betas=(0.9,))",
              lambda d: optim.Adam(params(), betas=(0.9,)), OptionError,
              ("Adam", "betas", "pair", "(0.9,)")),
    ErrorCase("optimizers", "negative eps", "optim.Adam(params, eps=-1e-8)",
              lambda d: optim.Adam(params(), eps=-1e-8), OptionError,
              ("Adam", "epsilon", "-1e-08")),
    ErrorCase("optimizers", "negative weight decay", "optim.AdamW(params, weight_decay=-0.01)",
              lambda d: optim.AdamW(params(), weight_decay=-0.01), OptionError,
              ("AdamW", "weight_decay", "-0.01")),
    ErrorCase("optimizers", "negative momentum", "optim.SGD(params, lr=0.1, momentum=-0.9)",
              lambda d: optim.SGD(params(), lr=0.1, momentum=-0.9), OptionError,
              ("SGD", "momentum", "-0.9")),
    ErrorCase("optimizers", "Nesterov without momentum",
              "optim.SGD(params, lr=0.1, nesterov=True)",
              lambda d: optim.SGD(params(), lr=0.1, nesterov=True), OptionError,
              ("SGD", "Nesterov", "momentum")),
    ErrorCase("optimizers", "no parameters", "optim.Adam([])",
              lambda d: optim.Adam([]), OptionError, ("empty parameter list",)),
    ErrorCase("optimizers", "a parameter group without params",
              "optim.SGD([{'lr': 0.1}])",
              lambda d: optim.SGD([{"lr": 0.1}]), OptionError,
              ("SGD", "'params'", "['lr']")),
    ErrorCase("optimizers", "another implementation's flag",
              "optim.Adam(params, foreach=True)",
              lambda d: optim.Adam(params(), foreach=True), OptionError,
              ("Adam", "foreach=True")),
    ErrorCase("optimizers", "state_dict of another model",
              "Adam over 1 parameter .load_state_dict(Adam over 2 .state_dict())",
              _optimizer_state_of_other_model, StateDictError,
              ("group 0", "holds 2 parameters", "optimizer's 1")),
]

DATA_CASES = [
    ErrorCase("data files", "truncated IDX file", "read_idx(images (10, 28, 28) − 100 bytes)",
              lambda d: read_idx(damaged_idx(d, idx_bytes((10, 28, 28))[:-100])),
              DataError, ("$TMP/images-idx3-ubyte", "truncated", "(10, 28, 28)", "7856")),
    ErrorCase("data files", "trailing bytes after the data",
              "read_idx(labels (10,) + 3 bytes)",
              lambda d: read_idx(damaged_idx(d, idx_bytes((10,)) + b"abc", "labels")),
              DataError, ("$TMP/labels", "3 extra bytes", "(10,)")),
    ErrorCase("data files", "wrong magic number", "read_idx(b'\\x12\\x34' + images[2:])",
              lambda d: read_idx(damaged_idx(d, b"\x12\x34" + idx_bytes((2, 28, 28))[2:])),
              DataError, ("$TMP/images-idx3-ubyte", "0x12340803", "0x00000803")),
    ErrorCase("data files", "IDX of floats", "read_idx(file with type code 0x0D)",
              lambda d: read_idx(damaged_idx(d, b"\x00\x00\x0d\x01" + struct.pack(
                  ">I", 2) + bytes(8))), DataError, ("0x0D", "float", "0x00000D01")),
    ErrorCase("data files", "truncated header", "read_idx(first 6 bytes of an image file)",
              lambda d: read_idx(damaged_idx(d, idx_bytes((2, 28, 28))[:6])), DataError,
              ("$TMP/images-idx3-ubyte", "truncated IDX header", "16 bytes", "6 bytes")),
    ErrorCase("data files", "corrupt gzip", "read_idx(gzip stream cut short)",
              lambda d: read_idx(damaged_idx(d, gzip.compress(idx_bytes((4, 28, 28)))[:40],
                                             "images.gz")),
              DataError, ("$TMP/images.gz", "corrupt gzip")),
    ErrorCase("data files", "missing file", "read_idx('$TMP/nothing-here')",
              lambda d: read_idx(d / "nothing-here"), DataError,
              ("$TMP/nothing-here", "cannot read")),
    ErrorCase("data files", "labels that do not match the images",
              "load_dataset('mnist', data_dir) with 5 labels for 8 images",
              _labels_of_other_length, DataError,
              ("train-labels-idx1-ubyte", "(8,)", "(5,)")),
    ErrorCase("data files", "float images to the loader",
              "TensorLoader(torch.zeros(8, 28, 28), labels)",
              lambda d: TensorLoader(torch.zeros(8, 28, 28), torch.zeros(8).long()),
              DTypeError, ("TensorLoader", "uint8", "torch.float32")),
    ErrorCase("data files", "labels of another length",
              "TensorLoader(images (8, 28, 28), labels (7,))",
              lambda d: TensorLoader(torch.zeros(8, 28, 28, dtype=torch.uint8),
                                     torch.zeros(7).long()),
              ShapeError, ("TensorLoader", "(8,)", "(8, 28, 28)", "(7,)")),
    ErrorCase("data files", "an empty dataset",
              "TensorLoader(images (0, 28, 28), labels (0,))",
              lambda d: TensorLoader(torch.zeros(0, 28, 28, dtype=torch.uint8),
                                     torch.zeros(0).long()),
              ShapeError, ("TensorLoader", "N >= 1", "(0, 28, 28)")),
    ErrorCase("data files", "batch size 0", "TensorLoader(images, labels, batch_size=0)",
              lambda d: TensorLoader(torch.zeros(8, 28, 28, dtype=torch.uint8),
                                     torch.zeros(8).long(), batch_size=0),
              OptionError, ("batch_size", "0")),
    ErrorCase("data files", "writing floats as IDX", "write_idx(path, torch.zeros(2, 2))",
              lambda d: write_idx(d / "out", torch.zeros(2, 2)), DTypeError,
              ("write_idx", "torch.uint8", "torch.float32")),
]

CHECKPOINT_CASES = [
    ErrorCase("checkpoints", "truncated file", "load_checkpoint(first half of the file)",
              lambda d: ckpt.load_checkpoint(damaged_checkpoint(d, "truncated")),
              CheckpointError, ("$TMP/run/checkpoint.pt", "corrupt or truncated")),
    ErrorCase("checkpoints", "corrupted bytes", "load_checkpoint(64 bytes inverted mid-file)",
              lambda d: ckpt.load_checkpoint(damaged_checkpoint(d, "flipped")),
              CheckpointError, ("$TMP/run/checkpoint.pt",)),
    ErrorCase("checkpoints", "weights changed (checksum mismatch)",
              "bias[0] += 1e-3, torch.save, load_checkpoint",
              lambda d: ckpt.load_checkpoint(resaved(d, _change_weight)), CheckpointError,
              ("$TMP/run/checkpoint.pt", "checksum", "stored", "computed")),
    ErrorCase("checkpoints", "RNG state changed (checksum mismatch)",
              "rng_state['torch'][100] ^= 1, torch.save, load_checkpoint",
              lambda d: ckpt.load_checkpoint(resaved(d, _change_rng_state)),
              CheckpointError, ("$TMP/run/checkpoint.pt", "checksum")),
    ErrorCase("checkpoints", "loader position changed (checksum mismatch)",
              "loader_state['epoch'] = 7, torch.save, load_checkpoint",
              lambda d: ckpt.load_checkpoint(resaved(d, _change_loader_position)),
              CheckpointError, ("$TMP/run/checkpoint.pt", "checksum")),
    ErrorCase("checkpoints", "not a checkpoint", "load_checkpoint(torch.save([1, 2, 3]))",
              lambda d: ckpt.load_checkpoint(_save_other_object(d)), CheckpointError,
              ("$TMP/list.pt", "not a scratchnet checkpoint", "list")),
    ErrorCase("checkpoints", "unknown format version", "format_version = 99",
              lambda d: ckpt.load_checkpoint(resaved(d, _future_version)),
              CheckpointError, ("$TMP/run/checkpoint.pt", "format_version 99")),
    ErrorCase("checkpoints", "missing file", "load_checkpoint('$TMP/none.pt')",
              lambda d: ckpt.load_checkpoint(d / "none.pt"), CheckpointError,
              ("$TMP/none.pt", "no such file")),
    ErrorCase("checkpoints", "another architecture",
              "verify_architecture(784-16-10 checkpoint, 784-32-10 model)",
              _another_architecture, CheckpointError,
              ("784-32-10", "another architecture", "(16, 784) vs (32, 784)")),
]

CLI_CASES = [
    ErrorCase("CLI", "negative learning rate", "scratchnet compare --lr -1",
              run_cli("compare", "--lr", "-1"), CliExit, ("learning rate", "-1.0")),
    ErrorCase("CLI", "layer spec that does not chain", "scratchnet compare --model 784-x-10",
              run_cli("compare", "--model", "784-x-10"), CliExit,
              ("'784-x-10'", "does not chain")),
    ErrorCase("CLI", "layer spec with the wrong ends", "scratchnet train --model 784-64-7",
              run_cli("train", "--model", "784-64-7"), CliExit,
              ("'784-64-7'", "784 inputs", "10 outputs")),
    ErrorCase("CLI", "batch size 0", "scratchnet train --batch-size 0",
              run_cli("train", "--batch-size", "0"), CliExit, ("batch size", "0")),
    ErrorCase("CLI", "epochs not an integer", "scratchnet train --epochs 2.5",
              run_cli("train", "--epochs", "2.5"), CliExit,
              ("--epochs", "invalid int", "'2.5'")),
    ErrorCase("CLI", "unknown optimizer", "scratchnet compare --optimizer rmsprop",
              run_cli("compare", "--optimizer", "rmsprop"), CliExit,
              ("optimizer", "'rmsprop'", "adam, sgd, adamw")),
    ErrorCase("CLI", "unknown device", "scratchnet train --device tpu",
              run_cli("train", "--device", "tpu"), CliExit, ("device", "'tpu'")),
    ErrorCase("CLI", "truncated training images",
              "scratchnet train --dataset mnist --data-dir DIR  # images cut short",
              run_cli("train", "--dataset", "mnist", "--data-dir", _truncated_train_images,
                      "--out", lambda d: d / "out"),
              CliExit, ("$TMP/data/train-images-idx3-ubyte", "truncated", "(8, 28, 28)")),
    ErrorCase("CLI", "missing checkpoint", "scratchnet evaluate --checkpoint $TMP/none.pt",
              run_cli("evaluate", "--checkpoint", lambda d: d / "none.pt"), CliExit,
              ("$TMP/none.pt", "no such file")),
    ErrorCase("CLI", "truncated checkpoint", "scratchnet evaluate --checkpoint HALF.pt",
              run_cli("evaluate", "--checkpoint",
                      lambda d: damaged_checkpoint(d, "truncated")),
              CliExit, ("$TMP/run/checkpoint.pt", "corrupt or truncated")),
    ErrorCase("CLI", "resume with another learning rate",
              "scratchnet train --resume CKPT --lr 0.5 --epochs 3",
              run_cli("train", "--resume", save_small_checkpoint, "--lr", "0.5",
                      "--epochs", "3"),
              CliExit, ("$TMP/run/checkpoint.pt", "--lr 0.001", "--lr 0.5")),
]

CASES: list[ErrorCase] = (LAYER_CASES + LOSS_CASES + OPTIMIZER_CASES + DATA_CASES
                          + CHECKPOINT_CASES + CLI_CASES)
AREAS = ("layers", "losses", "optimizers", "data files", "checkpoints", "CLI")


# --------------------------------------------------------------------------------------
# running a case and rendering the table


@contextlib.contextmanager
def global_rngs_kept() -> Iterator[None]:
    """torch's, numpy's and Python's global RNG states restored afterwards."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        yield
    random.setstate(python_state)
    np.random.set_state(numpy_state)


def run_case(case: ErrorCase) -> tuple[BaseException | None, str]:
    """Run ``case`` in a fresh temporary directory, the global RNGs untouched.
    Returns (what it raised or None, the message with the directory as $TMP)."""
    with tempfile.TemporaryDirectory() as name, global_rngs_kept():
        directory = Path(name).resolve()
        try:
            case.call(directory)
        except case.error as error:  # anything else propagates to the caller
            message = error.stderr if isinstance(error, CliExit) else str(error)
            return error, message.replace(str(directory), "$TMP")
    return None, ""


def one_line(message: str) -> str:
    """A multi-line message (a state_dict's list of problems) on one line."""
    return " ".join(line.strip() for line in message.strip().splitlines() if line.strip())


def exception_name(error: BaseException) -> str:
    if isinstance(error, CliExit):
        return f"exit {error.code}"
    return type(error).__name__


def _cell(text: str) -> str:
    """Markdown table cell: inline code, pipes escaped."""
    return "`" + text.replace("`", "'").replace("|", "\\|") + "`"


README_START, README_END = "<!-- error-table:start -->", "<!-- error-table:end -->"


def render_readme_section() -> str:
    """The README's copy of the table: every case, one row each (case, exception,
    message), folded in a <details> block, between the two markers."""
    lines = [README_START, "<details>",
             f"<summary>The {len(CASES)} bad inputs tried, and the error each "
             "gets</summary>", "", "| area | case | exception | message |",
             "|---|---|---|---|"]
    for area in AREAS:
        for case in (c for c in CASES if c.area == area):
            error, message = run_case(case)
            raised = exception_name(error) if error is not None else "(nothing raised)"
            lines.append(f"| {area} | {case.name} | {raised} | "
                         f"{_cell(one_line(message))} |")
    return "\n".join([*lines, "", "</details>", README_END])


def with_readme_section(readme: str, section: str) -> str:
    """``readme`` with the text between the markers replaced by ``section``."""
    start, end = readme.index(README_START), readme.index(README_END) + len(README_END)
    return readme[:start] + section + readme[end:]


_DIGEST = re.compile(r"\b[0-9a-f]{12}…")


def without_digests(text: str) -> str:
    """``text`` with every checksum prefix (12 hex digits and an ellipsis) masked.
    The checkpoint cases train a small model one Adam step, whose float32 values
    (and so the file's checksum) differ in the last bits between CPUs (AVX2 and
    AVX-512 kernels round differently); the rest of each message does not."""
    return _DIGEST.sub("<digest>…", text)


def render_markdown() -> str:
    """docs/errors.md: one table per area, generated by running every case."""
    lines = [
        "# Bad input and the errors it gets",
        "",
        "Generated by `python scripts/error_table.py` from the cases in",
        "`tests/error_cases.py`; `tests/test_errors.py` runs the same cases and fails",
        "when this file is out of date. Every exception is a",
        "`scratchnet.errors.ScratchnetError` and also the built-in a torch user would",
        "catch (`ShapeError` is a `ValueError`, `DTypeError` and `ArgumentTypeError`",
        "are `TypeError`s, ...). On the command line each error is one",
        "`scratchnet: error: ...` line on stderr and exit code 2. `$TMP` stands for",
        "the temporary directory the case ran in; checksums differ between CPUs.",
        "",
        f"{len(CASES)} cases.",
    ]
    for area in AREAS:
        lines += ["", f"## {area[0].upper()}{area[1:]}", "",
                  "| case | input | exception | message |", "|---|---|---|---|"]
        for case in (c for c in CASES if c.area == area):
            error, message = run_case(case)
            raised = exception_name(error) if error is not None else "(nothing raised)"
            lines.append(f"| {case.name} | {_cell(case.input)} | {raised} | "
                         f"{_cell(one_line(message))} |")
    return "\n".join(lines) + "\n"
