"""Loss curves of a ``scratchnet compare`` run, drawn with matplotlib (Agg: no
display needed).

Left: the loss of every training step, scratchnet and torch.nn drawn over each
other (when the two agree, only one line is visible — the dashed torch line lies
on the solid scratchnet one). Middle: the mean loss per epoch. Right: how far
apart the two per-step losses are, |scratchnet − torch| on a log scale (exact
ties are drawn at the floor, 1e-17), which the first two panels cannot show.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

SIDES = (("scratchnet", "tab:blue", "-"), ("torch", "tab:orange", "--"))


def plot_loss_curves(results: Mapping[str, Mapping[str, Sequence[float]]],
                     path: str | os.PathLike, title: str = "") -> Path:
    """Write a PNG of both sides' per-step and per-epoch losses.

    Args:
        results: ``{"scratchnet": {"step_loss": [...], "epoch_loss": [...]},
            "torch": {...}}``.
        path: where the PNG goes (its folder is created).
        title: the figure's title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (steps_axes, epochs_axes, diff_axes) = plt.subplots(1, 3, figsize=(15, 4),
                                                                dpi=100)
    for side, color, style in SIDES:
        step_loss = results[side]["step_loss"]
        epoch_loss = results[side]["epoch_loss"]
        steps_axes.plot(range(1, len(step_loss) + 1), step_loss, style, color=color,
                        linewidth=0.8, label=side)
        epochs_axes.plot(range(1, len(epoch_loss) + 1), epoch_loss, style, color=color,
                         marker="o", label=side)
    floor = 1e-17
    differences = [max(abs(a - b), floor) for a, b in zip(
        results["scratchnet"]["step_loss"], results["torch"]["step_loss"], strict=True)]
    diff_axes.semilogy(range(1, len(differences) + 1), differences, ".",
                       color="tab:red", markersize=2, label="|scratchnet − torch| (0 drawn at 1e-17)")
    steps_axes.set(xlabel="step", ylabel="training loss", title="per step")
    epochs_axes.set(xlabel="epoch", ylabel="mean training loss", title="per epoch",
                    xticks=range(1, len(results["scratchnet"]["epoch_loss"]) + 1))
    diff_axes.set(xlabel="step", ylabel="absolute difference",
                  title="per-step loss difference")
    for axes, key in ((steps_axes, "step_loss"), (epochs_axes, "epoch_loss")):
        # from 0: the curves' scale, not the rounding-sized gap between them
        top = max(max(results[side][key]) for side, _, _ in SIDES)
        axes.set_ylim(0, 1.08 * top if top > 0 else 1)
    for axes in (steps_axes, epochs_axes, diff_axes):
        axes.grid(alpha=0.3)
        axes.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    plt.close(figure)
    return path
