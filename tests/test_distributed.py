"""scratchnet.distributed: data-parallel training equal to one process, and to
torch's DistributedDataParallel.

Fast tests (no process is started): the sampler against
torch.utils.data.DistributedSampler, the TensorLoader with a sampler, the DDP
wrapper's gradient averaging in a one-process gloo group.

Slow tests start processes (each one costs seconds of importing torch):

1. torchrun, 2 ranks × batch 32, runs this file as a worker (``python
   tests/test_distributed.py worker ...``): scratchnet's ``fit`` data-parallel in
   float32 and float64, then torch.nn + torch's DistributedDataParallel on the
   same data. The test compares both, and a single process training with batch
   64 on the same global order, within the parity contract (tests/oracles.py).
2. ``scratchnet train --nproc 2``, one rank killed mid-epoch: the survivor stops
   within --dist-timeout naming the rank; ``--resume`` completes the run, equal
   to the single-process run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.utils.data
from hypothesis import given
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a torchrun worker script
    sys.path.insert(0, str(REPO))

from scratchnet.checkpoint import load_checkpoint  # noqa: E402
from scratchnet.cli import main as cli_main  # noqa: E402
from scratchnet.data import TensorLoader, load_dataset, write_idx  # noqa: E402
from scratchnet.data.datasets import IDX_FILES  # noqa: E402
from scratchnet.distributed import (  # noqa: E402
    DistributedDataParallel,
    DistributedSampler,
    Heartbeat,
    launch,
    process_group_from_env,
    shard_bounds,
)
from scratchnet.errors import OptionError  # noqa: E402
from scratchnet.train import (  # noqa: E402
    TrainConfig,
    build_model,
    build_optimizer,
    evaluate,
    fit,
    load_data,
    seed_everything,
    train_epoch,
)
from tests.oracles import assert_parity  # noqa: E402

SEED = 3
TRAIN_IMAGES = 300  # 2 ranks × 150: 4 batches of 32 and one of 22 per rank
TEST_IMAGES = 101  # odd: the ranks' evaluation blocks differ in size


def write_dataset(directory: Path, train_images: int, test_images: int = TEST_IMAGES,
                  seed: int = 0) -> Path:
    """Random uint8 images and labels in the four Fashion-MNIST IDX files."""
    generator = torch.Generator().manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for split, size in (("train", train_images), ("test", test_images)):
        images = torch.randint(0, 256, (size, 28, 28), generator=generator,
                               dtype=torch.uint8)  # (N, 28, 28)
        labels = torch.randint(0, 10, (size,), generator=generator,
                               dtype=torch.uint8)  # (N,)
        write_idx(directory / IDX_FILES[f"{split}_images"], images)
        write_idx(directory / IDX_FILES[f"{split}_labels"], labels)
    return directory


# --------------------------------------------------------------------------------------
# the sampler


@given(size=st.integers(1, 40), world_size=st.integers(1, 5), shuffle=st.booleans(),
       drop_last=st.booleans(), seed=st.integers(0, 3), epoch=st.integers(0, 3))
def test_sampler_equals_torch_distributed_sampler(size, world_size, shuffle, drop_last,
                                                  seed, epoch):
    for rank in range(world_size):
        ours = DistributedSampler(range(size), world_size, rank, shuffle=shuffle,
                                  seed=seed, drop_last=drop_last)
        theirs = torch.utils.data.DistributedSampler(
            range(size), world_size, rank, shuffle=shuffle, seed=seed,
            drop_last=drop_last)
        ours.set_epoch(epoch)
        theirs.set_epoch(epoch)
        assert len(ours) == len(theirs), f"rank {rank}: length"
        assert list(ours) == list(theirs), f"rank {rank}: indices"


@given(size=st.integers(2, 60).map(lambda n: 2 * n), batch_size=st.integers(1, 9),
       epoch=st.integers(0, 3))
def test_batches_of_two_ranks_are_the_batches_of_one(size, batch_size, epoch):
    """Step k's batches on ranks 0 and 1 together are step k's batch of twice the
    size in one process reading the same order (N even: no padding)."""
    one = DistributedSampler(range(size), 1, 0, seed=SEED)
    one.set_epoch(epoch)
    order = list(one)
    shards = []
    for rank in range(2):
        sampler = DistributedSampler(range(size), 2, rank, seed=SEED)
        sampler.set_epoch(epoch)
        shards.append(list(sampler))
    for start in range(0, size // 2, batch_size):
        together = shards[0][start:start + batch_size] + shards[1][start:start + batch_size]
        assert sorted(together) == sorted(order[2 * start: 2 * (start + batch_size)])


def test_sampler_bad_arguments():
    with pytest.raises(OptionError, match=r"invalid rank 2, rank should be in the "
                       r"interval \[0, 1\]"):
        DistributedSampler(range(5), num_replicas=2, rank=2)
    with pytest.raises(OptionError, match="initialise the default process group"):
        DistributedSampler(range(5))


def test_shard_bounds_cover_the_test_set_once():
    for size in (1, 7, 100, 101):
        for world_size in range(1, 6):
            bounds = [shard_bounds(size, rank, world_size) for rank in range(world_size)]
            assert bounds[0][0] == 0 and bounds[-1][1] == size
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
            assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1


# --------------------------------------------------------------------------------------
# the TensorLoader with a sampler (loader.py's sampler= argument)


def small_images(size: int = 23) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (size, 28, 28), generator=generator, dtype=torch.uint8)
    return images, torch.arange(size) % 10


def test_loader_with_sampler_equals_dataloader_with_sampler():
    images, labels = small_images()
    sampler = DistributedSampler(labels, 2, 1, seed=SEED)
    sampler.set_epoch(2)
    ours = TensorLoader(images, labels, batch_size=5, sampler=sampler)
    dataset = torch.utils.data.TensorDataset(images.float().div(255).unsqueeze(1), labels)
    theirs = torch.utils.data.DataLoader(dataset, batch_size=5, sampler=list(sampler))
    assert len(ours) == len(theirs) == 3  # 12 samples (23 padded to 24, halved)
    for (x, y), (x_ref, y_ref) in zip(ours, theirs, strict=True):
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)


def test_loader_with_sampler_resumes_mid_epoch():
    images, labels = small_images()
    sampler = DistributedSampler(labels, 2, 0, seed=SEED)
    loader = TensorLoader(images, labels, batch_size=4, sampler=sampler)
    batches = iter(loader)
    next(batches)
    saved = loader.state_dict()
    rest = [y for _, y in batches]
    resumed = TensorLoader(images, labels, batch_size=4,
                           sampler=DistributedSampler(labels, 2, 0, seed=SEED))
    resumed.load_state_dict(saved)
    assert [y.tolist() for _, y in resumed] == [y.tolist() for y in rest]


def test_loader_refuses_sampler_with_shuffle():
    images, labels = small_images()
    with pytest.raises(OptionError, match="mutually exclusive with shuffle"):
        TensorLoader(images, labels, shuffle=True, sampler=range(3))


# --------------------------------------------------------------------------------------
# the wrapper in a one-process group (no process started)


@pytest.fixture
def one_process_group():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_wrapper_averages_into_the_flat_buffer(one_process_group):
    torch.manual_seed(0)
    model = build_model("784-16-12-10").double()
    expected_model = build_model("784-16-12-10").double()
    expected_model.load_state_dict(model.state_dict())
    # overlap=False: the gradients are gathered only in synchronize_gradients, so
    # a .grad set to None after the backward is seen there (as zeros)
    ddp = DistributedDataParallel(model, bucket_cap_mb=200 * 8 / 2**20,  # 200 elements
                                  overlap=False)
    # last layer first; 10 + 120 + 12 elements fit in 200, 192 + 16 do not
    assert [[slot.name.removeprefix("linear_relu_stack.") for slot in bucket.slots]
            for bucket in ddp.buckets] == [["2.bias", "4.weight", "4.bias"],
                                           ["2.weight"], ["0.bias"], ["0.weight"]]
    x = torch.rand(8, 1, 28, 28, dtype=torch.float64)
    y = torch.arange(8) % 10
    from scratchnet import nn

    nn.CrossEntropyLoss()(ddp(x), y).backward()
    nn.CrossEntropyLoss()(expected_model(x), y).backward()
    model.linear_relu_stack[0].bias.grad = None  # counts as zeros
    ddp.synchronize_gradients()
    for (name, param), expected in zip(model.named_parameters(),
                                       expected_model.parameters(), strict=True):
        want = torch.zeros_like(expected) if name == "linear_relu_stack.0.bias" \
            else expected.grad
        assert torch.equal(param.grad, want), name
    assert ddp.flat.grads_attached() and ddp.steps_synchronized == 1
    assert "world_size=1" in repr(ddp)


def test_buckets_start_during_the_backward(one_process_group):
    """With overlap (the default) every bucket's all_reduce starts inside
    loss.backward(), last layer first, before the first layer's backward has
    run; the averaged gradients are the same as without overlap."""
    from scratchnet import autodiff, nn

    torch.manual_seed(0)
    model = build_model("784-16-12-10").double()
    reference = build_model("784-16-12-10").double()
    reference.load_state_dict(model.state_dict())
    ddp = DistributedDataParallel(model, bucket_cap_mb=200 * 8 / 2**20)
    launched_when: list[int] = []
    first_weight = model.linear_relu_stack[0].weight
    handle = autodiff.on_gradient_ready(
        first_weight, lambda _: launched_when.append(ddp._next_bucket))
    x = torch.rand(8, 1, 28, 28, dtype=torch.float64)
    y = torch.arange(8) % 10
    nn.CrossEntropyLoss()(ddp(x), y).backward()
    handle.remove()
    # when the first layer's weight became final, the two buckets of the later
    # layers had been started (its own bucket waits for 0.bias's, the next in
    # order, which the same op's backward finishes a moment later)
    assert launched_when == [2], launched_when
    assert ddp.buckets_launched_in_backward == len(ddp.buckets) == 4
    ddp.synchronize_gradients()
    nn.CrossEntropyLoss()(reference(x), y).backward()
    for param, expected in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(param.grad, expected.grad)


def test_wrapper_needs_a_process_group():
    with pytest.raises(OptionError, match="initialise the default process group"):
        DistributedDataParallel(build_model("784-10"))


def test_nproc_refused_under_torchrun(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli_main(["train", "--nproc", "2"]) == 2
    assert "--nproc cannot be used under torchrun" in capsys.readouterr().err


def test_resume_needs_the_same_number_of_processes(tmp_path):
    data_dir = write_dataset(tmp_path / "data", 40, 20)
    config = TrainConfig(model="784-10", data_dir=str(data_dir), epochs=1,
                         batch_size=20)
    fit(config, tmp_path / "run", quiet=True)
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert checkpoint["config"]["world_size"] == 1
    checkpoint["config"]["world_size"] = 2
    config.epochs = 2
    with pytest.raises(OptionError, match=r"trained by 2 process\(es\); resume it "
                       "with --nproc 2"):
        fit(config, tmp_path / "run", resume=checkpoint, quiet=True)


# --------------------------------------------------------------------------------------
# naming the failed rank; the launcher (no torch.distributed process group needed)


@pytest.fixture
def rendezvous_store(monkeypatch):
    """A store on 127.0.0.1, as torchrun's agent hosts it."""
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(store.port))
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    return store


def test_heartbeat_names_the_rank_that_failed(rendezvous_store):
    rank_0 = Heartbeat(0, 2, timeout=1.0, progress=lambda: 7)  # beats every 0.05 s
    try:
        assert rank_0.diagnose() == "rank 1 never started"
        rendezvous_store.set("scratchnet/0/pulse/1", "3 7")  # then never again
        assert rank_0.diagnose() == ("rank 1 stopped responding (no heartbeat for "
                                     "0.2 s: its process died or is stopped)")
        rank_1 = Heartbeat(1, 2, timeout=1.0, progress=lambda: 5)  # beating, behind
        try:
            assert rank_0.diagnose() == ("rank 1 is alive but stuck after 5 steps "
                                         "(others reached 7)")
        finally:
            rank_1.stop()
    finally:
        rank_0.stop()


def test_launch_sets_torchrun_environment_and_reports_failed_ranks(tmp_path):
    script = ("import os, sys, pathlib; e = os.environ; "
              f"pathlib.Path(r'{tmp_path}', e['RANK']).write_text(' '.join("
              "e[k] for k in ('LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', "
              "'TORCHELASTIC_USE_AGENT_STORE'))); sys.exit(3 if e['RANK'] == '1' else 0)")
    messages = []
    assert launch(["-c", script], 3, timeout=1.0, log=messages.append) == 1
    for rank in range(3):
        assert (tmp_path / str(rank)).read_text() == f"{rank} 3 127.0.0.1 True"
    assert re.fullmatch(r"scratchnet: error: rank 1 \(pid \d+\) exited with code 3 "
                        r"\(first: rank 1\)", messages[-1]), messages


# --------------------------------------------------------------------------------------
# the single-process oracle: batch 64 on the order 2 ranks share


def single_process_state(data_dir: Path, dtype: str, epochs: int,
                         batch_size: int = 64) -> tuple[dict, list[float], object]:
    """One process, batch ``batch_size``, reading the DistributedSampler order of
    one replica (the order two ranks deal out between them). Returns the final
    state_dict, the epoch losses and the model."""
    config = TrainConfig(model="NeuralNetwork", data_dir=str(data_dir), dtype=dtype,
                         batch_size=batch_size, seed=SEED, epochs=epochs).validate()
    data = load_data(config)
    seed_everything(config.seed)
    model = build_model(config.model).to(dtype=config.torch_dtype)
    optimizer = build_optimizer(model, config.optimizer, config.lr)
    sampler = DistributedSampler(data.train_labels, 1, 0, seed=config.seed)
    loader = TensorLoader(data.train_images, data.train_labels, batch_size, sampler=sampler,
                          generator=torch.Generator().manual_seed(config.seed),
                          dtype=config.torch_dtype)
    epoch_loss = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        step_loss = train_epoch(model, optimizer, loader)
        epoch_loss.append(sum(step_loss) / len(step_loss))
    return model.state_dict(), epoch_loss, model


def assert_same_state(actual: dict, expected: dict, what: str) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        assert_parity(actual[name], expected[name], f"{what}: {name}")


def assert_close_number(actual: float, expected: float, dtype: str, what: str) -> None:
    rtol, atol = (1e-12, 0.0) if dtype == "float64" else (1.3e-6, 1e-5)
    assert abs(actual - expected) <= atol + rtol * abs(expected), (
        f"{what}: {actual!r} vs {expected!r} ({dtype}: rtol {rtol}, atol {atol})")


# --------------------------------------------------------------------------------------
# the torchrun worker (this file run as a script)

DTYPES = ("float32", "float64")
EPOCHS = 2


def worker(data_dir: Path, out: Path) -> None:
    """Each rank: scratchnet data-parallel (fit) and torch.nn + torch DDP, both
    dtypes, 2 epochs of batch 32 per rank; rank 0 saves the weights."""
    with process_group_from_env("cpu", timeout=60) as parallel:
        for dtype in DTYPES:
            config = TrainConfig(model="NeuralNetwork", data_dir=str(data_dir),
                                 dtype=dtype, batch_size=32, seed=SEED, epochs=EPOCHS)
            fit(config, out / f"scratchnet-{dtype}", quiet=True, parallel=parallel)
        for dtype in DTYPES:
            state = torch_ddp_state(data_dir, getattr(torch, dtype))
            if parallel.is_main:
                torch.save(state, out / f"torch-ddp-{dtype}.pt")


def torch_ddp_state(data_dir: Path, dtype: torch.dtype) -> dict:
    """torch.nn's NeuralNetwork under torch's DistributedDataParallel, DataLoader
    and DistributedSampler, the same seed, Adam and batches."""
    seed_everything(SEED)
    model = build_model("NeuralNetwork", backend="torch").to(dtype=dtype)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images, labels = load_dataset("fashion-mnist", True, data_dir)
    dataset = torch.utils.data.TensorDataset(images.to(dtype).div(255).unsqueeze(1),
                                             labels.long())
    sampler = torch.utils.data.DistributedSampler(dataset, shuffle=True, seed=SEED)
    loader = torch.utils.data.DataLoader(dataset, batch_size=32, sampler=sampler)
    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(EPOCHS):
        sampler.set_epoch(epoch)
        for x, y in loader:
            optimizer.zero_grad()
            loss_fn(ddp(x), y).backward()
            optimizer.step()
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def torchrun(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_two_ranks_equal_one_process_and_torch_ddp(tmp_path):
    data_dir = write_dataset(tmp_path / "data", TRAIN_IMAGES)
    out = tmp_path / "out"
    done = torchrun([__file__, "worker", str(data_dir), str(out)], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for dtype in DTYPES:
        expected, epoch_loss, model = single_process_state(data_dir, dtype, EPOCHS)
        ours = torch.load(out / f"scratchnet-{dtype}" / "model.pt")
        assert_same_state(ours, expected, f"2 ranks × 32 vs 1 × 64, {dtype}")
        torch_ddp = torch.load(out / f"torch-ddp-{dtype}.pt")
        assert_same_state(ours, torch_ddp, f"scratchnet vs torch DDP, {dtype}")
        metrics = json.loads((out / f"scratchnet-{dtype}" / "metrics.json").read_text())
        assert metrics["config"]["world_size"] == 2
        for epoch, (a, b) in enumerate(zip(metrics["epoch_loss"], epoch_loss,
                                           strict=True)):
            assert_close_number(a, b, dtype, f"epoch {epoch + 1} loss")
        # evaluation gathered from the two ranks' blocks = one process on all of it
        model.load_state_dict(ours)
        config = TrainConfig(data_dir=str(data_dir), dtype=dtype).validate()
        data = load_data(config)
        whole = evaluate(model, TensorLoader(data.test_images, data.test_labels, 1000,
                                             dtype=config.torch_dtype))
        assert metrics["final"]["total"] == TEST_IMAGES
        assert metrics["final"]["confusion"] == whole.confusion
        assert metrics["final"]["accuracy"] == whole.accuracy
        assert_close_number(metrics["final"]["loss"], whole.loss, dtype, "test loss")


# --------------------------------------------------------------------------------------
# a rank killed mid-epoch


class _Lines:
    """The lines a process writes to stderr, read as they come."""

    def __init__(self, stream) -> None:  # noqa: ANN001
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:  # noqa: ANN001
        for line in stream:
            self.lines.append(line)

    def text(self) -> str:
        self._thread.join(timeout=5)
        return "".join(self.lines)


def wait_for(condition, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.slow
def test_killed_rank_stops_the_other_and_resume_completes(tmp_path):
    data_dir = write_dataset(tmp_path / "data", 1500)  # 24 steps per epoch per rank
    out, dist_timeout = tmp_path / "run", 10.0
    command = [sys.executable, "-m", "scratchnet", "train", "--nproc", "2",
               "--data-dir", str(data_dir), "--out", str(out), "--epochs", "2",
               "--batch-size", "32", "--dtype", "float64", "--seed", str(SEED),
               "--dist-timeout", str(dist_timeout), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, text=True)
    stderr = _Lines(launcher.stderr)
    wait_for(lambda: any("rank 1 pid" in line for line in stderr.lines), 300,
             "the ranks to start")
    rank_1 = int(re.search(r"rank 1 pid (\d+)", "".join(stderr.lines)).group(1))
    # rank 0 writes metrics.json last, after the checkpoint; rank 1, which writes
    # nothing, is in epoch 2 by then
    wait_for(lambda: (out / "metrics.json").exists(), 300, "epoch 1's files")
    os.kill(rank_1, signal.SIGKILL)
    killed_at = time.monotonic()
    launcher.wait(timeout=120)
    stopped_after = time.monotonic() - killed_at
    text = stderr.text()
    assert launcher.returncode == 1, text
    assert stopped_after < dist_timeout, f"took {stopped_after:.1f} s: {text}"
    assert re.search(r"scratchnet: error: rank 0: a collective failed after \d+ steps: "
                     r"rank 1 stopped responding", text), text
    assert "rank 1 (pid" in text and "was killed by SIGKILL" in text, text

    checkpoint = load_checkpoint(out / "checkpoint.pt")  # intact: checksum verified
    assert checkpoint["epoch"] == 1

    resumed = subprocess.run([*command, "--resume"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_done"] == 2
    expected, epoch_loss, _ = single_process_state(data_dir, "float64", 2)
    assert_same_state(torch.load(out / "model.pt"), expected,
                      "resumed 2-rank run vs one process, float64")
    for epoch, (a, b) in enumerate(zip(metrics["epoch_loss"], epoch_loss, strict=True)):
        assert_close_number(a, b, "float64", f"epoch {epoch + 1} loss")


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    worker(Path(sys.argv[2]), Path(sys.argv[3]))
