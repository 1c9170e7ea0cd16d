"""scratchnet's tape: it records each op of a forward pass and replays the
hand-written backwards in reverse order. No torch.autograd anywhere.

This is micrograd's engine (``micrograd/engine.py``) on tensors:

- An op is a :class:`Function` with ``forward(ctx, *inputs)`` and, right beside it,
  ``backward(ctx, dout)`` returning one gradient per input (``None`` where an
  input is not differentiable). ``ctx`` carries what the backward needs.
- ``Function.apply(*inputs)`` runs the forward on plain torch tensors. If any
  input is on the tape and recording is on, the output comes back as a
  :class:`Tensor` (a ``torch.Tensor`` subclass) holding a :class:`Node`: the
  function, its ``ctx`` and its parents. Otherwise it is a plain tensor.
- ``Tensor.backward(dout)`` sorts the nodes topologically and calls each
  backward once, in reverse, adding (``+``) each returned gradient into its
  parent: a node's running gradient, or a leaf's ``.grad``. A tensor used twice
  therefore receives the sum of both paths.

Leaves are tensors on the tape that no op made: :class:`scratchnet.nn.Parameter`
(gradient accumulates into ``.grad``), tensors made by :func:`leaf` (the same,
like torch's ``requires_grad_()``), and inputs captured by ``Module.__call__``
(gradient kept only when ``Module.backward`` asks for it, so a training step
never pays for the first layer's input gradient).

Recording is independent of torch's grad mode: scratchnet works the same with
``torch.no_grad()`` or ``torch.autograd.set_grad_enabled(False)``; it has its
own :class:`no_grad`. No tensor scratchnet makes has ``requires_grad`` or a
``grad_fn``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch

from scratchnet.errors import BackwardError, NotDifferentiableError, ShapeError

# --------------------------------------------------------------------------------------
# recording switch


class _Recording:
    on = True


def is_recording() -> bool:
    """True when scratchnet ops record themselves on the tape."""
    return _Recording.on


class Anomaly:
    """The checks :func:`scratchnet.debug.detect_anomaly` installs (None outside it):
    ``forward_check(module, inputs, output)`` after each ``Module.forward``,
    ``backward_check(node, grads)`` after each op's backward in :func:`run_backward`."""

    forward_check: Callable[[Any, tuple, Any], None] | None = None
    backward_check: Callable[[Node, tuple], None] | None = None


# leaf id → (leaf, callbacks): called once a backward pass has added the last
# gradient it will add into that leaf's ``.grad`` (see :func:`on_gradient_ready`)
_GRADIENT_READY: dict[int, tuple[Any, list[Callable[[Any], None]]]] = {}


class GradientReadyHandle:
    """Returned by :func:`on_gradient_ready`; ``remove()`` unregisters."""

    def __init__(self, leaf: Any, callback: Callable[[Any], None]) -> None:
        self.leaf, self.callback = leaf, callback

    def remove(self) -> None:
        entry = _GRADIENT_READY.get(id(self.leaf))
        if entry is not None and self.callback in entry[1]:
            entry[1].remove(self.callback)
            if not entry[1]:
                del _GRADIENT_READY[id(self.leaf)]


def on_gradient_ready(leaf: Any, callback: Callable[[Any], None]) -> GradientReadyHandle:
    """Call ``callback(leaf)`` during each backward pass, right after the pass has
    added its last contribution into ``leaf.grad`` — while the ops nearer the
    input are still being differentiated. (What torch's DDP hooks on autograd's
    gradient accumulator for; scratchnet.distributed starts a bucket's
    all_reduce from it.) Called only in passes that fill ``.grad`` and reach the
    leaf."""
    _GRADIENT_READY.setdefault(id(leaf), (leaf, []))[1].append(callback)
    return GradientReadyHandle(leaf, callback)


class no_grad(contextlib.ContextDecorator):
    """Turn recording off: ops return plain tensors and nothing can be
    backpropagated. scratchnet's twin of ``torch.no_grad`` (which scratchnet
    deliberately ignores: it never uses torch's autograd)."""

    def __enter__(self) -> None:
        self._previous = _Recording.on
        _Recording.on = False

    def __exit__(self, *exc: object) -> None:
        _Recording.on = self._previous


class enable_grad(contextlib.ContextDecorator):
    """Turn recording back on inside a :class:`no_grad` block."""

    def __enter__(self) -> None:
        self._previous = _Recording.on
        _Recording.on = True

    def __exit__(self, *exc: object) -> None:
        _Recording.on = self._previous


# --------------------------------------------------------------------------------------
# the tape's data structures


class Context:
    """What one op's backward needs: tensors saved by its forward
    (``save_for_backward``), any options set as attributes, and, set by the
    engine just before ``backward`` runs, ``needs_input_grad`` (one bool per
    input) so a backward can skip gradients nobody asked for."""

    def __init__(self) -> None:
        self.saved_tensors: tuple[torch.Tensor, ...] = ()
        self.needs_input_grad: tuple[bool, ...] = ()

    def save_for_backward(self, *tensors: torch.Tensor | None) -> None:
        self.saved_tensors = tensors


class Node:
    """One recorded op: the :class:`Function` that ran, its ``ctx``, and one parent
    per input (a :class:`Node`, a leaf :class:`Tensor`, or ``None`` for inputs
    that are not on the tape)."""

    __slots__ = ("function", "ctx", "parents", "grad", "needed", "freed")

    def __init__(self, function: type[Function], ctx: Context, parents: tuple) -> None:
        self.function = function
        self.ctx = ctx
        self.parents = parents
        self.grad: torch.Tensor | None = None  # running d(root)/d(this op's output)
        self.needed = False  # does any parent want a gradient? (set per backward)
        self.freed = False  # saved tensors released by a backward

    @property
    def name(self) -> str:
        return self.function.__name__


class Function:
    """Base of every differentiable op. Subclasses define::

        @staticmethod
        def forward(ctx, *inputs) -> torch.Tensor      # plain tensors in and out
        @staticmethod
        def backward(ctx, dout) -> tuple[grad | None, ...]  # one per input

    ``backward`` may return ``dout`` itself, a view of it, or one tensor for two
    inputs: before keeping a gradient as a leaf's ``.grad`` (which it later adds
    into in place) the engine copies any that is shared or not contiguous.
    """

    @staticmethod
    def forward(ctx: Context, *inputs: Any) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs: Any) -> torch.Tensor:
        ctx = Context()
        if not _Recording.on:
            return cls.forward(ctx, *[plain(x) for x in inputs])
        parents = []
        plain_inputs = []
        on_tape = False
        for x in inputs:
            if isinstance(x, Tensor):
                on_tape = True
                parents.append(x._node if x._node is not None else x)
                plain_inputs.append(plain(x))
            else:
                parents.append(None)
                plain_inputs.append(x)
        out = cls.forward(ctx, *plain_inputs)
        if not on_tape:
            return out
        return _on_tape(out, Node(cls, ctx, tuple(parents)))


# --------------------------------------------------------------------------------------
# the tensor type that carries the tape

# Filled by scratchnet.tensor_ops: torch functions (torch.add, Tensor.__mul__, ...)
# that have a scratchnet backward, mapped to the scratchnet op that replaces them.
TENSOR_OPS: dict[Callable, Callable] = {}

# torch functions whose result never carries a gradient, whatever its dtype.
_NEVER_DIFFERENTIABLE = {
    torch.Tensor.detach,
    torch.Tensor.data.__get__,
    torch.Tensor.grad.__get__,
    torch.Tensor.grad.__set__,
    torch.Tensor.__repr__,
    torch.Tensor.__format__,
    torch.Tensor.numpy,
    torch.Tensor.tolist,
    torch.Tensor.item,
    torch.Tensor.untyped_storage,
    torch.Tensor.data_ptr,
    torch.Tensor.__reduce_ex__,
    # new tensors that take only the shape, dtype and device of their input
    torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like,
    torch.rand_like, torch.randn_like, torch.randint_like,
    torch.Tensor.new_zeros, torch.Tensor.new_ones, torch.Tensor.new_full,
    torch.Tensor.new_empty, torch.Tensor.new_tensor,
}


class Tensor(torch.Tensor):
    """A ``torch.Tensor`` on scratchnet's tape.

    Attributes:
        _node: the :class:`Node` whose op made this tensor; ``None`` for a leaf.
        _plain: the same storage as a plain ``torch.Tensor`` (ops on it skip the
            tape's dispatch).
        _wants_grad: for a leaf, whether its gradient accumulates into ``.grad``.

    torch operations on it are differentiated where scratchnet has a backward for
    them (arithmetic, matmul, views, indexing, reductions: see
    :mod:`scratchnet.tensor_ops`); ops whose result cannot carry a gradient
    (``argmax``, comparisons, ``item``, printing, ``.detach()``, ``.data``) return
    plain tensors; any other torch op raises :class:`NotDifferentiableError`
    rather than silently cutting the gradient.
    """

    _node: Node | None
    _plain: torch.Tensor
    _wants_grad: bool

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        name = getattr(func, "__name__", repr(func))
        if _Recording.on and _writes_in_place(func, name, kwargs):
            raise NotDifferentiableError(
                f"in-place torch op {name} (or out=) on a tensor on scratchnet's tape "
                "would corrupt the values its backward needs and record nothing; use "
                "the out-of-place op, or .detach() first"
            )
        scratchnet_op = TENSOR_OPS.get(func)
        if scratchnet_op is not None and _Recording.on:
            return scratchnet_op(*args, **kwargs)
        with torch._C.DisableTorchFunctionSubclass():
            # tape tensors as their plain alias; a Parameter as itself, so that
            # ``w.data = ...`` and ``w.grad = ...`` set the Parameter's own fields
            out = func(*_plain_tree(args), **_plain_tree(kwargs))
        if not _Recording.on or func in _NEVER_DIFFERENTIABLE or not _has_float(out):
            return out
        raise NotDifferentiableError(
            f"torch op {name} has no scratchnet backward, and its input is on "
            "scratchnet's tape: the gradient through it would be lost. Use the "
            "scratchnet.nn.functional op, call .detach() first, or run it under "
            "scratchnet.no_grad()"
        )

    def __repr__(self, *, tensor_contents: Any = None) -> str:  # noqa: ARG002
        text = repr(plain(self))
        if self._node is not None:
            return f"{text[:-1]}, backward=<{self._node.name}Backward>)"
        return text

    def backward(  # type: ignore[override]
        self,
        gradient: torch.Tensor | None = None,
        retain_graph: bool | None = None,
        create_graph: bool = False,
        inputs: Sequence[torch.Tensor] | None = None,
    ) -> None:
        """Backpropagate from this tensor: fill ``.grad`` of every parameter and
        :func:`leaf` it depends on (adding to what is there). Same signature as
        ``torch.Tensor.backward``; ``create_graph`` is not supported."""
        if create_graph:
            raise BackwardError("scratchnet's backward does not record itself: "
                                "create_graph=True is not supported")
        if inputs is not None:
            raise BackwardError("backward(inputs=...) is not supported; use "
                                "scratchnet.autodiff.grad")
        run_backward(self, gradient, retain_graph=bool(retain_graph))


def plain(x: Any) -> Any:
    """The plain ``torch.Tensor`` behind a tape :class:`Tensor` or Parameter (same
    storage); anything else unchanged."""
    return x._plain if isinstance(x, Tensor) else x


def _writes_in_place(func: Callable, name: str, kwargs: dict) -> bool:
    """``add_``, ``x[i] = v`` and ``out=`` overwrite a tensor in place."""
    return ((name.endswith("_") and not name.endswith("__"))
            or func is torch.Tensor.__setitem__ or kwargs.get("out") is not None)


def _plain_tree(obj: Any) -> Any:
    if type(obj) is Tensor:
        return obj._plain
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain_tree(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _plain_tree(v) for k, v in obj.items()}
    return obj


def _has_float(obj: Any) -> bool:
    if isinstance(obj, torch.Tensor):
        return obj.is_floating_point() or obj.is_complex()
    if isinstance(obj, (list, tuple)):
        return any(_has_float(o) for o in obj)
    return False


def _on_tape(out: torch.Tensor, node: Node | None, wants_grad: bool = False) -> Tensor:
    tracked = out.as_subclass(Tensor)
    tracked._node = node
    tracked._plain = out
    tracked._wants_grad = wants_grad
    return tracked


def leaf(x: torch.Tensor) -> Tensor:
    """Put ``x`` on the tape as a leaf whose gradient accumulates into ``.grad``:
    scratchnet's ``x.requires_grad_()``. Shares storage with ``x``."""
    return _on_tape(plain(x), None, wants_grad=True)


def capture_input(x: torch.Tensor) -> Tensor:
    """Put a module's plain input on the tape as a leaf whose gradient is kept
    only when ``Module.backward`` asks for it."""
    return _on_tape(x, None, wants_grad=False)


def is_on_tape(x: Any) -> bool:
    return isinstance(x, Tensor)


# --------------------------------------------------------------------------------------
# the backward pass


def _topological_order(root: Node, boundary: dict[int, Tensor]) -> list[Node]:
    """Every node ``root`` depends on, parents before children, not going past a
    node in ``boundary`` (a requested input made by an earlier op)."""
    order: list[Node] = []
    visited: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, parents_done = stack.pop()
        if parents_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        if id(node) in boundary:
            continue
        for parent in node.parents:
            if type(parent) is Node and id(parent) not in visited:
                stack.append((parent, False))
    return order


def run_backward(
    root: Tensor,
    dout: torch.Tensor | None = None,
    inputs: Sequence[Tensor] = (),
    retain_graph: bool = False,
    accumulate: bool = True,
) -> list[torch.Tensor | None]:
    """Backpropagate ``dout`` (d loss / d root) through the tape.

    Adds into ``.grad`` of every leaf that wants one and returns d loss / d x for
    each tensor ``x`` in ``inputs`` (``None`` where root does not depend on it).
    Unless ``retain_graph``, the saved tensors are released afterwards, as torch
    does, and a second backward through the same ops raises. With
    ``accumulate=False`` no ``.grad`` is touched (only ``inputs`` get gradients).
    """
    if not isinstance(root, Tensor):
        raise BackwardError(
            "backward() on a tensor that is not on scratchnet's tape: nothing it "
            "depends on is a Parameter or a scratchnet leaf (was it computed under "
            "scratchnet.no_grad(), or with .detach()?)"
        )
    root_plain = plain(root)
    if dout is None:
        if root_plain.numel() != 1:
            raise BackwardError(
                f"backward() without a gradient needs a scalar output, got shape "
                f"{tuple(root_plain.shape)}: pass gradient= of the same shape"
            )
        dout = torch.ones_like(root_plain)
    else:
        dout = plain(dout)
        if dout.shape != root_plain.shape:
            raise ShapeError(
                f"backward(): gradient has shape {tuple(dout.shape)} but the output "
                f"has shape {tuple(root_plain.shape)}"
            )
        # the engine may write into the tensors it passes around; never the caller's
        dout = dout.to(dtype=root_plain.dtype, device=root_plain.device, copy=True)

    wanted_leaves = {id(t): t for t in inputs if t._node is None}
    pass_ = _Pass(wanted_leaves, accumulate)
    boundary = {id(t._node): t for t in inputs if t._node is not None}
    collected: dict[int, torch.Tensor] = {}

    if root._node is None:  # the root is itself a leaf
        _accumulate_leaf(root, dout, pass_, collected)
        return [collected.get(id(t)) for t in inputs]

    order = _topological_order(root._node, boundary)
    _mark_needed(order, boundary, pass_)
    # watched leaves: how many of the pass's edges still lead into each
    pending = _pending_edges(order, boundary, pass_) if _GRADIENT_READY else {}
    root._node.grad = dout
    for node in reversed(order):
        if id(node) in boundary:
            continue
        dnode, node.grad = node.grad, None
        if dnode is None or not node.needed:
            if pending and node.needed:  # reached by no gradient: nothing to wait for
                _count_down(node, pending)
            continue
        if node.freed:
            raise BackwardError(
                f"backward through {node.name} a second time: its saved tensors were "
                "released by the first backward (pass retain_graph=True to keep them)"
            )
        ctx = node.ctx
        ctx.needs_input_grad = tuple(_wants(p, pass_) for p in node.parents)
        grads = node.function.backward(ctx, dnode)
        if not isinstance(grads, tuple):
            grads = (grads,)
        if Anomaly.backward_check is not None:  # inside scratchnet.debug.detect_anomaly
            Anomaly.backward_check(node, grads)
        for parent, grad in zip(node.parents, grads, strict=False):
            if parent is None or grad is None:
                continue
            if type(parent) is Node:
                parent.grad = grad if parent.grad is None else parent.grad + grad
            else:
                owned = _is_exclusive(grad, dnode, grads)
                _accumulate_leaf(parent, grad, pass_, collected, owned)
        if pending:
            _count_down(node, pending)
        if not retain_graph:
            ctx.saved_tensors = ()
            node.freed = True
    results = []
    for t in inputs:
        if t._node is not None:
            results.append(t._node.grad)
            t._node.grad = None
        else:
            results.append(collected.get(id(t)))
    return results


def _pending_edges(order: list[Node], boundary: dict[int, Tensor], pass_: _Pass
                   ) -> dict[int, int]:
    """For each leaf with a gradient-ready callback that this pass fills: the
    number of edges from the pass's nodes into it."""
    pending: dict[int, int] = {}
    for node in order:
        if id(node) in boundary or not node.needed:
            continue
        for parent in node.parents:
            if (parent is not None and type(parent) is not Node
                    and id(parent) in _GRADIENT_READY and pass_.fills_grad(parent)):
                pending[id(parent)] = pending.get(id(parent), 0) + 1
    return pending


def _count_down(node: Node, pending: dict[int, int]) -> None:
    """``node``'s backward is done: fire the callbacks of the leaves whose last
    edge it was."""
    for parent in node.parents:
        key = id(parent)
        if key in pending:
            pending[key] -= 1
            if pending[key] == 0:
                del pending[key]
                leaf, callbacks = _GRADIENT_READY[key]
                for callback in list(callbacks):
                    callback(leaf)


class _Pass:
    """What one backward pass was asked for: the leaves whose gradient it returns,
    and whether leaves' ``.grad`` are filled."""

    __slots__ = ("wanted_leaves", "accumulate")

    def __init__(self, wanted_leaves: dict[int, Tensor], accumulate: bool) -> None:
        self.wanted_leaves = wanted_leaves
        self.accumulate = accumulate

    def fills_grad(self, leaf_tensor: Tensor) -> bool:
        return self.accumulate and leaf_tensor._wants_grad


def _wants(parent: Node | Tensor | None, pass_: _Pass) -> bool:
    if parent is None:
        return False
    if type(parent) is Node:
        return parent.needed
    return pass_.fills_grad(parent) or id(parent) in pass_.wanted_leaves


def _mark_needed(order: list[Node], boundary: dict[int, Tensor], pass_: _Pass) -> None:
    """A node needs its backward run iff some parent wants a gradient."""
    for node in order:  # parents come first
        node.needed = id(node) in boundary or any(_wants(p, pass_) for p in node.parents)


def _is_exclusive(grad: torch.Tensor, dnode: torch.Tensor, grads: tuple) -> bool:
    """May a leaf keep ``grad`` itself as its ``.grad``, to be added into in place
    later? Not when it shares storage with the incoming ``dnode`` (a backward that
    passes ``dout`` through, as is or reshaped) or with another returned gradient
    (``a + b`` hands the same tensor to both), nor when it is not contiguous (a
    stride-0 ``expand`` from ``sum``'s backward cannot be added into)."""
    storage = grad.untyped_storage().data_ptr()
    return (grad.is_contiguous()
            and storage != dnode.untyped_storage().data_ptr()
            and sum(g is not None and g.untyped_storage().data_ptr() == storage
                    for g in grads) == 1)


def _accumulate_leaf(
    leaf_tensor: Tensor, grad: torch.Tensor, pass_: _Pass,
    collected: dict[int, torch.Tensor], owned: bool = True,
) -> None:
    """Add ``grad`` into the leaf's ``.grad`` (if it wants one) and into what this
    pass returns for it (if asked). ``owned``: ``grad`` is ours alone to keep."""
    key = id(leaf_tensor)
    fills_grad = pass_.fills_grad(leaf_tensor)
    if key in pass_.wanted_leaves:
        collected[key] = grad if key not in collected else collected[key] + grad
        owned = False  # .grad must not alias what we return
    if not fills_grad:
        return
    if leaf_tensor.grad is None:
        leaf_tensor.grad = grad if owned else grad.clone(
            memory_format=torch.contiguous_format)
    else:
        leaf_tensor.grad.add_(grad)


def grad(
    output: Tensor, inputs: Sequence[Tensor], grad_output: torch.Tensor | None = None
) -> list[torch.Tensor | None]:
    """d output / d input for each input, without touching any ``.grad``
    (scratchnet's ``torch.autograd.grad``). ``inputs`` may be leaves or tensors
    made by earlier ops. The tape is kept, so it can be called again."""
    for t in inputs:
        if not isinstance(t, Tensor):
            raise BackwardError("grad(): every input must be on scratchnet's tape "
                                "(a leaf, a Parameter or an op's output)")
    return run_backward(output, grad_output, inputs, retain_graph=True, accumulate=False)
