"""``Parameter``: a tensor a module trains, holding its gradient in ``.grad``.

Like ``torch.nn.Parameter`` it is a ``torch.Tensor`` subclass, so ``param[:2]``,
``param.data.normal_(std=0.01)``, ``param.shape`` and printing all work as in
the seeds. Unlike it, it never has ``requires_grad``: its gradient is filled by
scratchnet's own tape (:mod:`scratchnet.autodiff`), where a Parameter is a leaf.
torch operations on a Parameter return plain tensors (as torch.nn.Parameter's
do); only scratchnet ops (``F.linear`` ...) put it on the tape.
"""

from __future__ import annotations

import torch
from torch._C import _disabled_torch_function_impl

from scratchnet.autodiff import Tensor


class Parameter(Tensor):
    """A trainable tensor: a leaf of the tape whose gradient accumulates into
    ``.grad`` (``None`` until the first backward, as in torch).

    Args:
        data: the initial values (the Parameter shares their storage).
    """

    __torch_function__ = _disabled_torch_function_impl

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
    def _plain(self) -> torch.Tensor:  # the engine's view of it: itself
        return self

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
