"""Adam (torch/optim/adam.py, its single-tensor path ``_single_tensor_adam``
without ``capturable``/``differentiable``), with optional AMSGrad and decoupled
weight decay (the latter is AdamW: :mod:`scratchnet.optim.adamw`).

Two paths, the same numbers. Per parameter (:func:`adam_update`, torch's loop),
or, when a group's parameters and gradients lie one after another in one buffer
each (:class:`scratchnet.nn.utils.FlatParameters`), each line of the update run
once over the whole buffer (``_flat_step``, at the end of this file): the state
is then laid out flat too, each parameter's ``exp_avg`` etc. a view into it, so
``state_dict()`` is unchanged. On the flat path the update (without AMSGrad,
maximize or L2 weight decay) can also run as one fused loop
(``FastTrainer(compile_optimizer=True)``: a C loop on the CPU, AdamW's decay
included; torch.compile elsewhere, without decay; at the end of this file).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from scratchnet import native
from scratchnet.errors import OptionError
from scratchnet.nn.utils.flat import contiguous_span
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
    ``max_exp_avg_sq`` (vᵐᵃˣ), each of the parameter's shape (on the flat path:
    views into one flat buffer per name, the steps into one (P,) buffer).

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
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise OptionError(f"{name}: betas must be a pair (beta1, beta2), got "
                              f"{betas!r}")
        for option, value in (("lr", lr), ("betas[0]", betas[0]), ("betas[1]", betas[1]),
                              ("eps", eps), ("weight_decay", weight_decay)):
            check_number(name, option, value)
        if not 0.0 <= lr:
            raise OptionError(f"{name}: Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise OptionError(f"{name}: Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise OptionError(f"{name}: Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise OptionError(f"{name}: Invalid beta parameter at index 1: {betas[1]}")
        if not 0.0 <= weight_decay:
            raise OptionError(f"{name}: Invalid weight_decay value: {weight_decay}")
        if not (isinstance(betas[0], float) and isinstance(betas[1], float)):
            raise OptionError(f"{name}: betas must be either both floats or both Tensors "
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
        # plain-tensor dispatch while inspecting the layout: a Parameter's
        # __torch_function__ would cost microseconds per attribute read
        with torch._C.DisableTorchFunctionSubclass():
            flat = _flat_group(self, group)
        if flat is not None:
            if getattr(self, "_compiled_flat_update", False) and _compiled_flat_step(
                    flat, group):
                return
            _flat_step(flat, group)
            return
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


# --------------------------------------------------------------------------------------
# the flat path: when a group's parameters, gradients and state each lie one after
# another in one buffer (scratchnet.nn.utils.FlatParameters), the update above is
# run once over the whole buffer instead of once per parameter. Every line is
# elementwise, so each element sees the same operations on the same values as in
# adam_update (tests/test_flat.py::test_flat_adam_equals_torch_adam_bit_for_bit
# guards it against torch.optim.Adam and against the per-parameter loop).


_UNBOUND = object()  # _FlatAdamState.native_loop not looked up yet


@dataclass
class _FlatAdamState:
    """One group's tensors as 1-D spans over their flat buffers (N = elements)."""

    params: torch.Tensor  # (N,) every parameter
    grads: torch.Tensor  # (N,) every gradient
    exp_avg: torch.Tensor  # (N,) m
    exp_avg_sq: torch.Tensor  # (N,) v
    max_exp_avg_sq: torch.Tensor | None  # (N,) vᵐᵃˣ with amsgrad
    steps: torch.Tensor  # (P,) one step counter per parameter, as torch keeps them
    denom: torch.Tensor  # (N,) scratch: √v̂ + ε
    kernel_scalars: torch.Tensor  # (2,) the compiled kernel's -γ/(1-β₁ᵗ), √(1-β₂ᵗ)

    def __post_init__(self) -> None:
        # The per-step bookkeeping on a handful of numbers goes through NumPy views
        # where the tensors are on the CPU (the same IEEE float32 / float64
        # arithmetic as the torch ops; in a training step every torch op costs
        # microseconds, its caches cold). The kernel's two 0-dim arguments are
        # views made once.
        self.steps_numpy = self.steps.numpy() if self.steps.device.type == "cpu" else None
        self.scalars_numpy = (self.kernel_scalars.numpy()
                              if self.kernel_scalars.device.type == "cpu" else None)
        self.kernel_scalar_views = (self.kernel_scalars[0], self.kernel_scalars[1])
        self._native_loop: Any = _UNBOUND

    def native_loop(self) -> _NativeLoop | None:
        """The C loop bound to these buffers (bound on the first call; see
        _bind_native_loop), or None where it does not apply."""
        if self._native_loop is _UNBOUND:
            self._native_loop = _bind_native_loop(self)
        return self._native_loop

    def advance_steps(self) -> float:
        """t ← t + 1 for every parameter's counter; returns t as a Python float
        (the bias corrections are computed in double, as torch's)."""
        if self.steps_numpy is not None:
            self.steps_numpy += 1
            return float(self.steps_numpy[0])
        self.steps += 1
        return self.steps[0].item()

    def set_kernel_scalars(self, minus_step_size: float, bias_correction2_sqrt: float
                           ) -> None:
        """Round both to the parameters' dtype, as the eager kernels round their
        Python-float arguments, into ``kernel_scalars``."""
        if self.scalars_numpy is not None:
            self.scalars_numpy[0] = minus_step_size
            self.scalars_numpy[1] = bias_correction2_sqrt
        else:
            self.kernel_scalars[0] = minus_step_size
            self.kernel_scalars[1] = bias_correction2_sqrt


_MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def _flat_group(optimizer: Adam, group: dict[str, Any], lay_out: bool = True
                ) -> _FlatAdamState | None:
    """The group's flat spans, or ``None`` when it is not laid out flat (then the
    per-parameter loop runs). On the first step, and after a state_dict was
    loaded, the state is (re)laid out flat to match the parameters (unless
    ``lay_out`` is False: then None). The spans found are cached, keyed by
    where every tensor involved lives."""
    params = group["params"]
    grads = [p.grad for p in params]
    if any(g is None for g in grads) or params[0].is_complex():
        return None
    states = [optimizer.state.get(p) for p in params]
    layout_key = (tuple(p.data_ptr() for p in params),
                  tuple(g.data_ptr() for g in grads),
                  tuple(tuple(map(id, s.values())) if s else () for s in states))
    cache = optimizer.__dict__.setdefault("_flat_cache", {})
    cached = cache.get(id(group))
    if cached is not None and cached[0] == layout_key \
            and len(set(cached[1].steps.tolist())) == 1:
        return cached[1]
    flat = _find_flat_group(optimizer, group, params, grads, lay_out)
    if flat is not None:
        states = [optimizer.state[p] for p in params]
        layout_key = (layout_key[0], layout_key[1],
                      tuple(tuple(map(id, s.values())) for s in states))
        cache[id(group)] = (layout_key, flat)
    return flat


def _find_flat_group(optimizer: Adam, group: dict[str, Any], params: list,
                     grads: list, lay_out: bool) -> _FlatAdamState | None:
    param_span, grad_span = contiguous_span(params), contiguous_span(grads)
    if param_span is None or grad_span is None:
        return None
    names = [name for name in _MOMENTS if name != "max_exp_avg_sq" or group["amsgrad"]]
    if not lay_out and any(not optimizer.state.get(p) for p in params):
        return None  # not started: laying it out is the first step's
    states = [optimizer.state[p] for p in params]
    spans = _state_spans(states, names)
    if spans is None:
        if not lay_out:
            return None
        spans = _lay_out_state_flat(states, params, param_span, names)
        if spans is None:
            return None
    denom = torch.empty_like(param_span)
    return _FlatAdamState(param_span, grad_span, spans["exp_avg"], spans["exp_avg_sq"],
                          spans.get("max_exp_avg_sq"), spans["step"], denom,
                          param_span.new_empty(2))


def _state_spans(states: list[dict[str, Any]], names: list[str]
                 ) -> dict[str, torch.Tensor] | None:
    """The spans of each state tensor across parameters, if they are flat and the
    step counters agree."""
    if any(len(state) == 0 for state in states):
        return None
    spans = {}
    for name in [*names, "step"]:
        if any(name not in state for state in states):
            return None
        spans[name] = contiguous_span([state[name] for state in states])
        if spans[name] is None:
            return None
    if len(set(spans["step"].tolist())) != 1:
        return None
    return spans


def _lay_out_state_flat(states: list[dict[str, Any]], params: list[torch.Tensor],
                        param_span: torch.Tensor, names: list[str]
                        ) -> dict[str, torch.Tensor] | None:
    """Give every parameter its state (zeros on the first step, the current values
    otherwise) as views into one flat buffer per state name; ``None`` if some
    parameters have state and others not, or their step counters differ."""
    started = [len(state) != 0 for state in states]
    if any(started) and not all(started):
        return None
    if all(started):
        steps = [float(state["step"]) for state in states]
        if len(set(steps)) != 1 or any(n not in s for s in states for n in names):
            return None
    spans = {name: torch.zeros_like(param_span) for name in names}
    spans["step"] = torch.zeros(len(params), dtype=_get_scalar_dtype(), device="cpu")
    offset = 0
    for i, (state, p) in enumerate(zip(states, params, strict=True)):
        for name in names:
            view = spans[name][offset: offset + p.numel()].view(p.shape)
            if name in state:
                view.copy_(state[name])
            state[name] = view
        if "step" in state:
            spans["step"][i] = float(state["step"])
        state["step"] = spans["step"][i]  # a 0-dim view, as torch's 0-dim step
        offset += p.numel()
    return spans


def _flat_step(flat: _FlatAdamState, group: dict[str, Any]) -> None:
    """:func:`adam_update`, each line once over the whole flat buffer."""
    beta1, beta2 = group["betas"]
    lr, weight_decay, eps = group["lr"], group["weight_decay"], group["eps"]
    grad = flat.grads if not group["maximize"] else -flat.grads  # g ← ±∇f
    step = flat.advance_steps()  # t ← t + 1, for every parameter
    if weight_decay != 0:
        if group["decoupled_weight_decay"]:
            flat.params.mul_(1 - lr * weight_decay)  # θ ← θ(1 - γλ)     (AdamW)
        else:
            grad = grad.add(flat.params, alpha=weight_decay)  # g ← g + λθ
    flat.exp_avg.lerp_(grad, 1 - beta1)  # m ← β₁m + (1-β₁)g
    flat.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)  # v ← β₂v + (1-β₂)g²

    bias_correction1 = 1 - beta1**step  # 1 - β₁ᵗ
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5  # √(1 - β₂ᵗ)
    step_size = lr / bias_correction1  # γ / (1 - β₁ᵗ)

    second_moment = flat.exp_avg_sq
    if flat.max_exp_avg_sq is not None:
        torch.maximum(flat.max_exp_avg_sq, flat.exp_avg_sq, out=flat.max_exp_avg_sq)
        second_moment = flat.max_exp_avg_sq  # vmax ← max(vmax, v)
    torch.sqrt(second_moment, out=flat.denom)  # √v, into the preallocated buffer
    flat.denom.div_(bias_correction2_sqrt).add_(eps)  # √v̂ + ε
    flat.params.addcdiv_(flat.exp_avg, flat.denom, value=-step_size)  # θ ← θ - γ m̂/(√v̂+ε)


# --------------------------------------------------------------------------------------
# the compiled flat path (opt-in: scratchnet.fast.FastTrainer(compile_optimizer=True)).
# The lines of _flat_step fused into one loop over the buffers: one read of θ, g, m,
# v and one write of θ, m, v per element instead of seven passes. On the CPU the
# loop is C (scratchnet/native/adam.c, built once with the system's compiler,
# called through ctypes: no Python-level wrapper between the step and the loop;
# AdamW's decoupled decay θ·(1 - γλ) included); elsewhere, or where it cannot be
# built, torch.compile fuses _adam_kernel below (no weight decay).
#
# Rounding. Both loops round as torch's eager CPU kernels do: torch's lerp and
# addcmul kernels use a fused multiply-add (m + w·(g − m) and (c·g)·g + v rounded
# once), which the C loop writes as fma() and the compiled one gets from
# -ffp-contract=fast, forcing β₂·v to round on its own (the float64 round trip
# below) before it meets the fma; the scalars are rounded to the parameters'
# dtype first, as the eager kernels round their Python-float arguments. m and v
# then equal the eager update's bit for bit. √v does not: torch's eager CPU sqrt
# is not correctly rounded (about 1 entry in 6 is 1 ulp off the correctly rounded
# value in float32, measured on AVX-512), both loops' are; θ differs from the
# eager update in those entries' last bit (tests/test_native.py, tests/test_fast.py::
# test_compiled_optimizer_matches_eager: m and v exact, θ within the contract).

_CONTRACT_FMA = {"cpp.enable_floating_point_contract_flag": "fast"}


def _adam_kernel(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor,
                 exp_avg_sq: torch.Tensor, minus_step_size: torch.Tensor,
                 bias_correction2_sqrt: torch.Tensor, beta1: float, beta2: float,
                 eps: float) -> None:
    """m ← β₁m + (1-β₁)g;  v ← β₂v + (1-β₂)g²;  θ ← θ - γ/(1-β₁ᵗ) · m / (√v/√(1-β₂ᵗ) + ε).
    All of (N,); minus_step_size and bias_correction2_sqrt are 0-dim tensors of
    the parameters' dtype (no recompiles as they change)."""
    weight = 1 - beta1
    if weight < 0.5:  # torch's lerp: m + w·(g − m), one fma (contracted)
        exp_avg.copy_(exp_avg + weight * (grad - exp_avg))
    else:  # torch's lerp for w ≥ 0.5: g − (g − m)·(1 − w)
        exp_avg.copy_(grad - (grad - exp_avg) * (1 - weight))
    decayed = (exp_avg_sq * beta2).double().to(exp_avg_sq.dtype)  # β₂v, rounded alone
    exp_avg_sq.copy_(((1 - beta2) * grad) * grad + decayed)  # addcmul: one fma
    denom = exp_avg_sq.sqrt() / bias_correction2_sqrt + eps  # √v̂ + ε
    param.copy_(param + (minus_step_size * exp_avg) / denom)  # addcdiv's order


_compiled_kernel: list[Any] = []  # [the compiled function], or [None] if unavailable


def _loop_applies(group: dict[str, Any]) -> bool:
    """Whether the group's update is one the fused loops do: no amsgrad, no
    maximize, no L2 weight decay (AdamW's decoupled decay is in the C loop)."""
    return not (group["amsgrad"] or group["maximize"]) and (
        group["weight_decay"] == 0 or group["decoupled_weight_decay"])


def _compiled_flat_step(flat: _FlatAdamState, group: dict[str, Any]) -> bool:
    """The update without amsgrad, maximize or L2 weight decay through the C
    loop (AdamW's decoupled decay included) or the compiled kernel (no weight
    decay at all); False (nothing done) where neither applies."""
    if not _loop_applies(group):
        return False
    decoupled = group["decoupled_weight_decay"]
    beta1, beta2 = group["betas"]
    native_loop = flat.native_loop()
    if native_loop is not None:  # t ← t + 1 and the bias corrections in the loop
        native_loop(group["lr"], beta1, beta2, group["eps"],
                    group["weight_decay"] if decoupled else 0.0, torch.get_num_threads())
        return True
    if group["weight_decay"] != 0:
        return False
    if not _compiled_kernel:
        try:
            _compiled_kernel.append(torch.compile(_adam_kernel, dynamic=False,
                                                  options=_CONTRACT_FMA))
        except Exception:  # noqa: BLE001 - no compiler, unsupported platform, ...
            _compiled_kernel.append(None)
    kernel = _compiled_kernel[0]
    if kernel is None:
        return False
    step = flat.advance_steps()  # t ← t + 1
    flat.set_kernel_scalars(-(group["lr"] / (1 - beta1**step)),  # -γ / (1 - β₁ᵗ)
                            (1 - beta2**step) ** 0.5)  # √(1 - β₂ᵗ)
    try:
        kernel(flat.params, flat.grads, flat.exp_avg, flat.exp_avg_sq,
               *flat.kernel_scalar_views, beta1, beta2, group["eps"])
    except Exception:  # noqa: BLE001 - compilation happens at the first call
        _compiled_kernel[0] = None
        flat.steps -= 1
        return False
    return True


def _bind_native_loop(flat: _FlatAdamState) -> _NativeLoop | None:
    """scratchnet/native/adam.c's loop for the buffers' dtype bound to their four
    pointers, their length and the step counters (the loop advances the
    counters and computes the bias corrections itself, in double as the Python
    here would: tests/test_native.py checks θ bit for bit), or None: not on the
    CPU, another dtype, buffers not contiguous or overlapping (the loop takes
    them as restrict), or the library cannot be built
    (scratchnet.native.why_unavailable("adam"))."""
    buffers = (flat.params, flat.grads, flat.exp_avg, flat.exp_avg_sq)
    steps = flat.steps
    if flat.params.device.type != "cpu" or flat.params.dtype not in native.C_TYPES \
            or not all(b.is_contiguous() and b.dtype == flat.params.dtype
                       for b in buffers) or _any_overlap(buffers) \
            or steps.device.type != "cpu" or not steps.is_contiguous() \
            or steps.dtype not in (torch.float32, torch.float64):
        return None
    # (θ, g, m, v, n, steps, steps are float64, P, γ, β₁, β₂, ε, λ, threads)
    pointer, size, real = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
    suffix = native.C_TYPES[flat.params.dtype][0]
    loop = native.function("adam", f"scratchnet_adam_{suffix}", None,
                           [*[pointer] * 4, size, pointer, ctypes.c_int, size,
                            *[real] * 5, ctypes.c_int])
    if loop is None:
        return None
    return _NativeLoop(loop, tuple(b.data_ptr() for b in buffers), flat.params.element_size(),
                       flat.params.numel(), steps.data_ptr(), steps.element_size(),
                       int(steps.dtype == torch.float64), steps.numel())


@dataclass(frozen=True)
class _NativeLoop:
    """adam.c's loop bound to one flat state: ``loop(γ, β₁, β₂, ε, λ, threads)``
    updates every element and advances every counter; :meth:`part` does that
    for a slice of the elements and of the counters."""

    loop: Callable[..., None]
    pointers: tuple[int, int, int, int]  # θ, g, m, v
    element_size: int  # bytes
    numel: int  # N
    steps_pointer: int  # the (P,) counters
    step_size: int  # bytes of one counter
    steps_double: int  # 1: the counters are float64
    parameter_count: int  # P

    def __call__(self, *hyperparameters: float | int) -> None:
        self.part(0, self.numel, 0, self.parameter_count, *hyperparameters)

    def part(self, offset: int, numel: int, first: int, count: int,
             *hyperparameters: float | int) -> None:
        """Elements [offset, offset + numel) with counters [first, first + count)."""
        shift = offset * self.element_size
        param, grad, exp_avg, exp_avg_sq = self.pointers
        self.loop(param + shift, grad + shift, exp_avg + shift, exp_avg_sq + shift,
                  numel, self.steps_pointer + first * self.step_size, self.steps_double,
                  count, *hyperparameters)


def update_in_parts(optimizer: Optimizer, flat_params: torch.Tensor
                    ) -> Callable[[int, int, int, int], None] | None:
    """This step's update in pieces, where ``optimizer.step()`` would be one run
    of the C loop over one flat group whose parameters are ``flat_params``, the
    whole buffer (``FastTrainer(compile_optimizer=True)`` on the CPU, after the
    first step): a function ``part(offset, numel, first, count)`` that updates
    elements [offset, offset + numel) of the flat buffers and advances the step
    counters of the group's parameters [first, first + count) — in the group's
    order, which is the order they lie in the buffer (the flat path needs it).
    Run on parts that cover the group once each, in any order, it is
    ``optimizer.step()`` bit for bit: the update is elementwise, and each part
    computes the same t from counters that agree (checked here). FastTrainer
    runs each Linear's part right after that layer's backward, while its
    weights and gradient are still in cache (tests/test_fast.py).

    None where ``optimizer.step()`` must run instead: another optimizer or
    path, several groups, no state yet (the first step lays it out), or the C
    loop unavailable. Ask again every step, once the ``.grad`` tensors are in
    place and before any is written: like ``step()``, this checks the layout
    (state_dict loaded, ``.grad`` replaced, …) and reads the hyperparameters."""
    if not isinstance(optimizer, Adam) or not getattr(optimizer, "_compiled_flat_update",
                                                      False) \
            or len(optimizer.param_groups) != 1:
        return None
    group = optimizer.param_groups[0]
    if not _loop_applies(group):
        return None
    with torch._C.DisableTorchFunctionSubclass():
        flat = _flat_group(optimizer, group, lay_out=False)
    if flat is None or flat.params.data_ptr() != flat_params.data_ptr() \
            or flat.params.numel() != flat_params.numel():
        return None
    loop = flat.native_loop()
    if loop is None:
        return None
    beta1, beta2 = group["betas"]
    hyperparameters = (group["lr"], beta1, beta2, group["eps"], group["weight_decay"],
                       torch.get_num_threads())  # a weight decay here is AdamW's
    return lambda offset, numel, first, count: loop.part(offset, numel, first, count,
                                                         *hyperparameters)


def _any_overlap(buffers: tuple[torch.Tensor, ...]) -> bool:
    spans = sorted((b.data_ptr(), b.data_ptr() + b.numel() * b.element_size())
                   for b in buffers)
    return any(end > next_start
               for (_, end), (next_start, _) in zip(spans, spans[1:], strict=False))
