"""``Module``: the base of every layer and model, with torch.nn.Module's API.

A module holds parameters (:class:`~scratchnet.nn.Parameter`), buffers and
submodules, registered by plain attribute assignment as in torch. Calling it
runs ``forward``; the ops inside record themselves on scratchnet's tape
(:mod:`scratchnet.autodiff`), so ``loss.backward()`` fills every parameter's
``.grad``. ``module.backward(grad_output)`` backpropagates through this module's
last call alone and returns the gradient with respect to its input.

Names and formats follow torch.nn exactly: ``named_parameters()`` gives dotted
names (``linear_relu_stack.0.weight``), ``state_dict()`` is key- and
shape-compatible with torch.nn's both ways, and ``repr(model)`` is the text of
torch's ``print(model)``.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import torch

from scratchnet import autodiff
from scratchnet.errors import (
    ArgumentTypeError,
    BackwardError,
    ScratchnetError,
    StateDictError,
)
from scratchnet.nn.modules.hooks import BackwardHook, RemovableHandle
from scratchnet.nn.parameter import Parameter


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict(strict=False)`` could not match (torch's
    ``_IncompatibleKeys``)."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _addindent(text: str, spaces: int) -> str:
    """Indent every line but the first (torch.nn.modules.module._addindent)."""
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    first = lines.pop(0)
    rest = [(spaces * " ") + line if line.strip() else "" for line in lines]
    return first + "\n" + "\n".join(rest)


class Module:
    """Base class for all scratchnet layers and models.

    Subclass it, register layers as attributes in ``__init__`` and write
    ``forward``, exactly as with ``torch.nn.Module``::

        class Network(nn.Module):
            def __init__(self):
                super().__init__()
                self.hidden = nn.Linear(784, 256)
                self.output = nn.Linear(256, 10)

            def forward(self, x):
                x = F.sigmoid(self.hidden(x))
                return F.softmax(self.output(x), dim=1)

    Attributes:
        training: True in training mode (``train()``), False after ``eval()``.
    """

    training: bool

    def __init__(self) -> None:
        super().__setattr__("training", True)
        super().__setattr__("_parameters", OrderedDict())
        super().__setattr__("_buffers", OrderedDict())
        super().__setattr__("_non_persistent_buffers", set())
        super().__setattr__("_modules", OrderedDict())
        super().__setattr__("_owner", None)  # weakref to the module that holds us
        super().__setattr__("_name_in_owner", "")
        super().__setattr__("_last_call", None)  # (inputs, weakref to output)
        # hooks by handle id, in call order (torch.nn.Module's names)
        super().__setattr__("_forward_pre_hooks", OrderedDict())
        super().__setattr__("_forward_pre_hooks_with_kwargs", OrderedDict())
        super().__setattr__("_forward_hooks", OrderedDict())
        super().__setattr__("_forward_hooks_with_kwargs", OrderedDict())
        super().__setattr__("_backward_hooks", OrderedDict())

    forward: Callable[..., Any]

    # ---------------------------------------------------------------- registration

    def __setattr__(self, name: str, value: Any) -> None:
        params = self.__dict__.get("_parameters")
        if isinstance(value, Parameter):
            if params is None:
                raise AttributeError("cannot assign parameters before Module.__init__()")
            self.__dict__.pop(name, None)
            self._modules.pop(name, None)
            params[name] = value
        elif isinstance(value, Module):
            modules = self.__dict__.get("_modules")
            if modules is None:
                raise AttributeError("cannot assign modules before Module.__init__()")
            self.__dict__.pop(name, None)
            params.pop(name, None)
            modules[name] = value
            value._set_owner(self, name)
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as parameter "
                                f"'{name}' (scratchnet.nn.Parameter or None expected)")
            params[name] = None
        elif params is not None and name in self._modules:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as child module "
                                f"'{name}' (scratchnet.nn.Module or None expected)")
            self._modules[name] = None
        elif params is not None and name in self._buffers:
            if value is not None and not isinstance(value, torch.Tensor):
                raise TypeError(f"cannot assign {type(value).__name__} as buffer "
                                f"'{name}' (torch.Tensor or None expected)")
            self._buffers[name] = value
        else:
            super().__setattr__(name, value)

    def __getattr__(self, name: str) -> Any:
        # only called when normal lookup fails: parameters, buffers, submodules
        for registry in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(registry)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                return
        super().__delattr__(name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot register {type(param).__name__} as parameter "
                            f"'{name}' (scratchnet.nn.Parameter or None expected)")
        self._parameters[name] = param

    def register_buffer(
        self, name: str, tensor: torch.Tensor | None, persistent: bool = True
    ) -> None:
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers.discard(name)
        else:
            self._non_persistent_buffers.add(name)

    def add_module(self, name: str, module: Module | None) -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a scratchnet.nn.Module")
        self._modules[name] = module
        if module is not None:
            module._set_owner(self, name)

    register_module = add_module

    def _set_owner(self, owner: Module, name: str) -> None:
        object.__setattr__(self, "_owner", weakref.ref(owner))
        object.__setattr__(self, "_name_in_owner", name)

    def layer_path(self) -> str:
        """This module's dotted name inside the model that holds it
        (``linear_relu_stack.0``), or its class name for the model itself."""
        names = []
        module: Module | None = self
        while module is not None and module._owner is not None:
            names.append(module._name_in_owner)
            module = module._owner()
        if not names:
            return self._get_name()
        return ".".join(reversed(names))

    def _describe(self) -> str:
        first_line = repr(self).split("\n")[0]
        path = self.layer_path()
        return first_line if path == self._get_name() else f"{path} ({first_line})"

    # ---------------------------------------------------------------- calling

    def __call__(self, *inputs: Any, **kwargs: Any) -> Any:
        if self._forward_pre_hooks:
            inputs, kwargs = self._run_forward_pre_hooks(inputs, kwargs)
        if autodiff.is_recording():
            inputs = tuple(
                autodiff.capture_input(x)
                if type(x) is torch.Tensor and x.is_floating_point()
                else x
                for x in inputs
            )
        captured_inputs = inputs  # Module.backward stops here, outside any fence
        backward_hook = None
        if self._backward_hooks and autodiff.is_recording():
            # fence the call on the tape so the backward reports crossing it
            backward_hook = BackwardHook(self, list(self._backward_hooks.values()))
            inputs = backward_hook.setup_input_hook(inputs)
        try:
            output = self.forward(*inputs, **kwargs)
        except ScratchnetError as error:
            # name the innermost module where the bad input was found
            if not getattr(error, "layer_path", None):
                error.layer_path = self.layer_path()
                error.args = (f"{self._describe()}: {error.args[0]}", *error.args[1:])
            raise
        if autodiff.Anomaly.forward_check is not None:  # in debug.detect_anomaly
            autodiff.Anomaly.forward_check(self, inputs, output)
        if self._forward_hooks:
            output = self._run_forward_hooks(inputs, kwargs, output)
        if backward_hook is not None:
            output = backward_hook.setup_output_hook(output)
        if isinstance(output, autodiff.Tensor):
            tape_inputs = tuple(x for x in captured_inputs
                                if isinstance(x, autodiff.Tensor))
            # the inputs are held (a submodule's input inside Sequential exists
            # nowhere else); the output only weakly, so dropping it frees the tape
            object.__setattr__(self, "_last_call", (tape_inputs, weakref.ref(output)))
        return output

    def backward(self, grad_output: torch.Tensor) -> Any:
        """Backpropagate ``grad_output`` (d loss / d output of this module's last
        call) through that call alone: adds into the ``.grad`` of the parameters
        it used and returns d loss / d input (a tuple if it took several tensor
        inputs). The call's output must still be alive."""
        if self._last_call is None:
            raise BackwardError(f"{self._describe()}: backward() before forward: call "
                                "the module on an input first")
        inputs, output_ref = self._last_call
        output = output_ref()
        if output is None:
            raise BackwardError(f"{self._describe()}: backward() needs the output of "
                                "the last call, which was freed; keep it alive")
        grads = autodiff.run_backward(output, grad_output, inputs)
        return grads[0] if len(grads) == 1 else tuple(grads)

    # ---------------------------------------------------------------- hooks

    def register_forward_pre_hook(
        self, hook: Callable, *, prepend: bool = False, with_kwargs: bool = False
    ) -> RemovableHandle:
        """Call ``hook(module, args)`` before every ``forward`` (with
        ``with_kwargs``: ``hook(module, args, kwargs)``). It may return None, new
        args (a non-tuple is wrapped in one), or with ``with_kwargs`` a pair
        ``(args, kwargs)``. Hooks run in registration order (``prepend``: first)."""
        return self._register_hook(self._forward_pre_hooks, hook, prepend,
                                   self._forward_pre_hooks_with_kwargs, with_kwargs)

    def register_forward_hook(
        self, hook: Callable, *, prepend: bool = False, with_kwargs: bool = False
    ) -> RemovableHandle:
        """Call ``hook(module, args, output)`` after every ``forward`` (with
        ``with_kwargs``: ``hook(module, args, kwargs, output)``); ``args`` are the
        inputs ``forward`` received. A non-None return replaces the output."""
        return self._register_hook(self._forward_hooks, hook, prepend,
                                   self._forward_hooks_with_kwargs, with_kwargs)

    def register_full_backward_hook(
        self, hook: Callable, prepend: bool = False
    ) -> RemovableHandle:
        """Call ``hook(module, grad_input, grad_output)`` once per call of this
        module, when the backward has computed the gradients with respect to the
        call's outputs (``grad_output``) and its positional inputs
        (``grad_input``); entries for non-tensor arguments, and for inputs that
        need no gradient, are None. A non-None return (a tuple as long as
        ``grad_input``) replaces ``grad_input`` for the rest of the backward. How
        the tape is fenced so that this fires: :mod:`scratchnet.nn.modules.hooks`."""
        return self._register_hook(self._backward_hooks, hook, prepend)

    def _register_hook(
        self, hooks: OrderedDict, hook: Callable, prepend: bool,
        with_kwargs_ids: OrderedDict | None = None, with_kwargs: bool = False,
    ) -> RemovableHandle:
        handle = RemovableHandle(hooks, extra_dict=with_kwargs_ids)
        hooks[handle.id] = hook
        if with_kwargs:
            with_kwargs_ids[handle.id] = True
        if prepend:
            hooks.move_to_end(handle.id, last=False)
        return handle

    def _run_forward_pre_hooks(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        for hook_id, hook in list(self._forward_pre_hooks.items()):
            if hook_id in self._forward_pre_hooks_with_kwargs:
                result = hook(self, args, kwargs)
                if result is None:
                    continue
                if not (isinstance(result, tuple) and len(result) == 2):
                    raise ArgumentTypeError(
                        f"{self._describe()}: forward pre-hook must return None or a "
                        f"tuple of (new_args, new_kwargs), but got {result}.")
                args, kwargs = result
            else:
                result = hook(self, args)
                if result is not None:
                    args = result if isinstance(result, tuple) else (result,)
        return args, kwargs

    def _run_forward_hooks(self, args: tuple, kwargs: dict, output: Any) -> Any:
        for hook_id, hook in list(self._forward_hooks.items()):
            if hook_id in self._forward_hooks_with_kwargs:
                result = hook(self, args, kwargs, output)
            else:
                result = hook(self, args, output)
            if result is not None:
                output = result
        return output

    def _get_name(self) -> str:
        return type(self).__name__

    # ---------------------------------------------------------------- traversal

    def named_modules(
        self, memo: set | None = None, prefix: str = "", remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Module]]:
        if memo is None:
            memo = set()
        if remove_duplicate:
            if self in memo:
                return
            memo.add(self)
        yield prefix, self
        for name, module in self._modules.items():
            if module is None:
                continue
            child_prefix = prefix + ("." if prefix else "") + name
            yield from module.named_modules(memo, child_prefix, remove_duplicate)

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_children(self) -> Iterator[tuple[str, Module]]:
        seen = set()
        for name, module in self._modules.items():
            if module is not None and module not in seen:
                seen.add(module)
                yield name, module

    def children(self) -> Iterator[Module]:
        for _, module in self.named_children():
            yield module

    def _named_members(
        self, registry: str, prefix: str, recurse: bool, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, torch.Tensor]]:
        seen: set[int] = set()
        modules = (self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate)
                   if recurse else [(prefix, self)])
        for module_prefix, module in modules:
            for name, value in getattr(module, registry).items():
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                seen.add(id(value))
                yield module_prefix + ("." if module_prefix else "") + name, value

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, torch.Tensor]]:
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[torch.Tensor]:
        for _, buffer in self.named_buffers(recurse=recurse):
            yield buffer

    def get_submodule(self, target: str) -> Module:
        module = self
        for name in target.split(".") if target else []:
            if name not in module._modules:
                raise AttributeError(f"{module._get_name()} has no submodule '{name}'")
            module = module._modules[name]
        return module

    def apply(self, fn: Callable[[Module], None]) -> Module:
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # ---------------------------------------------------------------- modes, grads

    def train(self, mode: bool = True) -> Module:
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's gradient: to ``None`` (torch's default) or to
        zeros in place."""
        for param in self.parameters():
            if param.grad is None:
                continue
            if set_to_none:
                param.grad = None
            else:
                param.grad.zero_()

    # ---------------------------------------------------------------- devices, dtypes

    def _apply_to_tensors(self, convert: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Convert every parameter (in place: the Parameter object is kept, so an
        optimizer holding it still works), its gradient, and every buffer."""
        for module in self.modules():
            for param in module._parameters.values():
                if param is None:
                    continue
                param.data = convert(param.data)
                if param.grad is not None:
                    param.grad = convert(param.grad)
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    module._buffers[name] = convert(buffer)

    def to(self, *args: Any, **kwargs: Any) -> Module:
        """``to(device)``, ``to(dtype)``, ``to(device, dtype)``, ``to(tensor)``:
        move parameters and buffers; dtype changes only floating-point ones."""
        device, dtype, non_blocking, _ = torch._C._nn._parse_to(*args, **kwargs)
        if dtype is not None and not dtype.is_floating_point:
            raise TypeError(f"Module.to() only accepts floating point dtypes, got {dtype}")

        def convert(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, dtype if t.is_floating_point() else None, non_blocking)

        self._apply_to_tensors(convert)
        return self

    def cpu(self) -> Module:
        return self.to("cpu")

    def cuda(self, device: int | str | None = None) -> Module:
        return self.to(torch.device("cuda") if device is None else torch.device("cuda", device)
                       if isinstance(device, int) else torch.device(device))

    def float(self) -> Module:
        return self.to(torch.float32)

    def double(self) -> Module:
        return self.to(torch.float64)

    # ---------------------------------------------------------------- state_dict

    def state_dict(
        self, destination: dict | None = None, prefix: str = "", keep_vars: bool = False
    ) -> OrderedDict[str, torch.Tensor]:
        """Parameters and persistent buffers by dotted name, as plain tensors
        sharing storage (torch.nn.Module.state_dict's keys and order)."""
        if destination is None:
            destination = OrderedDict()
        for name, param in self._parameters.items():
            if param is not None:
                destination[prefix + name] = param if keep_vars else param.detach()
        for name, buffer in self._buffers.items():
            if buffer is not None and name not in self._non_persistent_buffers:
                destination[prefix + name] = buffer if keep_vars else buffer.detach()
        for name, module in self._modules.items():
            if module is not None:
                module.state_dict(destination, prefix + name + ".", keep_vars)
        return destination

    def load_state_dict(
        self, state_dict: Mapping[str, torch.Tensor], strict: bool = True,
        assign: bool = False,
    ) -> IncompatibleKeys:
        """Copy values from ``state_dict`` (scratchnet's or torch.nn's) into this
        module's parameters and buffers, in place. With ``strict`` (default),
        missing or unexpected keys raise :class:`StateDictError`; a wrongly shaped
        entry always does. ``assign=True`` makes the parameters hold the given
        tensors instead of copying."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"Expected state_dict to be dict-like, got {type(state_dict)}.")
        own = self.state_dict(keep_vars=True)
        missing = [key for key in own if key not in state_dict]
        unexpected = [key for key in state_dict if key not in own]
        problems = []
        for key, target in own.items():
            if key not in state_dict:
                continue
            source = state_dict[key]
            if not isinstance(source, torch.Tensor):
                problems.append(f"'{key}': expected a tensor, got {type(source).__name__}")
            elif source.shape != target.shape:
                problems.append(
                    f"size mismatch for {key}: copying a param with shape "
                    f"{tuple(source.shape)} from checkpoint, the shape in current "
                    f"model is {tuple(target.shape)}")
        if strict and missing:
            problems.insert(0, "Missing key(s) in state_dict: "
                            + ", ".join(f'"{k}"' for k in missing))
        if strict and unexpected:
            problems.insert(0, "Unexpected key(s) in state_dict: "
                            + ", ".join(f'"{k}"' for k in unexpected))
        if problems:
            raise StateDictError(f"Error(s) in loading state_dict for {self._get_name()}:"
                                 "\n\t" + "\n\t".join(problems))
        for key, target in own.items():
            if key not in state_dict:
                continue
            source = state_dict[key]
            if isinstance(target, Parameter):
                if assign:
                    target.data = autodiff.plain(source).detach()
                else:
                    target.data.copy_(autodiff.plain(source))
            else:
                target.copy_(autodiff.plain(source))
        return IncompatibleKeys(missing, unexpected)

    # ---------------------------------------------------------------- printing

    def extra_repr(self) -> str:
        """The constructor arguments, as in torch (``in_features=784, ...``)."""
        return ""

    def __repr__(self) -> str:
        extra_lines = self.extra_repr().split("\n") if self.extra_repr() else []
        child_lines = [f"({key}): " + _addindent(repr(module), 2)
                       for key, module in self._modules.items()]
        lines = extra_lines + child_lines
        main = self._get_name() + "("
        if lines:
            if len(extra_lines) == 1 and not child_lines:
                main += extra_lines[0]
            else:
                main += "\n  " + "\n  ".join(lines) + "\n"
        return main + ")"

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._parameters)
                      | set(self._buffers) | set(self._modules))
