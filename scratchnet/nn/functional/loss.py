"""Loss ops: cross entropy, negative log likelihood and mean squared error, each a
forward beside its hand-written backward (torch.nn.functional's losses).

Shapes: N = batch, C = classes, d1..dK = extra dims of a K-dimensional loss
(pixels of a segmentation map, tokens of a sequence). A classification input is
(N, C), (N, C, d1, ..., dK), or unbatched (C,). Internally it is laid out as
rows: the class dim is moved last and everything else flattened,

    (N, C, d1, ..., dK) → (N, d1, ..., dK, C) → (M, C),   M = N·d1⋯dK,

so every formula below is written for one row i of M and class c of C. The
unreduced loss has the target's shape (N, d1, ..., dK) (``()`` unbatched).

Reductions, with ℓ_i the loss of row i:
    'none' → ℓ (per row),  'sum' → Σ_i ℓ_i,  'mean' → Σ_i ℓ_i / W
where W is Σ_i w[y_i] over the rows not ignored (class indices; the number of
such rows without ``weight``), or M (class probabilities). Every row ignored
gives 0 / 0 = nan for 'mean', exactly as torch.

The formulas are torch's (aten/src/ATen/native/LossNLL.cpp:
``nll_loss_out_frame``, ``cross_entropy_loss_label_smoothing``,
``cross_entropy_loss_prob_target``) and torch/nn/functional.py (``mse_loss``).
"""

from __future__ import annotations

import warnings

import torch

from scratchnet import autodiff
from scratchnet.autodiff import Context, Function, plain
from scratchnet.errors import (
    ArgumentTypeError,
    DeviceError,
    DTypeError,
    NotDifferentiableError,
    OptionError,
    ShapeError,
    TargetError,
    check_real,
    check_tensor,
)
from scratchnet.nn.functional import vecmath
from scratchnet.nn.functional.softmax import (
    log_softmax_backward_values,
    log_softmax_values,
)

REDUCTIONS = ("none", "mean", "sum")

# --------------------------------------------------------------------------------------
# options and checks shared by the losses


def legacy_reduction(size_average: bool | None, reduce: bool | None) -> str:
    """The reduction meant by the deprecated ``size_average``/``reduce`` pair
    (torch.nn._reduction.legacy_get_string), with torch's warning."""
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    reduction = "mean" if size_average and reduce else "sum" if reduce else "none"
    warnings.warn("size_average and reduce args will be deprecated, please use "
                  f"reduction='{reduction}' instead.", stacklevel=3)
    return reduction


def check_reduction(reduction: str, where: str = "loss") -> None:
    if reduction not in REDUCTIONS:
        raise OptionError(f"{where}: reduction={reduction!r} is not a valid value for "
                          "reduction: expected 'none', 'mean' or 'sum'")


def check_label_smoothing(label_smoothing: float) -> None:
    check_real("cross_entropy", "label_smoothing", label_smoothing)
    if not 0.0 <= label_smoothing <= 1.0:
        raise OptionError(f"cross_entropy: label_smoothing must be between 0.0 and "
                          f"1.0, got {label_smoothing}")


def _refuse_tape_gradient(loss: str, name: str, x: torch.Tensor | None) -> None:
    """The losses have no backward for ``name`` (targets are data; torch refuses a
    ``weight`` that requires grad). If ``x`` carries a gradient path on the tape,
    say so instead of dropping that gradient silently. Inputs a Module captured
    (on the tape, but wanting no gradient) pass."""
    if (isinstance(x, autodiff.Tensor) and autodiff.is_recording()
            and (x._node is not None or x._wants_grad)):
        raise NotDifferentiableError(
            f"{loss}: no gradient flows to {name} (it is data), but {name} is on "
            f"scratchnet's tape and wants one; pass {name}.detach() or compute it "
            "under scratchnet.no_grad()")


def _check_loss_arguments(loss: str, input: object, target: object, weight: object,
                          ignore_index: object = -100) -> None:
    """input and target are tensors, weight a tensor or None, ignore_index an int."""
    check_tensor(loss, "input", input)
    check_tensor(loss, "target", target)
    if weight is not None:
        check_tensor(loss, "weight", weight)
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise ArgumentTypeError(f"{loss}: ignore_index must be an int, got "
                                f"{ignore_index!r}")


def _check_same_device(loss: str, name: str, x: torch.Tensor, input: torch.Tensor) -> None:
    if x.device != input.device:
        raise DeviceError(f"{loss}: {name} is on {x.device} but the input is on "
                          f"{input.device}; move one with .to(device)")


def _check_class_input(loss: str, input: torch.Tensor, weight: torch.Tensor | None
                       ) -> int:
    """Input (C,) or (N, C, d1..dK) of floats, weight (C,) like it; returns C."""
    if not input.is_floating_point():
        raise DTypeError(f"{loss}: input must be floating point, got {input.dtype}")
    if input.dim() == 0:
        raise ShapeError(f"{loss}: input must be (C,), (N, C) or (N, C, d1, ..., dK), "
                         "got a scalar")
    n_classes = input.shape[0] if input.dim() == 1 else input.shape[1]
    if n_classes == 0:
        raise ShapeError(f"{loss}: input of shape {tuple(input.shape)} has no classes "
                         "(C = 0)")
    if weight is None:
        return n_classes
    if weight.shape != (n_classes,):
        raise ShapeError(f"{loss}: weight must have shape (C,) = ({n_classes},) for "
                         f"input of shape {tuple(input.shape)}, got "
                         f"{tuple(weight.shape)}")
    if weight.dtype != input.dtype:
        raise DTypeError(f"{loss}: weight dtype {weight.dtype} does not match the "
                         f"input's {input.dtype}")
    _check_same_device(loss, "weight", weight, input)
    return n_classes


def _check_class_indices(loss: str, input: torch.Tensor, target: torch.Tensor,
                         n_classes: int, ignore_index: int) -> torch.Tensor:
    """Target (N, d1..dK) of int64 (or uint8, as torch) with every value in
    [0, C) or equal to ignore_index; returned as int64."""
    if target.dtype not in (torch.int64, torch.uint8):
        raise TargetError(
            f"{loss}: class-index targets must be int64 (torch.long), got "
            f"{target.dtype}; use target.long() (or float class probabilities of "
            "the input's shape, for cross_entropy)")
    expected = () if input.dim() == 1 else (input.shape[0], *input.shape[2:])
    if target.shape != expected:
        raise ShapeError(
            f"{loss}: input of shape {tuple(input.shape)} needs class-index targets "
            f"of shape {expected} (the input without its class dim), got "
            f"{tuple(target.shape)}")
    _check_same_device(loss, "target", target, input)
    target = target.long()
    if target.numel() > 0:
        # one min/max reduction over the targets that count (ignored ones read as 0)
        counted = torch.where(target == ignore_index, 0, target)
        low, high = torch.stack(torch.aminmax(counted)).tolist()  # one device sync
        if low < 0 or high >= n_classes:
            bad = low if low < 0 else high
            raise TargetError(
                f"{loss}: target {bad} is out of bounds: class indices must be in "
                f"[0, {n_classes}) for C = {n_classes} classes (or equal "
                f"ignore_index={ignore_index})")
    return target


def _rows(x: torch.Tensor) -> torch.Tensor:
    """(C,) → (1, C); (N, C, d1..dK) → (M, C): the class dim last, the rest flat.
    A view for (C,) and (N, C)."""
    if x.dim() == 1:
        return x.unsqueeze(0)  # (1, C)
    return x.movedim(1, -1).reshape(-1, x.shape[1])  # (M, C)


def _unrows(rows: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Inverse of :func:`_rows`: (M, C) → ``shape``, the class dim back at 1."""
    if len(shape) == 1:
        return rows.reshape(shape)  # (C,)
    moved = (shape[0], *shape[2:], shape[1])  # (N, d1..dK, C)
    return rows.reshape(moved).movedim(-1, 1)  # (N, C, d1..dK)


def _as_torch_kernel(input: torch.Tensor) -> bool:
    """torch's log_softmax runs its last-dim kernel (reproduced bit for bit by
    :mod:`.vecmath` for float32 on CPU) when the class dim is the last: (C,), (N, C)."""
    return input.dim() <= 2 and vecmath.matches_torch_kernels(input)


def _reduce(loss_rows: torch.Tensor, reduction: str, denominator: torch.Tensor | int,
            out_shape: tuple[int, ...], nll_kept: torch.Tensor | None = None
            ) -> torch.Tensor:
    """ℓ (M,) → 'none': ℓ reshaped to ``out_shape``; 'sum': Σ ℓ; 'mean': Σ ℓ / W.
    ``nll_kept`` (the rows not ignored): sum in the order of torch's CPU
    nll_loss (:func:`.vecmath.nll_cascade_sum`), so the loss value equals torch's
    bit for bit; given only where that is the kernel torch runs."""
    if reduction == "none":
        return loss_rows.reshape(out_shape)
    if nll_kept is not None:
        total = vecmath.nll_cascade_sum(loss_rows, nll_kept)
    else:
        total = loss_rows.sum()
    return total if reduction == "sum" else total / denominator


def _as_torch_nll_kernel(input: torch.Tensor, weight: torch.Tensor | None) -> bool:
    """torch's CPU nll_loss (cascade summation, reproduced) is what reduces a
    (C,) or (N, C) input without class weights (with them, its weighted
    partial sums may be contracted to FMAs: not reproduced)."""
    return input.dim() <= 2 and input.device.type == "cpu" and weight is None


def _drows(dout: torch.Tensor, reduction: str, denominator: torch.Tensor | int
           ) -> torch.Tensor:
    """d loss / d ℓ_i: dout per row ('none', (M,)), dout ('sum') or dout / W
    ('mean'), the last two as a (1,) tensor that broadcasts over rows."""
    if reduction == "none":
        return dout.reshape(-1)  # (M,)
    dloss = dout.reshape(1)  # (1,)
    return dloss if reduction == "sum" else dloss / denominator


# --------------------------------------------------------------------------------------
# cross_entropy: log_softmax and the loss, fused


class CrossEntropy(Function):
    @staticmethod
    def forward(ctx: Context, input: torch.Tensor, target: torch.Tensor,
                weight: torch.Tensor | None, ignore_index: int, reduction: str,
                label_smoothing: float) -> torch.Tensor:
        """With log p = log_softmax(x) over classes, ε = label_smoothing, w = weight
        (all ones if None):

        class indices y (ignored rows give ℓ_i = 0):
            ℓ_i = (1 − ε) · w[y_i] · (−log p_{i,y_i}) + ε/C · Σ_c w_c · (−log p_ic)
            W   = Σ_{i not ignored} w[y_i]
        class probabilities t (same shape as the input):
            ℓ_i = −Σ_c log p_ic · ((1 − ε) · t_ic + ε/C) · w_c
            W   = M
        """
        ctx.as_torch_kernel = _as_torch_kernel(input)
        log_probs = log_softmax_values(_rows(input), 1, ctx.as_torch_kernel)  # (M, C)
        if target.is_floating_point():
            loss_rows, denominator, cache = _probability_loss_rows(
                log_probs, _rows(target), weight, label_smoothing)
        else:
            loss_rows, denominator, cache = _class_index_loss_rows(
                log_probs, target.reshape(-1), weight, ignore_index, label_smoothing)
        # cache: (smoothed,) for probabilities, (safe, kept, target_weight) for indices
        ctx.save_for_backward(log_probs, weight, *cache)
        ctx.probability_targets = target.is_floating_point()
        ctx.denominator = denominator
        ctx.reduction = reduction
        ctx.label_smoothing = label_smoothing
        ctx.input_shape = input.shape
        out_shape = input.shape[:1] + input.shape[2:] if input.dim() > 1 else ()
        nll_kept = None
        if (not ctx.probability_targets and label_smoothing == 0
                and _as_torch_nll_kernel(input, weight)):
            nll_kept = cache[1]  # (M,) rows not ignored
        return _reduce(loss_rows, reduction, denominator, out_shape, nll_kept)

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """In the forward pass both target kinds were ℓ_i = −Σ_c q_ic · log p_ic
        for a per-row target distribution q (q_ic = ((1 − ε)·t_ic + ε/C)·w_c for
        probabilities; q_ic = ((1 − ε)·[c = y_i] + ε/C)·w_c, and q_i = 0 on an
        ignored row, for class indices). Two steps, fused in this one backward:

            dlog_p_ic = −dℓ_i · q_ic                      (the loss, linear in log p)
            dx_ij     = dlog_p_ij − p_ij · Σ_c dlog_p_ic  (log_softmax's backward,
                                                          d log p_ic/dx_ij = [c=j] − p_ij)
                      = dℓ_i · (p_ij · Σ_c q_ic − q_ij)

        with dℓ_i = dout_i ('none'), dout ('sum') or dout / W ('mean'). For class
        indices, no weight and no smoothing, Σ_c q_ic = 1 and this is the familiar
        dx = (softmax(x) − onehot(y)) · dout / N; with weight, dℓ_i·w[y_i]/Σw[y].

        p = exp(log p) is recomputed from the saved log-probabilities, and dx is
        formed as dlog_p − p·Σ dlog_p, both as torch's log_softmax backward does:
        where the exact gradient is 0 (C = 1, or p = onehot(y) without smoothing)
        it comes out as exactly 0 here too. No gradient for target (data) or weight (torch
        refuses one too): their slots return None.
        """
        log_probs, weight, *cache = ctx.saved_tensors  # (M, C), (C,) or None
        if ctx.probability_targets:
            (smoothed,) = cache  # (M, C) (1 − ε)·t + ε/C
            drows = _drows(dout, ctx.reduction, ctx.denominator)  # (M,) or (1,)
            dlog_probs = -drows.unsqueeze(1)  # (M, 1) or (1, 1)
            if weight is not None:
                dlog_probs = dlog_probs * weight  # (·, C)
            dlog_probs = dlog_probs * smoothed  # (M, C)
        else:
            dlog_probs = _class_index_dlog_probs(log_probs.shape, weight, cache, dout,
                                                 ctx)  # (M, C)
        dlogits = log_softmax_backward_values(log_probs, dlog_probs, 1,
                                              ctx.as_torch_kernel)  # (M, C)
        return _unrows(dlogits, ctx.input_shape), None, None, None, None, None


def _probability_loss_rows(log_probs: torch.Tensor, target: torch.Tensor,
                           weight: torch.Tensor | None, label_smoothing: float
                           ) -> tuple[torch.Tensor, int, tuple]:
    """ℓ_i = −Σ_c log p_ic · ((1 − ε)·t_ic + ε/C) · w_c, W = M, in torch's order
    of products (cross_entropy_loss_prob_target). log_probs, target: (M, C)."""
    n_classes = log_probs.shape[1]
    smoothed = target  # (M, C)
    if label_smoothing > 0:
        smoothed = target * (1 - label_smoothing) + label_smoothing / n_classes
    weighted = log_probs * smoothed  # (M, C)
    if weight is not None:
        weighted = weighted * weight  # (M, C)
    loss_rows = -weighted.sum(dim=1)  # (M,)
    return loss_rows, log_probs.shape[0], (smoothed,)


def _class_index_loss_rows(log_probs: torch.Tensor, target: torch.Tensor,
                           weight: torch.Tensor | None, ignore_index: int,
                           label_smoothing: float) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """ℓ_i = (1 − ε)·w[y_i]·(−log p_{i,y_i}) + ε/C·Σ_c w_c·(−log p_ic), 0 where
    y_i = ignore_index; W = Σ_{i not ignored} w[y_i] (nll_loss_out_frame,
    cross_entropy_loss_label_smoothing). log_probs (M, C), target (M,)."""
    n_classes = log_probs.shape[1]
    kept = target != ignore_index  # (M,)
    safe = torch.where(kept, target, 0)  # (M,) ignored rows point at class 0
    picked = log_probs.gather(1, safe.unsqueeze(1)).squeeze(1)  # (M,) log p_{i,y_i}
    if weight is None:
        target_weight = torch.ones_like(picked)  # (M,)
        denominator = kept.sum().to(log_probs.dtype)
    else:
        target_weight = weight[safe]  # (M,) w[y_i]
        denominator = torch.where(kept, target_weight, 0).sum()
    loss_rows = -target_weight * picked  # (M,)
    if label_smoothing > 0:
        weighted = log_probs if weight is None else log_probs * weight  # (M, C)
        smooth_rows = -weighted.sum(dim=1)  # (M,)
        loss_rows = ((1 - label_smoothing) * loss_rows
                     + (label_smoothing / n_classes) * smooth_rows)
    # where, not a product: an ignored row is exactly 0 even if its logits are inf
    loss_rows = torch.where(kept, loss_rows, 0)  # (M,)
    return loss_rows, denominator, (safe, kept, target_weight)


def _class_index_dlog_probs(shape: torch.Size, weight: torch.Tensor | None,
                            cache: list[torch.Tensor], dout: torch.Tensor,
                            ctx: Context) -> torch.Tensor:
    """d loss / d log p for class indices: (M, C), zero on ignored rows,

        dlog_p_ic = −dℓ_i^nll · w[y_i] · [c = y_i] − dℓ_i^smooth · w_c

    with ℓ^nll scaled by (1 − ε) and ℓ^smooth by ε/C before the reduction's
    scaling, in the order torch's graph for cross_entropy_loss_label_smoothing
    applies them (so the two round alike)."""
    safe, kept, target_weight = cache  # (M,) each: y_i (0 if ignored), kept, w[y_i]
    eps, n_classes = ctx.label_smoothing, shape[1]
    # where, not a product: an ignored row gets exactly 0 even if dout / W is inf
    # (a mean over only ignored targets, W = 0)
    dnll = _drows((1 - eps) * dout, ctx.reduction, ctx.denominator)  # (M,) or (1,)
    dpicked = torch.where(kept, -dnll * target_weight, 0)  # (M,)
    if eps > 0:
        dsmooth = _drows((eps / n_classes) * dout, ctx.reduction, ctx.denominator)
        dsmooth = torch.where(kept, -dsmooth, 0).unsqueeze(1)  # (M, 1)
        dlog_probs = dsmooth * weight if weight is not None else dsmooth.expand(shape)
        dlog_probs = dlog_probs.contiguous()  # (M, C)
    else:
        dlog_probs = dpicked.new_zeros(shape)  # (M, C)
    # + dℓ^nll at c = y_i
    return dlog_probs.scatter_add(1, safe.unsqueeze(1), dpicked.unsqueeze(1))


def cross_entropy(input: torch.Tensor, target: torch.Tensor,
                  weight: torch.Tensor | None = None, size_average: bool | None = None,
                  ignore_index: int = -100, reduce: bool | None = None,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross entropy between logits and targets (torch.nn.functional.cross_entropy):
    log_softmax over the class dim and the negative log likelihood, in one op.

    Args:
        input: logits, (C,), (N, C) or (N, C, d1, ..., dK).
        target: class indices, int64 of shape (), (N,) or (N, d1, ..., dK), each in
            [0, C) or equal to ``ignore_index``; or class probabilities, floats of
            the input's shape and dtype. Targets are data: no gradient flows to
            them (one on the tape that wants a gradient is refused).
        weight: (C,) rescaling of each class, or None.
        size_average, reduce: deprecated; when given they override ``reduction``.
        ignore_index: class-index targets equal to it contribute nothing, neither
            to the loss nor to the mean's denominator. Not allowed (≥ 0) with
            class probabilities, as in torch.
        reduction: 'none' | 'mean' | 'sum'. 'mean' divides by Σ w[y_i] over the
            non-ignored targets (their count without weight) for class indices,
            by M = N·d1⋯dK for probabilities.
        label_smoothing: ε in [0, 1]: the target becomes (1 − ε)·target + ε/C.

    Shape: the loss is () unless reduction='none', then (N, d1, ..., dK) (() for
    unbatched input).
    """
    if size_average is not None or reduce is not None:
        reduction = legacy_reduction(size_average, reduce)
    check_reduction(reduction, "cross_entropy")
    check_label_smoothing(label_smoothing)
    _check_loss_arguments("cross_entropy", input, target, weight, ignore_index)
    _refuse_tape_gradient("cross_entropy", "target", target)
    _refuse_tape_gradient("cross_entropy", "weight", weight)
    input_plain, target, weight = plain(input), plain(target), plain(weight)
    n_classes = _check_class_input("cross_entropy", input_plain, weight)
    if target.is_floating_point():
        if target.shape != input_plain.shape:
            raise ShapeError(
                f"cross_entropy: float targets are class probabilities and must have "
                f"the input's shape {tuple(input_plain.shape)}, got "
                f"{tuple(target.shape)}; class indices must be int64")
        if target.dtype != input_plain.dtype:
            raise DTypeError(f"cross_entropy: probability target dtype {target.dtype} "
                             f"does not match the input's {input_plain.dtype}")
        _check_same_device("cross_entropy", "target", target, input_plain)
        if ignore_index >= 0:
            raise OptionError(f"cross_entropy: ignore_index={ignore_index} is not "
                              "supported with class-probability targets")
    else:
        target = _check_class_indices("cross_entropy", input_plain, target, n_classes,
                                      ignore_index)
    return CrossEntropy.apply(input, target, weight, ignore_index, reduction,
                              label_smoothing)


# --------------------------------------------------------------------------------------
# nll_loss: the input is already log-probabilities


class NLLLoss(Function):
    @staticmethod
    def forward(ctx: Context, input: torch.Tensor, target: torch.Tensor,
                weight: torch.Tensor | None, ignore_index: int, reduction: str
                ) -> torch.Tensor:
        """ℓ_i = −w[y_i] · input_{i,y_i} (0 on ignored rows);
        W = Σ_{i not ignored} w[y_i] (their count without weight)."""
        log_probs = _rows(input)  # (M, C)
        target_rows = target.reshape(-1)  # (M,)
        kept = target_rows != ignore_index  # (M,)
        safe = torch.where(kept, target_rows, 0)  # (M,) ignored rows point at 0
        picked = log_probs.gather(1, safe.unsqueeze(1)).squeeze(1)  # (M,)
        if weight is None:
            target_weight = torch.ones_like(picked)  # (M,)
            denominator = kept.sum().to(input.dtype)
        else:
            target_weight = weight[safe]  # (M,)
            denominator = torch.where(kept, target_weight, 0).sum()
        loss_rows = torch.where(kept, -target_weight * picked, 0)  # (M,)
        ctx.save_for_backward(safe, kept, target_weight)
        ctx.denominator = denominator
        ctx.reduction = reduction
        ctx.input_shape = input.shape
        out_shape = input.shape[:1] + input.shape[2:] if input.dim() > 1 else ()
        nll_kept = kept if _as_torch_nll_kernel(input, weight) else None
        return _reduce(loss_rows, reduction, denominator, out_shape, nll_kept)

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """ℓ_i depends on one entry of its row, so

            dinput_ij = −w[y_i] · dℓ_i · [j = y_i]   (0 on ignored rows)

        with dℓ_i = dout_i ('none'), dout ('sum') or dout / W ('mean')."""
        safe, kept, target_weight = ctx.saved_tensors  # (M,) each
        drows = _drows(dout, ctx.reduction, ctx.denominator)  # (M,) or (1,)
        dpicked = torch.where(kept, -target_weight * drows, 0)  # (M,)
        n_classes = ctx.input_shape[0] if len(ctx.input_shape) == 1 else ctx.input_shape[1]
        dlog_probs = dpicked.new_zeros(safe.shape[0], n_classes)  # (M, C)
        dlog_probs.scatter_(1, safe.unsqueeze(1), dpicked.unsqueeze(1))
        return _unrows(dlog_probs, ctx.input_shape), None, None, None, None


def nll_loss(input: torch.Tensor, target: torch.Tensor,
             weight: torch.Tensor | None = None, size_average: bool | None = None,
             ignore_index: int = -100, reduce: bool | None = None,
             reduction: str = "mean") -> torch.Tensor:
    """Negative log likelihood of class-index targets (torch.nn.functional.nll_loss).

    ``input`` holds log-probabilities, (C,), (N, C) or (N, C, d1, ..., dK);
    ``target`` int64 class indices (), (N,) or (N, d1, ..., dK). ``weight``,
    ``ignore_index`` and ``reduction`` as in :func:`cross_entropy`.
    """
    if size_average is not None or reduce is not None:
        reduction = legacy_reduction(size_average, reduce)
    check_reduction(reduction, "nll_loss")
    _check_loss_arguments("nll_loss", input, target, weight, ignore_index)
    _refuse_tape_gradient("nll_loss", "target", target)
    _refuse_tape_gradient("nll_loss", "weight", weight)
    input_plain, target, weight = plain(input), plain(target), plain(weight)
    n_classes = _check_class_input("nll_loss", input_plain, weight)
    if target.is_floating_point():
        raise TargetError(f"nll_loss: targets must be int64 class indices, got "
                          f"{target.dtype}")
    target = _check_class_indices("nll_loss", input_plain, target, n_classes,
                                  ignore_index)
    return NLLLoss.apply(input, target, weight, ignore_index, reduction)


# --------------------------------------------------------------------------------------
# mse_loss


class MSELoss(Function):
    @staticmethod
    def forward(ctx: Context, input: torch.Tensor, target: torch.Tensor,
                weight: torch.Tensor | None, reduction: str) -> torch.Tensor:
        """out = w ⊙ (input − target)² (w = 1 without weight); 'mean' is
        Σ out / numel, or Σ out / Σ w with weight (torch's weighted mean)."""
        diff = input - target  # (*)
        squared = diff * diff  # (*)
        out = squared if weight is None else squared * weight  # (*)
        if reduction == "none":
            loss = out
        elif reduction == "sum":
            loss = out.sum()
        elif weight is None:
            loss = out.mean()
        else:
            loss = out.sum() / weight.sum()
        ctx.save_for_backward(diff, squared, weight, loss)
        ctx.reduction = reduction
        return loss

    @staticmethod
    def backward(ctx: Context, dout: torch.Tensor) -> tuple:
        """Without weight (torch's mse_loss_backward, same order of products):

            dinput  = (norm · (input − target)) · dout,   norm = 2/numel ('mean')
                                                           or 2 ('none', 'sum')
            dtarget = −dinput

        With weight, 'mean' is L = S / Σw with S = Σ w ⊙ (input − target)²:

            dinput  = 2 · (input − target) ⊙ w · dout / Σw   (/ Σw for 'mean' only)
            dweight = (input − target)² · dout / Σw − dout · L / Σw    ('mean')
                      (input − target)² ⊙ dout                         ('none', 'sum')

        dweight is written in torch autograd's order (DivBackward: −dout·(S/Σw)/Σw)
        so that its near-zero cancellations round the same way.
        """
        diff, squared, weight, loss = ctx.saved_tensors
        reduction = ctx.reduction
        need_dinput, need_dtarget, need_dweight = ctx.needs_input_grad[:3]
        if weight is None:
            norm = 2.0 / diff.numel() if reduction == "mean" else 2.0
            dinput = (norm * diff) * dout  # (*)
            dweight = None
        else:
            dscaled = dout / weight.sum() if reduction == "mean" else dout  # d Σ out
            dinput = 2.0 * diff * (weight * dscaled)  # (*)
            dweight = None
            if need_dweight:
                dweight = squared * dscaled  # (*)
                if reduction == "mean":
                    dweight = dweight - dout * (loss / weight.sum())
        dtarget = -dinput if need_dtarget else None
        return (dinput if need_dinput else None), dtarget, dweight, None


def mse_loss(input: torch.Tensor, target: torch.Tensor, size_average: bool | None = None,
             reduce: bool | None = None, reduction: str = "mean",
             weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error (torch.nn.functional.mse_loss), differentiable in
    input, target and weight. Unlike torch, which broadcasts a mismatched target
    with a warning, shapes must match exactly.

    Shape: input (*), target (*), weight (*) (per element, optional) → () or (*)
    for reduction='none'.
    """
    if size_average is not None or reduce is not None:
        reduction = legacy_reduction(size_average, reduce)
    check_reduction(reduction, "mse_loss")
    _check_loss_arguments("mse_loss", input, target, weight)
    tensors = {"target": plain(target)}
    if weight is not None:
        tensors["weight"] = plain(weight)
    input_plain = plain(input)
    if not input_plain.is_floating_point():
        raise DTypeError(f"mse_loss: input must be floating point, got "
                         f"{input_plain.dtype}")
    for name, x in tensors.items():
        if x.shape != input_plain.shape:
            raise ShapeError(f"mse_loss: {name} of shape {tuple(x.shape)} does not "
                             f"match the input's {tuple(input_plain.shape)} (nothing is "
                             "broadcast)")
        if x.dtype != input_plain.dtype:
            raise DTypeError(f"mse_loss: {name} dtype {x.dtype} does not match the "
                             f"input's {input_plain.dtype}")
        _check_same_device("mse_loss", name, x, input_plain)
    return MSELoss.apply(input, target, weight, reduction)
