"""``BatchNorm1d`` (torch/nn/modules/batchnorm.py), thin over
:func:`scratchnet.nn.functional.batch_norm`, where the math and its backward
live."""

from __future__ import annotations

import torch

from scratchnet.errors import ShapeError
from scratchnet.nn import functional as F
from scratchnet.nn import init
from scratchnet.nn.modules.module import Module
from scratchnet.nn.parameter import Parameter


class BatchNorm1d(Module):
    r"""Batch normalisation over a 2-D or 3-D input (torch.nn.BatchNorm1d):

        y = (x − E[x]) / √(Var[x] + eps) · γ + β

    per channel C, with the mean and the biased variance taken over the batch
    (and the length L) in training, and the running estimates in evaluation.
    The running estimates are updated in training with the unbiased variance::

        running = (1 − momentum) · running + momentum · batch statistic

    or, with ``momentum=None``, as the cumulative average of all batches so far
    (momentum = 1 / num_batches_tracked).

    Args:
        num_features: C, the number of features or channels.
        eps: added to the variance for numerical stability. Default: 1e-5.
        momentum: weight of the new batch in the running estimates; None for a
            cumulative average. Default: 0.1.
        affine: learn γ (``weight``) and β (``bias``). Default: True.
        track_running_stats: keep running estimates (used in evaluation); when
            False the buffers are None and batch statistics are used in both
            modes. Default: True.
        device, dtype: where and how the parameters and buffers are created.
        bias: with ``affine``, learn β too. Default: True.

    Shape:
        - Input: (N, C) or (N, C, L).
        - Output: the input's shape.

    Attributes:
        weight: γ, (C,), initialised to ones (None without ``affine``).
        bias: β, (C,), initialised to zeros.
        running_mean: buffer (C,), initialised to zeros.
        running_var: buffer (C,), initialised to ones.
        num_batches_tracked: buffer, 0-d int64, the training batches seen.

    Example::

        >>> m = nn.BatchNorm1d(100)
        >>> m(torch.randn(20, 100)).shape
        torch.Size([20, 100])
    """

    def __init__(self, num_features: int, eps: float = 1e-5,
                 momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, *, bias: bool = True) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        factory = {"device": device, "dtype": dtype}
        if affine:
            self.weight = Parameter(torch.empty(num_features, **factory))
            if bias:
                self.bias = Parameter(torch.empty(num_features, **factory))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer("num_batches_tracked",
                                 torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Running estimates to (0, 1); γ = 1 and β = 0, so a fresh layer only
        normalises."""
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (2, 3):
            raise ShapeError(f"expected 2D or 3D input (got {x.dim()}D input of shape "
                             f"{tuple(x.shape)})")
        return F.batch_norm(x, *self._statistics_to_use(), self.weight, self.bias,
                            self._uses_batch_statistics(), self._momentum_for_this_call(),
                            self.eps)  # (N, C) or (N, C, L)

    def _momentum_for_this_call(self) -> float:
        """Counts the batch (training with running stats) and returns the weight
        of this batch in the running averages, as torch's ``_BatchNorm.forward``."""
        if not (self.training and self.track_running_stats):
            return 0.0 if self.momentum is None else self.momentum
        self.num_batches_tracked.add_(1)
        if self.momentum is None:  # cumulative moving average
            return 1.0 / float(self.num_batches_tracked)
        return self.momentum

    def _uses_batch_statistics(self) -> bool:
        """In training; and in evaluation when there are no running estimates."""
        return self.training or (self.running_mean is None and self.running_var is None)

    def _statistics_to_use(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The buffers to update (training) or normalise with (evaluation); None
        in training without tracking, so nothing is updated."""
        if self.training and not self.track_running_stats:
            return None, None
        return self.running_mean, self.running_var

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")
