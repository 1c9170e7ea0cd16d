"""All of a module's parameters as views into one flat buffer, and all their
gradients as views into another.

    flat = FlatParameters(model)      # after model.to(device, dtype)
    flat.flat_params                  # (N,) every parameter, one after another
    flat.flat_grads                   # (N,) every .grad, in the same places
    flat.zero_grad()                  # one flat_grads.zero_() for the whole model

Why: an optimizer step, a gradient reset or an all-reduce is then a few passes
over one long tensor instead of a Python loop over many small ones.

How it works. Parameter ``i`` occupies ``flat_params[offset_i : offset_i +
numel_i]``, viewed back to its shape; the Parameter object is kept (only its
``.data`` is re-pointed), so modules and optimizers that hold it see the flat
storage. Each ``.grad`` is set to the matching view of ``flat_grads``; the
tape adds into an existing ``.grad`` in place (``leaf.grad.add_(grad)`` in
:func:`scratchnet.autodiff._accumulate_leaf`), so a backward writes straight
into the flat buffer.

Two things detach a parameter from the buffers, and :meth:`FlatParameters.is_intact`
reports both: ``zero_grad(set_to_none=True)`` (torch's default) sets ``.grad`` to
``None``, and the next backward gives it a fresh tensor; ``module.to(...)`` gives
``.data`` a new tensor. :meth:`FlatParameters.zero_grad` re-attaches the gradient
views; build the FlatParameters after moving the module.

N = total number of parameter elements.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from scratchnet.errors import DeviceError, DTypeError, OptionError


@dataclass(frozen=True)
class ParameterSlot:
    """Where one parameter lives in the flat buffers: elements
    ``[offset, offset + numel)``, viewed as ``shape``."""

    name: str
    offset: int
    numel: int
    shape: torch.Size


@dataclass(frozen=True)
class Bucket:
    """Consecutive parameters whose gradients form one slice of ``flat_grads``:
    elements ``[offset, offset + numel)`` (e.g. one all-reduce call)."""

    offset: int
    numel: int
    slots: tuple[ParameterSlot, ...]


class FlatParameters:
    """Re-point every parameter of ``module`` to a view of one contiguous 1-D
    buffer, and give each a ``.grad`` that is a view of one flat gradient buffer.

    Args:
        module: a scratchnet module; its parameters (``named_parameters()``
            order, shared parameters once) must share one dtype and device.

    Attributes:
        flat_params: (N,) the parameters' values, in ``named_parameters()`` order.
        flat_grads: (N,) their gradients, same layout; zeros at construction.
        params: the Parameter objects, in layout order.
        layout: one :class:`ParameterSlot` per parameter (offset, numel, shape).

    Example::

        >>> flat = FlatParameters(model)
        >>> flat.zero_grad()
        >>> loss_fn(model(x), y).backward()   # fills flat.flat_grads
        >>> for bucket in flat.buckets(2**20):  # last layer first
        ...     all_reduce(flat.bucket_grads(bucket))
    """

    def __init__(self, module: object) -> None:
        named = list(module.named_parameters())  # type: ignore[attr-defined]
        if not named:
            raise OptionError("FlatParameters: the module has no parameters")
        _check_same_kind([p for _, p in named], [name for name, _ in named])
        first = named[0][1]
        layout, offset = [], 0
        for name, param in named:
            layout.append(ParameterSlot(name, offset, param.numel(), param.shape))
            offset += param.numel()
        self.layout: tuple[ParameterSlot, ...] = tuple(layout)
        self.params: tuple[torch.Tensor, ...] = tuple(p for _, p in named)
        self.flat_params = torch.empty(offset, dtype=first.dtype, device=first.device)
        self.flat_grads = torch.zeros_like(self.flat_params)
        for slot, param in zip(self.layout, self.params, strict=True):
            values = self.view(self.flat_params, slot)
            values.copy_(param.data)
            param.data = values  # the Parameter object stays; its storage is now flat
        self.attach_grads()

    # ---------------------------------------------------------------- views

    @staticmethod
    def view(flat: torch.Tensor, slot: ParameterSlot) -> torch.Tensor:
        """The part of a flat buffer (params, grads, or an optimizer's state laid
        out the same way) that belongs to ``slot``, in the parameter's shape."""
        return flat[slot.offset: slot.offset + slot.numel].view(slot.shape)

    def attach_grads(self) -> None:
        """Set every parameter's ``.grad`` to its view of ``flat_grads``. A
        ``.grad`` that was replaced by another tensor is copied in first (so no
        gradient is lost); one set to ``None`` reads as zeros."""
        for slot, param in zip(self.layout, self.params, strict=True):
            grad_view = self.view(self.flat_grads, slot)
            if param.grad is None:
                grad_view.zero_()
            elif not _same_memory(param.grad, grad_view):
                grad_view.copy_(param.grad)
            else:
                continue
            param.grad = grad_view

    def zero_grad(self) -> None:
        """Zero every gradient with one ``flat_grads.zero_()``, re-attaching
        any gradient view that was dropped (e.g. by ``set_to_none=True``)."""
        self.flat_grads.zero_()
        if not self.grads_attached():
            for slot, param in zip(self.layout, self.params, strict=True):
                param.grad = self.view(self.flat_grads, slot)

    # ---------------------------------------------------------------- checks

    def grads_attached(self) -> bool:
        """Is every ``.grad`` still its view of ``flat_grads``?"""
        return all(param.grad is not None
                   and _same_memory(param.grad, self.view(self.flat_grads, slot))
                   for slot, param in zip(self.layout, self.params, strict=True))

    def params_attached(self) -> bool:
        """Is every parameter still its view of ``flat_params``?"""
        return all(_same_memory(param, self.view(self.flat_params, slot))
                   for slot, param in zip(self.layout, self.params, strict=True))

    def is_intact(self) -> bool:
        """Do the flat buffers still hold every parameter and every gradient?"""
        return self.params_attached() and self.grads_attached()

    # ---------------------------------------------------------------- buckets

    def buckets(self, bucket_numel: int) -> list[Bucket]:
        """Group consecutive parameters, last first (the order in which a
        backward finishes their gradients), into buckets of at most
        ``bucket_numel`` elements; a larger parameter gets a bucket of its own.
        Each bucket is one contiguous slice of ``flat_grads``."""
        if not isinstance(bucket_numel, int) or bucket_numel <= 0:
            raise OptionError(f"FlatParameters.buckets: bucket_numel must be a "
                              f"positive int, got {bucket_numel!r}")
        buckets: list[Bucket] = []
        current: list[ParameterSlot] = []
        for slot in reversed(self.layout):
            if current and sum(s.numel for s in current) + slot.numel > bucket_numel:
                buckets.append(_bucket_of(current))
                current = []
            current.append(slot)
        buckets.append(_bucket_of(current))
        return buckets

    def bucket_grads(self, bucket: Bucket) -> torch.Tensor:
        """(bucket.numel,) the bucket's slice of ``flat_grads``: in-place ops on it
        (an all-reduce, a division by the world size) reach every ``.grad``."""
        return self.flat_grads[bucket.offset: bucket.offset + bucket.numel]

    def __iter__(self) -> Iterator[tuple[ParameterSlot, torch.Tensor]]:
        return iter(zip(self.layout, self.params, strict=True))

    def __len__(self) -> int:
        return len(self.params)

    def __repr__(self) -> str:
        return (f"FlatParameters({len(self.params)} parameters, "
                f"{self.flat_params.numel()} elements, {self.flat_params.dtype}, "
                f"{self.flat_params.device})")


def _bucket_of(slots_last_first: list[ParameterSlot]) -> Bucket:
    slots = tuple(reversed(slots_last_first))  # back in layout order
    offset = slots[0].offset
    return Bucket(offset, slots[-1].offset + slots[-1].numel - offset, slots)


def _same_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Do ``a`` and ``b`` view exactly the same elements?"""
    return (a.data_ptr() == b.data_ptr() and a.shape == b.shape
            and a.stride() == b.stride() and a.dtype == b.dtype)


def _check_same_kind(params: list[torch.Tensor], names: list[str]) -> None:
    first = params[0]
    for name, param in zip(names, params, strict=True):
        if param.dtype != first.dtype:
            raise DTypeError(f"FlatParameters: parameter {name} is {param.dtype}, "
                             f"{names[0]} is {first.dtype}; one flat buffer holds one "
                             "dtype (call module.to(dtype) first)")
        if param.device != first.device:
            raise DeviceError(f"FlatParameters: parameter {name} is on {param.device}, "
                              f"{names[0]} on {first.device}; move the module first")


def contiguous_span(tensors: list[torch.Tensor]) -> torch.Tensor | None:
    """If ``tensors`` are contiguous views that sit one right after another in
    one storage, in this order, with one dtype: the 1-D tensor spanning them all
    (sharing their memory). Otherwise ``None``. This is how an optimizer finds
    out that its parameters (or gradients, or state) are laid out flat."""
    if not tensors:
        return None
    first = tensors[0]
    storage = first.untyped_storage()
    expected_offset = first.storage_offset()
    for t in tensors:
        if (t.dtype != first.dtype or not t.is_contiguous()
                or t.storage_offset() != expected_offset
                or t.untyped_storage().data_ptr() != storage.data_ptr()):
            return None
        expected_offset += t.numel()
    total = expected_offset - first.storage_offset()
    return torch.empty(0, dtype=first.dtype, device=first.device).set_(
        storage, first.storage_offset(), (total,), (1,))
