"""Stochastic gradient descent, optionally with momentum and Nesterov momentum
(torch/optim/sgd.py, its single-tensor path ``_single_tensor_sgd``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from scratchnet.errors import OptionError
from scratchnet.optim.optimizer import Optimizer, check_number, check_single_path


def sgd_update(param: torch.Tensor, grad: torch.Tensor,
               momentum_buffer: torch.Tensor | None, *, lr: float, momentum: float,
               dampening: float, weight_decay: float, nesterov: bool,
               maximize: bool) -> torch.Tensor | None:
    """One SGD step for one parameter, in place; returns the momentum buffer
    (``None`` without momentum). ``param``, ``grad``, ``momentum_buffer`` share a
    shape. torch's ``_single_tensor_sgd`` op for op."""
    grad = grad if not maximize else -grad  # g ← ±∇f
    if weight_decay != 0:
        grad = grad.add(param, alpha=weight_decay)  # g ← g + λθ
    if momentum != 0:
        if momentum_buffer is None:
            momentum_buffer = grad.detach().clone()  # b₁ ← g  (no dampening at t = 1)
        else:
            momentum_buffer.mul_(momentum).add_(grad, alpha=1 - dampening)  # b ← μb + (1-τ)g
        if nesterov:
            grad = grad.add(momentum_buffer, alpha=momentum)  # g ← g + μb
        else:
            grad = momentum_buffer  # g ← b
    param.add_(grad, alpha=-lr)  # θ ← θ - γg
    return momentum_buffer


class SGD(Optimizer):
    """Implements stochastic gradient descent (optionally with momentum).

    The algorithm (torch.optim.SGD's)::

        input: γ (lr), θ₀ (params), f(θ) (objective), λ (weight decay),
               μ (momentum), τ (dampening), nesterov, maximize
        for t = 1 to ...:
            g_t ← -∇f_t(θ_{t-1})  if maximize  else  ∇f_t(θ_{t-1})
            if λ ≠ 0:
                g_t ← g_t + λ θ_{t-1}
            if μ ≠ 0:
                if t > 1:  b_t ← μ b_{t-1} + (1 - τ) g_t
                else:      b_t ← g_t
                if nesterov:  g_t ← g_t + μ b_t
                else:         g_t ← b_t
            θ_t ← θ_{t-1} - γ g_t
        return θ_t

    The velocity is not scaled by the learning rate (v ← μv + g; θ ← θ - γv),
    unlike Sutskever et al., and the first buffer is the gradient itself.

    Args:
        params: parameters (or ``(name, parameter)`` pairs, or dicts of
            parameter groups) to optimize.
        lr: learning rate (default: 1e-3).
        momentum: momentum factor μ (default: 0).
        dampening: dampening τ for momentum (default: 0).
        weight_decay: weight decay λ, an L2 penalty (default: 0).
        nesterov: Nesterov momentum; needs momentum > 0 and zero dampening
            (default: False).
        maximize: maximize the objective instead of minimizing (default: False).
        foreach, differentiable, fused: accepted at their defaults only, so that
            param groups and state_dicts carry torch's keys; scratchnet has one
            path (torch's foreach=False).

    State (per parameter): ``momentum_buffer`` when momentum ≠ 0.

    Example::

        >>> optimizer = scratchnet.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> optimizer.zero_grad()
        >>> loss_fn(model(input), target).backward()
        >>> optimizer.step()
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0,
                 dampening: float = 0, weight_decay: float = 0, nesterov: bool = False,
                 *, maximize: bool = False, foreach: bool | None = None,
                 differentiable: bool = False, fused: bool | None = None) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
            "differentiable": differentiable,
            "fused": fused,
        }
        self._check_options(defaults)
        super().__init__(params, defaults)

    def _check_options(self, options: dict[str, Any]) -> None:
        for option in ("lr", "momentum", "dampening", "weight_decay"):
            check_number("SGD", option, options[option])
        # `not 0 <= x` rather than torch's `x < 0`: NaN is refused too
        if not 0.0 <= options["lr"]:
            raise OptionError(f"SGD: Invalid learning rate: {options['lr']}")
        if not 0.0 <= options["momentum"]:
            raise OptionError(f"SGD: Invalid momentum value: {options['momentum']}")
        if not 0.0 <= options["weight_decay"]:
            raise OptionError(f"SGD: Invalid weight_decay value: {options['weight_decay']}")
        if options["nesterov"] and (options["momentum"] <= 0 or options["dampening"] != 0):
            raise OptionError("SGD: Nesterov momentum requires a momentum and zero "
                              "dampening")
        check_single_path("SGD", options)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("differentiable", False)
            group.setdefault("fused", False)

    def _update_group(self, group: dict[str, Any]) -> None:
        for p in group["params"]:
            if p.grad is None:
                continue
            momentum_buffer = None
            if group["momentum"] != 0:
                momentum_buffer = self.state[p].get("momentum_buffer")
            momentum_buffer = sgd_update(
                p, p.grad, momentum_buffer, lr=group["lr"], momentum=group["momentum"],
                dampening=group["dampening"], weight_decay=group["weight_decay"],
                nesterov=group["nesterov"], maximize=group["maximize"])
            if group["momentum"] != 0:
                self.state[p]["momentum_buffer"] = momentum_buffer
