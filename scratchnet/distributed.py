"""Data-parallel training over torch.distributed: scratchnet's DistributedDataParallel.

W = world size (processes), r = rank, B = batch per process, N = training images,
P = number of parameter elements.

Every process holds a whole copy of the model and sees its own shard of each
global batch. After its backward, the gradients are averaged across processes,
so every copy takes the same optimizer step and the copies never drift apart::

    rank 0: order[0::W] ─► forward ─► backward ─► flat_grads (P,) ─┐
    rank 1: order[1::W] ─► forward ─► backward ─► flat_grads (P,) ─┼─ all_reduce(SUM) of
    ...                                                            │  flat_grads / W,
    rank W-1 ...                                            ───────┘  bucket by bucket
    every rank: optimizer.step() on the same averaged gradient

Why this equals single-process training with batch W·B: the loss is a mean over
the batch, so the gradient of the mean over W·B samples is the mean of the W
per-shard gradients, ``d(1/WB Σ loss) = 1/W Σ_r d(1/B Σ_{shard r} loss)``. Only
the order of the additions differs (tests/test_distributed.py checks the
parameters after an epoch: float32 within assert_close, float64 within 1e-12).

The pieces, in the order a batch meets them:

- :class:`DistributedSampler`: each rank's share of an epoch's indices, equal to
  ``torch.utils.data.DistributedSampler`` (same seed and epoch → same shards,
  same padding and drop_last); the TensorLoader takes it as ``sampler=``.
- :class:`DistributedDataParallel`: wraps the model; broadcasts rank 0's
  parameters at the start; :meth:`~DistributedDataParallel.synchronize_gradients`
  (called between ``loss.backward()`` and ``optimizer.step()``) averages the flat
  gradient buffer (:class:`scratchnet.nn.utils.FlatParameters`) in buckets.
- :class:`DistributedContext` and :func:`process_group_from_env`: joining the
  process group that ``torchrun`` (or ``scratchnet train --nproc N``, which
  :func:`launch` implements the same way) describes in the environment, with a
  heartbeat per rank so that a failure names the rank that died or hangs.
- :meth:`DistributedContext.make_loaders`, :meth:`~DistributedContext.gather_counts`
  and :meth:`~DistributedContext.average_across_ranks`: the training loop's
  hooks (scratchnet.train.fit); evaluation is split across ranks and its counts
  added up, so every rank reports the numbers one process would.

Overlap. As torch's DDP launches a bucket's all_reduce from an autograd hook as
soon as the last gradient in it is accumulated, scratchnet's wrapper registers
:func:`scratchnet.autodiff.on_gradient_ready` on every parameter: once all of a
bucket's parameters are final — the last layer's first — the bucket's
all_reduce starts asynchronously while the backward goes on through the earlier
layers. Buckets are always launched in one fixed order (a ready bucket waits
for the ones before it), so every rank issues the same collectives in the same
order even where a parameter gets no gradient on some rank;
``synchronize_gradients`` launches whatever is left and waits for all.

Failures. Every collective waits at most ``timeout`` seconds (``--dist-timeout``).
A rank that dies breaks its connections, so the others' next collective fails at
once; one that hangs (stopped, deadlocked) makes it fail after the timeout.
:func:`process_group_from_env` then watches the heartbeats for three beats
(timeout / 20 each, at most 1 s) and raises :class:`DistributedError` naming the
rank. Checkpoints are rank 0's atomic writes (scratchnet.checkpoint), so the last
one is whole, and ``--resume`` continues it with the same number of processes.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence, Sized
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from scratchnet import autodiff
from scratchnet.errors import OptionError, ScratchnetError
from scratchnet.nn.modules.module import Module
from scratchnet.nn.utils.flat import Bucket, FlatParameters

DEFAULT_TIMEOUT = 60.0  # seconds; torch's default for gloo is 30 minutes
GRACE = 5.0  # seconds the launcher lets the other ranks report a failure
STORE_PREFIX = "scratchnet"


class DistributedError(ScratchnetError, RuntimeError):
    """A process of a data-parallel run died, hung or could not join; the message
    names the rank."""


# --------------------------------------------------------------------------------------
# the sampler: each rank's share of an epoch


class DistributedSampler:
    r"""The indices of rank ``rank``'s shard of each epoch, equal to
    ``torch.utils.data.DistributedSampler`` (torch/utils/data/distributed.py).

    One epoch's order is shared by all ranks and then dealt out like cards::

        order   = randperm(N, generator seeded with seed + epoch)  # shuffle
                  or 0, 1, ..., N-1                                 # no shuffle
        order   = order + order[:pad]    # pad to total_size = W·num_samples
                  or order[:total_size]  # drop_last: cut to a multiple of W
        indices = order[rank : total_size : W]                      # (num_samples,)

    with ``num_samples = ceil(N / W)``, or ``floor(N / W)`` with drop_last (torch
    writes ``ceil((N - W) / W)``, the same number when ``N % W != 0``). So
    position k of every rank's list comes from the same stretch
    ``order[k·W : (k+1)·W]``: batches of B on W ranks are the batches of W·B of
    one process reading ``order``.

    Args:
        dataset: anything with ``len()`` (the labels tensor will do).
        num_replicas: W; default the default process group's world size.
        rank: r; default this process's rank in the default group.
        shuffle: a new order every epoch (``set_epoch``), else 0..N-1.
        seed: the same on every rank, so every rank draws the same order.
        drop_last: cut the tail instead of padding with the first indices.

    Call :meth:`set_epoch` before each epoch, as with torch's.
    """

    def __init__(self, dataset: Sized, num_replicas: int | None = None,
                 rank: int | None = None, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False) -> None:
        if num_replicas is None or rank is None:
            if not (dist.is_available() and dist.is_initialized()):
                raise OptionError("DistributedSampler: give num_replicas and rank, or "
                                  "initialise the default process group first")
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        if not isinstance(num_replicas, int) or num_replicas <= 0:
            raise OptionError(f"DistributedSampler: num_replicas must be a positive "
                              f"integer, got {num_replicas!r}")
        if not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise OptionError(f"DistributedSampler: invalid rank {rank}, rank should be "
                              f"in the interval [0, {num_replicas - 1}]")
        self.dataset_size = len(dataset)
        self.num_replicas, self.rank = num_replicas, rank
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.epoch = 0
        if drop_last and self.dataset_size % num_replicas != 0:
            self.num_samples = self.dataset_size // num_replicas
        else:
            self.num_samples = math.ceil(self.dataset_size / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def epoch_order(self) -> torch.Tensor:
        """(total_size,) the order shared by every rank this epoch, padded or cut."""
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.dataset_size, generator=generator)  # (N,)
        else:
            order = torch.arange(self.dataset_size)  # (N,)
        if self.drop_last:
            return order[: self.total_size]
        padding = self.total_size - self.dataset_size
        repeats = math.ceil(padding / self.dataset_size) if self.dataset_size else 0
        return torch.cat([order, order.repeat(repeats)[:padding]])  # (total_size,)

    def __iter__(self) -> Iterator[int]:
        indices = self.epoch_order()[self.rank: self.total_size: self.num_replicas]
        return iter(indices.tolist())  # num_samples indices

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Which epoch comes next: with shuffle, its order is seeded with
        ``seed + epoch`` (the same on every rank)."""
        self.epoch = epoch

    def __repr__(self) -> str:
        return (f"DistributedSampler(dataset_size={self.dataset_size}, "
                f"num_replicas={self.num_replicas}, rank={self.rank}, "
                f"shuffle={self.shuffle}, seed={self.seed}, drop_last={self.drop_last})")


def shard_bounds(size: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous block ``[start, stop)`` of ``size`` items: the
    blocks of ranks 0..W-1 follow each other and differ in length by at most one
    (used for evaluation, where nothing may be counted twice)."""
    return size * rank // world_size, size * (rank + 1) // world_size


# --------------------------------------------------------------------------------------
# the model wrapper: broadcast once, average gradients every step


class DistributedDataParallel(Module):
    r"""Data parallelism for a scratchnet model (torch.nn.parallel's
    DistributedDataParallel, without autograd hooks).

    At construction the parameters are laid out in one flat buffer
    (:class:`~scratchnet.nn.utils.FlatParameters`) and rank 0's values are
    broadcast to every rank, with one ``broadcast`` call. Each training step::

        logits = ddp(x)                  # the wrapped module's forward, unchanged
        loss = loss_fn(logits, y)
        loss.backward()                  # local gradients, into .grad
        ddp.synchronize_gradients()      # .grad ← mean over ranks of .grad
        optimizer.step()                 # the same step on every rank

    ``synchronize_gradients`` gathers every ``.grad`` into ``flat_grads`` (a copy
    only where ``zero_grad(set_to_none=True)`` gave a parameter a fresh tensor),
    then for each bucket, last layer first, as torch's default comm hook does::

        bucket_grads /= W                               # exact for W = 2^k
        all_reduce(bucket_grads, op=SUM, async_op=True)

    and waits for all of them. Afterwards every ``.grad`` is its view of
    ``flat_grads`` again. A parameter that got no gradient on a rank counts as
    zeros there (torch's ``find_unused_parameters`` behaviour).

    Args:
        module: the scratchnet model, already on its device and dtype (moving it
            afterwards detaches it from the flat buffer).
        bucket_cap_mb: the most megabytes (2^20 bytes) of gradient per all_reduce
            call (torch's default, 25).
        process_group: the group to average over (None: the default group).
        broadcast_buffers: before each forward, copy rank 0's buffers (BatchNorm's
            running statistics) to every rank, as torch's DDP does by default.
        overlap: start each bucket's all_reduce during the backward, as soon as
            its gradients are final (default); False: all after the backward.
            With overlap, call ``synchronize_gradients`` after every backward
            (accumulating two backwards first would add into buckets in flight).

    Attributes:
        module: the wrapped model; ``state_dict()`` keys are ``module.<name>``
            as in torch's DDP.
        flat: the FlatParameters holding ``flat_params`` and ``flat_grads`` (P,).
        buckets: the gradient buckets, in the order they are reduced.
        steps_synchronized: how many times the gradients were averaged.
    """

    def __init__(self, module: Module, bucket_cap_mb: float = 25.0,
                 process_group: Any = None, broadcast_buffers: bool = True,
                 overlap: bool = True) -> None:
        super().__init__()
        if not (dist.is_available() and dist.is_initialized()):
            raise OptionError("DistributedDataParallel: initialise the default "
                              "process group first (torch.distributed."
                              "init_process_group, or run under torchrun)")
        if not isinstance(bucket_cap_mb, (int, float)) or bucket_cap_mb <= 0:
            raise OptionError(f"DistributedDataParallel: bucket_cap_mb must be "
                              f"positive, got {bucket_cap_mb!r}")
        self.module = module
        self.process_group = process_group
        self.broadcast_buffers = broadcast_buffers
        self.source_rank = (0 if process_group is None
                            else dist.get_global_rank(process_group, 0))
        self.world_size = dist.get_world_size(process_group)
        self.flat = FlatParameters(module)
        element_bytes = self.flat.flat_grads.element_size()
        bucket_numel = max(1, int(bucket_cap_mb * 2**20) // element_bytes)
        self.buckets: list[Bucket] = self.flat.buckets(bucket_numel)
        self._param_of_slot = {slot.name: param for slot, param in self.flat}
        self._bucket_of_slot = {slot.name: index for index, bucket
                                in enumerate(self.buckets) for slot in bucket.slots}
        self.steps_synchronized = 0
        self.buckets_launched_in_backward = 0  # over all steps (overlap achieved)
        self._reset_step()
        self._ready_handles = [
            autodiff.on_gradient_ready(param, functools.partial(self._on_ready, slot.name))
            for slot, param in self.flat] if overlap else []
        self._broadcast_from_rank_0()

    def _broadcast_from_rank_0(self) -> None:
        """Every rank starts from rank 0's parameters and buffers."""
        dist.broadcast(self.flat.flat_params, src=self.source_rank,
                       group=self.process_group)
        self._broadcast_buffers()

    def _broadcast_buffers(self) -> None:
        for buffer in self.module.buffers():
            dist.broadcast(buffer, src=self.source_rank, group=self.process_group)

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        if self.broadcast_buffers and self.training:
            self._broadcast_buffers()
        return self.module(*inputs, **kwargs)

    def _reset_step(self) -> None:
        self._ready_slots: set[str] = set()
        self._bucket_missing = [len(bucket.slots) for bucket in self.buckets]
        self._next_bucket = 0  # buckets are launched in list order only
        self._pending: list[Any] = []

    def _on_ready(self, slot_name: str, _param: Any) -> None:
        """A parameter's gradient is final in this backward: if that completes
        its bucket (and the ones before it), start their all_reduce now."""
        if slot_name in self._ready_slots:
            return
        self._ready_slots.add(slot_name)
        self._bucket_missing[self._bucket_of_slot[slot_name]] -= 1
        while (self._next_bucket < len(self.buckets)
               and self._bucket_missing[self._next_bucket] == 0):
            self._launch_next_bucket()
            self.buckets_launched_in_backward += 1

    def _launch_next_bucket(self) -> None:
        bucket = self.buckets[self._next_bucket]
        bucket_grads = self._collect_bucket(bucket)  # (bucket.numel,)
        bucket_grads.div_(self.world_size)
        self._pending.append(dist.all_reduce(bucket_grads, op=dist.ReduceOp.SUM,
                                             group=self.process_group, async_op=True))
        self._next_bucket += 1

    def synchronize_gradients(self) -> None:
        """Average every ``.grad`` across the ranks (call after ``backward``):
        start the buckets the backward did not, then wait for all."""
        while self._next_bucket < len(self.buckets):
            self._launch_next_bucket()
        for work in self._pending:
            work.wait()
        self._reset_step()
        self.steps_synchronized += 1

    def _collect_bucket(self, bucket: Bucket) -> torch.Tensor:
        """Make every ``.grad`` of ``bucket`` its view of ``flat_grads`` (copying
        a fresh one in, zeros for None) and return the bucket's slice."""
        for slot in bucket.slots:
            param = self._param_of_slot[slot.name]
            grad_view = self.flat.view(self.flat.flat_grads, slot)
            if param.grad is None:
                grad_view.zero_()
            elif param.grad.data_ptr() != grad_view.data_ptr():
                grad_view.copy_(param.grad)
            param.grad = grad_view
        return self.flat.bucket_grads(bucket)

    def extra_repr(self) -> str:
        return (f"world_size={self.world_size}, buckets={len(self.buckets)}, "
                f"parameters={self.flat.flat_params.numel()}")


# --------------------------------------------------------------------------------------
# joining the process group; heartbeats that name a failed rank


class Heartbeat:
    """This rank's pulse in the rendezvous store, and a reading of the others'.

    A daemon thread writes ``"<beat> <steps>"`` under ``scratchnet/pulse/<rank>``
    every ``interval`` seconds: ``beat`` counts up while the process runs,
    ``steps`` is how many gradient averages it has finished. After a collective
    fails, :meth:`diagnose` watches everyone's pulse for three intervals: a rank
    whose beat does not move has died or is stopped; a rank whose beat moves but
    whose steps are behind is alive but stuck.

    The store is the one torchrun (or :func:`launch`) hosts at
    ``MASTER_ADDR:MASTER_PORT``, reached over a connection of our own.
    """

    def __init__(self, rank: int, world_size: int, timeout: float,
                 progress: Callable[[], int] = lambda: 0) -> None:
        self.rank, self.world_size = rank, world_size
        self.interval = self.interval_for(timeout)
        self.progress = progress
        self.address = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        self.prefix = f"{STORE_PREFIX}/{restart}/pulse"
        self.store = dist.TCPStore(os.environ["MASTER_ADDR"],
                                   int(os.environ["MASTER_PORT"]), is_master=False,
                                   timeout=timedelta(seconds=max(timeout, 1.0)))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beats = 0
        self._beat()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"scratchnet-heartbeat-{rank}")
        self._thread.start()

    @staticmethod
    def interval_for(timeout: float) -> float:
        """Seconds between beats: timeout / 20, within [0.05, 1]."""
        return min(1.0, max(0.05, timeout / 20))

    def _beat(self) -> None:
        self._beats += 1
        with self._lock:
            self.store.set(f"{self.prefix}/{self.rank}", f"{self._beats} {self.progress()}")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):  # the store may be gone at exit
                self._beat()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * self.interval)

    def read(self) -> dict[int, tuple[int, int]]:
        """rank → (beat, steps) for every rank that has beaten at least once."""
        pulses = {}
        with self._lock:
            for rank in range(self.world_size):
                key = f"{self.prefix}/{rank}"
                if self.store.check([key]):
                    beat, steps = self.store.get(key).decode().split()
                    pulses[rank] = (int(beat), int(steps))
        return pulses

    def diagnose(self) -> str:
        """Which rank failed, in words (watches the pulses for three intervals)."""
        try:
            before = self.read()
            time.sleep(3 * self.interval)
            after = self.read()
        except Exception:  # noqa: BLE001 — any store failure means the same thing
            return (f"the rendezvous store at {self.address} stopped answering (the "
                    "process hosting it, rank 0 or the launcher, has died)")
        silent = 3 * self.interval
        missing = [r for r in range(self.world_size) if r not in after]
        stopped = [r for r in after if r != self.rank and after[r][0] == before[r][0]]
        if missing or stopped:
            parts = [f"rank {r} never started" for r in missing]
            parts += [f"rank {r} stopped responding (no heartbeat for {silent:.1f} s: "
                      "its process died or is stopped)" for r in stopped]
            return "; ".join(parts)
        steps = {r: after[r][1] for r in after}
        behind = [r for r in steps if steps[r] < max(steps.values())]
        if behind:
            return "; ".join(f"rank {r} is alive but stuck after {steps[r]} steps "
                             f"(others reached {max(steps.values())})" for r in behind)
        return "every rank still has a heartbeat; no rank is behind"


class DistributedContext:
    """This process's place in a data-parallel run, and the training loop's hooks.

    Attributes:
        rank, world_size, local_rank: as torchrun sets them (RANK, ...).
        backend: ``"gloo"`` (CPU) or ``"nccl"`` (CUDA).
        timeout: seconds a collective may wait for the other ranks.
        heartbeat: this rank's :class:`Heartbeat`.
    """

    def __init__(self, rank: int, world_size: int, local_rank: int, backend: str,
                 timeout: float) -> None:
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.backend, self.timeout = backend, timeout
        self.ddp: DistributedDataParallel | None = None
        self.heartbeat = Heartbeat(rank, world_size, timeout, self._steps)

    @property
    def is_main(self) -> bool:
        """Rank 0 logs and writes checkpoints."""
        return self.rank == 0

    def _steps(self) -> int:
        return 0 if self.ddp is None else self.ddp.steps_synchronized

    def device(self, device: str) -> torch.device:
        """``cuda`` means this rank's GPU, ``cuda:<local_rank>``."""
        parsed = torch.device(device)
        return torch.device("cuda", self.local_rank) if parsed.type == "cuda" else parsed

    def communication_device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" \
            else torch.device("cpu")

    # ---------------------------------------------------------------- training hooks

    def wrap(self, model: Module) -> DistributedDataParallel:
        """The DDP wrapper of ``model`` (broadcasts rank 0's weights)."""
        self.ddp = DistributedDataParallel(model)
        return self.ddp

    def make_loaders(self, config: Any, data: Any) -> tuple[Any, Any]:
        """The training loader over this rank's DistributedSampler shard (seeded
        with ``config.seed``) and the test loader over its contiguous block of
        the test set (see :meth:`gather_counts`)."""
        from scratchnet.data import TensorLoader
        from scratchnet.train import EVAL_BATCH_SIZE

        num_test = data.test_images.shape[0]
        if num_test < self.world_size:
            raise OptionError(f"the test set has {num_test} images, fewer than the "
                              f"{self.world_size} processes")
        common = {"device": self.device(config.device), "dtype": config.torch_dtype}
        sampler = DistributedSampler(data.train_labels, self.world_size, self.rank,
                                     shuffle=True, seed=config.seed)
        train_loader = TensorLoader(
            data.train_images, data.train_labels, batch_size=config.batch_size,
            sampler=sampler, generator=torch.Generator().manual_seed(config.seed),
            **common)
        start, stop = shard_bounds(num_test, self.rank, self.world_size)
        test_loader = TensorLoader(
            data.test_images[start:stop], data.test_labels[start:stop],
            batch_size=EVAL_BATCH_SIZE,
            generator=torch.Generator().manual_seed(config.seed), **common)
        return train_loader, test_loader

    @staticmethod
    def begin_epoch(train_loader: Any, epoch: int) -> None:
        """Epoch ``epoch`` (1-based) draws the sampler's order ``seed + epoch - 1``."""
        train_loader.sampler.set_epoch(epoch - 1)

    def average_across_ranks(self, values: Sequence[float]) -> list[float]:
        """The mean over ranks of each value (one all_reduce): the global batch's
        loss from each rank's shard loss (the shards of a step are equal in size)."""
        local = torch.tensor(values, dtype=torch.float64,
                             device=self.communication_device())  # (steps,)
        dist.all_reduce(local, op=dist.ReduceOp.SUM)
        return (local / self.world_size).tolist()

    def gather_counts(self, confusion: torch.Tensor, loss_sum: float, total: int,
                      predictions: torch.Tensor
                      ) -> tuple[torch.Tensor, float, int, torch.Tensor]:
        """Evaluation over the whole test set from each rank's block: confusion
        counts (C·C,), loss sum and totals added up; predictions (n_r,) gathered
        in rank order, which is test-set order (the blocks are contiguous)."""
        device = self.communication_device()
        confusion = confusion.to(device)
        dist.all_reduce(confusion, op=dist.ReduceOp.SUM)
        sums = torch.tensor([loss_sum, total], dtype=torch.float64, device=device)
        dist.all_reduce(sums, op=dist.ReduceOp.SUM)
        num_test = int(sums[1])
        sizes = [stop - start for start, stop in
                 (shard_bounds(num_test, r, self.world_size)
                  for r in range(self.world_size))]
        padded = torch.zeros(max(sizes), dtype=torch.int64, device=device)
        padded[: predictions.shape[0]] = predictions.to(device)
        gathered = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(gathered, padded)
        all_predictions = torch.cat([block[:size] for block, size
                                     in zip(gathered, sizes, strict=True)])
        return (confusion.cpu(), float(sums[0]), num_test, all_predictions.cpu())


def _collective_failed(error: BaseException) -> bool:
    """A torch.distributed failure (gloo/NCCL error, timeout, lost peer), as
    opposed to a mistake scratchnet reports itself."""
    return isinstance(error, RuntimeError) and not isinstance(error, ScratchnetError)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text[:300]}"


@contextlib.contextmanager
def process_group_from_env(device: str = "cpu", timeout: float = DEFAULT_TIMEOUT
                           ) -> Iterator[DistributedContext | None]:
    """Join the process group torchrun describes in the environment (RANK,
    WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); yields None when
    WORLD_SIZE is absent or 1 (a plain single-process run).

    gloo for ``device`` cpu, NCCL for cuda (each rank on ``cuda:<LOCAL_RANK>``).
    A collective that fails inside the block (a peer died, or did not answer
    within ``timeout`` seconds) becomes a :class:`DistributedError` naming the
    rank, found from the heartbeats (:meth:`Heartbeat.diagnose`).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        yield None
        return
    if not isinstance(timeout, (int, float)) or not timeout > 0:
        raise OptionError(f"--dist-timeout must be a positive number of seconds, got "
                          f"{timeout!r}")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
    except RuntimeError as error:
        raise DistributedError(f"rank {rank}: not all {world_size} processes joined "
                               f"within --dist-timeout {timeout:g} s "
                               f"({_first_line(error)})") from error
    context = None
    try:
        context = DistributedContext(rank, world_size, local_rank, backend, timeout)
        yield context
    except BaseException as error:
        if context is None or not _collective_failed(error):
            raise
        raise DistributedError(
            f"rank {rank}: a collective failed after {context._steps()} steps: "
            f"{context.heartbeat.diagnose()} ({_first_line(error)})") from error
    finally:
        if context is not None:
            context.heartbeat.stop()
        dist.destroy_process_group()


# --------------------------------------------------------------------------------------
# scratchnet train --nproc N: torchrun's job, on one machine


def launch(python_args: Sequence[str], nproc: int, timeout: float = DEFAULT_TIMEOUT,
           log: Callable[[str], None] = lambda text: print(text, file=sys.stderr,
                                                           flush=True)) -> int:
    """Run ``python <python_args>`` (``-m scratchnet train ...``) in ``nproc``
    processes on this machine, as ``torchrun --nproc_per_node nproc`` would: this
    process hosts the
    rendezvous store on 127.0.0.1 (a free port) and each child gets RANK,
    LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT (and OMP_NUM_THREADS=1
    unless set). Returns 0 when every rank exits with 0.

    When a rank fails, the others are given a few seconds (:data:`GRACE`, plus
    their heartbeat diagnosis) to notice and stop with their own message; any
    still running then (a hung or stopped one) is terminated. The failed ranks
    are reported by number.
    """
    if not isinstance(nproc, int) or nproc < 1:
        raise OptionError(f"--nproc must be a positive integer, got {nproc!r}")
    store = dist.TCPStore("127.0.0.1", 0, nproc, is_master=True,
                          wait_for_workers=False, timeout=timedelta(seconds=timeout))
    processes = [_start_rank(python_args, rank, nproc, store.port)
                 for rank in range(nproc)]
    log(f"scratchnet: started {nproc} processes on 127.0.0.1:{store.port}: "
        + ", ".join(f"rank {rank} pid {p.pid}" for rank, p in enumerate(processes)))
    try:
        first_failure = _wait_for_ranks(processes, timeout)
    except KeyboardInterrupt:
        _terminate(processes)
        raise
    failures = [_describe_exit(rank, p) for rank, p in enumerate(processes)
                if p.returncode != 0]
    if failures:
        log(f"scratchnet: error: {'; '.join(failures)}"
            + (f" (first: rank {first_failure})" if first_failure is not None else ""))
        return 1
    return 0


def _start_rank(python_args: Sequence[str], rank: int, nproc: int,
                port: int) -> subprocess.Popen:
    env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank),
           "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc),
           "GROUP_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "TORCHELASTIC_USE_AGENT_STORE": "True"}
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.Popen([sys.executable, *python_args], env=env)


def _wait_for_ranks(processes: list[subprocess.Popen], timeout: float) -> int | None:
    """Wait for every process; once one fails, give the rest GRACE seconds and
    three heartbeats to report it before terminating them. Returns the rank that
    failed first, or None."""
    grace = GRACE + 3 * Heartbeat.interval_for(timeout)
    first_failure, failed_at = None, 0.0
    while True:
        running = [p for p in processes if p.poll() is None]
        if first_failure is None:
            failed = [rank for rank, p in enumerate(processes)
                      if p.returncode not in (None, 0)]
            if failed:  # (seen in the same poll: the lowest rank)
                first_failure, failed_at = failed[0], time.monotonic()
        if not running:
            break
        if first_failure is not None and time.monotonic() - failed_at > grace:
            _terminate(processes)
            break
        time.sleep(0.05)
    for p in processes:
        p.wait()
    return first_failure


def _terminate(processes: list[subprocess.Popen]) -> None:
    """SIGTERM, and SIGKILL 2 s later (a stopped process only dies of that)."""
    for p in processes:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + 2.0
    for p in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        if p.poll() is None:
            p.kill()
            p.wait()


def _describe_exit(rank: int, process: subprocess.Popen) -> str:
    code = process.returncode
    if code < 0:
        return f"rank {rank} (pid {process.pid}) was killed by {signal.Signals(-code).name}"
    return f"rank {rank} (pid {process.pid}) exited with code {code}"
