"""Module hooks: the handle that removes one (torch.utils.hooks.RemovableHandle)
and the machinery that makes a full backward hook fire when the tape's backward
crosses a module (scratchnet's twin of torch.utils.hooks.BackwardHook).

How a full backward hook sees a module's gradients
--------------------------------------------------
A module's call is a region of the tape with tensors going in and tensors coming
out. When the module has full backward hooks, ``Module.__call__`` fences that
region on both sides with identity ops, so the backward pass must cross them::

    inputs ─► [gather]─token─► [scatter i] ─► forward(...) ─► [gather]─token─► [scatter i] ─► outputs
              one node          one node per                   one node          one node per
              for all inputs    tensor                         for all outputs   tensor

- A *scatter* node hands one tensor through unchanged. Its backward stores the
  gradient arriving at that tensor (``dout``) and passes only a 0-d zero on to
  its token, so every gradient of the side is held by this call's
  :class:`BackwardHook`.
- The *gather* node is the token's parent, so the tape's reverse topological
  order runs it after every scatter of its side: by then every gradient of that
  side is known. Its backward hands them on to the real parents, one per tensor.

So at the output gather, ``grad_output`` is complete; at the input gather,
``grad_input`` is, and the user hooks run there, once per call, and may replace
``grad_input`` before it flows on. If no input of the call needs a gradient in
this backward pass (the model's own input, or anything made from it without a
parameter in between), the input gather never runs: as torch does, the hooks
then fire at the output gather with ``grad_input`` all ``None``.

Shapes: the gather's token is a 0-d tensor; a scatter's output has its input's
shape.
"""

from __future__ import annotations

import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch

from scratchnet import autodiff
from scratchnet.autodiff import Context, Function
from scratchnet.errors import BackwardError, ShapeError

INPUTS, OUTPUTS = "inputs", "outputs"


class RemovableHandle:
    """Returned by every ``register_*_hook``: ``handle.remove()`` unregisters the
    hook; ``with module.register_forward_hook(h):`` removes it on exit
    (torch.utils.hooks.RemovableHandle)."""

    id: int
    next_id: int = 0

    def __init__(self, hooks_dict: OrderedDict, *,
                 extra_dict: OrderedDict | None = None) -> None:
        self.hooks_dict_ref = weakref.ref(hooks_dict)
        self.extra_dict_ref = () if extra_dict is None else (weakref.ref(extra_dict),)
        self.id = RemovableHandle.next_id
        RemovableHandle.next_id += 1

    def remove(self) -> None:
        for ref in (self.hooks_dict_ref, *self.extra_dict_ref):
            hooks = ref()
            if hooks is not None:
                hooks.pop(self.id, None)

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


# --------------------------------------------------------------------------------------
# the two identity ops that fence a module's call on the tape


class GatherAtModuleBoundary(Function):
    @staticmethod
    def forward(ctx: Context, call: BackwardHook, side: str,
                *tensors: torch.Tensor) -> torch.Tensor:
        """One node whose parents are all the tensors crossing one side of a
        module call; returns a 0-d token the scatters hang from.

        tensors: each any shape → token: ()
        """
        ctx.call, ctx.side = call, side
        return torch.zeros((), dtype=tensors[0].dtype, device=tensors[0].device)

    @staticmethod
    def backward(ctx: Context, dtoken: torch.Tensor) -> tuple:
        """The token carries no value (its gradient is zero by construction).
        Each tensor's gradient is what its scatter collected — after the user
        hooks had their say on the input side:

            d tensor_i = call.crossed(side)[i]
        """
        return (None, None, *ctx.call.crossed(ctx.side, ctx.needs_input_grad[2:]))


class ScatterAtModuleBoundary(Function):
    @staticmethod
    def forward(ctx: Context, token: torch.Tensor, tensor: torch.Tensor,
                call: BackwardHook, side: str, index: int) -> torch.Tensor:
        """out = tensor, hung from the gather's token (tensor itself is passed
        off the tape, so its gradient can only flow through the gather).

        tensor: (*) → out: (*)
        """
        ctx.call, ctx.side, ctx.index = call, side, index
        return tensor

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """Identity: d tensor = dout, kept by the call (it reaches the tensor's
        parent through the gather); d token = 0."""
        ctx.call.collect(ctx.side, ctx.index, dout)
        return torch.zeros((), dtype=dout.dtype, device=dout.device), None, None, None, None


# --------------------------------------------------------------------------------------
# one module call with full backward hooks


class BackwardHook:
    """The full backward hooks of one module call: fences its inputs and outputs
    (see the module docstring), collects ``grad_output`` and ``grad_input`` as
    the backward crosses them, and calls each hook
    ``hook(module, grad_input, grad_output)`` once, in registration order, each
    seeing the ``grad_input`` the previous one returned.

    ``grad_input`` and ``grad_output`` have one entry per positional argument /
    output, ``None`` for anything that is not a tensor. As in torch, an output
    the backward did not reach has ``None``, and an input tensor that gets no
    gradient (an integer target, an input that needs none) has zeros.
    """

    def __init__(self, module: Any, user_hooks: list[Callable]) -> None:
        self.module = module
        self.user_hooks = user_hooks
        self.sides = {INPUTS: _Side(), OUTPUTS: _Side()}
        self.input_gather: autodiff.Node | None = None
        self.grad_outputs: tuple | None = None

    # -------------------------------------------------------------- forward: fencing

    def setup_input_hook(self, args: tuple) -> tuple:
        fenced = self._fence(INPUTS, args)
        positions = self.sides[INPUTS].fenced
        if positions:
            self.input_gather = fenced[positions[0]]._node.parents[0]
        return fenced

    def setup_output_hook(self, output: Any) -> Any:
        if isinstance(output, tuple):
            return self._fence(OUTPUTS, output)
        if not isinstance(output, torch.Tensor):
            warnings.warn("For backward hooks to be called, module output should be a "
                          f"Tensor or a tuple of Tensors but received {type(output)}",
                          stacklevel=3)
            return output
        return self._fence(OUTPUTS, (output,))[0]

    def _fence(self, name: str, values: tuple) -> tuple:
        """Route every tape tensor of ``values`` through one gather and its own
        scatter; anything else passes untouched."""
        side = self.sides[name]
        side.record(values)
        if not side.fenced:
            return values
        tensors = [values[i] for i in side.fenced]
        token = GatherAtModuleBoundary.apply(self, name, *tensors)
        fenced = list(values)
        for index, (i, tensor) in enumerate(zip(side.fenced, tensors, strict=True)):
            fenced[i] = ScatterAtModuleBoundary.apply(
                token, autodiff.plain(tensor), self, name, index)
            # the fence holds the tensor it replaced, as the caller would have:
            # an inner layer's Module.backward finds its output only by weakref
            fenced[i]._node.ctx.unfenced = tensor
        return tuple(fenced)

    # -------------------------------------------------------------- backward: crossing

    def collect(self, name: str, index: int, grad: torch.Tensor) -> None:
        self.sides[name].grads[index] = grad

    def crossed(self, name: str, needed: tuple[bool, ...]) -> list[torch.Tensor | None]:
        """Every gradient of side ``name`` is in (``needed``: which of its tensors
        this backward wants a gradient for): run the hooks if this is where they
        fire, and return the gradients to pass on (copies where a leaf would keep
        as its ``.grad`` a tensor a hook has seen)."""
        side = self.sides[name]
        grads = [g if want else None
                 for g, want in zip(side.take_grads(), needed, strict=True)]
        if name == OUTPUTS:
            self.grad_outputs = side.pack(grads)
            if self.input_gather is None or not self.input_gather.needed:
                self._fire_without_input_grads()
        elif self.grad_outputs is not None:
            grads = self._fire(grads)
        return [g.clone() if leaf and g is not None else g
                for g, leaf in zip(grads, side.is_leaf, strict=True)]

    def _fire(self, grads: list) -> list:
        side = self.sides[INPUTS]
        grad_input = side.pack(grads, zeros_for_missing=True)
        for hook in self.user_hooks:
            replaced = hook(self.module, grad_input, self.grad_outputs)
            if replaced is not None:
                grad_input = self._checked(replaced, grad_input)
        self.grad_outputs = None
        return [grad_input[i] for i in side.fenced]

    def _checked(self, replaced: Any, grad_input: tuple) -> tuple:
        if not isinstance(replaced, (tuple, list)) or len(replaced) != len(grad_input):
            got = (len(replaced) if isinstance(replaced, (tuple, list))
                   else type(replaced).__name__)
            raise BackwardError(
                f"{self.module._describe()}: backward hook returned an invalid number "
                f"of grad_input, got {got}, but expected {len(grad_input)}")
        for i, (new, old) in enumerate(zip(replaced, grad_input, strict=True)):
            if new is not None and old is not None and new.shape != old.shape:
                raise ShapeError(
                    f"{self.module._describe()}: backward hook changed grad_input[{i}] "
                    f"from shape {tuple(old.shape)} to {tuple(new.shape)}")
        return tuple(replaced)

    def _fire_without_input_grads(self) -> None:
        """No input of this call needs a gradient: torch fires the hooks from the
        output side with ``grad_input`` all None (and warns); so do we."""
        warnings.warn(
            f"{self.module._describe()}: full backward hook is firing when gradients "
            "are computed with respect to module outputs since no inputs require "
            "gradients (as torch.nn.Module does)", stacklevel=2)
        grad_input = (None,) * self.sides[INPUTS].arity
        for hook in self.user_hooks:
            replaced = hook(self.module, grad_input, self.grad_outputs)
            if replaced is not None and not all(g is None for g in replaced):
                raise BackwardError(
                    f"{self.module._describe()}: backward hook for a module where no "
                    "input requires gradient should always return None or None for "
                    "all gradients")
        self.grad_outputs = None


class _Side:
    """One side (inputs or outputs) of a hooked module call.

    Attributes:
        arity: number of positional values (args, or outputs).
        fenced: positions of the tape tensors, in the gather's order.
        is_leaf: per fenced tensor, whether its parent on the tape is a leaf.
        grads: per fenced tensor, the gradient its scatter collected.
        shapes: position → (shape, dtype, device) of every tensor, for zeros.
    """

    def __init__(self) -> None:
        self.arity = 0
        self.fenced: list[int] = []
        self.is_leaf: list[bool] = []
        self.grads: list[torch.Tensor | None] = []
        self.shapes: dict[int, tuple] = {}

    def record(self, values: tuple) -> None:
        self.arity = len(values)
        self.fenced = [i for i, v in enumerate(values) if isinstance(v, autodiff.Tensor)]
        self.is_leaf = [values[i]._node is None for i in self.fenced]
        self.grads = [None] * len(self.fenced)
        self.shapes = {i: (v.shape, v.dtype, v.device) for i, v in enumerate(values)
                       if isinstance(v, torch.Tensor)}

    def take_grads(self) -> list[torch.Tensor | None]:
        grads, self.grads = self.grads, [None] * len(self.fenced)
        return grads

    def pack(self, grads: list, zeros_for_missing: bool = False) -> tuple:
        """One entry per positional value: the fenced tensors' ``grads``; for
        any other tensor (or a missing gradient) zeros if ``zeros_for_missing``
        (torch materialises them for grad_input), else None."""
        packed: list[torch.Tensor | None] = [None] * self.arity
        if zeros_for_missing:
            for i, (shape, dtype, device) in self.shapes.items():
                packed[i] = torch.zeros(shape, dtype=dtype, device=device)
        for i, grad in zip(self.fenced, grads, strict=True):
            if grad is not None:
                packed[i] = grad
        return tuple(packed)
