"""The fast training step for layer stacks: forward, backward and optimizer step
of a Flatten / Linear / ReLU / Sigmoid / Tanh / Softmax stack with
cross-entropy, without the tape.

    trainer = FastTrainer(model, optimizer)      # model: a seed MLP, a Sequential
    loss = trainer.step(x, y)                    # = zero_grad; loss(model(x), y)
                                                 #   .backward(); optimizer.step()

The tape (:mod:`scratchnet.autodiff`) records every op and allocates every
intermediate; for a stack of known layers neither is needed. This file runs the
same forward/backward pairs as ``scratchnet.nn.functional`` — same torch ops, in
the same order, on the same values — with the bookkeeping taken out:

- all parameters and gradients are views into one flat buffer each
  (:class:`scratchnet.nn.utils.FlatParameters`), so Adam is a few passes over
  one long tensor (the flat path of :mod:`scratchnet.optim.adam`);
- activations and their gradients live in buffers allocated once per batch size
  and reused every step; the products write into them, the weight gradient
  straight into ``flat_grads``: on the CPU as torch's own BLAS call split
  between the threads by hand (:mod:`scratchnet.native.gemm`, only where that
  gives torch.mm's result bit for bit), else ``torch.addmm`` / ``torch.mm``
  with ``out=``;
- ReLU, Sigmoid and Tanh overwrite their input in place; the backward needs only
  their output;
- the softmax–cross-entropy backward is fused, dlogits = (softmax(z) − onehot(y)) / B:
  scratchnet's CrossEntropy op, called directly;
- with Adam's C loop (``compile_optimizer`` on the CPU), each Linear's update
  runs right after its backward, while its weights and gradient are still in
  cache, instead of one optimizer.step() after the whole backward: the same
  elementwise update, so the same bits (:func:`scratchnet.optim.adam.update_in_parts`).

Because each op is the one the tape's backward calls, in the same order, the
fast step is bit-for-bit the tape step (tests/test_fast.py::
test_fast_step_is_the_tape_step_bit_for_bit) and so within the parity contract
of torch.nn (tests/test_fast.py::test_fast_training_matches_torch).

B = batch, D_in / D_out = a Linear's in / out features, C = classes.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from scratchnet import native, nn
from scratchnet.autodiff import Context, no_grad
from scratchnet.errors import (
    DeviceError,
    DTypeError,
    OptionError,
    ShapeError,
    TargetError,
)
from scratchnet.native import gemm
from scratchnet.nn.functional import vecmath
from scratchnet.nn.functional.loss import CrossEntropy
from scratchnet.nn.functional.softmax import Softmax, log_softmax_values
from scratchnet.nn.utils.flat import FlatParameters
from scratchnet.optim import adam

# --------------------------------------------------------------------------------------
# the layers: forward and backward side by side, writing into reused buffers


class _LinearStep:
    """out = x · Wᵀ + b, as ``addmm`` into a reused (B, D_out) buffer.

    The three products go through :mod:`scratchnet.native.gemm`: on the CPU
    torch's own BLAS routine on hand-split blocks, where that is torch.mm's
    result bit for bit (chosen per shape by trying it), else torch's ops.
    There a ReLU next to the layer runs inside its products (``relu_after``:
    relu(out) in the forward's; ``gate_input``: the backward of the ReLU that
    produced x, dx · [x > 0], in the input gradient's; see _fuse_relus), and
    the bias's gradient Σ_B dout in the weight gradient's, where that sum is
    torch.sum's bit for bit."""

    def __init__(self, layer: nn.Linear, flat: FlatParameters, first: bool) -> None:
        # plain-tensor views of the flat buffers: no tape dispatch on Parameters
        slot_of = {id(p): slot for slot, p in flat}
        weight_slot = slot_of[id(layer.weight)]
        self.weight = flat.view(flat.flat_params, weight_slot)  # (D_out, D_in)
        self.dweight = flat.view(flat.flat_grads, weight_slot)  # (D_out, D_in)
        self.bias = self.dbias = None
        if layer.bias is not None:
            self.bias = flat.view(flat.flat_params, slot_of[id(layer.bias)])  # (D_out,)
            self.dbias = flat.view(flat.flat_grads, slot_of[id(layer.bias)])  # (D_out,)
        self.first = first  # the first layer's dx is never needed
        self.in_features, self.out_features = layer.in_features, layer.out_features
        # (offset, numel, first slot, slots): runs of consecutive slots, the weight
        # and the bias, for the optimizer's update of this layer (update_in_parts)
        index_of = {id(p): i for i, p in enumerate(flat.params)}
        slots = sorted(index_of[id(p)] for p in (layer.weight, layer.bias) if p is not None)
        self.update_parts = _runs(flat, slots)

    def allocate(self, batch: int, like: torch.Tensor) -> None:
        self.out = like.new_empty(batch, self.out_features)  # (B, D_out)
        self.dx = None if self.first else like.new_empty(batch, self.in_features)
        self.products = gemm.linear_products(batch, self.in_features, self.out_features,
                                             like.dtype, self.bias is not None,
                                             like.device)
        self.relu_after = self.gate_input = False  # set by FastTrainer._fuse_relus

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.x = x  # (B, D_in), kept for dweight
        return self.products.forward(x, self.weight, self.bias, self.out,
                                     relu=self.relu_after)  # (B, D_out)

    def backward(self, dout: torch.Tensor) -> torch.Tensor | None:
        """dx = dout · W,  dweight = doutᵀ · x,  dbias = Σ_B dout (written into
        flat_grads: this step's gradient, as after zero_grad + backward)."""
        # (D_out, D_in) and (D_out,): torch.sum(dout, 0), in the same call where it can
        self.products.weight_grad(dout, self.x, self.dweight, self.dbias)
        if self.first:
            return None
        return self.products.input_grad(dout, self.weight, self.dx,  # (B, D_in)
                                        gate=self.x if self.gate_input else None)


class _ReLUStep:
    """out = max(x, 0) in place;  dx = dout ⊙ [out > 0], in place.

    The tape writes ``torch.where(out > 0, dout, 0)``; here the mask is a float
    0/1 buffer and the product ``dout · mask`` (``where`` and ``masked_fill_`` on
    a bool mask are not vectorised: 5× slower at (4096, 512)). The mask is
    ``sign(out)``: out ≥ 0, and sign gives 0 for 0 and for NaN, as ``out > 0``
    does, in one vectorised float-to-float pass (``gt`` into a float buffer
    converts element by element: twice the time in a step). For finite dout
    the values are the same (a zero may come out as −0.0, which equals 0.0 and
    adds the same); a NaN or inf in dout where out ≤ 0 gives NaN instead of 0."""

    def allocate(self, batch: int, like: torch.Tensor) -> None:
        self.mask: torch.Tensor | None = None  # (B, D) 0/1, sized at the first backward
        # run inside the neighbouring Linear's products (FastTrainer._fuse_relus)
        self.fused_forward = self.fused_backward = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.out = x if self.fused_forward else torch.relu_(x)  # (B, D), x's buffer
        return self.out

    def backward(self, dout: torch.Tensor) -> torch.Tensor:
        if self.fused_backward:  # dout ⊙ [out > 0] already, by the same operations
            return dout
        self.mask = torch.sign(self.out, out=_reuse(self.mask, self.out))  # (B, D) 0/1
        return dout.mul_(self.mask)  # (B, D) in place


class _SigmoidStep:
    """out = σ(x) in place; dx = dout · (1 − out) · out (torch's order)."""

    def allocate(self, batch: int, like: torch.Tensor) -> None:
        self.one = like.new_ones(())  # ()
        self.one_minus_out: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.out = torch.sigmoid(x, out=x)  # (B, D), x's buffer
        return self.out

    def backward(self, dout: torch.Tensor) -> torch.Tensor:
        buffer = _reuse(self.one_minus_out, self.out)
        self.one_minus_out = torch.sub(self.one, self.out, out=buffer)  # (B, D)
        return dout.mul_(self.one_minus_out).mul_(self.out)  # (B, D) in place


class _TanhStep:
    """out = tanh(x) in place; dx = dout · (1 − out²), 1 − out² as one addcmul."""

    def allocate(self, batch: int, like: torch.Tensor) -> None:
        self.ones = like.new_ones(1)
        self.one_minus_out_sq: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.out = torch.tanh(x, out=x)  # (B, D), x's buffer
        return self.out

    def backward(self, dout: torch.Tensor) -> torch.Tensor:
        buffer = _reuse(self.one_minus_out_sq, self.out)
        self.one_minus_out_sq = torch.addcmul(self.ones.expand_as(self.out), self.out,
                                              self.out, value=-1, out=buffer)
        return dout.mul_(self.one_minus_out_sq)  # (B, D) in place


class _SoftmaxStep:
    """The seeds' Softmax output layer: scratchnet's Softmax forward and backward
    (``scratchnet.nn.functional.softmax``), called directly, off the tape:
    out = exp(x − max) / Σ exp(x − max);  dx = (dout − Σ dout ⊙ out) ⊙ out."""

    def allocate(self, batch: int, like: torch.Tensor) -> None:
        pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.ctx = Context()
        return Softmax.forward(self.ctx, x, 1, None)  # (B, C)

    def backward(self, dout: torch.Tensor) -> torch.Tensor:
        return Softmax.backward(self.ctx, dout)[0]  # (B, C)


def _runs(flat: FlatParameters, slots: list[int]) -> list[tuple[int, int, int, int]]:
    """Slots (sorted indices into flat.layout) as runs of consecutive ones, each
    (offset, numel, first slot, slot count): consecutive slots lie one after
    another in the flat buffers."""
    runs: list[tuple[int, int, int, int]] = []
    for slot in slots:
        where = flat.layout[slot]
        if runs and runs[-1][2] + runs[-1][3] == slot:
            offset, numel, first, count = runs[-1]
            runs[-1] = (offset, numel + where.numel, first, count + 1)
        else:
            runs.append((where.offset, where.numel, slot, 1))
    return runs


def _reuse(buffer: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return buffer if buffer is not None and buffer.shape == like.shape \
        else torch.empty_like(like)


# --------------------------------------------------------------------------------------
# the loss: cross-entropy with its backward fused into the softmax


class _CrossEntropyStep:
    """loss = (1/B) Σ_i −log p_{i,y_i},  log p = log_softmax(z);  backward fused
    through the softmax: dz = (p − onehot(y)) / B.

    This is scratchnet's CrossEntropy (``scratchnet.nn.functional.loss``) forward
    and backward, called directly: the tape's op already fuses log_softmax, the
    loss and their backward, and in float32 on CPU it reproduces torch's kernels
    bit for bit (``scratchnet.nn.functional.vecmath``); calling it keeps the fast
    step equal to the tape step and to torch.nn."""

    checks_targets = False  # the trainer checks them before the forward

    def allocate(self, batch: int, like: torch.Tensor, classes: int) -> None:
        self.dloss = like.new_ones(())  # d loss / d loss, as the tape starts

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.ctx = Context()
        return CrossEntropy.forward(self.ctx, z, y, None, -100, "mean", 0.0)  # ()

    def backward(self) -> torch.Tensor:
        return CrossEntropy.backward(self.ctx, self.dloss)[0]  # (B, C)


class _PlainCrossEntropyStep:
    """The same loss and fused backward with torch.exp / torch.log and plain
    row sums, into reused buffers (``FastTrainer(exact_loss=False)``); the batch
    sum of the loss in torch's nll_loss order, as the tape's:

        log p = (z − max) − log Σ exp(z − max);  loss = −(1/B) Σ_i log p_{i,y_i}
        dz = p · (1/B), then − 1/B at each target: (p − onehot(y)) / B

    These are the roundings of the tape's CrossEntropy wherever it does not
    reproduce torch's kernels (float64, CUDA): there it is equal bit for bit. In
    float32 on CPU, torch's log_softmax kernel uses SLEEF's exp/log (≤ 1 ulp) and
    lane-wise sums, so about one entry in five of log p and dz differs from
    torch's in the last bit (relative 6e-8) — inside assert_close, but enough for
    Adam to make two long float32 runs drift apart (see
    scratchnet.nn.functional.vecmath). tests/test_fast.py::
    test_plain_loss_equals_the_tape_in_float64_and_torch_within_tolerance.

    On CPU everything around torch's exp, row sums and log is a C loop
    (scratchnet/native/cross_entropy.c: the shift by the row max, log p's
    subtraction with the (B,) picks, their cascade sum and the division by B,
    and the backward's scaling and target subtraction; the same IEEE
    operations in the same order), or, where it cannot be built, torch ops and
    NumPy operations on views of the same memory: a step runs each op once with
    cold caches, where every torch op costs several microseconds. The C forward
    also checks the targets' range (``checks_targets``), so the trainer need
    not."""

    checks_targets = False  # True once allocate() found the C loops

    def allocate(self, batch: int, like: torch.Tensor, classes: int) -> None:
        inverse_batch = like.new_ones(()) / batch  # 1/B rounded as the tape's dout / W
        self.minus_inverse_batch = (-inverse_batch).expand(batch, 1).contiguous()  # (B, 1)
        self.inverse_batch = inverse_batch
        self.dz = like.new_empty(batch, classes)  # (B, C)
        self.on_cpu = like.device.type == "cpu"
        self.rows = np.arange(batch)  # (B,) row numbers for the NumPy picks
        self.batch = self.dz.numpy().dtype.type(batch) if self.on_cpu else batch  # B
        self.native = _native_cross_entropy(like.dtype) if self.on_cpu else None
        self.checks_targets = self.native is not None
        if self.native is not None:
            self.shifted = like.new_empty(batch, classes)  # (B, C) z − max
            self.log_sum = like.new_empty(batch, 1)  # (B, 1) log Σ exp(z − max)
            self.native_log_probs = like.new_empty(batch, classes)  # (B, C)
            # (runs, 3): the order of aten's nll_loss sum, as vecmath computes it
            self.plan = torch.tensor(vecmath._cascade_plan(batch), dtype=torch.int64)
            self.native_scalars = (batch, classes, self.plan.data_ptr(), self.plan.shape[0])
            self.inverse_batch_value = inverse_batch.item()  # exact in a Python float

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.native is not None:
            return self._native_forward(z, y)
        self.log_probs = log_softmax_values(z, 1, as_torch_kernel=False)  # (B, C)
        self.target = y.unsqueeze(1)  # (B, 1)
        if self.on_cpu:  # −log p_{i,y_i}, summed in the order of torch's nll_loss
            loss_rows = -self.log_probs.numpy()[self.rows, y.numpy()]  # (B,)
            mean = vecmath.cascade_sum_all_kept(loss_rows) / self.batch
            return torch.from_numpy(np.asarray(mean))  # ()
        loss_rows = -self.log_probs.gather(1, self.target).squeeze(1)  # (B,) −log p
        return loss_rows.sum() / z.shape[0]  # ()

    def _native_forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The same ops as log_softmax_values(z, 1, as_torch_kernel=False) and the
        NumPy loss below: the max shift and the last subtraction, the picks and
        the cascade sum in C, exp, the row sums and log in torch."""
        z = z if z.is_contiguous() else z.contiguous()
        self.targets = y if y.is_contiguous() else y.contiguous()  # (B,)
        batch, classes = self.native_scalars[:2]
        self.native.shift_by_row_max(z.data_ptr(), self.shifted.data_ptr(), batch, classes)
        exp_shifted = torch.exp(self.shifted, out=self.dz)  # dz as scratch, (B, C)
        torch.sum(exp_shifted, 1, keepdim=True, out=self.log_sum).log_()  # (B, 1)
        self.log_probs = self.native_log_probs  # (B, C), written by nll_mean
        loss = z.new_empty(())  # ()
        bad_row = self.native.nll_mean(self.shifted.data_ptr(), self.log_sum.data_ptr(),
                                       self.log_probs.data_ptr(), self.targets.data_ptr(),
                                       *self.native_scalars, loss.data_ptr())
        if bad_row >= 0:
            _raise_target_error(y, classes)
        return loss

    def backward(self) -> torch.Tensor:
        torch.exp(self.log_probs, out=self.dz)  # p, (B, C)
        if self.native is not None:  # p / B, then − 1/B at each target
            self.native.nll_backward(self.dz.data_ptr(), self.targets.data_ptr(),
                                     *self.native_scalars[:2], self.inverse_batch_value)
            return self.dz
        self.dz.mul_(self.inverse_batch)  # p / B
        return self.dz.scatter_add_(1, self.target, self.minus_inverse_batch)  # − 1/B


class _NativeCrossEntropy(NamedTuple):
    shift_by_row_max: Callable[..., None]  # (z, shifted, B, C)
    # (shifted, log Σ, log p, y, B, C, plan, runs, &loss) → bad row or −1
    nll_mean: Callable[..., int]
    nll_backward: Callable[..., None]  # (dz, y, B, C, 1/B)


def _native_cross_entropy(dtype: torch.dtype) -> _NativeCrossEntropy | None:
    """scratchnet/native/cross_entropy.c's three loops for ``dtype``, or None."""
    if dtype not in native.C_TYPES:
        return None
    suffix, scalar = native.C_TYPES[dtype]
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    signatures = {"shift_by_row_max": (None, [pointer, pointer, size, size]),
                  "nll_mean": (size, [*[pointer] * 4, size, size, pointer, size, pointer]),
                  "nll_backward": (None, [pointer, pointer, size, size, scalar])}
    loops = {name: native.function("cross_entropy", f"scratchnet_{name}_{suffix}",
                                   restype, argtypes)
             for name, (restype, argtypes) in signatures.items()}
    if any(loop is None for loop in loops.values()):
        return None
    return _NativeCrossEntropy(**loops)


def _raise_target_error(y: torch.Tensor, classes: int) -> None:
    """Raise TargetError naming the lowest target if one is negative, else the
    highest, if one is out of [0, classes)."""
    low, high = (int(bound) for bound in torch.aminmax(y))
    if low < 0 or high >= classes:
        raise TargetError(f"FastTrainer: target {low if low < 0 else high} is "
                          f"out of bounds for {classes} classes")


# --------------------------------------------------------------------------------------
# the trainer

_STEP_OF = {nn.ReLU: _ReLUStep, nn.Sigmoid: _SigmoidStep, nn.Tanh: _TanhStep}


class FastTrainer:
    """One training step (zero_grad, forward, cross-entropy, backward, optimizer
    step) for a stack of Flatten / Linear / ReLU / Sigmoid / Tanh (and a final
    Softmax), bit-for-bit the tape's.

    Args:
        model: a :class:`scratchnet.nn.Sequential`, or a module whose forward
            applies its submodules in the order they were registered (the seed
            MLPs: ``flatten`` then ``linear_relu_stack``). Checked on the first
            step: the fast forward must equal ``model(x)`` exactly.
        optimizer: a scratchnet optimizer over the model's parameters. Adam and
            AdamW take their flat path when it holds all of them, in order, in
            one group.
        loss_fn: a default :class:`scratchnet.nn.CrossEntropyLoss` (or None).
        compile_optimizer: run Adam/AdamW's flat update (without AMSGrad,
            maximize or Adam's L2 weight decay) as one compiled loop instead of
            seven passes: on the CPU a C loop (scratchnet/native/adam.c, built
            once per machine with the system's C compiler, a fraction of a
            second; AdamW's decoupled decay included), elsewhere or without a
            compiler ``torch.compile`` (no weight decay; the first step
            compiles: 2–3 s on a warm inductor cache, 15 s on a cold one, on 2
            cores). m and v bit for bit the eager update's, θ differs in the
            last bit where torch's eager √ rounds off (see
            scratchnet/optim/adam.py). Falls back to the eager update if neither
            can be built. With the C loop, from the second step on, each
            Linear's update runs inside the backward (``update_in_backward``;
            ``updated_in_backward`` says whether the last step did). Off by
            default.
        exact_loss: compute the loss with scratchnet's CrossEntropy op, which in
            float32 on CPU reproduces torch's softmax kernel bit for bit (and
            costs more); False: the plain fused formula (last-bit differences
            from torch in float32, equal in float64; see _PlainCrossEntropyStep).

    The model's parameters are moved into a :class:`FlatParameters` (values
    unchanged; ``trainer.flat``). After a step each ``.grad`` holds that step's
    gradient, as after the tape's step.

    Example::

        >>> trainer = FastTrainer(model, scratchnet.optim.Adam(model.parameters()))
        >>> for x, y in loader:
        ...     loss = trainer.step(x, y)
    """

    def __init__(self, model: nn.Module, optimizer: Any,
                 loss_fn: nn.CrossEntropyLoss | None = None,
                 compile_optimizer: bool = False, exact_loss: bool = True) -> None:
        _check_loss(loss_fn)
        self.model, self.optimizer = model, optimizer
        if compile_optimizer:  # Adam/AdamW: one fused loop (see optim/adam.py)
            optimizer._compiled_flat_update = True
        self.layers = _layers_in_order(model)
        self.flat = FlatParameters(model)
        linears = [m for m in self.layers if isinstance(m, nn.Linear)]
        if not linears:
            raise OptionError("FastTrainer: the model has no Linear layer")
        _check_not_shared(linears)
        self.steps: list[Any] = []
        for module in self.layers:
            if isinstance(module, nn.Linear):
                self.steps.append(_LinearStep(module, self.flat, module is linears[0]))
            elif isinstance(module, nn.Softmax):
                if module is not self.layers[-1] or module.dim not in (1, -1):
                    raise OptionError("FastTrainer: Softmax is supported as the last "
                                      "layer, over dim=1")
                self.steps.append(_SoftmaxStep())
            elif type(module) in _STEP_OF:
                self.steps.append(_STEP_OF[type(module)]())
        self.loss = _CrossEntropyStep() if exact_loss else _PlainCrossEntropyStep()
        self.classes = linears[-1].out_features
        self.grad_views = [self.flat.view(self.flat.flat_grads, slot)
                           for slot in self.flat.layout]
        self._batch: int | None = None
        self._threads = 0
        self._checked = False
        # Run the optimizer's update of each Linear right after its backward
        # where the optimizer allows it (Adam's C loop, adam.update_in_parts);
        # False: optimizer.step() after the whole backward. Same bits either way.
        self.update_in_backward = True
        covered = sorted(first + i for step in self.steps if isinstance(step, _LinearStep)
                         for _, _, first, count in step.update_parts for i in range(count))
        self._parts_cover_all = covered == list(range(len(self.flat.params)))
        self.updated_in_backward = False  # what the last step did

    def _allocate(self, batch: int, like: torch.Tensor) -> None:
        for step in self.steps:
            step.allocate(batch, like)
        self.loss.allocate(batch, like, self.classes)
        self._batch, self._threads = batch, torch.get_num_threads()  # the products' split
        self._fuse_relus()

    def _fuse_relus(self) -> None:
        """A ReLU right after a Linear whose forward product is gemm.c's runs in
        it (relu(out) on each thread's block, while in cache); its backward runs
        in the next Linear's input-gradient product where that is gemm.c's. The
        same exact operations as the ReLU step's (scratchnet/native/gemm.c);
        measured, the ReLU's separate ops took a tenth of a batch-64 step."""
        for i, step in enumerate(self.steps):
            if not isinstance(step, _ReLUStep):
                continue
            before = self.steps[i - 1] if i > 0 else None
            after = self.steps[i + 1] if i + 1 < len(self.steps) else None
            if isinstance(before, _LinearStep) and before.products.fuses("forward"):
                before.relu_after = step.fused_forward = True
            if isinstance(after, _LinearStep) and not after.first \
                    and after.products.fuses("input_grad"):
                after.gate_input = step.fused_backward = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output for ``x`` (B, ...) → (B, C), through the buffers
        (valid until the next call)."""
        out = x.reshape(x.shape[0], -1)  # (B, D): Flatten
        for step in self.steps:
            out = step.forward(out)
        return out

    def backward(self, dout: torch.Tensor,
                 update: Callable[[int, int, int, int], None] | None = None) -> None:
        """The gradients into flat_grads, from d loss / d logits ``dout`` (B, C);
        with ``update`` (see _update_in_parts), each Linear's parameters are
        updated right after its backward: after dx, the last use of its weights."""
        for step in reversed(self.steps):
            dout = step.backward(dout)
            if update is not None and isinstance(step, _LinearStep):
                for part in step.update_parts:
                    update(*part)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimisation step on the batch (x, y); returns the batch's mean
        cross-entropy (a 0-dim tensor, computed before the update)."""
        self._check_batch(x, y)
        if x.shape[0] != self._batch or torch.get_num_threads() != self._threads:
            self._allocate(x.shape[0], self.flat.flat_params)
        if not self._checked:
            self._check_forward(x)
        update = self._update_in_parts()  # its layout check finds every .grad in place
        if update is None and self._reattach_grads():
            update = self._update_in_parts()  # it may have failed on a missing .grad
        logits = self.forward(x)  # (B, C)
        loss = self.loss.forward(logits, y)  # ()
        self.backward(self.loss.backward(), update)
        if update is None:
            self.optimizer.step()
        self.updated_in_backward = update is not None
        return loss

    def _update_in_parts(self) -> Callable[[int, int, int, int], None] | None:
        """The optimizer's update for this step in pieces, one per Linear
        (scratchnet.optim.adam.update_in_parts: Adam's C loop over the flat
        buffers, from the second step on), or None: optimizer.step() runs after
        the backward. Measured at batch 64 on the seed MLP, updating each layer
        while its weights and gradient are in cache makes no difference on a
        calm machine and saves about a fifth of the step when other tenants
        crowd the L3 (README "Speed")."""
        if not self.update_in_backward or not self._parts_cover_all:
            return None
        return adam.update_in_parts(self.optimizer, self.flat.flat_params)

    def _reattach_grads(self) -> bool:
        """Point every .grad at its view of flat_grads, which the backward writes
        (someone may have called ``zero_grad(set_to_none=True)``); whether any
        had to be."""
        reattached = False
        with torch._C.DisableTorchFunctionSubclass():  # plain attribute reads
            for param, view in zip(self.flat.params, self.grad_views, strict=True):
                if param.grad is not view:
                    param.grad = view
                    reattached = True
        return reattached

    def _check_batch(self, x: torch.Tensor, y: torch.Tensor) -> None:
        dtype, device = self.flat.flat_params.dtype, self.flat.flat_params.device
        if x.device != device or y.device != device:
            raise DeviceError(f"FastTrainer: input on {x.device} and targets on "
                              f"{y.device}, but the model is on {device}")
        if x.dtype != dtype:
            raise DTypeError(f"FastTrainer: input dtype {x.dtype} does not match the "
                             f"model's {dtype}")
        if y.dim() != 1 or y.shape[0] != x.shape[0] or y.dtype != torch.int64:
            raise TargetError(f"FastTrainer: targets must be int64 of shape (B,) = "
                              f"({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")
        if self.loss.checks_targets:  # the loss's C loop checks them as it reads them
            return
        if y.device.type == "cpu":  # one NumPy pass: a negative target, read as
            # unsigned, is ≥ 2⁶³, so one comparison finds both kinds of bad target
            if not (y.numpy().view(np.uint64) >= self.classes).any():
                return
        _raise_target_error(y, self.classes)

    def _check_forward(self, x: torch.Tensor) -> None:
        """The layers run in registration order must be the model's forward."""
        with no_grad():
            expected = self.model(x)
        try:
            actual = self.forward(x)
        except RuntimeError as error:
            raise ShapeError(f"FastTrainer: the layers in registration order do "
                             f"not chain ({error})") from None
        if actual.shape != expected.shape or not torch.equal(actual, expected):
            raise OptionError(
                f"FastTrainer: {type(self.model).__name__}'s forward is not its layers "
                "applied in the order they were registered; use the tape "
                "(loss.backward(); optimizer.step())")
        self._checked = True


def _layers_in_order(model: nn.Module) -> list[nn.Module]:
    """The leaf modules in registration order, refusing any the fast step lacks."""
    supported = (nn.Linear, nn.ReLU, nn.Sigmoid, nn.Tanh, nn.Softmax)
    layers: list[nn.Module] = []
    for name, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue  # a container: its children follow
        if isinstance(module, nn.Flatten):
            if (module.start_dim, module.end_dim) != (1, -1) or layers:
                raise OptionError(f"FastTrainer: {name or 'the model'}: only a first "
                                  "Flatten(1, -1) is supported")
        elif isinstance(module, nn.Identity):
            continue
        elif isinstance(module, supported):
            layers.append(module)
        else:
            raise OptionError(f"FastTrainer: layer {name or 'the model'} "
                              f"({type(module).__name__}) has no fast step; supported: "
                              "Flatten, Linear, ReLU, Sigmoid, Tanh, a final Softmax")
    return layers


def _check_not_shared(linears: list[nn.Linear]) -> None:
    """Each Linear writes its gradients, not adds to them: a parameter shared
    between two would get only one layer's share."""
    owner: dict[int, nn.Linear] = {}
    for layer in linears:
        for param in (layer.weight, layer.bias):
            if param is None:
                continue
            other = owner.setdefault(id(param), layer)
            if other is not layer:
                raise OptionError(f"FastTrainer: {other!r} and {layer!r} share a "
                                  f"parameter of shape {tuple(param.shape)}; tied "
                                  "weights have no fast step (use the tape)")


def _check_loss(loss_fn: Any) -> None:
    if loss_fn is None:
        return
    if not isinstance(loss_fn, nn.CrossEntropyLoss):
        raise OptionError(f"FastTrainer: only CrossEntropyLoss is fused, got "
                          f"{type(loss_fn).__name__}")
    if (loss_fn.weight is not None or loss_fn.reduction != "mean"
            or loss_fn.label_smoothing != 0):
        raise OptionError("FastTrainer: CrossEntropyLoss with weight, label smoothing "
                          "or reduction other than 'mean' has no fast step")
