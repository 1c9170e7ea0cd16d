"""Element-wise activations, each forward beside its backward.

Every op here maps x (any shape) to out of the same shape, so its backward is
dx = dout ⊙ f'(x), written with whichever of x or out makes f' cheapest.

Where a derivative is formed from the output (sigmoid, tanh), the forward calls
torch's own element-wise kernel (``torch.sigmoid``, ``torch.tanh``: plain tensor
math, like ``torch.exp``) rather than composing it from ``exp``: torch's ``exp``
goes through MKL's vector library while its sigmoid/tanh kernels use SLEEF, so a
composed forward differs from torch's in the last bit for a few percent of the
elements, and ``1 − out`` (sigmoid) or ``1 − out²`` (tanh) magnifies that last
bit up to 1e8-fold where the function saturates. Both kernels saturate without
overflow: σ(−1e4) = 1/(1 + inf) = 0, tanh(±1e4) = ±1.

References: torch/nn/functional.py and aten/src/ATen/native/cpu/Activation.cpp
(GELU's kernels), tools/autograd/derivatives.yaml (the other derivatives).
"""

from __future__ import annotations

import math

import torch

from scratchnet.autodiff import Context, Function, plain
from scratchnet.errors import DTypeError, OptionError, check_real, check_tensor


def check_real_input(name: str, x: torch.Tensor, integers_allowed: bool) -> None:
    """x is a tensor of real numbers: floating point, or integers where the op is
    defined on them (relu, step), never bool or complex. torch refuses the same
    dtypes, with NotImplementedError from inside its kernels."""
    check_tensor(name, "input", x)
    dtype = plain(x).dtype
    if dtype.is_floating_point:
        return
    if not integers_allowed or dtype == torch.bool or dtype.is_complex:
        kinds = "real numbers (float or integer)" if integers_allowed else "floating point"
        raise DTypeError(f"{name}: input must be {kinds}, got {dtype}")


# --------------------------------------------------------------------------------------
# ReLU


class ReLU(Function):
    @staticmethod
    def forward(ctx: Context, x: torch.Tensor) -> torch.Tensor:
        """out = max(x, 0)"""
        out = torch.relu(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """dx = dout ⊙ [out > 0]  (the derivative at x = 0 is taken as 0, as torch
        does: the mask is built from the output)."""
        (out,) = ctx.saved_tensors
        return (torch.where(out > 0, dout, 0.0),)


def relu(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:  # noqa: ARG001
    """max(x, 0), element-wise (torch.nn.functional.relu). ``inplace`` is
    accepted for signature compatibility; the tape always keeps x intact."""
    check_real_input("relu", x, integers_allowed=True)
    return ReLU.apply(x)


# --------------------------------------------------------------------------------------
# sigmoid


class Sigmoid(Function):
    @staticmethod
    def forward(ctx: Context, x: torch.Tensor) -> torch.Tensor:
        """out = σ(x) = 1 / (1 + exp(−x)), which is what torch.sigmoid's kernel
        computes (see the module docstring for why it is called, not composed)."""
        out = torch.sigmoid(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """σ'(x) = e^{−x} / (1 + e^{−x})² = σ(x) · (1 − σ(x)), so

            dx = dout ⊙ out ⊙ (1 − out)

        evaluated as ``dout · (1 − out) · out``, the order of torch's
        sigmoid_backward kernel (it rounds identically)."""
        (out,) = ctx.saved_tensors
        return (dout * (1 - out) * out,)


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """σ(x) = 1 / (1 + exp(−x)), element-wise (torch.nn.functional.sigmoid).
    Saturates to exactly 0 and 1 for large |x|, without overflow."""
    check_tensor("sigmoid", "input", x)
    return Sigmoid.apply(x)


# --------------------------------------------------------------------------------------
# tanh


class Tanh(Function):
    @staticmethod
    def forward(ctx: Context, x: torch.Tensor) -> torch.Tensor:
        """out = tanh(x) = (e^x − e^{−x}) / (e^x + e^{−x})"""
        out = torch.tanh(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """tanh'(x) = 1 − tanh²(x), so

            dx = dout ⊙ (1 − out²)

        as torch's tanh_backward computes it: ``1 − out · out`` in one rounding
        (its kernel compiles to a fused multiply-add; ``addcmul`` is the same
        instruction here). Rounding out·out first would differ from torch by up
        to an ulp of 1, which is 1e-8 relative when |x| ≈ 10 and 1 − out² ≈ 1e-8
        (guarded by test_activation.py::test_gradient_near_saturation_matches_torch)."""
        (out,) = ctx.saved_tensors
        one_minus_out_sq = torch.addcmul(torch.ones_like(out), out, out, value=-1)
        return (dout * one_minus_out_sq,)


def tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh(x), element-wise (torch.nn.functional.tanh). Saturates to ±1."""
    check_tensor("tanh", "input", x)
    return Tanh.apply(x)


# --------------------------------------------------------------------------------------
# leaky ReLU


class LeakyReLU(Function):
    @staticmethod
    def forward(ctx: Context, x: torch.Tensor, negative_slope: float) -> torch.Tensor:
        """out = x if x > 0 else negative_slope · x"""
        ctx.save_for_backward(x)
        ctx.negative_slope = negative_slope
        return torch.where(x > 0, x, x * negative_slope)

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """dx = dout            where x > 0
           dx = dout · slope    where x ≤ 0

        (at x = 0 the slope branch is taken, as in torch's leaky_relu_backward,
        which tests the input, not the output)."""
        (x,) = ctx.saved_tensors
        return torch.where(x > 0, dout, dout * ctx.negative_slope), None


def leaky_relu(x: torch.Tensor, negative_slope: float = 0.01,
               inplace: bool = False) -> torch.Tensor:  # noqa: ARG001
    """max(0, x) + negative_slope · min(0, x), element-wise
    (torch.nn.functional.leaky_relu). ``inplace`` is accepted for signature
    compatibility; the tape always keeps x intact."""
    check_real_input("leaky_relu", x, integers_allowed=False)
    check_real("leaky_relu", "negative_slope", negative_slope)
    return LeakyReLU.apply(x, negative_slope)


# --------------------------------------------------------------------------------------
# GELU

# the constants of aten's GELU kernels (Activation.cpp), to the same rounding
_SQRT1_2 = math.sqrt(0.5)  # M_SQRT1_2 = 1/√2
# M_2_SQRTPI·M_SQRT1_2·0.5 = 1/√(2π), the normal pdf's factor
_PDF_SCALE = 2 / math.sqrt(math.pi) * _SQRT1_2 * 0.5
# M_SQRT2·M_2_SQRTPI·0.5 = √(2/π)
_TANH_BETA = math.sqrt(2) * (2 / math.sqrt(math.pi)) * 0.5
_TANH_KAPPA = 0.044715
GELU_APPROXIMATIONS = ("none", "tanh")


def check_gelu_approximate(approximate: str) -> None:
    if approximate not in GELU_APPROXIMATIONS:
        raise OptionError(f"gelu: approximate must be 'none' or 'tanh', got "
                          f"{approximate!r}")


class GELU(Function):
    @staticmethod
    def forward(ctx: Context, x: torch.Tensor, approximate: str) -> torch.Tensor:
        """'none':  out = x · Φ(x) = x · ½ · (1 + erf(x / √2))
        'tanh':  out = ½ · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³)))

        Φ is the standard normal CDF. Both are written in the order of aten's
        kernels. Note the ``1 + erf(·)`` for x ≪ 0: it cancels (erf → −1), so
        for x ≈ −5 the result carries an absolute error of about ε·|x| rather
        than a relative one; torch's kernel has the same cancellation. torch's
        fused kernel takes erf/tanh/exp from SLEEF, ``torch.erf`` & co. from
        MKL's VML (each within an ulp), so there the two may differ by up to
        ε·|x| (forward) and about ε·|dout|·|x|·(1 + 0.13x²) (backward, 'tanh'):
        in float64 that exceeds rtol 1e-12 for ~1 element in 4000 ('none') or
        25 ('tanh'); see tests/test_activation.py::gelu_rounding_floors.
        """
        ctx.save_for_backward(x)
        ctx.approximate = approximate
        if approximate == "tanh":
            inner = _TANH_BETA * (x + _TANH_KAPPA * (x * x * x))
            return 0.5 * x * (1 + torch.tanh(inner))
        return x * 0.5 * (1 + torch.erf(x * _SQRT1_2))

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """'none': d/dx [x · Φ(x)] = Φ(x) + x · φ(x), φ(x) = exp(−x²/2) / √(2π):

            dx = dout ⊙ (cdf + x · pdf)

        'tanh': with u = √(2/π) · (x + κx³), t = tanh(u), κ = 0.044715, the
        product rule on ½x · (1 + t) gives

            dx = dout ⊙ (½ · (1 + t)  +  ½x · (1 − t²) · √(2/π) · (1 + 3κx²))
                         left_derivative   right_derivative

        recomputed from the saved x, term by term as aten's GeluBackward does.
        """
        (x,) = ctx.saved_tensors
        if ctx.approximate == "tanh":
            x_sq = x * x
            inner = _TANH_BETA * (x + _TANH_KAPPA * (x_sq * x))
            tanh_inner = torch.tanh(inner)
            left_derivative = 0.5 * (1 + tanh_inner)
            tanh_derivative = 1 - tanh_inner * tanh_inner
            inner_derivative = _TANH_BETA * (1 + 3 * _TANH_KAPPA * x_sq)
            right_derivative = (0.5 * x) * tanh_derivative * inner_derivative
            return dout * (left_derivative + right_derivative), None
        cdf = 0.5 * (1 + torch.erf(x * _SQRT1_2))
        pdf = _PDF_SCALE * torch.exp(x * x * -0.5)
        return dout * (cdf + x * pdf), None


def gelu(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """Gaussian Error Linear Unit, element-wise (torch.nn.functional.gelu):
    x · Φ(x), or its tanh approximation with ``approximate='tanh'``."""
    check_real_input("gelu", x, integers_allowed=False)
    check_gelu_approximate(approximate)
    return GELU.apply(x, approximate)


# --------------------------------------------------------------------------------------
# binary step


class Step(Function):
    @staticmethod
    def forward(ctx: Context, x: torch.Tensor) -> torch.Tensor:
        """out = 0 if x < 0, 1 if x ≥ 0 (−0 included); NaN stays NaN."""
        out = (x >= 0).to(x.dtype)  # (*)
        return torch.where(x.isnan(), x, out)  # (*)

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """The true derivative is 0 for every x ≠ 0 and does not exist at 0 (as a
        distribution it is a Dirac delta there). scratchnet returns 0 everywhere:

            dx = 0

        which is why a network of step units cannot learn by gradient descent:
        every weight before a step receives a zero gradient, whatever the loss,
        so no update ever moves it (the perceptron rule and the smooth
        sigmoid were the historical ways round this)."""
        return (torch.zeros_like(dout),)


def step(x: torch.Tensor) -> torch.Tensor:
    """The binary step (Heaviside) function of seed tutorial 000: f(x) = 0 if
    x < 0, 1 if x ≥ 0, element-wise. Its gradient is taken as 0 everywhere (see
    :meth:`Step.backward`), so nothing before it learns by gradient descent.
    torch has no twin; it equals ``torch.heaviside(x, torch.tensor(1.))``
    except that NaN stays NaN (heaviside maps it to 0, hiding a diverged input)."""
    check_real_input("step", x, integers_allowed=True)
    return Step.apply(x)
