"""TensorLoader: the batches of torch's DataLoader, from one uint8 tensor.

N = images, B = batch size, H, W = 28, 28.

``torch.utils.data.DataLoader(dataset, batch_size, shuffle, generator=..., drop_last)``
over ``torchvision.datasets.FashionMNIST(transform=ToTensor() [+ Normalize])`` makes
each batch by turning B images into PIL images, converting each, and stacking them.
TensorLoader keeps the whole dataset as one uint8 tensor (N, H, W) on the device and
converts a batch with one gather (see transforms.py), yielding the same batches:
the same indices in the same order and bit-identical values.

It also draws from the random number generators exactly what DataLoader draws,
at the same moments, so that a training run that mixes other random draws (model
initialisation, dropout) with its batches stays in lockstep with one using
DataLoader. What DataLoader draws (torch/utils/data/dataloader.py and sampler.py):

1. ``iter(loader)``: ``_BaseDataLoaderIter.__init__`` draws a base seed for worker
   processes, ``torch.empty((), dtype=torch.int64).random_(generator=generator)``,
   from ``generator`` or, when it is None, the global RNG; drawn even with no
   workers and with shuffle=False.
2. The first batch (shuffle=True): RandomSampler's ``__iter__`` (a Python generator,
   so it runs on the first index asked for) takes ``generator``, or, when it is None,
   a fresh ``torch.Generator()`` seeded with one draw from the global RNG, and yields
   ``torch.randperm(N, generator=...)``.
3. When BatchSampler asks RandomSampler for an index past the end, RandomSampler
   runs on to its second statement, ``randperm(N, generator=...)[:N % N]``, which
   yields nothing but draws a whole permutation. This happens while making the last
   partial batch, or, with drop_last or N % B == 0, in the ``next`` that ends the
   epoch. It is reproduced when ``generator`` is given; with generator=None the
   draw comes from RandomSampler's private generator and changes nothing outside.

With ``sampler=`` (DataLoader's argument of that name, e.g.
:class:`scratchnet.distributed.DistributedSampler`) the epoch's order is the
sampler's indices instead: steps 2 and 3 do not happen (the sampler keeps its own
generator), step 1 does, and an epoch has ``len(sampler)`` samples.
"""

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch

from scratchnet.data.transforms import lookup_pixels, pixel_table, torchvision_formula
from scratchnet.errors import (
    DTypeError,
    OptionError,
    ShapeError,
    StateDictError,
    check_tensor,
)


@dataclass
class _EpochState:
    """Where one pass over the data stands.

    position: samples already handed out this epoch (batches yielded × B, at most
        the epoch's length: N, or len(sampler)).
    permutation: the epoch's order (shuffle=True: (N,); a sampler: (len(sampler),)),
        CPU int64; None until the first batch is asked for, as in RandomSampler.
    sampler_exhausted: the sampler has been asked past its end (step 3 above done).
    finished: the epoch's iterator has raised StopIteration.
    """

    epoch: int
    position: int = 0
    permutation: torch.Tensor | None = None
    sampler_exhausted: bool = False
    finished: bool = False
    device_permutation: torch.Tensor | None = None  # permutation on the loader's device


class TensorLoader:
    r"""Batches of (images, labels) from tensors, equal to torch's DataLoader over
    the torchvision dataset with ``ToTensor()`` (and ``Normalize(mean, std)``).

    Args:
        images: uint8 (N, H, W), the whole dataset.
        labels: integer (N,).
        batch_size: B, samples per batch.
        shuffle: a new random order every epoch (RandomSampler), else 0..N-1.
        generator: the torch.Generator for the order (and the base seed DataLoader
            draws), or None to use the global RNG exactly as DataLoader does.
        drop_last: drop the last batch if it has fewer than B samples.
        mean, std: Normalize's per-channel mean and std, or None for ToTensor only.
        device: where the dataset lives and the batches are made.
        dtype: float dtype of the images (ToTensor gives torch's default, float32).
        sampler: where each epoch's indices come from instead (DataLoader's
            ``sampler``, e.g. a DistributedSampler shard); excludes shuffle.

    Shape:
        - x: (B, 1, H, W) ``dtype``, ``pixel / 255`` then ``(x - mean) / std``
        - y: (B,) int64
        the last batch has N % B samples (len(sampler) % B with a sampler) unless
        drop_last.

    Attributes:
        images: uint8 (N, H, W) on ``device``.  labels: int64 (N,) on ``device``.
        pixel_values: (256,) what each pixel value becomes (transforms.pixel_table).

    Example::

        >>> images, labels = load_dataset("fashion-mnist")
        >>> loader = TensorLoader(images, labels, batch_size=64, shuffle=True)
        >>> for x, y in loader:  # x (64, 1, 28, 28) float32, y (64,) int64
        ...     pass

    ``state_dict()`` taken between two batches and given to ``load_state_dict`` of a
    new loader makes its next ``iter`` continue that epoch with the same batches. It
    holds ``generator``'s state; the global RNG's state is the caller's to save.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 64,
                 shuffle: bool = False, generator: torch.Generator | None = None,
                 drop_last: bool = False, mean: float | Sequence[float] | None = None,
                 std: float | Sequence[float] | None = None,
                 device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32,
                 sampler: Iterable[int] | None = None) -> None:
        _check_dataset(images, labels)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise OptionError(f"TensorLoader: batch_size should be a positive integer, "
                              f"got {batch_size!r}")
        for flag_name, flag in (("shuffle", shuffle), ("drop_last", drop_last)):
            if not isinstance(flag, bool):
                raise OptionError(f"TensorLoader: {flag_name} should be True or False, got "
                                  f"{flag!r}")
        if sampler is not None and shuffle:
            raise OptionError("sampler option is mutually exclusive with shuffle")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise OptionError(f"TensorLoader: generator should be a torch.Generator or "
                              "None, got "
                              f"{type(generator).__name__}")
        self.device = torch.device(device)
        self.images = images.to(self.device)  # (N, H, W) uint8
        self.labels = labels.to(self.device, torch.int64)  # (N,)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.drop_last = drop_last
        self.sampler = sampler
        self.mean, self.std, self.dtype = mean, std, dtype
        self.pixel_values = pixel_table(dtype, mean, std).to(self.device)  # (256,)
        self._epochs_begun = 0
        self._current: _EpochState | None = None  # the epoch of the latest iterator
        self._resume = False  # load_state_dict restored an epoch in progress

    @property
    def num_samples(self) -> int:
        """N, the number of images."""
        return self.images.shape[0]

    @property
    def samples_per_epoch(self) -> int:
        """N, or len(sampler) when a sampler gives the order."""
        return self.num_samples if self.sampler is None else len(self.sampler)

    def __len__(self) -> int:
        """Batches per epoch: floor(n / B) with drop_last, else ceil(n / B), where
        n = samples_per_epoch."""
        if self.drop_last:
            return self.samples_per_epoch // self.batch_size
        return -(-self.samples_per_epoch // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Begin an epoch (or continue the one load_state_dict restored)."""
        if self._resume:
            self._resume = False
            return self._batches(self._current)
        # Step 1 of the module docstring: DataLoader's base seed, unused here.
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        self._current = _EpochState(epoch=self._epochs_begun)
        self._epochs_begun += 1
        return self._batches(self._current)

    def _batches(self, state: _EpochState) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while (span := self._next_span(state)) is not None:
            yield self._make_batch(state, *span)

    def _next_span(self, state: _EpochState) -> tuple[int, int] | None:
        """Sampler positions [start, stop) of the next batch, or None at the end,
        asking the sampler for indices as BatchSampler does."""
        if state.finished:
            return None
        if self.sampler is not None and state.permutation is None:
            self._take_sampler_order(state)
        if self.shuffle and state.permutation is None:
            self._draw_permutation(state)  # step 2
        start = state.position
        stop = min(start + self.batch_size, self.samples_per_epoch)
        full = stop - start == self.batch_size
        if not full:
            self._exhaust_sampler(state)  # step 3
        if stop == start or (not full and self.drop_last):
            state.finished = True
            return None
        state.position = stop
        return start, stop

    def _draw_permutation(self, state: _EpochState) -> None:
        """Step 2: RandomSampler's order for this epoch."""
        if self.generator is None:
            seed = int(torch.empty((), dtype=torch.int64).random_().item())
            generator = torch.Generator()
            generator.manual_seed(seed)
        else:
            generator = self.generator
        state.permutation = torch.randperm(self.num_samples, generator=generator)  # (N,)
        state.device_permutation = state.permutation.to(self.device)  # (N,)

    def _take_sampler_order(self, state: _EpochState) -> None:
        """The sampler's indices for this epoch, in place of steps 2 and 3."""
        order = torch.as_tensor(list(self.sampler), dtype=torch.int64)  # (n,)
        if order.numel() and not (0 <= int(order.min()) and int(order.max())
                                  < self.num_samples):
            raise OptionError(f"TensorLoader: the sampler gave indices outside "
                              f"0..{self.num_samples - 1}")
        state.permutation = order
        state.device_permutation = order.to(self.device)  # (n,)

    def _exhaust_sampler(self, state: _EpochState) -> None:
        """Step 3: RandomSampler's trailing ``randperm(N)[:0]``, drawn once."""
        if state.sampler_exhausted:
            return
        state.sampler_exhausted = True
        if self.shuffle and self.generator is not None:
            torch.randperm(self.num_samples, generator=self.generator)

    def _make_batch(self, state: _EpochState, start: int,
                    stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels at sampler positions [start, stop), converted."""
        if state.device_permutation is None:
            images = self.images[start:stop]  # (B, H, W)
            labels = self.labels[start:stop]  # (B,)
        else:
            indices = state.device_permutation[start:stop]  # (B,)
            images = self.images.index_select(0, indices)  # (B, H, W)
            labels = self.labels.index_select(0, indices)  # (B,)
        if self.device.type == "cpu":  # the table's own formula: the same values, faster
            x = torchvision_formula(images.unsqueeze(1), self.dtype, self.mean, self.std)
        else:
            x = lookup_pixels(self.pixel_values, images).unsqueeze(1)  # (B, 1, H, W)
        return x, labels

    def state_dict(self) -> dict:
        """Where iteration stands: ``epoch`` (0-based index of the epoch in progress,
        else of the next one), ``in_progress``, ``position`` (samples already
        yielded this epoch), ``permutation`` (the epoch's order, or None),
        ``sampler_exhausted``, ``generator_state``, and the settings that must match
        on load (``num_samples``, ``batch_size``, ``shuffle``, ``drop_last``). With a
        sampler, ``permutation`` is the epoch's sampler order; the sampler's own
        state (its epoch) is the caller's to restore."""
        state = self._current
        in_progress = state is not None and not state.finished
        return {
            "epoch": state.epoch if in_progress else self._epochs_begun,
            "in_progress": in_progress,
            "position": state.position if in_progress else 0,
            "permutation": (state.permutation.clone() if in_progress
                            and state.permutation is not None else None),
            "sampler_exhausted": in_progress and state.sampler_exhausted,
            "generator_state": (None if self.generator is None
                                else self.generator.get_state()),
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a state_dict(); the next ``iter`` continues its epoch, if one was
        in progress, without drawing DataLoader's base seed again."""
        _check_state_dict(self, state_dict)
        if state_dict["generator_state"] is not None:
            self.generator.set_state(state_dict["generator_state"])
        epoch = state_dict["epoch"]
        if not state_dict["in_progress"]:
            self._epochs_begun, self._current, self._resume = epoch, None, False
            return
        permutation = state_dict["permutation"]
        self._current = _EpochState(
            epoch=epoch, position=state_dict["position"],
            permutation=None if permutation is None else permutation.clone(),
            sampler_exhausted=state_dict["sampler_exhausted"],
            device_permutation=None if permutation is None else permutation.to(self.device),
        )
        self._epochs_begun, self._resume = epoch + 1, True


def _check_dataset(images: torch.Tensor, labels: torch.Tensor) -> None:
    """images uint8 (N, H, W) and labels integer (N,), N >= 1."""
    check_tensor("TensorLoader", "images", images)
    check_tensor("TensorLoader", "labels", labels)
    if images.dtype != torch.uint8:
        raise DTypeError(f"TensorLoader: expected uint8 images, got {images.dtype}")
    if images.dim() != 3 or images.shape[0] == 0:
        raise ShapeError(f"TensorLoader: expected images (N, H, W) with N >= 1, got "
                         f"shape {tuple(images.shape)}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise DTypeError(f"TensorLoader: expected integer labels, got {labels.dtype}")
    if labels.shape != images.shape[:1]:
        raise ShapeError(f"TensorLoader: expected labels ({images.shape[0]},) to match "
                         f"images {tuple(images.shape)}, got {tuple(labels.shape)}")


STATE_KEYS = ("epoch", "in_progress", "position", "permutation", "sampler_exhausted",
              "generator_state", "num_samples", "batch_size", "shuffle", "drop_last")


def _check_state_dict(loader: TensorLoader, state_dict: dict) -> None:
    """The state_dict has TensorLoader's keys and was made with the same settings."""
    missing = [key for key in STATE_KEYS if key not in state_dict]
    unexpected = [key for key in state_dict if key not in STATE_KEYS]
    if missing or unexpected:
        raise StateDictError(f"TensorLoader.load_state_dict: missing keys {missing}, "
                             f"unexpected keys {unexpected}")
    for key in ("num_samples", "batch_size", "shuffle", "drop_last"):
        if state_dict[key] != getattr(loader, key):
            raise StateDictError(f"TensorLoader.load_state_dict: the state has "
                                 f"{key}={state_dict[key]!r}, this loader "
                                 f"{key}={getattr(loader, key)!r}")
    if (state_dict["generator_state"] is None) != (loader.generator is None):
        raise StateDictError("TensorLoader.load_state_dict: the state was saved "
                             f"{'without' if state_dict['generator_state'] is None else 'with'}"
                             " a generator, this loader has "
                             f"{'none' if loader.generator is None else 'one'}")
    if not 0 <= state_dict["position"] <= loader.samples_per_epoch:
        raise StateDictError(f"TensorLoader.load_state_dict: position "
                             f"{state_dict['position']} outside "
                             f"0..{loader.samples_per_epoch}")
    permutation = state_dict["permutation"]
    if ((loader.shuffle or loader.sampler is not None) and state_dict["in_progress"]
            and state_dict["position"] > 0 and permutation is None):
        raise StateDictError("TensorLoader.load_state_dict: a shuffled epoch in "
                             "progress needs its permutation, got None")
    if permutation is not None and (permutation.shape != (loader.samples_per_epoch,)
                                    or permutation.dtype != torch.int64):
        raise StateDictError(f"TensorLoader.load_state_dict: expected an int64 "
                             f"permutation ({loader.samples_per_epoch},), got "
                             f"{permutation.dtype} {tuple(permutation.shape)}")
