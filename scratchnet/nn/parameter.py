"""``Parameter``: a tensor a module trains, holding its gradient in ``.grad``.

Like ``torch.nn.Parameter`` it is a ``torch.Tensor`` subclass, so ``param[:2]``,
``param.data.normal_(std=0.01)``, ``param.shape`` and printing all work as in
the seeds. Unlike it, it never has ``requires_grad``: its gradient is filled by
scratchnet's own tape (:mod:`scratchnet.autodiff`), where a Parameter is a leaf.

torch operations on a Parameter behave as on a tape :class:`Tensor` while
recording: ``w.t()``, ``param[:2]``, ``(w ** 2).sum()`` go on the tape (as they
would carry a ``grad_fn`` in torch), ops with no scratchnet backward raise
:class:`~scratchnet.errors.NotDifferentiableError`, and in-place ops raise
unless recording is off or torch's grad mode is (``torch.no_grad()``, as torch
allows ``w -= lr * w.grad`` there). ``.data``, ``.grad``, ``.shape`` and printing
never record.
"""

from __future__ import annotations

import torch

from scratchnet import autodiff
from scratchnet.autodiff import Tensor


class Parameter(Tensor):
    """A trainable tensor: a leaf of the tape whose gradient accumulates into
    ``.grad`` (``None`` until the first backward, as in torch).

    Args:
        data: the initial values (the Parameter shares their storage).
    """

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if autodiff.is_recording() and torch.is_grad_enabled():
            return Tensor.__torch_function__.__func__(cls, func, types, args, kwargs)
        # updating weights (optimizers, init, ``.data``): run on the Parameter itself
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)

    def __new__(cls, data: torch.Tensor | None = None) -> Parameter:
        if data is None:
            data = torch.empty(0)
        if isinstance(data, Tensor):
            data = data.detach().as_subclass(torch.Tensor)
        param = torch.Tensor._make_subclass(cls, data.detach(), False)
        param._node = None
        param._wants_grad = True
        return param

    @property
    def _plain(self) -> torch.Tensor:
        """A plain ``torch.Tensor`` alias of this Parameter's storage (what the
        ops' forwards compute with, so they do not dispatch back here)."""
        with torch._C.DisableTorchFunctionSubclass():
            return self.as_subclass(torch.Tensor)

    def __repr__(self) -> str:  # type: ignore[override]
        return "Parameter containing:\n" + repr(self.data)

    def __deepcopy__(self, memo: dict) -> Parameter:
        if id(self) in memo:
            return memo[id(self)]
        copied = Parameter(self.data.clone(memory_format=torch.preserve_format))
        if self.grad is not None:
            copied.grad = self.grad.clone()
        memo[id(self)] = copied
        return copied

    def __reduce_ex__(self, protocol: int):  # noqa: ANN204
        return (Parameter, (self.data.detach().clone(),))
