"""Data-parallel step time and scaling efficiency (scratchnet.distributed).

    python benchmarks/bench_distributed.py            # CPU: gloo, 1 thread per rank
    python benchmarks/bench_distributed.py --device cuda   # NCCL, needs 2 GPUs

One training step of NeuralNetwork (784-512-512-10, Adam, float32) is timed in:

- 1 process, batch 64: the baseline, T1(64);
- 2 processes, batch 32 each (the same global batch 64: strong scaling), T2(32);
- 2 processes, batch 64 each (global batch 128: weak scaling), T2(64);

for scratchnet (DistributedDataParallel over its flat gradient buffer) and for
torch.nn under torch's DistributedDataParallel, the yardstick. Efficiencies::

    strong = T1(64) / (2 · T2(32))    # 1.0: two processes halve the step time
    weak   = T1(64) / T2(64)          # 1.0: twice the samples in the same time

Each rank runs 1 thread (OMP_NUM_THREADS=1, as torchrun sets), and so does the
baseline. A step is ``zero_grad; forward; loss; backward; average gradients;
step``; after a burn-in the median of the timed steps is reported (a collective
synchronises the ranks every step, so rank 0's clock is the step's). The
gradient average is also timed on its own (``sync``).

Results go to benchmarks/results/distributed.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from scratchnet.distributed import launch, process_group_from_env  # noqa: E402
from scratchnet.train import backend_of, build_model, build_optimizer  # noqa: E402

MODEL = "NeuralNetwork"
BURN_IN = 5
RESULTS = REPO / "benchmarks" / "results"


def _sync_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(backend: str, batch_size: int, steps: int, device: torch.device,
               parallel: object = None) -> dict[str, float]:
    """Median step and gradient-average times (ms) of ``steps`` timed steps."""
    torch.manual_seed(0)
    model = build_model(MODEL, backend).to(device)
    trained, synchronize = model, None
    if parallel is not None and backend == "scratchnet":
        trained = parallel.wrap(model)
        synchronize = trained.synchronize_gradients
    elif parallel is not None:
        trained = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = build_optimizer(model, "adam", 1e-3)
    loss_fn = backend_of(model).nn.CrossEntropyLoss()
    x = torch.rand(batch_size, 1, 28, 28, device=device)  # (B, 1, 28, 28)
    y = torch.randint(0, 10, (batch_size,), device=device)  # (B,)
    step_ms, sync_ms = [], []
    for step in range(BURN_IN + steps):
        _sync_device(device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(trained(x), y).backward()
        if synchronize is not None:
            _sync_device(device)
            sync_start = time.perf_counter()
            synchronize()
            _sync_device(device)
            sync_ms.append(1e3 * (time.perf_counter() - sync_start))
        optimizer.step()
        _sync_device(device)
        if step >= BURN_IN:
            step_ms.append(1e3 * (time.perf_counter() - start))
    return {"step_ms": statistics.median(step_ms),
            "sync_ms": statistics.median(sync_ms[BURN_IN:]) if sync_ms else None}


def worker(device_name: str, steps: int, out: Path) -> None:
    """One rank of the 2-process measurements; rank 0 writes them."""
    with process_group_from_env(device_name, timeout=120) as parallel:
        device = parallel.device(device_name)
        results = {f"{backend}_batch{batch}": time_steps(backend, batch, steps, device,
                                                         parallel)
                   for backend in ("scratchnet", "torch") for batch in (32, 64)}
        if parallel.is_main:
            out.write_text(json.dumps(results))


def run(device_name: str, steps: int) -> dict:
    load_before = os.getloadavg()[0]
    torch.set_num_threads(1)
    device = torch.device(device_name)
    single = {backend: time_steps(backend, 64, steps, device)
              for backend in ("scratchnet", "torch")}
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "two.json"
        code = launch([__file__, "--worker", "--device", device_name, "--steps",
                       str(steps), "--worker-out", str(out)], 2, timeout=120)
        if code != 0:
            raise SystemExit(f"the 2-process run failed (exit {code})")
        two = json.loads(out.read_text())
    report = {"model": MODEL, "device": device_name,
              "backend": "nccl" if device.type == "cuda" else "gloo",
              "cpu_count": os.cpu_count(), "threads_per_process": 1,
              "steps_timed": steps, "burn_in": BURN_IN,
              "torch_version": torch.__version__,
              "load_average_1min": [load_before, os.getloadavg()[0]]}
    for backend in ("scratchnet", "torch"):
        t1 = single[backend]["step_ms"]
        strong, weak = two[f"{backend}_batch32"], two[f"{backend}_batch64"]
        report[backend] = {
            "1proc_batch64_step_ms": t1,
            "2proc_batch32_step_ms": strong["step_ms"],
            "2proc_batch64_step_ms": weak["step_ms"],
            "2proc_batch32_sync_ms": strong["sync_ms"],
            "2proc_batch64_sync_ms": weak["sync_ms"],
            "strong_scaling_efficiency": t1 / (2 * strong["step_ms"]),
            "weak_scaling_efficiency": t1 / weak["step_ms"],
        }
    return report


def markdown(report: dict) -> str:
    lines = [f"# Data-parallel step time ({report['model']}, Adam, float32, "
             f"{report['backend']} on {report['device']})", "",
             f"{report['cpu_count']} CPU cores, {report['threads_per_process']} thread "
             f"per process; median of {report['steps_timed']} steps after "
             f"{report['burn_in']} of burn-in; torch {report['torch_version']}; "
             "1-minute load average {:.1f} before, {:.1f} after.".format(
                 *report["load_average_1min"]), "",
             "| | 1 proc × 64 | 2 procs × 32 | 2 procs × 64 | gradient average "
             "(2 × 32) | strong eff. | weak eff. |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for backend in ("scratchnet", "torch"):
        r = report[backend]
        sync = (f"{r['2proc_batch32_sync_ms']:.2f} ms"
                if r["2proc_batch32_sync_ms"] is not None else "(inside backward)")
        lines.append(f"| {backend} | {r['1proc_batch64_step_ms']:.2f} ms | "
                     f"{r['2proc_batch32_step_ms']:.2f} ms | "
                     f"{r['2proc_batch64_step_ms']:.2f} ms | {sync} | "
                     f"{r['strong_scaling_efficiency']:.2f} | "
                     f"{r['weak_scaling_efficiency']:.2f} |")
    lines += ["", "strong = T1(64) / (2·T2(32)); weak = T1(64) / T2(64); 1.0 is "
              "perfect scaling. The gradient average is timed on rank 0 from the end "
              "of its backward: it includes waiting for the slower rank, not only the "
              "transfer. With as many cores as processes, anything else running on the "
              "machine (a load average above the core count) takes cores from the "
              "ranks, and a rank that loses its core stalls the other at the next "
              "all_reduce."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, "
                        "2 GPUs) (default: cpu)")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per "
                        "measurement (default: 50)")
    parser.add_argument("--out", default=str(RESULTS), help="directory for "
                        "distributed.json and distributed.md (default: "
                        "benchmarks/results)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.device, args.steps, Path(args.worker_out))
        return
    if args.device.startswith("cuda") and torch.cuda.device_count() < 2:
        raise SystemExit("--device cuda needs 2 GPUs for 2 NCCL processes")
    report = run(args.device, args.steps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "distributed.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "distributed.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
