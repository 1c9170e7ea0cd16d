"""Activation modules (torch/nn/modules/activation.py), thin over
:mod:`scratchnet.nn.functional.activation` and :mod:`scratchnet.nn.functional.softmax`.

Each holds only its configuration; ``extra_repr`` gives torch's text, so
``repr(module)`` equals the torch.nn twin's (``Step`` has no twin).
"""

from __future__ import annotations

import torch

from scratchnet.errors import OptionError
from scratchnet.nn import functional as F
from scratchnet.nn.functional.activation import check_gelu_approximate
from scratchnet.nn.modules.module import Module


class ReLU(Module):
    """ReLU(x) = max(0, x), element-wise. Shape: (*) → (*)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class Sigmoid(Module):
    """Sigmoid(x) = σ(x) = 1 / (1 + exp(−x)), element-wise.

    Shape: Input (*), Output (*), same shape.

    Example::

        >>> nn.Sigmoid()(torch.tensor([-1e4, 0.0, 1e4]))
        tensor([0.0000, 0.5000, 1.0000])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.sigmoid(x)


class Tanh(Module):
    """Tanh(x) = (exp(x) − exp(−x)) / (exp(x) + exp(−x)), element-wise.

    Shape: Input (*), Output (*), same shape.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.tanh(x)


class LeakyReLU(Module):
    """LeakyReLU(x) = max(0, x) + negative_slope · min(0, x), element-wise.

    Args:
        negative_slope: the slope for x < 0. Default: 1e-2.
        inplace: accepted for torch compatibility (the tape keeps x intact).

    Shape: Input (*), Output (*), same shape.
    """

    def __init__(self, negative_slope: float = 1e-2, inplace: bool = False) -> None:
        super().__init__()
        self.negative_slope = negative_slope
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.negative_slope, self.inplace)

    def extra_repr(self) -> str:
        inplace_str = ", inplace=True" if self.inplace else ""
        return f"negative_slope={self.negative_slope}{inplace_str}"


class GELU(Module):
    """GELU(x) = x · Φ(x), Φ the standard normal CDF; with ``approximate='tanh'``,
    0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³))).

    Args:
        approximate: ``'none'`` | ``'tanh'``. Default: ``'none'``. Anything else
            raises OptionError here (torch waits for the first forward).

    Shape: Input (*), Output (*), same shape.
    """

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        check_gelu_approximate(approximate)
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class Step(Module):
    """Step(x) = 0 if x < 0, 1 if x ≥ 0, element-wise: the binary step of seed
    tutorial 000 (scratchnet's own; torch.nn has no twin).

    Its gradient is 0 everywhere (see
    :meth:`scratchnet.nn.functional.activation.Step.backward`), so layers before
    a Step never learn by gradient descent.

    Shape: Input (*), Output (*), same shape.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.step(x)


def _check_dim(name: str, dim: object) -> None:
    if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool)):
        raise OptionError(f"{name}: dim must be an int or None, got {type(dim)}")


class Softmax(Module):
    """Softmax(x)_i = exp(x_i) / Σ_j exp(x_j) along ``dim``: every slice along
    dim lies in [0, 1] and sums to 1.

    Args:
        dim: the dimension to normalise. ``None`` uses torch's deprecated
            implicit choice, with its warning.

    Shape: Input (*), Output (*), same shape.

    Example::

        >>> m = nn.Softmax(dim=1)
        >>> m(torch.randn(2, 3)).sum(dim=1)
        tensor([1.0000, 1.0000])
    """

    def __init__(self, dim: int | None = None) -> None:
        _check_dim("Softmax", dim)
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # _stacklevel=5: the implicit-dim warning points past Module.__call__
        return F.softmax(x, self.dim, _stacklevel=5)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Module):
    """LogSoftmax(x)_i = log(exp(x_i) / Σ_j exp(x_j)) along ``dim``, computed
    stably; outputs lie in [−inf, 0].

    Args:
        dim: the dimension to normalise (``None``: torch's implicit choice).

    Shape: Input (*), Output (*), same shape.
    """

    def __init__(self, dim: int | None = None) -> None:
        _check_dim("LogSoftmax", dim)
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(x, self.dim, _stacklevel=5)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
