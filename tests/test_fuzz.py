"""Hypothesis drives the public API with random shapes, dtypes, layer specs,
options, file bytes: nothing raises anything but a documented exception (a
:class:`~scratchnet.errors.ScratchnetError`), and what is valid works.

Where validity is simple to state (Linear, the losses, the optimizers) the test
states it independently of scratchnet and asserts both directions: a valid
call must succeed (and, for the losses, equal torch's result), an invalid one
must raise a ScratchnetError. Elsewhere (random Sequential stacks, damaged
files) it asserts the second direction only, plus what a success must mean.
"""

from __future__ import annotations

import gzip
import math
import warnings

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scratchnet
import scratchnet.nn.functional as F
from scratchnet import checkpoint as ckpt
from scratchnet import nn, optim
from scratchnet.data import read_idx
from scratchnet.errors import CheckpointError, DataError, ScratchnetError
from tests.error_cases import idx_bytes, save_small_checkpoint
from tests.test_loss import assert_loss_parity

FLOAT_DTYPES = [torch.float32, torch.float64]
ANY_DTYPES = [torch.float32, torch.float64, torch.float16, torch.int64, torch.int32,
              torch.uint8, torch.bool]
NOT_TENSORS = st.sampled_from([None, 1.5, [1.0, 2.0], "x", (3,)])


def tensor_of(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(shape, generator=generator, dtype=torch.float64) * 3
    return values.to(dtype) if dtype != torch.bool else values > 0


def raises_only_documented(call) -> object | None:
    """Run ``call``; return its result, or None if it raised a ScratchnetError.
    Any other exception fails the test (it propagates)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's deprecation warnings
            return call()
    except ScratchnetError:
        return None


# --------------------------------------------------------------------------------------
# Linear: valid ⇔ works


@given(in_features=st.integers(0, 5), out_features=st.integers(0, 5),
       layer_dtype=st.sampled_from(FLOAT_DTYPES),
       input_shape=st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple),
       match_features=st.booleans(), input_dtype=st.sampled_from(ANY_DTYPES),
       not_a_tensor=st.one_of(st.none(), NOT_TENSORS))
def test_linear_works_exactly_on_valid_input(in_features, out_features, layer_dtype,
                                             input_shape, match_features, input_dtype,
                                             not_a_tensor):
    if match_features and input_shape:
        input_shape = (*input_shape[:-1], in_features)
    layer = nn.Linear(in_features, out_features, dtype=layer_dtype)
    x = not_a_tensor if not_a_tensor is not None else tensor_of(input_shape, input_dtype)
    valid = (isinstance(x, torch.Tensor) and x.dim() >= 1
             and x.shape[-1] == in_features and x.dtype == layer_dtype)
    out = raises_only_documented(lambda: layer(x))
    assert (out is not None) == valid, f"Linear({in_features}, {out_features}) on {x!r}"
    if valid:
        assert out.shape == (*input_shape[:-1], out_features)
        out.sum().backward()
        assert layer.weight.grad.shape == (out_features, in_features)


# --------------------------------------------------------------------------------------
# random stacks of layers: only documented errors; valid chains work


LAYER_KINDS = ["linear", "relu", "sigmoid", "tanh", "leaky_relu", "gelu", "dropout",
               "flatten", "softmax", "log_softmax", "step", "identity"]


@st.composite
def layer_specs(draw) -> tuple[str, dict]:
    """One layer kind and constructor arguments, valid or not."""
    kind = draw(st.sampled_from(LAYER_KINDS))
    options = {
        "linear": lambda: {"in_features": draw(st.integers(-1, 6)),
                           "out_features": draw(st.integers(0, 6))},
        "leaky_relu": lambda: {"negative_slope": draw(st.one_of(
            st.floats(-2, 2), st.just("0.1")))},
        "gelu": lambda: {"approximate": draw(st.sampled_from(["none", "tanh", "fast"]))},
        "dropout": lambda: {"p": draw(st.one_of(st.floats(-0.5, 1.5), st.just(math.nan)))},
        "flatten": lambda: {"start_dim": draw(st.integers(-4, 4)),
                            "end_dim": draw(st.integers(-4, 4))},
        "softmax": lambda: {"dim": draw(st.one_of(st.none(), st.integers(-4, 4)))},
        "log_softmax": lambda: {"dim": draw(st.one_of(st.none(), st.integers(-4, 4)))},
    }.get(kind, dict)()
    return kind, options


def build_layer(kind: str, options: dict) -> nn.Module:
    classes = {"linear": nn.Linear, "relu": nn.ReLU, "sigmoid": nn.Sigmoid,
               "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU,
               "dropout": nn.Dropout, "flatten": nn.Flatten, "softmax": nn.Softmax,
               "log_softmax": nn.LogSoftmax, "step": nn.Step, "identity": nn.Identity}
    return classes[kind](**options)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(specs=st.lists(layer_specs(), min_size=1, max_size=5),
       input_shape=st.lists(st.integers(0, 6), min_size=0, max_size=4).map(tuple),
       input_dtype=st.sampled_from(ANY_DTYPES), model_dtype=st.sampled_from(FLOAT_DTYPES),
       train=st.booleans(), seed=st.integers(0, 2**16))
def test_random_layer_stacks_raise_only_documented_errors(specs, input_shape, input_dtype,
                                                          model_dtype, train, seed):
    torch.manual_seed(seed)
    model = raises_only_documented(
        lambda: nn.Sequential(*[build_layer(*spec) for spec in specs]).to(model_dtype))
    if model is None:
        return  # a bad constructor argument, refused with a ScratchnetError
    model.train(train)
    x = tensor_of(input_shape, input_dtype, seed)
    out = raises_only_documented(lambda: model(x))
    if isinstance(out, scratchnet.Tensor):  # on the tape (a float input was)
        raises_only_documented(lambda: out.sum().backward())


@given(sizes=st.lists(st.integers(1, 6), min_size=2, max_size=5),
       activation=st.sampled_from(["relu", "sigmoid", "tanh", "leaky_relu", "gelu",
                                   "step", "identity"]),
       batch=st.integers(0, 5), dtype=st.sampled_from(FLOAT_DTYPES),
       head=st.sampled_from([None, "softmax", "log_softmax", "dropout"]))
def test_valid_layer_chains_work(sizes, activation, batch, dtype, head):
    layers = []
    for in_features, out_features in zip(sizes, sizes[1:], strict=False):
        layers += [nn.Linear(in_features, out_features, dtype=dtype),
                   build_layer(activation, {})]
    if head in ("softmax", "log_softmax"):
        layers.append(build_layer(head, {"dim": 1}))
    elif head == "dropout":
        layers.append(nn.Dropout(0.3))
    model = nn.Sequential(*layers)
    out = model(tensor_of((batch, 1, sizes[0]), dtype).reshape(batch, sizes[0]))
    assert out.shape == (batch, sizes[-1]) and out.dtype == dtype
    out.sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.shape == param.shape, name


# --------------------------------------------------------------------------------------
# losses: valid ⇔ works, and then equal to torch


@st.composite
def loss_calls(draw) -> dict:
    """Input, target, weight and options for cross_entropy / nll_loss, each
    drawn from valid and invalid choices."""
    rank = draw(st.integers(0, 3))
    shape = tuple(draw(st.integers(0, 4)) for _ in range(rank))
    input_dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.int64]))
    n_classes = (shape[0] if rank == 1 else shape[1]) if rank >= 1 else 0
    expected_target = () if rank <= 1 else (shape[0], *shape[2:])
    target_kind = draw(st.sampled_from(["index", "probability", "bad shape", "list"]))
    target_dtype = draw(st.sampled_from([torch.int64, torch.uint8, torch.int32]))
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    ignore_index = draw(st.sampled_from([-100, 0, 2, 1.5]))
    if target_kind == "index":
        high = max(n_classes, 1) + draw(st.integers(0, 1))  # sometimes one too many
        target = torch.randint(-1, high, expected_target, generator=generator)
        target = torch.where(target < 0, -100 if draw(st.booleans()) else -1, target)
        target = target.to(target_dtype) if target_dtype != torch.uint8 else (
            target.clamp(min=0).to(torch.uint8))
    elif target_kind == "probability":
        target = torch.rand(shape, generator=generator).to(
            draw(st.sampled_from([input_dtype, torch.float64])))
    elif target_kind == "bad shape":
        target = torch.zeros((*expected_target, 2), dtype=torch.int64)
    else:
        target = [0, 1]
    weight = draw(st.sampled_from([None, "right", "short", "other dtype"]))
    weight = {None: None,
              "right": torch.ones(n_classes, dtype=input_dtype),
              "short": torch.ones(n_classes + 1, dtype=input_dtype),
              "other dtype": torch.ones(n_classes, dtype=torch.float16)}[weight]
    return {
        "input": tensor_of(shape, input_dtype, seed), "target": target, "weight": weight,
        "ignore_index": ignore_index,
        "reduction": draw(st.sampled_from(["mean", "sum", "none", "avg"])),
        "label_smoothing": draw(st.sampled_from([0.0, 0.3, 1.0, -0.1, 1.5, math.nan])),
    }


def cross_entropy_is_valid(input, target, weight, ignore_index, reduction,
                           label_smoothing) -> bool:
    """torch.nn.functional.cross_entropy's contract, stated independently."""
    if not (input.is_floating_point() and input.dim() >= 1):
        return False
    n_classes = input.shape[0] if input.dim() == 1 else input.shape[1]
    if n_classes == 0 or not isinstance(target, torch.Tensor):
        return False
    if not isinstance(ignore_index, int) or reduction not in ("mean", "sum", "none"):
        return False
    if not 0.0 <= label_smoothing <= 1.0:
        return False
    if weight is not None and (weight.shape != (n_classes,) or weight.dtype != input.dtype):
        return False
    if target.is_floating_point():
        return (target.shape == input.shape and target.dtype == input.dtype
                and ignore_index < 0)
    expected = () if input.dim() == 1 else (input.shape[0], *input.shape[2:])
    if target.dtype not in (torch.int64, torch.uint8) or target.shape != expected:
        return False
    counted = target.long()[target.long() != ignore_index]
    return bool(((counted >= 0) & (counted < n_classes)).all())


@given(call=loss_calls())
def test_cross_entropy_works_exactly_on_valid_input_and_equals_torch(call):
    valid = cross_entropy_is_valid(**call)
    out = raises_only_documented(lambda: F.cross_entropy(**call))
    assert (out is not None) == valid, f"valid={valid}: {call}"
    if valid:
        assert_loss_parity(out, TF.cross_entropy(**_as_torch_takes_it(call)),
                           f"cross_entropy {call}")


def _as_torch_takes_it(call: dict) -> dict:
    """torch takes uint8 class indices, except with class weights and label
    smoothing together, where an internal gather of the weights by the targets
    raises ("gather(): Expected dtype int32/int64 for index"). scratchnet
    takes them there too; torch's value is then the one for the same classes
    as int64."""
    target = call["target"]
    if (target.dtype == torch.uint8 and call["weight"] is not None
            and call["label_smoothing"] > 0):
        return {**call, "target": target.long()}
    return call


@given(call=loss_calls())
def test_nll_loss_raises_only_documented_errors(call):
    del call["label_smoothing"]
    out = raises_only_documented(lambda: F.nll_loss(**call))
    if out is not None:
        assert isinstance(out, torch.Tensor)


@given(input_shape=st.lists(st.integers(0, 3), max_size=3).map(tuple),
       target_shape=st.lists(st.integers(0, 3), max_size=3).map(tuple),
       input_dtype=st.sampled_from(ANY_DTYPES), target_dtype=st.sampled_from(ANY_DTYPES),
       reduction=st.sampled_from(["mean", "sum", "none", "avg"]))
def test_mse_loss_works_exactly_on_same_shaped_float_input(input_shape, target_shape,
                                                           input_dtype, target_dtype,
                                                           reduction):
    x, y = tensor_of(input_shape, input_dtype), tensor_of(target_shape, target_dtype)
    valid = (x.is_floating_point() and x.shape == y.shape and x.dtype == y.dtype
             and reduction != "avg")
    out = raises_only_documented(lambda: F.mse_loss(x, y, reduction=reduction))
    assert (out is not None) == valid, (x.shape, x.dtype, y.shape, y.dtype, reduction)


# --------------------------------------------------------------------------------------
# optimizers: valid options ⇔ constructs and steps


NUMBERS = st.one_of(st.floats(-1, 2), st.sampled_from(
    [0.0, 1e-3, math.nan, math.inf, -math.inf, 0, 1, True, "0.1", None]))
BETAS = st.one_of(st.tuples(st.floats(-0.5, 1.5), st.floats(-0.5, 1.5)),
                  st.sampled_from([(0.9,), (0.9, 0.99, 0.999), 0.9, (0, 0), (0.9, "x"),
                                   [0.9, 0.999], (0.9, math.nan)]))


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def non_negative(value: object) -> bool:
    return is_number(value) and value >= 0  # False for nan


@given(name=st.sampled_from(["Adam", "AdamW"]), lr=NUMBERS, betas=BETAS, eps=NUMBERS,
       weight_decay=NUMBERS, amsgrad=st.booleans(), maximize=st.booleans())
def test_adam_options_valid_exactly_when_torch_would_say_so(name, lr, betas, eps,
                                                            weight_decay, amsgrad,
                                                            maximize):
    valid = (non_negative(lr) and non_negative(eps) and non_negative(weight_decay)
             and isinstance(betas, (tuple, list)) and len(betas) == 2
             and all(isinstance(b, float) and 0 <= b < 1 for b in betas))
    param = nn.Parameter(torch.ones(3))
    optimizer = raises_only_documented(lambda: getattr(optim, name)(
        [param], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
        amsgrad=amsgrad, maximize=maximize))
    assert (optimizer is not None) == valid, (lr, betas, eps, weight_decay)
    if valid:
        param.grad = torch.full((3,), 0.5)
        optimizer.step()
        assert int(optimizer.state[param]["step"]) == 1


@given(lr=NUMBERS, momentum=NUMBERS, dampening=NUMBERS, weight_decay=NUMBERS,
       nesterov=st.booleans())
def test_sgd_options_valid_exactly_when_stated(lr, momentum, dampening, weight_decay,
                                               nesterov):
    valid = (non_negative(lr) and non_negative(momentum) and is_number(dampening)
             and non_negative(weight_decay)
             and (not nesterov or (momentum > 0 and dampening == 0)))
    param = nn.Parameter(torch.ones(3))
    optimizer = raises_only_documented(lambda: optim.SGD(
        [param], lr=lr, momentum=momentum, dampening=dampening,
        weight_decay=weight_decay, nesterov=nesterov))
    assert (optimizer is not None) == valid, (lr, momentum, dampening, weight_decay)
    if valid:
        param.grad = torch.full((3,), 0.5)
        optimizer.step()


@given(params=st.lists(st.sampled_from(["param", "int", "non-leaf", "group", "named",
                                        "no params key"]), max_size=3))
def test_optimizer_param_lists_raise_only_documented_errors(params):
    def make(kind: str) -> object:
        parameter = nn.Parameter(torch.ones(2))
        return {"param": parameter, "int": 3,
                "non-leaf": F.relu(scratchnet.leaf(torch.ones(2))),
                "group": {"params": [parameter], "lr": 0.1},
                "named": ("w", parameter), "no params key": {"lr": 0.1}}[kind]

    raises_only_documented(lambda: optim.Adam([make(kind) for kind in params]))


# --------------------------------------------------------------------------------------
# files: damaged bytes are refused, or read back exactly


@st.composite
def damaged(draw, content: bytes) -> bytes:
    """``content`` truncated, extended, or with a run of bytes overwritten."""
    how = draw(st.sampled_from(["truncate", "append", "overwrite"]))
    if how == "truncate":
        return content[: draw(st.integers(0, len(content) - 1))]
    if how == "append":
        return content + draw(st.binary(min_size=1, max_size=8))
    start = draw(st.integers(0, len(content) - 1))
    patch = draw(st.binary(min_size=1, max_size=16))
    return content[:start] + patch + content[start + len(patch):]


IDX_FILE = idx_bytes((3, 4, 5))


@given(content=st.one_of(damaged(IDX_FILE), damaged(gzip.compress(IDX_FILE, mtime=0)),
                         st.binary(max_size=64)))
def test_damaged_idx_is_refused_or_read_as_a_consistent_file(content, tmp_path_factory):
    path = tmp_path_factory.mktemp("idx") / "file"
    path.write_bytes(content)
    try:
        images = read_idx(path)
    except DataError:
        return
    raw = gzip.decompress(content) if content[:2] == b"\x1f\x8b" else content
    # a file that reads must be exactly its header and prod(shape) bytes
    assert images.dtype == torch.uint8 and 1 <= images.dim() <= 3
    assert len(raw) == 4 + 4 * images.dim() + images.numel()
    assert raw[4 + 4 * images.dim():] == images.numpy().tobytes()


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory) -> tuple[bytes, dict]:
    path = save_small_checkpoint(tmp_path_factory.mktemp("checkpoint"))
    return path.read_bytes(), ckpt.load_checkpoint(path)


@settings(max_examples=40)
@given(data=st.data())
def test_damaged_checkpoint_is_refused_or_loads_unchanged(small_checkpoint, data,
                                                          tmp_path_factory):
    """A damaged checkpoint either raises CheckpointError or loads with every
    checksummed field exactly as saved (only metrics are outside the checksum)."""
    content, original = small_checkpoint
    path = tmp_path_factory.mktemp("damaged") / "checkpoint.pt"
    path.write_bytes(data.draw(damaged(content)))
    try:
        loaded = ckpt.load_checkpoint(path)
    except CheckpointError:
        return
    # it loaded: the damage must have missed everything the checksum covers
    for key in ckpt.CHECKSUMMED_KEYS:
        assert ckpt.checkpoint_checksum({key: loaded[key], **{
            k: original[k] for k in ckpt.CHECKSUMMED_KEYS if k != key}}) == \
            original["checksum"], f"{key} changed but the checkpoint loaded"

