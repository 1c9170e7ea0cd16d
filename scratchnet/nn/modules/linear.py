"""``Linear`` and ``Identity`` modules (torch/nn/modules/linear.py)."""

from __future__ import annotations

import math

import torch

from scratchnet.errors import ArgumentTypeError, OptionError
from scratchnet.nn import functional as F
from scratchnet.nn import init
from scratchnet.nn.modules.module import Module
from scratchnet.nn.parameter import Parameter


class Identity(Module):
    """Returns its input unchanged; accepts and ignores any constructor
    arguments (torch.nn.Identity)."""

    def __init__(self, *args: object, **kwargs: object) -> None:  # noqa: ARG002
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Linear(Module):
    r"""Applies an affine map: :math:`y = xA^T + b` (torch.nn.Linear).

    Args:
        in_features: size of each input sample (D_in).
        out_features: size of each output sample (D_out).
        bias: if False, the layer learns no additive bias.
        device, dtype: where and how the parameters are created.

    Shape:
        - Input: (*, D_in), any number of leading dims.
        - Output: (*, D_out).

    Attributes:
        weight: (D_out, D_in), initialised from U(-1/√D_in, 1/√D_in).
        bias: (D_out,), initialised from U(-1/√D_in, 1/√D_in).

    Example::

        >>> m = nn.Linear(20, 30)
        >>> m(torch.randn(128, 20)).shape
        torch.Size([128, 30])
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        for name, size in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(size, bool) or not isinstance(size, int):
                raise ArgumentTypeError(f"Linear: {name} must be an int, got {size!r}")
            if size < 0:
                raise OptionError(f"Linear: {name} must be >= 0, got {size}")
        self.in_features = in_features
        self.out_features = out_features
        self.weight = Parameter(torch.empty((out_features, in_features),
                                            device=device, dtype=dtype))
        if bias:
            self.bias = Parameter(torch.empty(out_features, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's default, draw for draw: kaiming_uniform_(a=√5) on the weight,
        which is U(-1/√D_in, 1/√D_in), then the bias from the same bound
        (https://github.com/pytorch/pytorch/issues/57109). Consuming the RNG in
        the same order with the same bounds makes it bit-identical to
        torch.nn.Linear after the same torch.manual_seed."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init.calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)  # (*, D_out)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")
