"""``Optimizer``: the bookkeeping every optimizer shares (torch/optim/optimizer.py).

An optimizer holds

- ``param_groups``: a list of dicts, each with ``'params'`` (the tensors it
  updates) and every hyperparameter, filled from ``defaults`` where the group
  does not set it: the same keys torch.optim's groups hold, flags included
  (``foreach``, ``maximize``, ``differentiable``, ``fused``, ...);
- ``state``: per-parameter tensors (momentum buffers, moment estimates), a
  ``defaultdict(dict)`` keyed by the parameter itself, under torch's names.

``state_dict()`` is torch.optim's layout: ``'state'`` keyed by the parameter's
integer index in param order across groups, ``'param_groups'`` with ``'params'``
as index lists. It loads into a torch.optim optimizer over the same parameters,
and torch.optim's loads into scratchnet's.

The update itself lives in each subclass as a small function of one parameter
(``sgd_update``, ``adam_update``): torch's single-tensor path (``foreach=False``,
the CPU default) op for op. Steps run with scratchnet's tape off
(:class:`scratchnet.no_grad`), as torch's run under ``torch.no_grad``.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from copy import deepcopy
from itertools import chain
from typing import Any

import torch

from scratchnet import autodiff
from scratchnet.errors import OptionError, StateDictError, check_real

StateDict = dict[str, Any]


def _get_scalar_dtype() -> torch.dtype:
    """dtype of the ``step`` counter: float32, or float64 when that is torch's
    default dtype (torch.optim.optimizer._get_scalar_dtype)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def check_single_path(name: str, options: dict[str, Any]) -> None:
    """scratchnet has one implementation per optimizer: torch's single-tensor
    path. Refuse the flags that would ask torch for another one."""
    for flag, allowed in (("foreach", (None, False)), ("fused", (None, False)),
                          ("capturable", (False,)), ("differentiable", (False,))):
        if flag in options and options[flag] not in allowed:
            raise OptionError(
                f"{name}: {flag}={options[flag]!r} is not supported: scratchnet.optim "
                f"has its own single path (one tensor at a time, as torch's "
                f"foreach=False); leave {flag} at its default "
                f"{' or '.join(repr(a) for a in allowed)}")


def check_number(name: str, option: str, value: Any) -> None:
    """Hyperparameters are Python numbers (torch also takes 1-element Tensors)."""
    if isinstance(value, torch.Tensor):
        raise OptionError(f"{name}: {option} must be a Python number, got a Tensor of "
                          f"shape {tuple(value.shape)}; pass {option}=float(...)")
    check_real(name, option, value)


class Optimizer:
    """Base class for all optimizers (torch.optim.Optimizer).

    Args:
        params: an iterable of tensors, of ``(name, tensor)`` pairs (as
            ``named_parameters()`` gives), or of dicts defining parameter groups.
        defaults: the default hyperparameters of a group that does not set them.

    Subclasses implement ``_check_options(options)`` (raising
    :class:`~scratchnet.errors.OptionError`) and ``_update_group(group)`` (one
    step for the parameters of one group that have a gradient).
    """

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        self.defaults = defaults
        if isinstance(params, torch.Tensor):
            raise OptionError(
                "params argument given to the optimizer should be an iterable of "
                "Tensors or dicts, but got " + torch.typename(params))
        self.state: defaultdict[torch.Tensor, dict[str, Any]] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        param_groups = list(params)
        if len(param_groups) == 0:
            raise OptionError(f"{type(self).__name__}: optimizer got an empty parameter "
                              "list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for param_group in param_groups:
            self.add_param_group(param_group)

    # ----------------------------------------------------------------------------------
    # what each optimizer defines

    def _check_options(self, options: dict[str, Any]) -> None:
        """Raise OptionError for a bad hyperparameter in ``options`` (the
        defaults, or a group's)."""

    def _update_group(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    # ----------------------------------------------------------------------------------
    # the step

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform a single optimization step; parameters whose ``.grad`` is
        ``None`` are skipped.

        Args:
            closure: re-evaluates the model and returns the loss (run with the
                tape recording, so it may call ``backward``).
        """
        loss = None
        if closure is not None:
            with autodiff.enable_grad():
                loss = closure()
        with autodiff.no_grad():
            for group in self.param_groups:
                self._update_group(group)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of every parameter: to ``None`` (the default), or,
        with ``set_to_none=False``, to zeros in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    if set_to_none:
                        p.grad = None
                    else:
                        p.grad.zero_()

    # ----------------------------------------------------------------------------------
    # parameter groups

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of parameters with its own hyperparameters (unset ones
        come from ``defaults``), e.g. when unfreezing a layer while fine-tuning."""
        if not isinstance(param_group, dict):
            raise OptionError(f"param_group must be a dict, but got {type(param_group)}")
        if "params" not in param_group:
            raise OptionError(f"{type(self).__name__}: a param_group needs a 'params' "
                              f"entry, got keys {sorted(param_group)}")
        params = param_group["params"]
        if isinstance(params, torch.Tensor):
            params = [params]
        elif isinstance(params, set):
            raise OptionError(
                "optimizer parameters need to be organized in ordered collections, but "
                "the ordering of tensors in sets will change between runs. Please use "
                "a list instead.")
        params = list(params)
        names = [p[0] for p in params if isinstance(p, tuple)]
        params = [p[1] if isinstance(p, tuple) else p for p in params]
        param_group["params"] = params
        if names:
            if len(names) != len(params):
                raise OptionError("all optimizer params should be with/without names. "
                                  "Some param names are missing")
            param_group["param_names"] = names
        for param in params:
            self._check_param(param)
        for name, default in self.defaults.items():
            param_group.setdefault(name, default)
        self._check_options(param_group)

        if len(params) != len(set(params)):
            warnings.warn("optimizer contains a parameter group with duplicate "
                          "parameters; in future, this will cause an error; see "
                          "github.com/pytorch/pytorch/issues/40967 for more "
                          "information", stacklevel=3)
        param_set: set[torch.Tensor] = set()
        for group in self.param_groups:
            param_set.update(group["params"])
            if ("param_names" in param_group) != ("param_names" in group):
                which = "with names" if "param_names" in param_group else "without names"
                raise OptionError("all optimizer param groups should be with/without "
                                  f"names. cannot add param group {which} to the "
                                  "optimizer")
        if not param_set.isdisjoint(params):
            raise OptionError("some parameters appear in more than one parameter group")
        self.param_groups.append(param_group)

    @staticmethod
    def _check_param(param: Any) -> None:
        if not isinstance(param, torch.Tensor):
            raise OptionError("optimizer can only optimize Tensors, but one of the "
                              "params is " + torch.typename(param))
        made_by_an_op = getattr(param, "_node", None) is not None  # scratchnet's tape
        if made_by_an_op or (type(param) is torch.Tensor and not param.is_leaf):
            raise OptionError("can't optimize a non-leaf Tensor")

    # ----------------------------------------------------------------------------------
    # state_dict

    def state_dict(self) -> StateDict:
        """The optimizer's state in torch.optim's layout::

            {'state': {0: {'step': tensor(3.), 'exp_avg': ..., ...}, 1: ...},
             'param_groups': [{'lr': 0.001, ..., 'params': [0, 1]}, ...]}

        Parameters are numbered in order across groups. The state tensors are
        the optimizer's own (not copies), as in torch.
        """
        param_mappings: dict[int, int] = {}
        start_index = 0

        def pack_group(group: dict[str, Any]) -> dict[str, Any]:
            nonlocal start_index
            packed = {k: v for k, v in group.items() if k != "params"}
            param_mappings.update({id(p): i for i, p in enumerate(group["params"],
                                                                  start_index)
                                   if id(p) not in param_mappings})
            packed["params"] = [param_mappings[id(p)] for p in group["params"]]
            start_index += len(packed["params"])
            return packed

        param_groups = [pack_group(g) for g in self.param_groups]
        packed_state = {(param_mappings[id(k)] if isinstance(k, torch.Tensor) else k): v
                        for k, v in self.state.items()}
        return {"state": packed_state, "param_groups": param_groups}

    def load_state_dict(self, state_dict: StateDict) -> None:
        """Load a state produced by :meth:`state_dict`, scratchnet's or
        torch.optim's. Parameters are matched by position, group by group.

        Each state tensor is cast to its parameter's dtype and device (``step``
        stays as saved: a float32 tensor on the CPU), as torch does; like
        torch, a tensor already of the right dtype and device is used as is, not
        copied (deep-copy the state_dict to share nothing with its source).
        """
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(
                state_dict):
            raise StateDictError(
                f"{type(self).__name__}.load_state_dict: expected a dict with 'state' "
                "and 'param_groups' (what state_dict() returns), got "
                f"{sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__}")
        groups = self.param_groups
        saved_groups = deepcopy(state_dict["param_groups"])
        if len(groups) != len(saved_groups):
            raise StateDictError(
                f"{type(self).__name__}.load_state_dict: "
                f"loaded state dict has a different number of parameter groups: "
                f"{len(saved_groups)}, the optimizer has {len(groups)}")
        for index, (group, saved) in enumerate(zip(groups, saved_groups, strict=True)):
            if len(group["params"]) != len(saved["params"]):
                raise StateDictError(
                    f"{type(self).__name__}.load_state_dict: "
                    f"loaded state dict contains a parameter group that doesn't match "
                    f"the size of optimizer's group: group {index} holds "
                    f"{len(saved['params'])} parameters, the optimizer's "
                    f"{len(group['params'])}")
        id_map = dict(zip(chain.from_iterable(g["params"] for g in saved_groups),
                          chain.from_iterable(g["params"] for g in groups), strict=True))

        state: defaultdict[Any, dict[str, Any]] = defaultdict(dict)
        for k, v in state_dict["state"].items():
            if k in id_map:
                state[id_map[k]] = _cast_state(id_map[k], v, k)
            else:
                state[k] = v

        param_groups = []
        for group, new_group in zip(groups, saved_groups, strict=True):
            new_group["params"] = group["params"]
            if "param_names" in group and "param_names" not in new_group:
                new_group["param_names"] = group["param_names"]
            param_groups.append(new_group)
        self.__setstate__({"state": state, "param_groups": param_groups})

    def __getstate__(self) -> dict[str, Any]:
        return {"defaults": self.defaults, "state": self.state,
                "param_groups": self.param_groups}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Install ``state`` (pickling and load_state_dict); subclasses add the
        group keys that older state_dicts lack."""
        self.__dict__.update(state)

    def __repr__(self) -> str:
        text = self.__class__.__name__ + " ("
        for i, group in enumerate(self.param_groups):
            text += f"\nParameter Group {i}\n"
            for key in sorted(group.keys()):
                if key != "params":
                    text += f"    {key}: {group[key]}\n"
        return text + ")"


def _cast_state(param: torch.Tensor, value: Any, index: int, key: str | None = None) -> Any:
    """One parameter's saved state, its tensors moved to the parameter's device and
    (if floating point) dtype; ``step`` is left as saved (torch's
    ``_process_value_according_to_param_policy`` without capturable/fused)."""
    if isinstance(value, torch.Tensor):
        if key == "step":
            return value
        if value.dim() > 0 and value.shape != param.shape:
            raise StateDictError(
                f"loaded state for parameter {index}: {key!r} has shape "
                f"{tuple(value.shape)}, the parameter has {tuple(param.shape)}")
        if param.is_floating_point():
            return value.to(dtype=param.dtype, device=param.device)
        return value.to(device=param.device)
    if isinstance(value, dict):
        return {k: _cast_state(param, v, index, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cast_state(param, v, index) for v in value)
    return value
