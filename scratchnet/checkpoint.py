"""Checkpoints: what ``scratchnet train`` writes each epoch, and how it is read back.

A checkpoint is one ``torch.save``'d dict::

    {
        "format_version": 1,
        "model_state_dict":     {name: tensor}   # plain CPU tensors, torch.nn's keys:
                                                 # loads straight into the reference
                                                 # torch.nn model with load_state_dict
        "optimizer_state_dict": {"state": ..., "param_groups": ...}  # torch.optim layout
        "epoch":        int                      # epochs completed
        "config":       {...}                    # model name/spec, dataset, dtype, ...
        "loader_state": {...}                    # TensorLoader.state_dict()
        "rng_state":    {...}                    # torch / numpy / python / loader RNGs
        "metrics":      {...}                    # per-epoch history so far
        "checksum":     "sha256 hex"             # over every field but metrics
    }

Beside it, ``model.pt`` holds the bare model state_dict (what
``torch.save(model.state_dict(), ...)`` would write), for users who only want
the weights.

Writes are atomic: a temporary file in the same directory is written, flushed
and fsync'd, then ``os.replace``'d over the target, and the directory is
fsync'd, so a crash leaves either the old checkpoint or the new one, never half
of one. Reads verify the checksum and, given a model, the architecture (keys
and shapes), and raise :class:`~scratchnet.errors.CheckpointError` with a
one-line reason otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from scratchnet.errors import CheckpointError

# Version 2's checksum covers every field resume reads (CHECKSUMMED_KEYS: all but
# "metrics", whose wall times differ between otherwise bit-identical runs); version
# 1's covered the model and optimizer state only, and is still read.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
CHECKSUMMED_KEYS = ("format_version", "model_state_dict", "optimizer_state_dict", "epoch",
                    "config", "loader_state", "rng_state")
CHECKPOINT_NAME = "checkpoint.pt"
MODEL_NAME = "model.pt"
REQUIRED_KEYS = ("format_version", "model_state_dict", "optimizer_state_dict", "epoch",
                 "config", "loader_state", "rng_state", "checksum")


# --------------------------------------------------------------------------------------
# atomic writes


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX: a directory can be fsync'd)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Any) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then move it into
    place: flush + fsync, ``os.replace``, fsync the directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                     dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    _fsync_directory(path.parent)
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)``, atomically."""
    return _atomic_write(Path(path), lambda file: torch.save(obj, file))


def atomic_write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2) + "\n"
    return _atomic_write(Path(path), lambda file: file.write(text.encode()))


# --------------------------------------------------------------------------------------
# checksum


def _feed(hasher: Any, name: str, obj: Any) -> None:
    """Hash ``obj`` depth-first: each tensor's name, dtype, shape and raw bytes;
    every other leaf by its repr. Mapping keys are visited in sorted order."""
    if isinstance(obj, torch.Tensor):
        tensor = obj.detach().to("cpu").contiguous()
        hasher.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}\n".encode())
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, Mapping):
        for key in sorted(obj, key=str):
            _feed(hasher, f"{name}.{key}", obj[key])
    elif isinstance(obj, (list, tuple)):
        for index, item in enumerate(obj):
            _feed(hasher, f"{name}[{index}]", item)
    else:
        hasher.update(f"{name}={obj!r}\n".encode())


def state_checksum(model_state_dict: Mapping, optimizer_state_dict: Mapping) -> str:
    """sha256 over the model's and optimizer's tensors (names, dtypes, shapes,
    bytes) and the optimizer's hyperparameters."""
    hasher = hashlib.sha256()
    _feed(hasher, "model", model_state_dict)
    _feed(hasher, "optimizer", optimizer_state_dict)
    return hasher.hexdigest()


def checkpoint_checksum(checkpoint: Mapping[str, Any]) -> str:
    """sha256 over every field of ``checkpoint`` in CHECKSUMMED_KEYS (format 2): a
    flipped bit in the RNG or loader state is caught like one in the weights."""
    hasher = hashlib.sha256()
    for key in CHECKSUMMED_KEYS:
        _feed(hasher, key, checkpoint[key])
    return hasher.hexdigest()


# --------------------------------------------------------------------------------------
# saving


def plain_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """The model's state_dict as plain, contiguous CPU tensors (no Parameter
    subclass, no device), so ``torch.load`` + ``torch.nn.Module.load_state_dict``
    read it anywhere."""
    return {name: value.detach().as_subclass(torch.Tensor).to("cpu", copy=True)
            .contiguous() for name, value in model.state_dict().items()}


def save_checkpoint(
    out_dir: str | os.PathLike,
    *,
    model_state_dict: Mapping[str, torch.Tensor],
    optimizer_state_dict: Mapping[str, Any],
    epoch: int,
    config: Mapping[str, Any],
    loader_state: Mapping[str, Any],
    rng_state: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``out_dir/checkpoint.pt`` and ``out_dir/model.pt`` atomically and
    return the checkpoint's path."""
    out_dir = Path(out_dir)
    checkpoint = {
        "format_version": FORMAT_VERSION,
        "model_state_dict": dict(model_state_dict),
        "optimizer_state_dict": optimizer_state_dict,
        "epoch": int(epoch),
        "config": dict(config),
        "loader_state": loader_state,
        "rng_state": rng_state,
        "metrics": dict(metrics or {}),
    }
    checkpoint["checksum"] = checkpoint_checksum(checkpoint)
    path = atomic_torch_save(checkpoint, out_dir / CHECKPOINT_NAME)
    atomic_torch_save(dict(model_state_dict), out_dir / MODEL_NAME)
    return path


# --------------------------------------------------------------------------------------
# loading


def _torch_load(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        # weights_only: a checkpoint is tensors, numbers, strings and containers;
        # nothing in it may run code when loaded
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a damaged zip/pickle
        # the first sentence of torch's message says what failed
        reason = str(error).strip().split(". ")[0].splitlines()[0] if str(error).strip() else ""
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated and cannot be read "
            f"({type(error).__name__}{': ' + reason[:120] if reason else ''})"
        ) from None


def _is_bare_state_dict(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                    for k, v in obj.items()))


def load_checkpoint(path: str | os.PathLike, allow_bare: bool = False) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` and verify its format
    and checksum. With ``allow_bare``, a bare model state_dict (``model.pt``) is
    accepted too and returned as ``{"model_state_dict": ..., "config": None}``.

    Raises:
        CheckpointError: missing, corrupt or truncated file; not a checkpoint;
            unknown format version; checksum mismatch.
    """
    path = Path(path)
    obj = _torch_load(path)
    if allow_bare and _is_bare_state_dict(obj):
        return {"model_state_dict": dict(obj), "config": None, "epoch": None}
    if not isinstance(obj, Mapping) or not all(key in obj for key in REQUIRED_KEYS):
        found = sorted(obj)[:6] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{path} is not a scratchnet checkpoint (expected keys "
                              f"{', '.join(REQUIRED_KEYS)}; found {found})")
    if obj["format_version"] not in READABLE_VERSIONS:
        raise CheckpointError(f"checkpoint {path} has format_version "
                              f"{obj['format_version']!r}; this scratchnet reads "
                              f"versions {', '.join(map(str, READABLE_VERSIONS))}")
    checksum = (checkpoint_checksum(obj) if obj["format_version"] == 2 else
                state_checksum(obj["model_state_dict"], obj["optimizer_state_dict"]))
    if checksum != obj["checksum"]:
        raise CheckpointError(f"checkpoint {path} failed its checksum (stored "
                              f"{str(obj['checksum'])[:12]}…, computed {checksum[:12]}…): "
                              "the file is corrupt")
    return dict(obj)


def _first(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "")


def verify_architecture(model_state_dict: Mapping[str, torch.Tensor], model: Any,
                        source: str = "checkpoint", model_name: str = "the model") -> None:
    """Check that ``model_state_dict`` has exactly ``model``'s keys and shapes.

    Raises:
        CheckpointError: one line naming the missing and unexpected keys and the
            first shape mismatches.
    """
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    found = {key: tuple(value.shape) for key, value in model_state_dict.items()}
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    mismatched = [f"{key} {found[key]} vs {expected[key]}"
                  for key in expected if key in found and found[key] != expected[key]]
    problems = []
    if missing:
        problems.append(f"missing {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected {_first(unexpected)}")
    if mismatched:
        problems.append(f"shape (checkpoint vs model) {_first(mismatched, 2)}")
    if problems:
        raise CheckpointError(f"{source} was saved from another architecture than "
                              f"{model_name}: {'; '.join(problems)}")
