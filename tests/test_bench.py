"""scratchnet.bench (``scratchnet bench``): the harness runs end to end at tiny
settings and writes JSON and markdown of the documented structure; its
correctness check fails a run whose scratchnet model is wrong. No timing is
asserted: timings belong to the benchmark, never to a test.
"""

from __future__ import annotations

import json

import pytest
import torch

import scratchnet.bench as bench
from scratchnet.bench import BenchConfig, BenchmarkError, run_benchmark, write_results
from scratchnet.cli import build_parser


def _tiny(**overrides) -> BenchConfig:
    values = {"name": "tiny", "models": ("784-16-10",), "batches": (1, 3), "repeats": 3,
              "warmup": 1, "budget_s": 0.5, "threads": 1, "compile": False,
              "state_warmup_steps": 3,
              "epoch": False, "memory": False, "data": "synthetic"}
    values.update(overrides)
    return BenchConfig(**values)


def test_tiny_run_writes_json_and_markdown_of_the_documented_structure(tmp_path):
    results = run_benchmark(_tiny(), log=lambda line: None)
    json_path, md_path = write_results(results, tmp_path)
    loaded = json.loads(json_path.read_text())
    assert loaded["name"] == "tiny"
    assert {"cpu_model", "threads", "torch", "torch_config"} <= set(loaded["machine"])
    warm = loaded["warm_state"]["784-16-10"]
    assert warm["steps"] == 3 and set(warm["subnormal_share"]) == {"exp_avg", "exp_avg_sq"}
    cells = loaded["cells"]
    assert [(c["batch"], c["denormals_flushed"]) for c in cells] == [
        (1, False), (3, False), (1, True), (3, True)]
    for cell in cells:
        assert set(cell["sides"]) == {"torch", "torch_fused", "tape", "fast"}
        for name, side in cell["sides"].items():
            flags = {"updated_in_backward"} if name == "fast" else set()
            assert set(side) == {f"{phase}_ms" for phase in bench.PHASES} | {
                "step_min_ms"} | flags
            assert all(value > 0 for key, value in side.items() if key not in flags)
        assert cell["sides"]["fast"]["updated_in_backward"] is False  # eager Adam
        assert cell["floor"]["products"] == 5  # 2 Linears: 2 forward, 2 dW, 1 dx
        assert cell["floor"]["total_ms"] > 0
        assert set(cell["ratios"]["fast"]) == {"vs_torch", "vs_torch_fused", "vs_tape",
                                               "vs_floor"}
        assert all(check["ok"] for check in cell["correctness"].values())
    table = md_path.read_text()
    assert "| 784-16-10 | 3 | flushed | fast |" in table
    assert "*floor*" in table


def test_every_side_starts_from_the_warm_state():
    """All sides take torch.nn's weights and Adam state after the warm-up steps
    (not the initial weights): same values, and Adam's step counter carried on."""
    config = _tiny()
    model_state, optimizer_state, _ = bench.warm_start(config, "784-16-10")
    sides = bench._make_sides(config, "784-16-10", 3, only=("torch_fused", "tape", "fast"))
    for name, side in sides.items():
        for key, value in side.model.state_dict().items():
            assert torch.equal(value.as_subclass(torch.Tensor), model_state[key]), (
                f"{name}: {key}")
        steps = {float(state["step"]) for state in side.optimizer.state.values()}
        assert steps == {3.0}, f"{name}: Adam steps {steps}"
    # load_state_dict takes the saved groups' options; the fused side stays fused
    assert sides["torch_fused"].optimizer.param_groups[0]["fused"] is True


def test_a_wrong_scratchnet_model_fails_the_correctness_check(monkeypatch):
    from scratchnet.train import build_model

    def wrong_model(name):  # tanh where torch.nn's model has ReLU
        return build_model(name, "scratchnet", activation="tanh")

    monkeypatch.setattr(bench, "build_scratchnet_model", wrong_model)
    with pytest.raises(BenchmarkError, match="differs from torch.nn"):
        run_benchmark(_tiny(models=("784-16-16-10",), batches=(2,), denormals=(False,)),
                      log=lambda line: None)


def test_command_line_options_reach_the_config():
    args = build_parser().parse_args(
        ["bench", "--quick", "--batches", "1,8", "--threads", "1", "--denormals",
         "flushed", "--synthetic", "--no-memory", "--name", "x"])
    config = bench.config_from_args(args)
    assert config.batches == (1, 8) and config.threads == 1
    assert config.denormals == (True,) and config.data == "synthetic"
    assert config.memory is False and config.compile is False  # --quick: no compile
    assert config.name == "x"
    args = build_parser().parse_args(["bench", "--compile-batches", "64,256"])
    assert bench.config_from_args(args).compile_batches == (64, 256)


def test_torch_compile_is_a_side_at_every_batch_unless_limited():
    """The issue's peers at every batch size: torch.compile too, by default."""
    def sides(**overrides):
        config = _tiny(**{"compile": True, "state_warmup_steps": 0, **overrides})
        return {batch: set(bench._make_sides(config, "784-16-10", batch,
                                             only=("torch", "torch_compile")))
                for batch in (1, 3)}
    assert sides() == {1: {"torch", "torch_compile"}, 3: {"torch", "torch_compile"}}
    assert sides(compile_batches=(3,)) == {1: {"torch"}, 3: {"torch", "torch_compile"}}
    assert sides(compile=False, compile_batches=(3,)) == {1: {"torch"}, 3: {"torch"}}


def test_summary_of_several_runs_takes_the_median_and_range(tmp_path):
    """benchmarks/summarize.py: per side and cell, the median over runs and the
    smallest and largest value."""
    import copy
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "summarize.py"
    spec = importlib.util.spec_from_file_location("summarize", path)
    summarize = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summarize)
    run = {"cells": [{"model": "m", "batch": 64, "denormals_flushed": False,
                      "sides": {"fast": {"step_ms": 1.0}},
                      "ratios": {"fast": {"vs_torch": 0.5, "vs_floor": 1.1}}}]}
    paths = []
    for i, step in enumerate((1.0, 3.0, 2.0)):
        changed = copy.deepcopy(run)
        changed["cells"][0]["sides"]["fast"]["step_ms"] = step
        paths.append(tmp_path / f"run{i}.json")
        paths[-1].write_text(json.dumps(changed))
    table = summarize.markdown(summarize.collect(paths), len(paths))
    assert "Median over 3 runs" in table
    assert "| m | 64 | kept | fast | 2.00 (1.00–3.00) | 0.50 (0.50–0.50) |" in table


def test_epoch_rounds_are_interleaved_and_reported_by_their_median(monkeypatch, tmp_path):
    """measure_epoch runs seed, fast, fast_compiled, seed, … and reports each
    pipeline's median round and the median of the per-round speedups (paired:
    a slow spell of the machine in one round slows that round's pipelines)."""
    order = []
    seed_totals = iter([10.0, 30.0, 12.0])  # round 2 was a slow spell
    fast_totals = iter([5.0, 15.0, 4.0])

    def fake_seed(config, root):
        order.append("seed")
        total = next(seed_totals)
        return {"train_seconds": total - 1, "total_seconds": total, "test_accuracy": 84.0}

    def fake_scratchnet(config, root, compiled=False):
        order.append("compiled" if compiled else "fast")
        total = next(fast_totals) if not compiled else 6.0
        return {"train_seconds": total - 1, "total_seconds": total,
                "first_step_seconds": 0.01, "test_accuracy": 85.0}

    monkeypatch.setattr(bench, "_torchvision_root", lambda tmp: tmp_path)
    monkeypatch.setattr(bench, "seed_pipeline_epoch", fake_seed)
    monkeypatch.setattr(bench, "scratchnet_epoch", fake_scratchnet)
    monkeypatch.setattr(bench, "_compile_fast_step", lambda config: 1.5)
    epoch = bench.measure_epoch(_tiny(epoch=True, compile=True, epoch_rounds=3))
    assert order == ["seed", "fast", "compiled"] * 3
    assert epoch["rounds"] == 3 and epoch["compile_seconds"] == 1.5
    assert epoch["seed_pipeline"]["total_seconds"] == 12.0  # median of 10, 30, 12
    assert epoch["seed_pipeline"]["total_seconds_per_round"] == [10.0, 30.0, 12.0]
    assert epoch["scratchnet_fast"]["total_seconds"] == 5.0
    assert epoch["speedup"]["scratchnet_fast"] == 2.0  # median of 2, 2, 3
    assert epoch["speedup_range"]["scratchnet_fast"] == [2.0, 3.0]
    table = "\n".join(bench._epoch_and_memory_lines({"epoch": epoch}))
    assert "| seed_pipeline | 11.00 | 12.00 |  | 84.00% | 10.00, 30.00, 12.00 |" in table
    assert "scratchnet_fast: 2.00× faster than the seed pipeline (median over rounds; " \
        "2.00–3.00)." in table
    assert "(building or loading its Adam loop) ran before the rounds, in 1.50 s" in table


def test_the_results_say_which_adam_loop_fast_compiled_ran(monkeypatch):
    """The C loop with its compiler and flags, or why it was unavailable; and
    in how many cells the step updated each layer inside the backward."""
    from scratchnet import native

    cells = [{"model": "NeuralNetwork", "batch": batch,
              "sides": {"fast_compiled": {"updated_in_backward": inside}}}
             for batch, inside in ((1, False), (64, True))]
    if native.load("adam") is not None:
        notes = bench._adam_loop_notes(_tiny(compile=True), cells)
        assert "Adam ran the C loop" in notes[0] and native.built_with("adam") in notes[0]
        assert "right after that layer's backward" in notes[-1]
        assert "1 of 2 cells" in notes[-1]
    monkeypatch.setattr(native, "_loaded", {"adam": None})
    monkeypatch.setattr(native, "_why_unavailable", {"adam": "no C compiler"})
    notes = bench._adam_loop_notes(_tiny(compile=True), cells[:1])
    assert "the C Adam loop is unavailable (no C compiler); torch.compile's ran" in notes[0]
    assert not any("inside" in note or "right after" in note for note in notes)


def test_the_results_say_how_the_matrix_products_ran(monkeypatch):
    """Through gemm.c with the ways chosen, or torch's ops and why."""
    from scratchnet.native import gemm

    if gemm.why_unavailable(torch.float32) is None:
        gemm.linear_products(64, 784, 512, torch.float32, True)
        note = bench._products_note(_tiny())
        assert "through scratchnet/native/gemm.c" in note
        assert any(f"{way} " in note for way in ("none", "rows", "columns", "kernel"))
    monkeypatch.setattr(gemm, "_why_unavailable", {torch.float32: "gemm.c: no C compiler"})
    assert bench._products_note(_tiny()) == (
        "fast, fast_compiled and the floor: the matrix products ran torch's ops "
        "(gemm.c: no C compiler)")
