"""AdamW: Adam with decoupled weight decay (torch/optim/adamw.py), which is
Adam with ``decoupled_weight_decay=True`` and a weight decay of 1e-2 by default.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from scratchnet.optim.adam import Adam


class AdamW(Adam):
    """Implements AdamW: weight decay that accumulates in neither moment.

    The algorithm (torch.optim.AdamW's)::

        input: γ (lr), β₁, β₂ (betas), θ₀ (params), f(θ) (objective), ε (eps),
               λ (weight decay), amsgrad, maximize
        initialize: m₀ ← 0 (first moment), v₀ ← 0 (second moment), v₀ᵐᵃˣ ← 0
        for t = 1 to ...:
            g_t ← -∇f_t(θ_{t-1})  if maximize  else  ∇f_t(θ_{t-1})
            θ_t ← θ_{t-1} - γλθ_{t-1}
            m_t ← β₁ m_{t-1} + (1 - β₁) g_t
            v_t ← β₂ v_{t-1} + (1 - β₂) g_t²
            m̂_t ← m_t / (1 - β₁ᵗ)
            if amsgrad:
                v_tᵐᵃˣ ← max(v_{t-1}ᵐᵃˣ, v_t)
                v̂_t ← v_tᵐᵃˣ / (1 - β₂ᵗ)
            else:
                v̂_t ← v_t / (1 - β₂ᵗ)
            θ_t ← θ_t - γ m̂_t / (√v̂_t + ε)
        return θ_t

    The update is :func:`scratchnet.optim.adam.adam_update` with
    ``decoupled_weight_decay=True`` (Loshchilov & Hutter, "Decoupled Weight
    Decay Regularization").

    Args:
        params: parameters (or ``(name, parameter)`` pairs, or dicts of
            parameter groups) to optimize.
        lr: learning rate (default: 1e-3).
        betas: coefficients of the running averages of the gradient and its
            square (default: (0.9, 0.999)).
        eps: added to the denominator for numerical stability (default: 1e-8).
        weight_decay: weight decay coefficient λ (default: 1e-2).
        amsgrad: use the AMSGrad variant (default: False).
        maximize: maximize the objective instead of minimizing (default: False).
        foreach, capturable, differentiable, fused: accepted at their defaults
            only (see :class:`~scratchnet.optim.Adam`).

    State (per parameter): as :class:`~scratchnet.optim.Adam`'s.

    Example::

        >>> optimizer = scratchnet.optim.AdamW(model.parameters(), lr=1e-3)
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None,
                 capturable: bool = False, differentiable: bool = False,
                 fused: bool | None = None) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # whatever was loaded, AdamW decouples
            group["decoupled_weight_decay"] = True
