"""scratchnet.bench (``scratchnet bench``): the harness runs end to end at tiny
settings and writes JSON and markdown of the documented structure; its
correctness check fails a run whose scratchnet model is wrong. No timing is
asserted: timings belong to the benchmark, never to a test.
"""

from __future__ import annotations

import json

import pytest

import scratchnet.bench as bench
from scratchnet.bench import BenchConfig, BenchmarkError, run_benchmark, write_results
from scratchnet.cli import build_parser


def _tiny(**overrides) -> BenchConfig:
    values = {"name": "tiny", "models": ("784-16-10",), "batches": (1, 3), "repeats": 3,
              "warmup": 1, "budget_s": 0.5, "threads": 1, "compile": False,
              "epoch": False, "memory": False, "data": "synthetic"}
    values.update(overrides)
    return BenchConfig(**values)


def test_tiny_run_writes_json_and_markdown_of_the_documented_structure(tmp_path):
    results = run_benchmark(_tiny(), log=lambda line: None)
    json_path, md_path = write_results(results, tmp_path)
    loaded = json.loads(json_path.read_text())
    assert loaded["name"] == "tiny"
    assert {"cpu_model", "threads", "torch", "torch_config"} <= set(loaded["machine"])
    cells = loaded["cells"]
    assert [(c["batch"], c["denormals_flushed"]) for c in cells] == [
        (1, False), (3, False), (1, True), (3, True)]
    for cell in cells:
        assert set(cell["sides"]) == {"torch", "torch_fused", "tape", "fast"}
        for side in cell["sides"].values():
            assert set(side) == {f"{phase}_ms" for phase in bench.PHASES} | {
                "step_min_ms"}
            assert all(value > 0 for value in side.values())
        assert cell["floor"]["products"] == 5  # 2 Linears: 2 forward, 2 dW, 1 dx
        assert cell["floor"]["total_ms"] > 0
        assert set(cell["ratios"]["fast"]) == {"vs_torch", "vs_torch_fused", "vs_tape",
                                               "vs_floor"}
        assert all(check["ok"] for check in cell["correctness"].values())
    table = md_path.read_text()
    assert "| 784-16-10 | 3 | flushed | fast |" in table
    assert "*floor*" in table


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
