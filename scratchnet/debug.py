"""Finding where a NaN or an Inf first appears: :func:`detect_anomaly`.

scratchnet's twin of ``torch.autograd.detect_anomaly``. Inside the block

- **forward**: after every ``Module.forward`` its output is checked. The first
  module (innermost, earliest) whose output holds NaN or Inf raises
  :class:`~scratchnet.errors.AnomalyError` naming its layer path
  (``linear_relu_stack.2``), the output's shape, the first batch index (row of
  dim 0) holding a non-finite value, and which of its own parameters are
  non-finite. If the module's *input* already held one, the error says so: the
  data, or an op outside any module, made it.
- **backward**: after every op's backward (:func:`scratchnet.autodiff.run_backward`)
  the gradients it returns are checked. The first op whose backward returns a
  non-finite gradient raises, naming the op (``Linear``, ``CrossEntropy``), the
  layer whose forward recorded it, the input the gradient is for, its shape and
  its first non-finite row.

How an op knows its layer: when a module's forward returns, every op between its
inputs and its output that no inner module claimed is labelled with the module's
path (on the op's ``ctx``). Inner modules return first, so each op carries the
innermost layer that ran it; ops in a model's own ``forward`` (``F.relu(x)``
between two layers) carry the model's path.

The checks cost one ``isfinite`` pass per module output and per gradient, and a
walk of each module's part of the tape: a debugging tool, as torch's is.

Example::

    with scratchnet.debug.detect_anomaly():
        loss = loss_fn(model(x), y)   # AnomalyError: ... linear_relu_stack.2 ...
        loss.backward()
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from scratchnet import autodiff
from scratchnet.errors import AnomalyError

# the attribute on an op's ctx that holds the layer path of the module that ran it
_LAYER_ATTRIBUTE = "anomaly_layer_path"


class detect_anomaly(contextlib.ContextDecorator):
    """Raise :class:`~scratchnet.errors.AnomalyError` at the first layer output or
    op gradient holding NaN or Inf (see the module docstring). Nests; usable as a
    decorator."""

    def __enter__(self) -> detect_anomaly:
        self._previous = (autodiff.Anomaly.forward_check, autodiff.Anomaly.backward_check)
        autodiff.Anomaly.forward_check = check_module_output
        autodiff.Anomaly.backward_check = check_op_gradients
        return self

    def __exit__(self, *exc: object) -> None:
        autodiff.Anomaly.forward_check, autodiff.Anomaly.backward_check = self._previous


# --------------------------------------------------------------------------------------
# describing a non-finite tensor


def first_bad_row(x: torch.Tensor) -> int | None:
    """The first index along dim 0 whose slice holds NaN or Inf; None if x is
    all finite (or not floating point). A 0-d tensor's row is reported as 0."""
    x = autodiff.plain(x)
    if not (x.is_floating_point() or x.is_complex()) or x.numel() == 0:
        return None
    bad = ~torch.isfinite(x)  # (*)
    if x.dim() == 0:
        return 0 if bool(bad) else None
    rows = bad.reshape(x.shape[0], -1).any(dim=1)  # (B,)
    hits = rows.nonzero()
    return int(hits[0, 0]) if hits.numel() else None


def _what(x: torch.Tensor) -> str:
    """'nan', 'inf' or 'nan and inf': what the non-finite values are."""
    x = autodiff.plain(x)
    has_nan = bool(torch.isnan(x).any())
    has_inf = bool(torch.isinf(x).any())
    return " and ".join(kind for kind, present in (("nan", has_nan), ("inf", has_inf))
                        if present)


def _tensors(obj: Any) -> list[torch.Tensor]:
    """The tensors in a module's inputs or output (a tensor, or a tuple/list)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for item in obj for t in _tensors(item)]
    return []


def _layer_name(module: Any) -> str:
    path, kind = module.layer_path(), type(module).__name__
    return kind if path == kind else f"{path} ({kind})"


# --------------------------------------------------------------------------------------
# the forward check


def check_module_output(module: Any, inputs: tuple, output: Any) -> None:
    """Label the module's ops with its path, then raise if its output holds NaN
    or Inf (``autodiff.Anomaly.forward_check``)."""
    _label_ops(module.layer_path(), inputs, output)
    for out in _tensors(output):
        row = first_bad_row(out)
        if row is not None:
            raise _forward_error(module, inputs, out, row)


def _forward_error(module: Any, inputs: tuple, out: torch.Tensor, row: int
                   ) -> AnomalyError:
    name = _layer_name(module)
    bad_inputs = [(i, x, first_bad_row(x)) for i, x in enumerate(_tensors(inputs))]
    bad_inputs = [(i, x, r) for i, x, r in bad_inputs if r is not None]
    if bad_inputs:
        index, x, input_row = bad_inputs[0]
        error = AnomalyError(
            f"detect_anomaly: forward: the input {index} of {name}, shape "
            f"{tuple(x.shape)}, already holds {_what(x)}, first at batch index "
            f"{input_row}: it came from the data or from an op outside any module")
    else:
        bad_params = [param_name for param_name, param
                      in module.named_parameters(recurse=False)
                      if first_bad_row(param.detach()) is not None]
        params = (f"; its parameter(s) {', '.join(bad_params)} hold non-finite values"
                  if bad_params else "")
        error = AnomalyError(
            f"detect_anomaly: forward: {name} returned an output of shape "
            f"{tuple(out.shape)} holding {_what(out)}, first at batch index {row}, "
            f"from finite inputs{params}")
    error.layer_path = module.layer_path()  # outer modules must not re-prefix it
    return error


def _label_ops(path: str, inputs: tuple, output: Any) -> None:
    """Give every op between ``inputs`` and ``output`` that has no layer yet this
    module's path. Ops that made the inputs are outside the module: the walk
    stops there."""
    boundary = {id(x._node) for x in _tensors(inputs)
                if isinstance(x, autodiff.Tensor) and x._node is not None}
    stack = [t._node for t in _tensors(output)
             if isinstance(t, autodiff.Tensor) and t._node is not None]
    visited: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in visited or id(node) in boundary:
            continue
        visited.add(id(node))
        if not hasattr(node.ctx, _LAYER_ATTRIBUTE):
            setattr(node.ctx, _LAYER_ATTRIBUTE, path)
        stack.extend(p for p in node.parents if type(p) is autodiff.Node)


# --------------------------------------------------------------------------------------
# the backward check


def check_op_gradients(node: autodiff.Node, grads: tuple) -> None:
    """Raise if a gradient ``node``'s backward returned holds NaN or Inf
    (``autodiff.Anomaly.backward_check``)."""
    for index, grad in enumerate(grads):
        if not isinstance(grad, torch.Tensor):
            continue
        row = first_bad_row(grad)
        if row is None:
            continue
        layer = getattr(node.ctx, _LAYER_ATTRIBUTE, None)
        where = f"in layer {layer}" if layer else "outside any module"
        raise AnomalyError(
            f"detect_anomaly: backward: the backward of op {node.name} ({where}) "
            f"returned a gradient for its input {index} of shape {tuple(grad.shape)} "
            f"holding {_what(grad)}, first at batch index (row) {row}")
