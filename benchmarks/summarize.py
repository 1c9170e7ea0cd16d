"""Summarise several benchmark runs: the median over runs of each side's step time
and ratios, with their range, as a markdown table.

One run's medians can be off by tens of percent on a shared machine (a noisy
neighbour for a few seconds slows every side of a cell, the floor included), so
the README quotes the median of several runs (forty, in two sets of twenty; about
40 s a run)::

    for i in $(seq 20); do
        scratchnet bench --models NeuralNetwork --batches 64,4096 --compile-batches 64 \\
            --no-epoch --no-memory --name run$i --out benchmarks/results/repeats
    done
    python benchmarks/summarize.py benchmarks/results/repeats/run*.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

RATIOS = (("step_ms", "ms"), ("vs_torch", "× torch"), ("vs_torch_fused", "× fused"),
          ("vs_floor", "× floor"))


def collect(paths: list[Path]) -> dict[tuple, dict[str, list[float]]]:
    """(model, batch, denormals, side) → {figure: [one value per run]}."""
    table: dict[tuple, dict[str, list[float]]] = {}
    for path in paths:
        for cell in json.loads(path.read_text())["cells"]:
            flushed = "flushed" if cell["denormals_flushed"] else "kept"
            for side, values in cell["sides"].items():
                row = table.setdefault((cell["model"], cell["batch"], flushed, side), {})
                ratios = cell["ratios"][side]
                figures = {"step_ms": values["step_ms"],
                           "vs_torch": ratios.get("vs_torch", 1.0),
                           "vs_torch_fused": ratios.get("vs_torch_fused", 1.0),
                           "vs_floor": ratios["vs_floor"]}
                for key, value in figures.items():
                    row.setdefault(key, []).append(value)
    return table


def markdown(table: dict[tuple, dict[str, list[float]]], runs: int) -> str:
    lines = [f"Median over {runs} runs (range in brackets).", "",
             "| model | batch | denormals | side | "
             + " | ".join(label for _, label in RATIOS) + " |",
             "|" + "---|" * (4 + len(RATIOS))]
    for (model, batch, flushed, side), row in table.items():
        cells = [f"{statistics.median(row[key]):.2f} ({min(row[key]):.2f}–"
                 f"{max(row[key]):.2f})" for key, _ in RATIOS]
        lines.append(f"| {model} | {batch} | {flushed} | {side} | " + " | ".join(cells)
                     + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path,
                        help="results JSON files written by scratchnet bench")
    args = parser.parse_args(argv)
    print(markdown(collect(args.results), len(args.results)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
