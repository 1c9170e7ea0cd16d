"""Dropout: zero each element with probability p and scale the survivors by
1 / (1 − p), so that E[out] = x and evaluation needs no rescaling.

Shapes: x has any shape; the mask (``noise``) has the shape of x.

On CPU the mask is drawn exactly as torch draws it (aten/src/ATen/native/Dropout.cpp,
``_dropout_impl``)::

    noise = empty_like(x).bernoulli_(1 - p)    # 1 with probability 1 − p, else 0
    noise.div_(1 - p)                          # survivors scaled by 1 / (1 − p)
    out = x * noise

so after the same ``torch.manual_seed`` scratchnet and torch.nn.functional.dropout
zero the same elements and return identical tensors, and the same gradients.

On CUDA torch instead calls its fused ``native_dropout`` kernel (dropout on
CUDA/XPU/lazy/PrivateUse1 tensors with 0 < p < 1 and at least one element): it
draws uniforms from the Philox generator, keeps u < 1 − p, and multiplies by
1 / (1 − p) in one pass. Both the RNG stream it consumes and the mask it makes
differ from ``bernoulli_``'s, so on CUDA scratchnet's mask is a valid dropout
mask with the right statistics, but not torch's mask for the same seed.

To reproduce a given mask on any device, pass it: ``dropout(x, p, mask=keep)``
with ``keep`` a boolean tensor of x's shape (True = kept), for instance the mask
``torch.native_dropout(x, p, True)`` returns beside its output on CUDA. The
survivors are then scaled exactly as above (``keep / (1 − p)``, rounded once in
x's dtype): bit-identical to torch on CPU; on CUDA torch's fused kernel rounds
1 / (1 − p) in its own way, so the two agree within the float tolerance.
"""

from __future__ import annotations

import torch

from scratchnet.autodiff import Context, Function, plain
from scratchnet.errors import (
    DeviceError,
    DTypeError,
    OptionError,
    ShapeError,
    check_real,
    check_tensor,
)


def check_dropout_probability(p: float) -> None:
    """0 ≤ p ≤ 1, as torch requires (NaN is refused too)."""
    check_real("dropout", "p", p)
    if not 0.0 <= p <= 1.0:
        raise OptionError(f"dropout probability has to be between 0 and 1, but got {p}")


class Dropout(Function):
    @staticmethod
    def forward(ctx: Context, x: torch.Tensor, p: float,
                keep: torch.Tensor | None = None) -> torch.Tensor:
        """out = x ⊙ noise, noise_i = m_i / (1 − p) with m_i ~ Bernoulli(1 − p),
        or m = ``keep`` when a mask is supplied; p = 1 drops everything:
        noise = 0 (a 0-d zero, as torch multiplies by).

        x: (*), keep: (*) bool → out: (*); noise: (*), or () for p = 1.
        """
        if p == 1:
            noise = torch.zeros((), dtype=x.dtype, device=x.device)  # ()
        else:
            if keep is None:
                noise = torch.empty_like(x).bernoulli_(1 - p)  # (*), entries 0 or 1
            else:
                noise = keep.to(x.dtype)  # (*), entries 0 or 1 (a copy: keep is bool)
            noise.div_(1 - p)  # (*), entries 0 or 1/(1 − p)
        ctx.save_for_backward(noise)
        return x * noise  # (*)

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """out = x ⊙ noise is linear in x with the saved scaled mask as slope:

            dx = dout ⊙ noise

        a dropped element passes no gradient; a kept one passes dout / (1 − p)."""
        (noise,) = ctx.saved_tensors
        return dout * noise, None, None


def check_dropout_mask(x: torch.Tensor, mask: torch.Tensor) -> None:
    """A supplied mask is a boolean tensor of x's shape, on x's device."""
    check_tensor("dropout", "mask", mask)
    if mask.dtype != torch.bool:
        raise DTypeError(f"dropout: mask must be a bool tensor (True = kept), got "
                         f"{mask.dtype}")
    if mask.shape != x.shape:
        raise ShapeError(f"dropout: mask of shape {tuple(mask.shape)} does not match "
                         f"the input's shape {tuple(x.shape)}")
    if mask.device != x.device:
        raise DeviceError(f"dropout: mask is on {mask.device} but the input is on "
                          f"{x.device}")


def dropout(x: torch.Tensor, p: float = 0.5, training: bool = True,
            inplace: bool = False, *, mask: torch.Tensor | None = None
            ) -> torch.Tensor:  # noqa: ARG001
    """Randomly zero elements of x with probability ``p`` and scale the rest by
    1 / (1 − p) (torch.nn.functional.dropout).

    ``mask`` (scratchnet only): a bool tensor of x's shape, True where an
    element is kept, used instead of drawing one (the identity cases below
    still return x).

    ``training=False``, ``p=0`` and empty inputs return x itself (the identity,
    as torch does). ``inplace`` is accepted for signature compatibility; the
    tape always keeps x intact. See the module docstring for how the mask
    matches torch's on CPU and why it does not on CUDA.
    """
    check_tensor("dropout", "input", x)
    check_dropout_probability(p)
    if not training or p == 0 or plain(x).numel() == 0:
        return x
    if not plain(x).is_floating_point():  # the mask 1/(1 − p) is fractional
        raise DTypeError(f"dropout: input must be floating point, got {plain(x).dtype}")
    if mask is not None:
        check_dropout_mask(plain(x), plain(mask))
        return Dropout.apply(x, p, plain(mask))
    return Dropout.apply(x, p)
