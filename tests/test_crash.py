"""A training process killed with SIGKILL loses nothing: killed halfway through
writing a checkpoint, or in the middle of an epoch, the checkpoint on disk still
loads, and ``scratchnet train --resume`` ends bit-identical to a run that was
never interrupted.

Each run is a real ``scratchnet train`` in its own process (the CLI's ``main``,
under ``python -c``), on a tiny IDX dataset written here. The kill is made
deterministic inside that process, without touching scratchnet's code:

- ``save:N``: ``torch.save`` is wrapped so that the N-th checkpoint written
  (the dict carrying a ``"checksum"``) has only its first half written to the
  temporary file scratchnet.checkpoint opened, flushed to disk, and then the
  process sends itself SIGKILL: before the fsync of the whole file and the
  rename, as a power cut or an OOM kill would.
- ``step:N``: ``scratchnet.train.train_step`` is wrapped so that the process
  kills itself right after its N-th training step.

128 training images, batch 32: 4 steps per epoch, 3 epochs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scratchnet import checkpoint as ckpt
from tests.test_train import write_tiny_dataset

ROOT = Path(__file__).resolve().parents[1]
EPOCHS, STEPS_PER_EPOCH = 3, 4

pytestmark = [
    pytest.mark.slow,  # five training processes, ~20 s on 2 cores
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL"),
]

# Runs `scratchnet ARGV` and, per $CRASH_TEST_KILL, SIGKILLs itself (see above).
TRAINING_PROCESS = r"""
import io, os, signal, sys
import torch
import scratchnet.train
from scratchnet import cli

what, _, count = os.environ.get("CRASH_TEST_KILL", ":").partition(":")
count = int(count or 0)
seen = 0

def die():
    os.kill(os.getpid(), signal.SIGKILL)

real_save = torch.save
def save(obj, file, *args, **kwargs):
    global seen
    if what == "save" and isinstance(obj, dict) and "checksum" in obj:
        seen += 1
        if seen == count:
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            content = buffer.getvalue()
            file.write(content[: len(content) // 2])
            file.flush()
            os.fsync(file.fileno())
            die()
    return real_save(obj, file, *args, **kwargs)
torch.save = save

real_train_step = scratchnet.train.train_step
def train_step(*args, **kwargs):
    global seen
    loss = real_train_step(*args, **kwargs)
    if what == "step":
        seen += 1
        if seen == count:
            die()
    return loss
scratchnet.train.train_step = train_step

sys.exit(cli.main(sys.argv[1:]))
"""


def scratchnet_train(data_dir: Path, out: Path, *extra: str, kill: str = ""
                     ) -> subprocess.CompletedProcess:
    """``scratchnet train`` on the tiny dataset in a fresh process."""
    argv = ["train", "--dataset", "mnist", "--data-dir", str(data_dir), "--model",
            "784-16-10", "--limit", str(32 * STEPS_PER_EPOCH), "--batch-size", "32",
            "--epochs", str(EPOCHS), "--out", str(out), "--quiet", *extra]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "SCRATCHNET_NO_DOWNLOAD": "1",
                   "PYTHONPATH": str(ROOT), "CRASH_TEST_KILL": kill}
    return subprocess.run([sys.executable, "-c", TRAINING_PROCESS, *argv], cwd=ROOT,
                          env=environment, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    done = scratchnet_train(data_dir, out)
    assert done.returncode == 0, done.stderr
    return out


def assert_killed(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == -signal.SIGKILL, (
        f"expected death by SIGKILL, got exit code {done.returncode}: {done.stderr}")


def assert_bit_identical(resumed: Path, uninterrupted: Path) -> None:
    """The final weights (model.pt) and the optimizer state and checksum of the
    final checkpoint are equal bit for bit."""
    ours = torch.load(resumed / ckpt.MODEL_NAME, weights_only=True)
    theirs = torch.load(uninterrupted / ckpt.MODEL_NAME, weights_only=True)
    assert ours.keys() == theirs.keys()
    for name, value in theirs.items():
        assert torch.equal(ours[name], value), f"model.pt {name} differs"
    ours = ckpt.load_checkpoint(resumed / ckpt.CHECKPOINT_NAME)
    theirs = ckpt.load_checkpoint(uninterrupted / ckpt.CHECKPOINT_NAME)
    assert ours["epoch"] == theirs["epoch"] == EPOCHS
    for index, state in theirs["optimizer_state_dict"]["state"].items():
        for key, value in state.items():
            assert torch.equal(ours["optimizer_state_dict"]["state"][index][key], value), \
                f"optimizer state {index}.{key} differs"
    # the checksum covers model, optimizer, epoch, config, loader and RNG states
    assert ours["checksum"] == theirs["checksum"]


def test_killed_while_writing_a_checkpoint(data_dir, uninterrupted, tmp_path):
    """SIGKILL halfway through writing epoch 2's checkpoint: epoch 1's is still
    on disk, whole, next to the half-written temporary file."""
    done = scratchnet_train(data_dir, tmp_path, kill="save:2")
    assert_killed(done)
    on_disk = ckpt.load_checkpoint(tmp_path / ckpt.CHECKPOINT_NAME)  # loads: whole
    assert on_disk["epoch"] == 1
    half_written = list(tmp_path.glob(f".{ckpt.CHECKPOINT_NAME}.*.tmp"))
    assert len(half_written) == 1, list(tmp_path.iterdir())
    full_size = (tmp_path / ckpt.CHECKPOINT_NAME).stat().st_size
    assert 0 < half_written[0].stat().st_size < full_size
    resumed = scratchnet_train(data_dir, tmp_path, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_bit_identical(tmp_path, uninterrupted)


def test_killed_in_the_middle_of_an_epoch(data_dir, uninterrupted, tmp_path):
    """SIGKILL after the 2nd of epoch 2's 4 steps: the checkpoint of epoch 1
    loads, and the resumed run redoes epoch 2 exactly."""
    done = scratchnet_train(data_dir, tmp_path, kill=f"step:{STEPS_PER_EPOCH + 2}")
    assert_killed(done)
    on_disk = ckpt.load_checkpoint(tmp_path / ckpt.CHECKPOINT_NAME)
    assert on_disk["epoch"] == 1
    assert not list(tmp_path.glob(".*.tmp")), "no write was in progress"
    resumed = scratchnet_train(data_dir, tmp_path, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_bit_identical(tmp_path, uninterrupted)


def test_killed_while_writing_the_first_checkpoint_leaves_none(data_dir, tmp_path):
    """With no earlier checkpoint, nothing half-written takes its name: resuming
    says there is no checkpoint rather than loading a torn one."""
    assert_killed(scratchnet_train(data_dir, tmp_path, kill="save:1"))
    assert not (tmp_path / ckpt.CHECKPOINT_NAME).exists()
    resumed = scratchnet_train(data_dir, tmp_path, "--resume")
    assert resumed.returncode == 2
    assert "no such file" in resumed.stderr, resumed.stderr
