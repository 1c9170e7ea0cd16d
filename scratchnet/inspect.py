"""``scratchnet inspect``: one batch through scratchnet and torch.nn, layer by layer.

For a model (a seed name or a layer spec, optionally with a checkpoint's
weights) and one batch, it runs a cross-entropy forward and backward on
scratchnet and on the torch.nn reference model holding the same weights, and
shows, for every leaf module in the order it was called:

- its output shape, parameter count and the FLOPs of its forward and backward
  (:func:`layer_flops` says how they are counted);
- for each tensor it touches — its ``output``, ``d output`` (d loss / d output,
  made by the layers after it), ``d input`` (what its own backward makes) and
  ``d <param>`` — the mean, std, fraction of zeros and L2 norm;
- beside each, the largest difference from torch.nn's tensor, in three units
  (:func:`parity`): absolute, in ULPs of the dtype at torch's value, and as the
  share of the parity tolerance it uses (tests/oracles.py's contract:
  float64 rtol 1e-12 with an absolute floor of 1e-12 × the tensor's largest
  magnitude; float32 ``torch.testing.assert_close``'s rtol 1.3e-6, atol 1e-5).

Where a tensor differs beyond the tolerance, a third oracle decides
(:func:`judge_layer`): the layer is run again on torch's own inputs (so a
difference inherited from earlier layers is told apart from one the layer
makes), by scratchnet, by torch.nn and in higher precision — float64 torch for
a float32 run; exact rationals (Linear) or 60-digit mpmath for a float64 run —
and the side closer to the truth is named. torch is sometimes the one that is
wrong: its float64 sigmoid backward is ``dout · (1 − out) · out``, and at
x = 37.4 the output rounds to exactly 1, so it returns 0 where the true
gradient, e^−37.4 / (1 + e^−37.4)² ≈ 5.7e-17, is an ordinary float64.

The batch is the first one ``scratchnet train --seed S`` would take (the
seed-shuffled training loader), or uniform random pixels (``--dataset random``).
The batch itself is put on the tape as a leaf, so every layer's ``d input``
exists, the first layer's included.

B = batch, C = classes, n = elements of a layer's output.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from scratchnet.errors import ShapeError

RANDOM_DATASET = "random"
ORACLE_ELEMENTS = 8  # float64 runs: elements recomputed exactly per tensor (the worst)
FLOAT32_ORACLE_ELEMENTS = 1024  # float32 runs: at most this many (the worst) judged
MPMATH_DIGITS = 60  # decimal digits of the float64 oracle's arithmetic
FLOAT64_RTOL = 1e-12  # tests/oracles.py: float64 parity, relative …
FLOAT64_ATOL_SCALE = 1e-12  # … with an absolute floor of 1e-12 · max |expected|
FLOAT32_RTOL, FLOAT32_ATOL = 1.3e-6, 1e-5  # torch.testing.assert_close's float32 defaults


# --------------------------------------------------------------------------------------
# configuration


@dataclass
class InspectConfig:
    """What ``scratchnet inspect`` looks at. ``model``, ``activation`` and
    ``dtype`` left as None come from the checkpoint's config, else
    NeuralNetwork / the model's own / float32."""

    model: str | None = None
    activation: str | None = None
    checkpoint: str | None = None
    dataset: str = "fashion-mnist"
    batch_size: int = 64
    dtype: str | None = None
    seed: int = 0
    device: str = "cpu"
    data_dir: str | None = None
    eval_mode: bool = False


# --------------------------------------------------------------------------------------
# recording every leaf module's call


@dataclass
class LayerCall:
    """One call of a leaf module: its dotted path, the module, the tensors it was
    given and the tensor it returned."""

    path: str
    module: Any
    inputs: tuple
    output: Any


def leaf_modules(model: Any) -> list[tuple[str, Any]]:
    """(dotted path, module) of every module without children, in registration
    order; a model that is itself a leaf is named by its class."""
    leaves = [(path, module) for path, module in model.named_modules()
              if next(iter(module.children()), None) is None]
    return [(path or type(module).__name__, module) for path, module in leaves]


@contextlib.contextmanager
def record_leaf_calls(model: Any, use_hooks: bool = True) -> Iterator[list[LayerCall]]:
    """Record every leaf module's call inside the ``with`` block, in call order.

    Uses ``register_forward_hook`` (torch's signature: ``hook(module, args,
    output)``) where the model has it; otherwise, or with ``use_hooks=False``,
    wraps each leaf's ``forward`` for the duration of the block. Either way the
    model computes exactly what it would without recording."""
    calls: list[LayerCall] = []
    undo: list[Callable[[], None]] = []
    try:
        for path, module in leaf_modules(model):
            undo.append(_watch(path, module, calls, use_hooks))
        yield calls
    finally:
        for restore in reversed(undo):
            restore()


def _watch(path: str, module: Any, calls: list[LayerCall],
           use_hooks: bool) -> Callable[[], None]:
    """Start recording ``module``'s calls into ``calls``; returns the undo."""
    if use_hooks and hasattr(module, "register_forward_hook"):
        def hook(hooked: Any, args: tuple, output: Any) -> None:
            calls.append(LayerCall(path, hooked, tuple(args), output))

        return module.register_forward_hook(hook).remove
    original_forward = module.forward

    def recording_forward(*args: Any, **kwargs: Any) -> Any:
        output = original_forward(*args, **kwargs)
        calls.append(LayerCall(path, module, args, output))
        return output

    module.__dict__["forward"] = recording_forward  # an instance attribute wins
    return lambda: module.__dict__.pop("forward", None)


# --------------------------------------------------------------------------------------
# parity: absolute, ULPs, share of the tolerance


@dataclass
class Parity:
    """How far scratchnet's tensor is from torch's, maximised over elements.

    max_abs: max |s − t|. max_ulps: max |s − t| / ulp(t), ulp(t) = the gap from
    |t| to the next larger number of the dtype. tolerance_share: max |s − t| /
    (atol + rtol · |t|), 1.0 = at the parity tolerance. Two NaNs or two equal
    infinities count as equal; a NaN or infinity against anything else is inf.
    """

    max_abs: float
    max_ulps: float
    tolerance_share: float

    @property
    def within(self) -> bool:
        return self.tolerance_share <= 1.0


def tolerance(expected: torch.Tensor) -> tuple[float, float]:
    """(rtol, atol) of the parity contract for ``expected``'s dtype."""
    if expected.dtype == torch.float64:
        finite = expected[torch.isfinite(expected)]
        scale = float(finite.abs().max()) if finite.numel() else 0.0
        return FLOAT64_RTOL, FLOAT64_ATOL_SCALE * scale
    return FLOAT32_RTOL, FLOAT32_ATOL


def ulp(values: torch.Tensor) -> torch.Tensor:
    """The unit in the last place of the dtype at each value: nextafter(|v|, inf)
    − |v|, exact (two neighbouring floats differ by a power of two)."""
    magnitude = values.abs()
    return torch.nextafter(magnitude, torch.full_like(magnitude, math.inf)) - magnitude


def elementwise_parity(actual: torch.Tensor, expected: torch.Tensor,
                       tolerances: tuple[float, float] | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """|s − t|, |s − t| in ULPs of t, and |s − t| / (atol + rtol·|t|), per element,
    in float64 (exact for float32 inputs). ``tolerances``: (rtol, atol), by
    default :func:`tolerance` of ``expected``."""
    rtol, atol = tolerance(expected) if tolerances is None else tolerances
    s, t = actual.double(), expected.double()  # (*)
    same = (s == t) | (s.isnan() & t.isnan())  # (*)
    difference = torch.where(same, 0.0, _nan_as_inf((s - t).abs()))  # (*)
    gap = ulp(expected).double()  # (*)
    ulps = torch.where(same, 0.0, difference / gap)  # (*), inf where t is inf
    allowed = atol + rtol * t.abs()  # (*)
    share = torch.where(same, 0.0, difference / allowed)  # (*), inf where allowed = 0
    return difference, _nan_as_inf(ulps), _nan_as_inf(share)


def _nan_as_inf(values: torch.Tensor) -> torch.Tensor:
    return torch.where(values.isnan(), math.inf, values)


def parity(actual: torch.Tensor, expected: torch.Tensor) -> Parity:
    """The largest difference of ``actual`` (scratchnet) from ``expected`` (torch)."""
    if actual.shape != expected.shape:
        raise ShapeError(f"parity: scratchnet's tensor has shape {tuple(actual.shape)} "
                         f"but torch's has {tuple(expected.shape)}")
    differ = actual != expected  # (*); NaN ≠ NaN, sorted out below
    if not differ.any():
        return Parity(0.0, 0.0, 0.0)
    # only the elements that differ: the tolerance's floor still comes from all of t
    differing, reference = actual[differ], expected[differ]  # (k,), (k,)
    tolerances = tolerance(expected)
    fast = _finite_parity(differing, reference, tolerances)
    if fast is not None:
        return fast
    difference, ulps, share = elementwise_parity(differing, reference, tolerances)
    return Parity(float(difference.max()), float(ulps.max()), float(share.max()))


def _finite_parity(actual: torch.Tensor, expected: torch.Tensor,
                   tolerances: tuple[float, float]) -> Parity | None:
    """:func:`parity`'s maxima in fewer passes, for elements that all differ;
    None when a NaN or infinity (or a zero allowance) needs the careful path."""
    rtol, atol = tolerances
    s, t = actual.double(), expected.double()  # (k,)
    difference = (s - t).abs()  # (k,)
    gap = ulp(expected).double()  # (k,)
    largest = [float((difference / gap).max()), float(difference.max()),
               float((difference / (atol + rtol * t.abs())).max())]
    if not all(math.isfinite(value) for value in largest):  # NaN propagates into max
        return None
    return Parity(largest[1], largest[0], largest[2])


# --------------------------------------------------------------------------------------
# FLOPs


KNOWN_LAYERS = ("Linear", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "Step",
                "Softmax", "LogSoftmax", "Flatten", "Identity", "Dropout", "BatchNorm1d",
                "CrossEntropyLoss")


def layer_type(module: Any) -> str:
    """The name of the first class in ``module``'s MRO that this file knows
    (a subclass of Sigmoid is a Sigmoid here), else its own class name."""
    for cls in type(module).__mro__:
        if cls.__name__ in KNOWN_LAYERS:
            return cls.__name__
    return type(module).__name__


def _elementwise_flops(type_name: str, module: Any) -> tuple[int, int] | None:
    """(forward, backward) FLOPs per output element of an element-wise or
    row-wise layer, counting every +, −, ×, ÷, comparison and transcendental
    (exp, erf, tanh, log) as one, as the scratchnet code writes it."""
    if type_name == "GELU":
        return (9, 17) if getattr(module, "approximate", "none") == "tanh" else (5, 11)
    if type_name == "Dropout":
        return (1, 1) if module.training and module.p > 0 else (0, 0)
    if type_name == "BatchNorm1d":
        # training: mean, x − μ, square, sum, × 1/σ, affine (2); backward: about 10
        return (7, 10) if module.training or not module.track_running_stats else (4, 4)
    per_element = {
        "ReLU": (1, 1), "LeakyReLU": (2, 2), "Sigmoid": (4, 3), "Tanh": (1, 3),
        "Step": (2, 0), "Flatten": (0, 0), "Identity": (0, 0),
        "Softmax": (5, 4), "LogSoftmax": (5, 4),  # max, −, exp, Σ, ×|− ; ·, Σ, −, ×
        "CrossEntropyLoss": (5, 3),  # log_softmax, pick; softmax − one-hot, ÷ B
    }
    return per_element.get(type_name)


def layer_flops(module: Any, input_shape: Sequence[int], output_shape: Sequence[int],
                needs_dx: bool) -> tuple[int | None, int | None]:
    """(forward, backward) FLOPs of one call; None where the type is unknown.

    Linear, with R = rows (B, or the product of all leading dims): forward
    2·R·D_in·D_out (a multiply and an add per term) + R·D_out (bias); backward
    2·R·D_out·D_in for dweight, R·D_out for dbias, and 2·R·D_out·D_in for dx
    only when ``needs_dx`` — a training step skips dx for a layer no parameter
    comes before. Other layers: :func:`_elementwise_flops` per output element
    (a backward with no ``needs_dx`` costs nothing)."""
    type_name = layer_type(module)
    if type_name == "Linear":
        rows = math.prod(input_shape[:-1])
        d_in, d_out = module.in_features, module.out_features
        has_bias = module.bias is not None
        forward = 2 * rows * d_in * d_out + (rows * d_out if has_bias else 0)
        backward = 2 * rows * d_out * d_in + (rows * d_out if has_bias else 0)
        return forward, backward + (2 * rows * d_out * d_in if needs_dx else 0)
    per_element = _elementwise_flops(type_name, module)
    if per_element is None:
        return None, None
    n = math.prod(output_shape) if type_name != "CrossEntropyLoss" \
        else math.prod(input_shape)
    has_params = next(iter(module.parameters()), None) is not None
    backward = per_element[1] * n if needs_dx or has_params else 0
    return per_element[0] * n, backward


# --------------------------------------------------------------------------------------
# one side's forward and backward


@dataclass
class SideRun:
    """What one backend computed: the calls (the loss last, as path ``loss``),
    each call's d output, d input (one per tensor input) and parameter
    gradients, keyed by call index."""

    calls: list[LayerCall]
    loss: torch.Tensor
    d_output: list[torch.Tensor | None]
    d_inputs: list[list[torch.Tensor | None]]
    d_params: list[dict[str, torch.Tensor | None]]


def _is_float_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point()


def run_scratchnet(model: Any, x: torch.Tensor, y: torch.Tensor,
                   use_hooks: bool = True) -> SideRun:
    """Forward and cross-entropy backward on scratchnet's tape.

    d output and d input come from :func:`scratchnet.autodiff.grad`, one tensor
    at a time (a requested tensor is where grad stops, so each is asked for
    alone); the parameter gradients from ``loss.backward()``."""
    import scratchnet
    import scratchnet.nn
    from scratchnet.autodiff import grad, plain

    model.zero_grad(set_to_none=True)
    batch = scratchnet.leaf(x.detach().clone())  # on the tape: d input of layer 1
    loss_fn = scratchnet.nn.CrossEntropyLoss()
    with record_leaf_calls(model, use_hooks) as calls:
        output = model(batch)  # (B, C)
    loss = loss_fn(output, y)  # ()
    calls.append(LayerCall("loss", loss_fn, (output, y), loss))
    gradients: dict[int, torch.Tensor | None] = {}

    def d_loss_by(tensor: Any) -> torch.Tensor | None:
        if not isinstance(tensor, scratchnet.Tensor):
            return None
        if id(tensor) not in gradients:
            gradients[id(tensor)] = plain(grad(loss, [tensor])[0])
        return gradients[id(tensor)]

    d_output = [d_loss_by(call.output) if call.path != "loss" else torch.ones_like(
        plain(loss)) for call in calls]
    d_inputs = [[d_loss_by(value) for value in call.inputs if _is_float_tensor(value)]
                for call in calls]
    loss.backward()
    d_params = [{name: None if param.grad is None else param.grad.detach().clone()
                 for name, param in call.module.named_parameters()} for call in calls]
    return SideRun(calls, plain(loss).detach(), d_output, d_inputs, d_params)


def run_torch(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> SideRun:
    """The same with torch.nn and torch.autograd (the oracle)."""
    model.zero_grad(set_to_none=True)
    batch = x.detach().clone().requires_grad_(True)
    loss_fn = torch.nn.CrossEntropyLoss()
    with record_leaf_calls(model) as calls:
        output = model(batch)  # (B, C)
    loss = loss_fn(output, y)  # ()
    calls.append(LayerCall("loss", loss_fn, (output, y), loss))
    wanted = {}
    for call in calls:
        for value in (call.output, *call.inputs):
            if _is_float_tensor(value) and value.requires_grad:
                wanted[id(value)] = value
    found = torch.autograd.grad(loss, list(wanted.values()), retain_graph=True,
                                allow_unused=True)
    by_id = dict(zip(wanted, found, strict=True))
    d_output = [by_id.get(id(call.output)) for call in calls]
    d_inputs = [[by_id.get(id(value)) for value in call.inputs if _is_float_tensor(value)]
                for call in calls]
    loss.backward()
    d_params = [{name: None if param.grad is None else param.grad.detach().clone()
                 for name, param in call.module.named_parameters()} for call in calls]
    return SideRun(calls, loss.detach(), d_output, d_inputs, d_params)


# --------------------------------------------------------------------------------------
# the report


@dataclass
class TensorRow:
    """One tensor of one layer: scratchnet's statistics, and its parity with
    torch's (None where one side has no such tensor)."""

    name: str
    shape: tuple[int, ...]
    mean: float
    std: float
    zeros: float  # fraction of elements exactly 0
    norm: float  # L2 norm
    parity: Parity | None
    oracle: str | None = None  # the verdict where beyond tolerance
    values: torch.Tensor | None = field(default=None, repr=False)  # for --plot

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "mean": self.mean,
                "std": self.std, "zeros": self.zeros, "norm": self.norm,
                "parity": None if self.parity is None else vars(self.parity),
                "within_tolerance": None if self.parity is None else self.parity.within,
                "oracle": self.oracle}


@dataclass
class LayerReport:
    path: str
    description: str  # the first line of repr(module): Linear(in_features=…)
    output_shape: tuple[int, ...]
    parameters: int
    flops_forward: int | None
    flops_backward: int | None
    rows: list[TensorRow]

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "module": self.description,
                "output_shape": list(self.output_shape), "parameters": self.parameters,
                "flops_forward": self.flops_forward,
                "flops_backward": self.flops_backward,
                "tensors": [row.to_dict() for row in self.rows]}


@dataclass
class InspectReport:
    title: str
    dtype: str
    loss: tuple[float, float]  # (scratchnet, torch)
    layers: list[LayerReport]
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        rtol, atol = (FLOAT64_RTOL, f"{FLOAT64_ATOL_SCALE:g} * max|torch|") \
            if self.dtype == "float64" else (FLOAT32_RTOL, FLOAT32_ATOL)
        return {"title": self.title, "dtype": self.dtype,
                "loss": {"scratchnet": self.loss[0], "torch": self.loss[1]},
                "tolerance": {"rtol": rtol, "atol": atol},
                "seconds": self.seconds, "layers": [layer.to_dict() for layer in self.layers]}


def tensor_row(name: str, ours: torch.Tensor | None, theirs: torch.Tensor | None
               ) -> TensorRow | None:
    """Statistics of scratchnet's tensor and its parity with torch's."""
    if ours is None:
        return None
    values = ours.detach().as_subclass(torch.Tensor)
    stats = values.double()
    count = stats.numel()
    return TensorRow(
        name=name, shape=tuple(values.shape),
        mean=float(stats.mean()) if count else math.nan,
        std=float(stats.std()) if count > 1 else math.nan,
        zeros=float((stats == 0).double().mean()) if count else math.nan,
        norm=float(stats.norm()),
        parity=None if theirs is None else parity(values, theirs.detach()),
        values=values)


def _description(module: Any) -> str:
    return repr(module).split("\n")[0]


def compare_runs(ours: SideRun, theirs: SideRun) -> list[LayerReport]:
    """One :class:`LayerReport` per call, scratchnet's numbers beside torch's."""
    from scratchnet.autodiff import plain

    paths = [call.path for call in ours.calls]
    if paths != [call.path for call in theirs.calls]:
        raise ShapeError(f"inspect: scratchnet called its layers {paths} but torch.nn "
                         f"called {[call.path for call in theirs.calls]}: the two "
                         "models differ")
    layers, parameter_seen = [], False
    for i, (call, reference) in enumerate(zip(ours.calls, theirs.calls, strict=True)):
        output = plain(call.output).detach()
        inputs = [plain(v) for v in call.inputs if _is_float_tensor(v)]
        parameters = sum(p.numel() for p in call.module.parameters())
        flops = layer_flops(call.module, tuple(inputs[0].shape) if inputs else (),
                            tuple(output.shape), needs_dx=parameter_seen)
        parameter_seen = parameter_seen or parameters > 0
        candidates = [tensor_row("output", output, reference.output),
                      tensor_row("d output", ours.d_output[i], theirs.d_output[i])]
        for k, (d_in, d_in_torch) in enumerate(zip(
                ours.d_inputs[i], theirs.d_inputs[i], strict=True)):
            suffix = "" if len(ours.d_inputs[i]) == 1 else f" {k}"
            candidates.append(tensor_row(f"d input{suffix}", d_in, d_in_torch))
        for name, d_param in ours.d_params[i].items():
            candidates.append(tensor_row(f"d {name}", d_param,
                                         theirs.d_params[i].get(name)))
        rows = [row for row in candidates if row is not None]
        layers.append(LayerReport(call.path, _description(call.module),
                                  tuple(output.shape), parameters, *flops, rows))
    _number_repeated_calls(layers)
    return layers


def _number_repeated_calls(layers: list[LayerReport]) -> None:
    """A module called twice appears as ``path (call 1)``, ``path (call 2)``."""
    counts: dict[str, int] = {}
    for layer in layers:
        counts[layer.path] = counts.get(layer.path, 0) + 1
    seen: dict[str, int] = {}
    for layer in layers:
        if counts[layer.path] > 1:
            seen[layer.path] = seen.get(layer.path, 0) + 1
            layer.path = f"{layer.path} (call {seen[layer.path]})"


# --------------------------------------------------------------------------------------
# the third oracle: which side is closer to the truth


@dataclass
class IsolatedRun:
    """One layer run alone on given inputs and d output: its output, d inputs and
    parameter gradients, by row name."""

    tensors: dict[str, torch.Tensor | None]


def _row_names(module: Any, float_inputs: int) -> list[str]:
    inputs = ["d input"] if float_inputs == 1 else [f"d input {k}"
                                                    for k in range(float_inputs)]
    return ["output", *inputs, *(f"d {name}" for name, _ in module.named_parameters())]


@contextlib.contextmanager
def _state_kept(module: Any, seed: int) -> Iterator[None]:
    """Run a module again without it keeping anything (running statistics go back),
    with torch's RNG at ``seed`` (a Dropout mask is drawn alike on both sides)."""
    saved = {name: value.detach().clone() for name, value in module.state_dict().items()}
    rng = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(rng)
        if saved:
            module.load_state_dict(saved)


def isolated_scratchnet(module: Any, inputs: Sequence[Any], d_output: torch.Tensor,
                        seed: int) -> IsolatedRun:
    """scratchnet's layer alone, on copies of ``inputs``."""
    import scratchnet
    from scratchnet.autodiff import grad, plain

    leaves = [scratchnet.leaf(v.detach().clone()) if _is_float_tensor(v) else v
              for v in inputs]
    float_leaves = [v for v in leaves if isinstance(v, scratchnet.Tensor)]
    params = [param for _, param in module.named_parameters()]
    with _state_kept(module, seed):
        output = module(*leaves)
        grads = grad(output, [*float_leaves, *params], d_output)
    values = [plain(output).detach(), *(None if g is None else plain(g) for g in grads)]
    return IsolatedRun(dict(zip(_row_names(module, len(float_leaves)), values,
                                strict=True)))


def isolated_torch(module: torch.nn.Module, inputs: Sequence[Any],
                   d_output: torch.Tensor, seed: int) -> IsolatedRun:
    """torch.nn's layer alone, on copies of ``inputs`` (any dtype)."""
    leaves = [v.detach().clone().requires_grad_(True) if _is_float_tensor(v) else v
              for v in inputs]
    float_leaves = [v for v in leaves if _is_float_tensor(v)]
    params = [param for _, param in module.named_parameters()]
    with _state_kept(module, seed):
        output = module(*leaves)
        grads = torch.autograd.grad(output, [*float_leaves, *params], d_output,
                                    allow_unused=True)
    values = [output.detach(), *(None if g is None else g.detach() for g in grads)]
    return IsolatedRun(dict(zip(_row_names(module, len(float_leaves)), values,
                                strict=True)))


def _float64_truth(module: torch.nn.Module, inputs: Sequence[Any],
                   d_output: torch.Tensor, seed: int) -> IsolatedRun:
    """For a float32 run: the layer in float64 (torch.nn on float64 copies of the
    weights and inputs), 29 more bits than either side has."""
    import copy

    wide = copy.deepcopy(module).double()
    wide_inputs = [v.double() if _is_float_tensor(v) else v for v in inputs]
    return isolated_torch(wide, wide_inputs, d_output.double(), seed)


@dataclass
class Verdict:
    """The oracle's answer for one tensor."""

    closer: str  # "scratchnet", "torch", "equal" or "inherited" or "none"
    text: str


def judge_values(ours: Sequence[float], theirs: Sequence[float], truth: Sequence[Any],
                 dtype: torch.dtype) -> Verdict:
    """Which of two roundings of the same quantities is closer to the truth?

    ``truth`` holds the higher-precision values (floats or mpmath numbers); the
    errors |ours − truth| and |theirs − truth| are formed in that precision and
    reported in ULPs of ``dtype`` at the truth rounded to it. The side with the
    smaller largest error is closer."""
    import mpmath

    with mpmath.workdps(MPMATH_DIGITS):
        our_errors = [abs(mpmath.mpf(s) - mpmath.mpf(t)) for s, t in zip(
            ours, truth, strict=True)]
        their_errors = [abs(mpmath.mpf(s) - mpmath.mpf(t)) for s, t in zip(
            theirs, truth, strict=True)]
        gaps = ulp(torch.tensor([float(t) for t in truth], dtype=dtype)).tolist()
        our_ulps = max(float(e / g) for e, g in zip(our_errors, gaps, strict=True))
        their_ulps = max(float(e / g) for e, g in zip(their_errors, gaps, strict=True))
        worst_ours, worst_theirs = max(our_errors), max(their_errors)
    if worst_ours < worst_theirs:
        closer = "scratchnet"
    elif worst_theirs < worst_ours:
        closer = "torch"
    else:
        closer = "equal"
    text = {"scratchnet": "scratchnet is closer to the truth",
            "torch": "torch is closer to the truth",
            "equal": "both are equally close to the truth"}[closer]
    return Verdict(closer, f"{text} (largest error: scratchnet {our_ulps:.3g} ulp, "
                           f"torch {their_ulps:.3g} ulp, over {len(truth)} element(s))")


def judge_layer(ours_module: Any, theirs_module: torch.nn.Module, inputs: Sequence[Any],
                d_output: torch.Tensor, names: Sequence[str], seed: int = 0
                ) -> dict[str, Verdict]:
    """The third oracle for the named tensors of one layer (rows beyond tolerance).

    The layer runs alone on ``inputs`` and ``d_output`` (torch's, in the model)
    on both sides. A tensor that now agrees within tolerance was ``inherited``:
    the difference came from earlier (or, for d output, later) layers. Otherwise
    the elements using most of the tolerance (for float32 those beyond it, at
    most :data:`FLOAT32_ORACLE_ELEMENTS`, from a float64 run of the layer; for
    float64 the worst :data:`ORACLE_ELEMENTS`, computed exactly by
    :func:`exact_value`) are recomputed in higher precision and
    :func:`judge_values` names the closer side."""
    mine = isolated_scratchnet(ours_module, inputs, d_output, seed).tensors
    reference = isolated_torch(theirs_module, inputs, d_output, seed).tensors
    dtype = d_output.dtype
    verdicts = {}
    wide = None
    for name in names:
        s, t = mine.get(name), reference.get(name)
        if s is None or t is None:
            verdicts[name] = Verdict("none", "no isolated value to compare")
            continue
        alone = parity(s, t)
        if alone.within:
            verdicts[name] = Verdict("inherited", (
                f"inherited: run alone on torch's inputs, the layer agrees "
                f"({100 * alone.tolerance_share:.3g}% of tolerance); the difference "
                "comes from the layers around it"))
            continue
        _, _, share = elementwise_parity(s, t)  # (*)
        worst = share.reshape(-1).argsort(descending=True)
        if dtype == torch.float64:
            chosen = worst[:ORACLE_ELEMENTS].tolist()
            truth = [exact_value(ours_module, inputs, d_output, name, index)
                     for index in chosen]
            if any(value is None for value in truth):
                verdicts[name] = Verdict("none", f"differs on its own too; no exact "
                                         f"oracle for {type(ours_module).__name__}")
                continue
        else:
            wide = wide or _float64_truth(theirs_module, inputs, d_output, seed).tensors
            chosen = worst[: min(int((share > 1).sum()), FLOAT32_ORACLE_ELEMENTS)].tolist()
            truth = wide[name].reshape(-1)[chosen].tolist()
        verdicts[name] = judge_values(s.reshape(-1)[chosen].tolist(),
                                      t.reshape(-1)[chosen].tolist(), truth, dtype)
    return verdicts


# ---- exact values for a float64 run: rationals for sums of products, mpmath otherwise


def _fraction_sum(pairs: Iterator[tuple[float, float]]) -> Fraction:
    """Σ a·b in exact rational arithmetic (every float is a dyadic rational)."""
    return sum((Fraction(a) * Fraction(b) for a, b in pairs), Fraction(0))


def _to_mpf(value: Fraction) -> Any:
    import mpmath

    return mpmath.mpf(value.numerator) / value.denominator


def _linear_exact(module: Any, x: torch.Tensor, g: torch.Tensor, name: str,
                  index: int) -> Any:
    """out = x·Wᵀ + b, dx = g·W, dweight = gᵀ·x, dbias = Σ_rows g, exactly."""
    weight = module.weight.detach().as_subclass(torch.Tensor).double()  # (D_out, D_in)
    x2d = x.reshape(-1, weight.shape[1]).double()  # (R, D_in)
    g2d = g.reshape(-1, weight.shape[0]).double()  # (R, D_out)
    if name == "output":
        row, unit = divmod(index, weight.shape[0])
        total = _fraction_sum(zip(x2d[row].tolist(), weight[unit].tolist(), strict=True))
        if module.bias is not None:
            total += Fraction(float(module.bias.detach()[unit]))
    elif name == "d input":
        row, feature = divmod(index, weight.shape[1])
        total = _fraction_sum(zip(g2d[row].tolist(), weight[:, feature].tolist(),
                                  strict=True))
    elif name == "d weight":
        unit, feature = divmod(index, weight.shape[1])
        total = _fraction_sum(zip(g2d[:, unit].tolist(), x2d[:, feature].tolist(),
                                  strict=True))
    elif name == "d bias":
        total = sum((Fraction(v) for v in g2d[:, index].tolist()), Fraction(0))
    else:
        return None
    return _to_mpf(total)


def _elementwise_exact(module: Any, type_name: str, x: float, g: float, name: str
                       ) -> Any:
    """f(x) or g · f'(x) for the element-wise activations, in mpmath, with the
    code's conventions at kinks (ReLU' (0) = 0, LeakyReLU'(0) = slope, Step' = 0)."""
    import mpmath

    v = mpmath.mpf(x)
    if type_name == "ReLU":
        value, slope = max(v, 0), mpmath.mpf(1 if v > 0 else 0)
    elif type_name == "LeakyReLU":
        negative = mpmath.mpf(module.negative_slope)
        value, slope = (v, mpmath.mpf(1)) if v > 0 else (negative * v, negative)
    elif type_name == "Sigmoid":
        e = mpmath.exp(-v)
        value, slope = 1 / (1 + e), e / (1 + e) ** 2
    elif type_name == "Tanh":
        value = mpmath.tanh(v)
        slope = 1 - value**2
    elif type_name == "GELU" and module.approximate == "tanh":
        beta, kappa = mpmath.sqrt(2 / mpmath.pi), mpmath.mpf("0.044715")
        t = mpmath.tanh(beta * (v + kappa * v**3))
        value = v / 2 * (1 + t)
        slope = (1 + t) / 2 + v / 2 * (1 - t**2) * beta * (1 + 3 * kappa * v**2)
    elif type_name == "GELU":
        cdf = (1 + mpmath.erf(v / mpmath.sqrt(2))) / 2
        value, slope = v * cdf, cdf + v * mpmath.npdf(v)
    elif type_name == "Step":
        value, slope = mpmath.mpf(1 if v >= 0 else 0), mpmath.mpf(0)
    else:
        return None
    return value if name == "output" else mpmath.mpf(g) * slope


def _rowwise_exact(type_name: str, dim: int, x: torch.Tensor, g: torch.Tensor,
                   name: str, index: int) -> Any:
    """Softmax / LogSoftmax along ``dim`` at one element, in mpmath."""
    import mpmath

    position = list(torch.unravel_index(torch.tensor(index), x.shape))
    k = int(position[dim])
    position[dim] = slice(None)
    row = [mpmath.mpf(v) for v in x[tuple(position)].tolist()]
    grad_row = [mpmath.mpf(v) for v in g[tuple(position)].tolist()]
    exps = [mpmath.exp(v) for v in row]
    total = mpmath.fsum(exps)
    probabilities = [e / total for e in exps]
    if type_name == "Softmax":
        if name == "output":
            return probabilities[k]
        dot = mpmath.fsum(a * b for a, b in zip(grad_row, probabilities, strict=True))
        return probabilities[k] * (grad_row[k] - dot)
    if name == "output":
        return row[k] - mpmath.log(total)
    return grad_row[k] - probabilities[k] * mpmath.fsum(grad_row)


def _cross_entropy_exact(module: Any, logits: torch.Tensor, target: torch.Tensor,
                         g: torch.Tensor, name: str, index: int) -> Any:
    """Mean cross-entropy of class targets (the defaults only) and its gradient
    (softmax − one-hot) / B, in mpmath."""
    import mpmath

    defaults = (module.reduction == "mean" and module.weight is None
                and getattr(module, "label_smoothing", 0.0) == 0.0
                and logits.dim() == 2 and not target.is_floating_point())
    if not defaults:
        return None
    rows = [[mpmath.mpf(v) for v in row] for row in logits.tolist()]
    labels = target.tolist()
    log_totals = [mpmath.log(mpmath.fsum(mpmath.exp(v) for v in row)) for row in rows]
    if name == "output":
        losses = [lse - row[label] for lse, row, label in zip(log_totals, rows, labels,
                                                               strict=True)]
        return mpmath.fsum(losses) / len(rows)
    row, k = divmod(index, logits.shape[1])
    probability = mpmath.exp(rows[row][k] - log_totals[row])
    one_hot = 1 if labels[row] == k else 0
    return mpmath.mpf(float(g)) * (probability - one_hot) / len(rows)


def _batch_norm_exact(module: Any, x: torch.Tensor, g: torch.Tensor, name: str,
                      index: int) -> Any:
    """BatchNorm1d at one element (or one channel, for d weight / d bias), in
    mpmath: x̂ = (x − μ)/√(σ² + eps), out = w·x̂ + b, and in training
    dx = w/√(σ² + eps) · (g − Σg/M − x̂·Σ(g·x̂)/M) (docs/backprop.md §6)."""
    import mpmath

    x3, g3 = x.reshape(x.shape[0], x.shape[1], -1), g.reshape(x.shape[0], x.shape[1], -1)
    if name in ("d weight", "d bias"):
        channel, position = index, None
    else:
        position = torch.unravel_index(torch.tensor(index), x3.shape)
        channel = int(position[1])
    values = [mpmath.mpf(v) for v in x3[:, channel, :].reshape(-1).tolist()]
    grads = [mpmath.mpf(v) for v in g3[:, channel, :].reshape(-1).tolist()]
    m = len(values)
    batch_statistics = module.training or not module.track_running_stats
    if batch_statistics:
        mean = mpmath.fsum(values) / m
        variance = mpmath.fsum((v - mean) ** 2 for v in values) / m
    else:
        mean = mpmath.mpf(float(module.running_mean[channel]))
        variance = mpmath.mpf(float(module.running_var[channel]))
    scale = 1 / mpmath.sqrt(variance + mpmath.mpf(module.eps))
    normalized = [(v - mean) * scale for v in values]
    weight = mpmath.mpf(float(module.weight.detach()[channel])) if module.affine else 1
    if name == "d weight":
        return mpmath.fsum(a * b for a, b in zip(grads, normalized, strict=True))
    if name == "d bias":
        return mpmath.fsum(grads)
    k = int(position[0]) * x3.shape[2] + int(position[2])  # its place in the channel
    if name == "output":
        bias = mpmath.mpf(float(module.bias.detach()[channel])) \
            if module.affine and module.bias is not None else 0
        return weight * normalized[k] + bias
    if not batch_statistics:
        return grads[k] * weight * scale
    dot = mpmath.fsum(a * b for a, b in zip(grads, normalized, strict=True))
    return weight * scale * (grads[k] - mpmath.fsum(grads) / m
                             - normalized[k] * dot / m)


def exact_value(module: Any, inputs: Sequence[Any], d_output: torch.Tensor, name: str,
                index: int) -> Any:
    """The exact (rational) or 60-digit (mpmath) value of element ``index`` (flat)
    of tensor ``name`` of the layer on these inputs; None for a layer type or
    tensor this oracle does not know (it then names none)."""
    import mpmath

    type_name = layer_type(module)
    floats = [v.detach().as_subclass(torch.Tensor).cpu() for v in inputs
              if _is_float_tensor(v)]
    x, g = floats[0].double(), d_output.detach().cpu().double()
    with mpmath.workdps(MPMATH_DIGITS):
        if type_name == "Linear":
            return _linear_exact(module, x, g, name, index)
        if type_name in ("Flatten", "Identity") or (
                type_name == "Dropout" and not (module.training and module.p > 0)):
            source = x if name == "output" else g
            return mpmath.mpf(source.reshape(-1)[index].item())
        if type_name in ("Softmax", "LogSoftmax") and name in ("output", "d input"):
            return _rowwise_exact(type_name, module.dim % x.dim(), x, g, name, index)
        if type_name == "BatchNorm1d":
            return _batch_norm_exact(module, x, g, name, index)
        if type_name == "CrossEntropyLoss" and name in ("output", "d input"):
            return _cross_entropy_exact(module, x, inputs[1], g, name, index)
        if name not in ("output", "d input"):
            return None
        position = int(index)
        gradient = g.reshape(-1)[position].item() if name == "d input" else 0.0
        return _elementwise_exact(module, type_name, x.reshape(-1)[position].item(),
                                  gradient, name)


def apply_oracle(layers: list[LayerReport], ours: SideRun, theirs: SideRun,
                 seed: int) -> None:
    """Fill ``row.oracle`` for every row beyond tolerance."""
    for i, layer in enumerate(layers):
        beyond = [row for row in layer.rows
                  if row.parity is not None and not row.parity.within]
        if not beyond:
            continue
        d_output = theirs.d_output[i]
        judged = [row.name for row in beyond if row.name != "d output"]
        verdicts = {}
        if judged and d_output is not None:
            verdicts = judge_layer(ours.calls[i].module, theirs.calls[i].module,
                                   theirs.calls[i].inputs, d_output.detach(), judged,
                                   seed)
        for row in beyond:
            if row.name == "d output":
                row.oracle = ("made by the layers after this one: see the d input "
                              "of the layer (or the loss) that takes this output")
            elif row.name in verdicts:
                row.oracle = verdicts[row.name].text


# --------------------------------------------------------------------------------------
# driving it: models, weights, batch


def inspect_models(scratch_model: Any, torch_model: torch.nn.Module, x: torch.Tensor,
                   y: torch.Tensor, title: str = "", seed: int = 0,
                   use_hooks: bool = True) -> InspectReport:
    """The per-layer report of one batch through two models holding the same
    weights. ``x`` is what the models take ((B, 1, 28, 28) or (B, 784))."""
    start = time.perf_counter()
    torch.manual_seed(seed)  # a Dropout draws the same mask on both sides (CPU)
    ours = run_scratchnet(scratch_model, x, y, use_hooks)
    torch.manual_seed(seed)
    theirs = run_torch(torch_model, x, y)
    layers = compare_runs(ours, theirs)
    apply_oracle(layers, ours, theirs, seed)
    dtype = "float64" if x.dtype == torch.float64 else "float32"
    return InspectReport(title, dtype, (float(ours.loss), float(theirs.loss)), layers,
                         time.perf_counter() - start)


def _resolved(config: InspectConfig) -> tuple[Any, dict[str, torch.Tensor] | None]:
    """Fill model / activation / dtype from the checkpoint; return the config and
    the checkpoint's state_dict (None without one)."""
    from scratchnet.checkpoint import load_checkpoint
    from scratchnet.train import DTYPES, TrainConfig

    state, saved = None, {}
    if config.checkpoint is not None:
        checkpoint = load_checkpoint(config.checkpoint, allow_bare=True)
        state, saved = checkpoint["model_state_dict"], checkpoint["config"] or {}
        if config.dtype is None and not saved.get("dtype"):
            first = next(iter(state.values()))
            config.dtype = next((k for k, v in DTYPES.items() if v == first.dtype), None)
    dataset = "fashion-mnist" if config.dataset == RANDOM_DATASET else config.dataset
    train_config = TrainConfig(
        model=config.model or saved.get("model", "NeuralNetwork"),
        activation=config.activation if config.model is not None
        else saved.get("activation"),
        dataset=dataset, batch_size=config.batch_size,
        dtype=config.dtype or saved.get("dtype") or "float32", seed=config.seed,
        device=config.device, data_dir=config.data_dir).validate()
    return train_config, state


def first_batch(train_config: Any, random_pixels: bool) -> tuple[torch.Tensor,
                                                                  torch.Tensor]:
    """The first training batch of ``scratchnet train --seed S`` (pixels / 255),
    or uniform random pixels and labels from a generator seeded with S."""
    from scratchnet.train import load_data, make_loaders

    dtype, device = train_config.torch_dtype, train_config.device
    if random_pixels:
        generator = torch.Generator().manual_seed(train_config.seed)
        x = torch.rand((train_config.batch_size, 1, 28, 28), generator=generator,
                       dtype=torch.float64)  # (B, 1, 28, 28)
        y = torch.randint(0, 10, (train_config.batch_size,), generator=generator)  # (B,)
        return x.to(device=device, dtype=dtype), y.to(device)
    loader, _ = make_loaders(train_config, load_data(train_config))
    return next(iter(loader))


def build_pair(train_config: Any, state: dict[str, torch.Tensor] | None
               ) -> tuple[Any, torch.nn.Module]:
    """scratchnet's model (seeded init, or the checkpoint's weights) and the
    torch.nn reference model with scratchnet's state_dict loaded."""
    from scratchnet.checkpoint import plain_state_dict, verify_architecture
    from scratchnet.train import build_model, seed_everything

    seed_everything(train_config.seed)
    ours = build_model(train_config.model, "scratchnet", train_config.activation)
    ours.to(device=train_config.device, dtype=train_config.torch_dtype)
    if state is not None:
        verify_architecture(state, ours, "checkpoint", train_config.model)
        ours.load_state_dict(state)
    theirs = build_model(train_config.model, "torch", train_config.activation)
    theirs.to(device=train_config.device, dtype=train_config.torch_dtype)
    theirs.load_state_dict(plain_state_dict(ours))
    return ours, theirs


def inspect(config: InspectConfig) -> InspectReport:
    """Everything ``scratchnet inspect`` prints, for ``config``."""
    from scratchnet.train import model_input, takes_flat_input

    train_config, state = _resolved(config)
    ours, theirs = build_pair(train_config, state)
    x, y = first_batch(train_config, config.dataset == RANDOM_DATASET)
    if config.eval_mode:
        ours.eval()
        theirs.eval()
    source = ("uniform random pixels" if config.dataset == RANDOM_DATASET else
              f"the first {train_config.dataset} training batch")
    title = (f"{train_config.model}"
             f"{' with ' + train_config.activation if train_config.activation else ''}"
             f"{' from ' + config.checkpoint if config.checkpoint else ''}: "
             f"{x.shape[0]} images ({source}, seed {config.seed}), "
             f"{train_config.dtype} on {train_config.device}, "
             f"{'eval' if config.eval_mode else 'training'} mode")
    return inspect_models(ours, theirs, model_input(x, takes_flat_input(ours)), y,
                          title, config.seed)


# --------------------------------------------------------------------------------------
# printing


def _count(value: int | None) -> str:
    """1234567 → '1.23M'."""
    if value is None:
        return "?"
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:.3g}{suffix}"
    return str(value)


def _number(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4g}"


ROW_HEADER = (f"  {'tensor':<12} {'shape':<12} {'mean':>10} {'std':>10} {'zeros':>7} "
              f"{'norm':>10} | {'max|Δ|':>9} {'ULPs':>9} {'tol used':>9}")


def _format_row(row: TensorRow) -> list[str]:
    shape = "(" + ", ".join(str(s) for s in row.shape) + ")"
    zeros = "-" if math.isnan(row.zeros) else f"{100 * row.zeros:.1f}%"
    if row.parity is None:
        diff = f"{'(no torch value)':>29}"
    else:
        p = row.parity
        flag = "" if p.within else "  BEYOND"
        diff = (f"{p.max_abs:>9.3g} {p.max_ulps:>9.3g} "
                f"{100 * p.tolerance_share:>8.3g}%{flag}")
    lines = [f"  {row.name:<12} {shape:<12} {_number(row.mean):>10} "
             f"{_number(row.std):>10} {zeros:>7} {_number(row.norm):>10} | {diff}"]
    if row.oracle:
        lines.append(f"      ↳ {row.oracle}")
    return lines


def format_report(report: InspectReport) -> str:
    """The text ``scratchnet inspect`` prints: a header, then one small table per
    layer, then a summary line."""
    rtol_text = ("rtol 1e-12, atol 1e-12 × the largest |torch value|"
                 if report.dtype == "float64" else
                 "torch.testing.assert_close defaults, rtol 1.3e-06, atol 1e-05")
    ours, theirs = report.loss
    lines = [f"scratchnet inspect: {report.title}",
             f"cross-entropy loss: scratchnet {ours:.10g}, torch {theirs:.10g}",
             f"beside each tensor: its largest difference from torch.nn's — absolute, "
             f"in ULPs of {report.dtype} at torch's value, and as the share of the "
             f"parity tolerance ({rtol_text}) it uses", ""]
    beyond = 0
    for layer in report.layers:
        shape = "(" + ", ".join(str(s) for s in layer.output_shape) + ")"
        lines.append(f"{layer.path}  {layer.description}  → {shape}  "
                     f"{layer.parameters:,} params  FLOPs forward "
                     f"{_count(layer.flops_forward)}, backward "
                     f"{_count(layer.flops_backward)}")
        lines.append(ROW_HEADER)
        for row in layer.rows:
            lines += _format_row(row)
            beyond += row.parity is not None and not row.parity.within
        lines.append("")
    lines.append(f"{beyond} tensor(s) beyond the parity tolerance; "
                 f"inspected in {report.seconds:.2f} s")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# plotting


def plot_histograms(report: InspectReport, path: str | Path) -> Path:
    """A PNG with one row per layer: the histogram of its output (activations)
    and of its d output (the gradient reaching it), scratchnet's values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    layers = [layer for layer in report.layers if layer.path != "loss"] or report.layers
    figure, axes = plt.subplots(len(layers), 2, figsize=(11, 2.3 * len(layers)),
                                dpi=90, squeeze=False)
    for (activation_axes, gradient_axes), layer in zip(axes, layers, strict=True):
        rows = {row.name: row for row in layer.rows}
        for target, name, color in ((activation_axes, "output", "tab:blue"),
                                    (gradient_axes, "d output", "tab:red")):
            row = rows.get(name)
            values = None if row is None else row.values.reshape(-1).double()
            if values is not None and values.numel() and torch.isfinite(values).any():
                values = values[torch.isfinite(values)].cpu()
                target.hist(values.numpy(), bins=60, color=color, alpha=0.8,
                            histtype="stepfilled")
                target.set_yscale("log")  # a ReLU's spike at 0 beside its tail
                target.yaxis.set_minor_locator(NullLocator())  # (slow to lay out)
            target.set_title(f"{layer.path}: {name} (n = "
                             f"{0 if values is None else values.numel()})", fontsize=9)
            target.set_ylabel("count", fontsize=8)
            target.tick_params(labelsize=7)
            target.grid(alpha=0.3)
    figure.suptitle(f"activations and gradients per layer — {report.title}",
                    fontsize=9)
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.04, top=0.94, hspace=0.45,
                           wspace=0.18)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    plt.close(figure)
    return path
