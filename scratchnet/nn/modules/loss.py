"""Loss modules (torch/nn/modules/loss.py): configuration only, thin over
:mod:`scratchnet.nn.functional.loss`, where the math and its backward live.

Shapes: N = batch, C = classes, d1..dK = extra dims of a K-dimensional loss.
"""

from __future__ import annotations

import torch

from scratchnet.nn import functional as F
from scratchnet.nn.functional.loss import (
    check_label_smoothing,
    check_reduction,
    legacy_reduction,
)
from scratchnet.nn.modules.module import Module


class _Loss(Module):
    """Holds ``reduction`` ('none' | 'mean' | 'sum'); the deprecated
    ``size_average``/``reduce`` pair overrides it when given, as in torch."""

    def __init__(self, size_average: bool | None = None, reduce: bool | None = None,
                 reduction: str = "mean") -> None:
        super().__init__()
        if size_average is not None or reduce is not None:
            reduction = legacy_reduction(size_average, reduce)
        check_reduction(reduction, type(self).__name__)
        self.reduction = reduction


class _WeightedLoss(_Loss):
    """A loss with a per-class ``weight`` (C,), registered as a buffer so that
    ``.to(device)`` moves it and ``state_dict()`` holds it, as in torch."""

    def __init__(self, weight: torch.Tensor | None = None,
                 size_average: bool | None = None, reduce: bool | None = None,
                 reduction: str = "mean") -> None:
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)


class NLLLoss(_WeightedLoss):
    r"""Negative log likelihood of class-index targets (torch.nn.NLLLoss):

    .. math::
        \ell_i = -w_{y_i} \, x_{i, y_i}  \quad (0 \text{ where } y_i = \text{ignore\_index}),
        \qquad \text{mean} = \sum_i \ell_i \Big/ \sum_{i \text{ kept}} w_{y_i}

    Args:
        weight: (C,) rescaling of each class, or None (all ones).
        size_average, reduce: deprecated; override ``reduction`` when given.
        ignore_index: a target value that contributes nothing (default -100).
        reduction: 'none' | 'mean' | 'sum'.

    Shape:
        - Input: log-probabilities (C,), (N, C) or (N, C, d1, ..., dK).
        - Target: int64 class indices (), (N,) or (N, d1, ..., dK).
        - Output: () or, with reduction='none', the target's shape.

    Example::

        >>> loss = nn.NLLLoss()(log_probs, labels)   # (N, C), (N,) → ()
    """

    def __init__(self, weight: torch.Tensor | None = None,
                 size_average: bool | None = None, ignore_index: int = -100,
                 reduce: bool | None = None, reduction: str = "mean") -> None:
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.nll_loss(input, target, weight=self.weight,
                          ignore_index=self.ignore_index, reduction=self.reduction)


class CrossEntropyLoss(_WeightedLoss):
    r"""Cross entropy between logits and class targets (torch.nn.CrossEntropyLoss):
    ``log_softmax`` over the class dim then :class:`NLLLoss`, fused into one op
    whose backward is ``(softmax(x) − onehot(y)) · w[y] / Σ w[y]`` for the
    default class-index, mean-reduced case.

    .. math::
        \ell_i = (1-\varepsilon)\, w_{y_i} (-\log p_{i,y_i})
                 + \frac{\varepsilon}{C} \sum_c w_c (-\log p_{i,c})

    Targets are class indices (int64) or class probabilities (floats of the
    input's shape, then ℓ_i = −Σ_c w_c ((1 − ε) t_ic + ε/C) log p_ic and the mean
    divides by N·d1⋯dK). Targets are data: no gradient flows to them.

    Args:
        weight: (C,) rescaling of each class, or None (all ones).
        size_average, reduce: deprecated; override ``reduction`` when given.
        ignore_index: a class-index target value that contributes nothing.
        reduction: 'none' | 'mean' | 'sum'.
        label_smoothing: ε in [0, 1] (default 0).

    Shape:
        - Input: logits (C,), (N, C) or (N, C, d1, ..., dK).
        - Target: int64 (), (N,) or (N, d1, ..., dK); or floats like the input.
        - Output: () or, with reduction='none', (N, d1, ..., dK) (() unbatched).

    Example::

        >>> loss = nn.CrossEntropyLoss()(model(x), labels)
        >>> loss.backward()
    """

    def __init__(self, weight: torch.Tensor | None = None,
                 size_average: bool | None = None, ignore_index: int = -100,
                 reduce: bool | None = None, reduction: str = "mean",
                 label_smoothing: float = 0.0) -> None:
        super().__init__(weight, size_average, reduce, reduction)
        check_label_smoothing(label_smoothing)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(input, target, weight=self.weight,
                               ignore_index=self.ignore_index, reduction=self.reduction,
                               label_smoothing=self.label_smoothing)


class MSELoss(_Loss):
    r"""Mean squared error (torch.nn.MSELoss): ``(input − target)²``, element-wise,
    then reduced. Gradients flow to both input and target. Shapes must match
    exactly (torch broadcasts with a warning; scratchnet refuses).

    Shape:
        - Input: (*). Target: (*), the same shape.
        - Output: () or, with reduction='none', (*).

    Example::

        >>> loss = nn.MSELoss()(prediction, target)
    """

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(input, target, reduction=self.reduction)
