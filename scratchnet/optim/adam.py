"""Adam (torch/optim/adam.py, its single-tensor path ``_single_tensor_adam``
without ``capturable``/``differentiable``), with optional AMSGrad and decoupled
weight decay (the latter is AdamW: :mod:`scratchnet.optim.adamw`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from scratchnet.errors import OptionError
from scratchnet.optim.optimizer import (
    Optimizer,
    _get_scalar_dtype,
    check_number,
    check_single_path,
)


def adam_update(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor,
                exp_avg_sq: torch.Tensor, max_exp_avg_sq: torch.Tensor | None,
                step_t: torch.Tensor, *, beta1: float, beta2: float, lr: float,
                weight_decay: float, eps: float, maximize: bool,
                decoupled_weight_decay: bool) -> None:
    """One Adam step for one parameter, in place on ``param`` and its state.
    ``param``, ``grad`` and the moments share a shape; ``step_t`` is a 0-dim
    float tensor; ``max_exp_avg_sq`` is ``None`` unless amsgrad. torch's
    ``_single_tensor_adam`` op for op."""
    grad = grad if not maximize else -grad  # g ← ±∇f
    step_t += 1  # t ← t + 1
    if weight_decay != 0:
        if decoupled_weight_decay:
            param.mul_(1 - lr * weight_decay)  # θ ← θ(1 - γλ)     (AdamW)
        else:
            grad = grad.add(param, alpha=weight_decay)  # g ← g + λθ  (L2 penalty)
    if torch.is_complex(param):  # a complex number is a pair of reals to Adam
        grad, exp_avg, exp_avg_sq, param = (torch.view_as_real(t) for t in
                                            (grad, exp_avg, exp_avg_sq, param))
        if max_exp_avg_sq is not None:
            max_exp_avg_sq = torch.view_as_real(max_exp_avg_sq)

    exp_avg.lerp_(grad, 1 - beta1)  # m ← β₁m + (1-β₁)g
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)  # v ← β₂v + (1-β₂)g²

    step = step_t.item()  # t as a Python float: the corrections below are in double
    bias_correction1 = 1 - beta1**step  # 1 - β₁ᵗ
    bias_correction2 = 1 - beta2**step  # 1 - β₂ᵗ
    step_size = lr / bias_correction1  # γ / (1 - β₁ᵗ)
    bias_correction2_sqrt = bias_correction2**0.5  # √(1 - β₂ᵗ)

    if max_exp_avg_sq is not None:
        torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)  # vmax ← max(vmax, v)
        denom = (max_exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)  # √v̂ + ε
    else:
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)  # √v̂ + ε
    param.addcdiv_(exp_avg, denom, value=-step_size)  # θ ← θ - γ m̂ / (√v̂ + ε)


class Adam(Optimizer):
    """Implements the Adam algorithm.

    The algorithm (torch.optim.Adam's)::

        input: γ (lr), β₁, β₂ (betas), θ₀ (params), f(θ) (objective),
               λ (weight decay), amsgrad, maximize, ε (eps)
        initialize: m₀ ← 0 (first moment), v₀ ← 0 (second moment), v₀ᵐᵃˣ ← 0
        for t = 1 to ...:
            g_t ← -∇f_t(θ_{t-1})  if maximize  else  ∇f_t(θ_{t-1})
            if λ ≠ 0:
                if decoupled_weight_decay:  θ_{t-1} ← θ_{t-1} - γλθ_{t-1}
                else:                       g_t ← g_t + λθ_{t-1}
            m_t ← β₁ m_{t-1} + (1 - β₁) g_t
            v_t ← β₂ v_{t-1} + (1 - β₂) g_t²
            m̂_t ← m_t / (1 - β₁ᵗ)
            if amsgrad:
                v_tᵐᵃˣ ← max(v_{t-1}ᵐᵃˣ, v_t)
                v̂_t ← v_tᵐᵃˣ / (1 - β₂ᵗ)
            else:
                v̂_t ← v_t / (1 - β₂ᵗ)
            θ_t ← θ_{t-1} - γ m̂_t / (√v̂_t + ε)
        return θ_t

    As torch computes it: ``denom = √v / √(1 - β₂ᵗ) + ε`` and
    ``θ ← θ - (γ / (1 - β₁ᵗ)) · m / denom`` (Kingma & Ba, "Adam: A Method for
    Stochastic Optimization"; AMSGrad: Reddi et al., "On the Convergence of Adam
    and Beyond").

    Args:
        params: parameters (or ``(name, parameter)`` pairs, or dicts of
            parameter groups) to optimize.
        lr: learning rate (default: 1e-3).
        betas: coefficients of the running averages of the gradient and its
            square (default: (0.9, 0.999)).
        eps: added to the denominator for numerical stability (default: 1e-8).
        weight_decay: weight decay λ, an L2 penalty (default: 0).
        amsgrad: use the AMSGrad variant (default: False).
        maximize: maximize the objective instead of minimizing (default: False).
        decoupled_weight_decay: decay the weights directly instead of through the
            gradient; this is AdamW (default: False).
        foreach, capturable, differentiable, fused: accepted at their defaults
            only, so that param groups and state_dicts carry torch's keys;
            scratchnet has one path (torch's foreach=False).

    State (per parameter): ``step`` (a 0-dim float32 tensor on the CPU, as
    torch keeps it), ``exp_avg`` (m), ``exp_avg_sq`` (v), and with amsgrad
    ``max_exp_avg_sq`` (vᵐᵃˣ), each of the parameter's shape.

    Example::

        >>> optimizer = scratchnet.optim.Adam(model.parameters(), lr=1e-3)
        >>> optimizer.zero_grad()
        >>> loss_fn(model(input), target).backward()
        >>> optimizer.step()
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False,
                 capturable: bool = False, differentiable: bool = False,
                 fused: bool | None = None, decoupled_weight_decay: bool = False) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
            "fused": fused,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        self._check_options(defaults)
        super().__init__(params, defaults)

    def _check_options(self, options: dict[str, Any]) -> None:
        name = type(self).__name__
        lr, betas, eps = options["lr"], options["betas"], options["eps"]
        weight_decay = options["weight_decay"]
        for option, value in (("lr", lr), ("betas[0]", betas[0]), ("betas[1]", betas[1]),
                              ("eps", eps), ("weight_decay", weight_decay)):
            check_number(name, option, value)
        if not 0.0 <= lr:
            raise OptionError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise OptionError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise OptionError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise OptionError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not 0.0 <= weight_decay:
            raise OptionError(f"Invalid weight_decay value: {weight_decay}")
        if not (isinstance(betas[0], float) and isinstance(betas[1], float)):
            raise OptionError("betas must be either both floats or both Tensors "
                              f"(scratchnet takes floats), got {tuple(betas)!r}")
        check_single_path(name, options)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("amsgrad", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("capturable", False)
            group.setdefault("differentiable", False)
            group.setdefault("decoupled_weight_decay", False)
            group.setdefault("fused", None)
            for p in group["params"]:
                p_state = self.state.get(p, [])
                if len(p_state) != 0 and not torch.is_tensor(p_state["step"]):
                    p_state["step"] = torch.tensor(float(p_state["step"]),
                                                   dtype=_get_scalar_dtype())

    def _init_state(self, p: torch.Tensor, amsgrad: bool) -> dict[str, Any]:
        """The zero state of a parameter at its first step (lazy, as in torch)."""
        state = self.state[p]
        if len(state) == 0:
            # step is hosted on the CPU, as torch does without capturable/fused
            state["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype(), device="cpu")
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if amsgrad:
                state["max_exp_avg_sq"] = torch.zeros_like(
                    p, memory_format=torch.preserve_format)
        return state

    def _update_group(self, group: dict[str, Any]) -> None:
        beta1, beta2 = group["betas"]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self._init_state(p, group["amsgrad"])
            adam_update(
                p, p.grad, state["exp_avg"], state["exp_avg_sq"],
                state["max_exp_avg_sq"] if group["amsgrad"] else None, state["step"],
                beta1=beta1, beta2=beta2, lr=group["lr"],
                weight_decay=group["weight_decay"], eps=group["eps"],
                maximize=group["maximize"],
                decoupled_weight_decay=group["decoupled_weight_decay"])
