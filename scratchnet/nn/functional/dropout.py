"""Dropout: zero each element with probability p and scale the survivors by
1 / (1 − p), so that E[out] = x and evaluation needs no rescaling.

Shapes: x has any shape; the mask (``noise``) has the shape of x.

On CPU the mask is drawn exactly as torch draws it (aten/src/ATen/native/Dropout.cpp,
``_dropout_impl``)::

    noise = empty_like(x).bernoulli_(1 - p)    # 1 with probability 1 − p, else 0
    noise.div_(1 - p)                          # survivors scaled by 1 / (1 − p)
    out = x * noise

so after the same ``torch.manual_seed`` scratchnet and torch.nn.functional.dropout
zero the same elements and return identical tensors.

On CUDA torch instead calls its fused ``native_dropout`` kernel (dropout on
CUDA/XPU/lazy/PrivateUse1 tensors with 0 < p < 1 and at least one element): it
draws uniforms from the Philox generator, keeps u < 1 − p, and multiplies by
1 / (1 − p) in one pass. Both the RNG stream it consumes and the mask it makes
differ from ``bernoulli_``'s, so on CUDA scratchnet's mask is a valid dropout
mask with the right statistics, but not torch's mask for the same seed.
"""

from __future__ import annotations

import torch

from scratchnet.autodiff import Context, Function, plain
from scratchnet.errors import OptionError


def check_dropout_probability(p: float) -> None:
    """0 ≤ p ≤ 1, as torch requires (NaN is refused too)."""
    if not 0.0 <= p <= 1.0:
        raise OptionError(f"dropout probability has to be between 0 and 1, but got {p}")


class Dropout(Function):
    @staticmethod
    def forward(ctx: Context, x: torch.Tensor, p: float) -> torch.Tensor:
        """out = x ⊙ noise, noise_i = m_i / (1 − p) with m_i ~ Bernoulli(1 − p);
        p = 1 drops everything: noise = 0 (a 0-d zero, as torch multiplies by).

        x: (*) → out: (*); noise: (*), or () for p = 1.
        """
        if p == 1:
            noise = torch.zeros((), dtype=x.dtype, device=x.device)  # ()
        else:
            noise = torch.empty_like(x).bernoulli_(1 - p)  # (*), entries 0 or 1
            noise.div_(1 - p)  # (*), entries 0 or 1/(1 − p)
        ctx.save_for_backward(noise)
        return x * noise  # (*)

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """out = x ⊙ noise is linear in x with the saved scaled mask as slope:

            dx = dout ⊙ noise

        a dropped element passes no gradient; a kept one passes dout / (1 − p)."""
        (noise,) = ctx.saved_tensors
        return dout * noise, None


def dropout(x: torch.Tensor, p: float = 0.5, training: bool = True,
            inplace: bool = False) -> torch.Tensor:  # noqa: ARG001
    """Randomly zero elements of x with probability ``p`` and scale the rest by
    1 / (1 − p) (torch.nn.functional.dropout).

    ``training=False``, ``p=0`` and empty inputs return x itself (the identity,
    as torch does). ``inplace`` is accepted for signature compatibility; the
    tape always keeps x intact. See the module docstring for how the mask
    matches torch's on CPU and why it does not on CUDA.
    """
    check_dropout_probability(p)
    if not training or p == 0 or plain(x).numel() == 0:
        return x
    return Dropout.apply(x, p)
