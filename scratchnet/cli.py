"""The ``scratchnet`` command: argument parsing only; the work is in
:mod:`scratchnet.train`.

    scratchnet                  same as ``scratchnet compare``
    scratchnet compare          scratchnet vs torch.nn, side by side, same batches
    scratchnet train            train one backend, checkpoint each epoch, --resume
    scratchnet evaluate --checkpoint PATH
    scratchnet plot-activations --out PATH   seed 000's activations and derivatives
    scratchnet inspect          one batch, layer by layer, scratchnet beside torch.nn

Bad input (an unknown model or dataset, a layer spec that does not fit, a
non-positive lr / epochs / batch size, a corrupt data file or checkpoint, a
checkpoint from another architecture, a missing dataset) prints one line
``scratchnet: error: ...`` on stderr and exits with code 2. ``compare --strict``
exits with 1 when its verdict is DISAGREE (see :func:`scratchnet.train.verdict`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scratchnet.errors import ScratchnetError

PROG = "scratchnet"
EXIT_USAGE = 2


class UsageError(Exception):
    """A command-line mistake argparse found (unknown option, bad int, ...)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but errors become one line (raised, printed by :func:`main`)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


# --------------------------------------------------------------------------------------
# options


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    """The options that define a run. Defaults are None here so ``--resume`` can
    tell an option given on the command line from one left out; the defaults
    themselves live in :class:`scratchnet.train.TrainConfig`."""
    parser.add_argument("--model", help="seed model name (NeuralNetwork, SimpleNN, "
                        "SingleLayerNN, Network, FunctionalNetwork, FCNetwork, "
                        "SequentialNetwork; any case) or a layer spec like "
                        "784-512-512-10 (default: NeuralNetwork)")
    parser.add_argument("--activation", help="hidden-layer activation for layer specs "
                        "and NeuralNetwork/SimpleNN/SingleLayerNN: relu, sigmoid, tanh, "
                        "leaky_relu, gelu, step (default: the model's own)")
    parser.add_argument("--dataset", help="fashion-mnist or mnist "
                        "(default: fashion-mnist)")
    parser.add_argument("--epochs", type=int, help="number of epochs (default: 5)")
    parser.add_argument("--batch-size", type=int, help="training batch size "
                        "(default: 64)")
    parser.add_argument("--lr", type=float, help="learning rate (default: 0.001)")
    parser.add_argument("--optimizer", help="adam, sgd or adamw (default: adam)")
    parser.add_argument("--seed", type=int, help="seed for initial weights and batch "
                        "order (default: 0)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--dtype", help="float32 or float64 (default: float32)")
    parser.add_argument("--limit", type=int, help="train on the first N training "
                        "images only (default: all)")
    parser.add_argument("--data-dir", help="directory holding the IDX files (searched "
                        "first; then $SCRATCHNET_DATA, the user cache, "
                        "/usr/share/datasets/fashion-mnist)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or "
                        "per-epoch lines, only the result")


def _add_distributed_options(parser: argparse.ArgumentParser) -> None:
    """Data parallelism (scratchnet.distributed); under torchrun the processes
    come from torchrun and --nproc stays 1."""
    parser.add_argument("--nproc", type=int, default=1, help="train data-parallel in "
                        "N processes on this machine (gloo on 127.0.0.1, NCCL with "
                        "--device cuda); --batch-size is per process (default: 1)")
    parser.add_argument("--dist-timeout", type=float, default=None, metavar="SECONDS",
                        help="a process that does not answer a collective within "
                        "this time is declared failed, and the others stop naming it "
                        "(default: 60)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="torch.nn rebuilt from scratch, trained "
                     "side by side with torch.nn. With no command, runs `compare`.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    compare = commands.add_parser(
        "compare", help="train with scratchnet and torch.nn from the same weights on "
        "the same batches and compare them epoch by epoch",
        description="Train the model with scratchnet and with torch.nn in lockstep "
        "and print both losses, accuracies, the largest parameter difference and "
        "both times per epoch.")
    _add_training_options(compare)
    compare.add_argument("--out", default="runs/compare", help="output directory "
                         "(default: runs/compare)")
    compare.add_argument("--json", help="where to write the results as JSON "
                         "(default: OUT/compare.json)")
    compare.add_argument("--plot", help="where to write a PNG of both loss curves "
                         "(default: OUT/compare_loss.png)")
    compare.add_argument("--strict", action="store_true", help="exit with code 1 when "
                         "the verdict is DISAGREE (default: 0 once the run completes)")

    train = commands.add_parser(
        "train", help="train one backend, checkpointing every epoch",
        description="Train with one backend; after each epoch write OUT/checkpoint.pt, "
        "OUT/model.pt and OUT/metrics.json.")
    _add_training_options(train)
    train.add_argument("--backend", help="scratchnet or torch (default: scratchnet)")
    train.add_argument("--out", default="runs/train", help="output directory "
                       "(default: runs/train)")
    train.add_argument("--json", help="where to write the metrics as JSON "
                       "(default: OUT/metrics.json)")
    train.add_argument("--fast", action="store_true", help="train with the tape-free "
                       "fast step (scratchnet.fast; same numbers as the tape, "
                       "scratchnet backend only)")
    train.add_argument("--resume", nargs="?", const="", metavar="CHECKPOINT",
                       help="continue from a checkpoint (default: OUT/checkpoint.pt) "
                       "up to --epochs in total, exactly as if never stopped")
    _add_distributed_options(train)

    evaluate = commands.add_parser(
        "evaluate", help="test-set accuracy, per-class accuracy and confusion matrix "
        "of a checkpoint", description="Evaluate a checkpoint (or a bare model.pt "
        "state_dict) on the test set.")
    evaluate.add_argument("--checkpoint", required=True, help="checkpoint.pt written "
                          "by `scratchnet train`, or a bare model.pt state_dict")
    evaluate.add_argument("--model", help="model name or layer spec; needed for a bare "
                          "state_dict, else checked against the checkpoint")
    evaluate.add_argument("--activation", help="hidden-layer activation (with --model "
                          "for a bare state_dict)")
    evaluate.add_argument("--backend", default="scratchnet", help="scratchnet or torch "
                          "(default: scratchnet)")
    evaluate.add_argument("--dataset", help="dataset to evaluate on (default: the "
                          "checkpoint's, else fashion-mnist)")
    evaluate.add_argument("--data-dir", help="directory holding the IDX files")
    evaluate.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    evaluate.add_argument("--json", help="also write the results as JSON here")
    _add_inspect_parser(commands)
    _add_plot_activations_parser(commands)
    _add_bench_parser(commands)
    return parser


def _add_bench_parser(commands: Any) -> None:
    from scratchnet.bench import add_arguments

    bench = commands.add_parser(
        "bench", help="time scratchnet against torch.nn and the machine's floor "
        "(benchmarks/results/NAME.json and .md)", description="Time forward, "
        "backward, optimizer step and whole training step of scratchnet (tape and "
        "fast path) and torch.nn (default Adam, fused Adam, torch.compile), "
        "interleaved in one process, with denormals kept and flushed; check every "
        "side against torch.nn; write JSON and a markdown table.")
    add_arguments(bench)


def _add_plot_activations_parser(commands: Any) -> None:
    plot_activations = commands.add_parser(
        "plot-activations", help="draw seed 000's activation functions (binary step, "
        "sigmoid, tanh, ReLU) with their derivatives to a PNG",
        description="Draw each activation and its derivative, the derivative "
        "computed by scratchnet's own backward (scratchnet.viz.plot_activations).")
    plot_activations.add_argument("--out", default="runs/activations.png",
                                  help="where to write the PNG "
                                  "(default: runs/activations.png)")


def _add_inspect_parser(commands: Any) -> None:
    inspect = commands.add_parser(
        "inspect", help="one batch through scratchnet and torch.nn, layer by layer: "
        "shapes, FLOPs, activation and gradient statistics, and how far apart the "
        "two are", description="Run one batch forward and backward (cross-entropy) "
        "through scratchnet and the torch.nn reference model holding the same "
        "weights, and print a table per layer: output shape, parameters, FLOPs, "
        "activation mean/std/zeros, gradient norms, and the largest difference from "
        "torch.nn (absolute, in ULPs, as a share of the parity tolerance), with a "
        "higher-precision verdict where they differ beyond it.")
    inspect.add_argument("--model", help="model name or layer spec (default: the "
                         "checkpoint's, else NeuralNetwork)")
    inspect.add_argument("--activation", help="hidden-layer activation for layer specs "
                         "and NeuralNetwork/SimpleNN/SingleLayerNN (default: the "
                         "model's own)")
    inspect.add_argument("--checkpoint", help="checkpoint.pt or bare model.pt whose "
                         "weights to load (default: a fresh model from --seed)")
    inspect.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist, "
                         "mnist, or random for uniform random pixels (default: "
                         "fashion-mnist)")
    inspect.add_argument("--batch-size", type=int, default=64, help="images in the "
                         "batch (default: 64)")
    inspect.add_argument("--dtype", help="float32 or float64 (default: the "
                         "checkpoint's, else float32)")
    inspect.add_argument("--seed", type=int, default=0, help="seed for the initial "
                         "weights and the batch (default: 0)")
    inspect.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N "
                         "(default: cpu)")
    inspect.add_argument("--data-dir", help="directory holding the IDX files")
    inspect.add_argument("--eval", action="store_true", help="run the models in eval "
                         "mode (default: training mode, as in a training step)")
    inspect.add_argument("--json", help="also write the report as JSON here")
    inspect.add_argument("--plot", help="also write a PNG of per-layer activation and "
                         "gradient histograms here")


# --------------------------------------------------------------------------------------
# commands


TRAINING_KEYS = ("model", "activation", "dataset", "epochs", "batch_size", "lr",
                 "optimizer", "seed", "device", "dtype", "limit", "data_dir", "backend")


def _config_from_args(args: argparse.Namespace) -> Any:
    from scratchnet.train import TrainConfig

    given = {key: getattr(args, key) for key in TRAINING_KEYS
             if getattr(args, key, None) is not None}
    return TrainConfig(**given).validate()


def run_compare(args: argparse.Namespace) -> int:
    from scratchnet.checkpoint import atomic_write_json
    from scratchnet.plots import plot_loss_curves
    from scratchnet.train import compare

    config = _config_from_args(args)
    out = Path(args.out)
    results = compare(config, quiet=args.quiet)
    json_path = Path(args.json) if args.json else out / "compare.json"
    atomic_write_json(results, json_path)
    plot_path = Path(args.plot) if args.plot else out / "compare_loss.png"
    plot_loss_curves(results, plot_path, title=f"{config.model} on {config.dataset}: "
                     f"scratchnet vs torch.nn ({config.dtype})")
    print(f"results: {json_path}  loss curves: {plot_path}  "
          f"(wall time {results['wall_seconds']:.1f} s)")
    return 1 if args.strict and not results["verdict"]["agree"] else 0


def run_train(args: argparse.Namespace) -> int:
    from scratchnet.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from scratchnet.distributed import DEFAULT_TIMEOUT, launch, process_group_from_env
    from scratchnet.train import fit, resumed_config

    out = Path(args.out)
    resume = None
    if args.resume is not None:
        resume = Path(args.resume) if args.resume else out / CHECKPOINT_NAME
        saved = load_checkpoint(resume)
        requested = {key: getattr(args, key, None) for key in TRAINING_KEYS}
        config = resumed_config(saved["config"], requested, str(resume)).validate()
    else:
        config = _config_from_args(args)
    config.fast = args.fast
    config.validate()
    timeout = args.dist_timeout if args.dist_timeout is not None else DEFAULT_TIMEOUT
    if args.nproc != 1:  # be torchrun: run this same command in N processes
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise UsageError("--nproc cannot be used under torchrun, which already "
                             "started the processes")
        return launch(["-m", "scratchnet", *args.argv, "--nproc", "1"], args.nproc,
                      timeout)
    with process_group_from_env(config.device, timeout) as parallel:
        metrics = fit(config, out, resume=resume, quiet=args.quiet,
                      metrics_path=args.json, parallel=parallel)
    if parallel is None or parallel.is_main:
        print(f"trained {config.model} with {config.backend} for "
              f"{metrics['epochs_done']} epochs: test accuracy "
              f"{metrics['final']['accuracy']:.2f}%  checkpoint: {metrics['checkpoint']}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from scratchnet.checkpoint import atomic_write_json
    from scratchnet.train import evaluate_checkpoint

    report = evaluate_checkpoint(args.checkpoint, model=args.model,
                                 activation=args.activation, backend=args.backend,
                                 dataset=args.dataset, data_dir=args.data_dir,
                                 device=args.device)
    print(format_evaluation(report))
    if args.json:
        atomic_write_json(report, args.json)
    return 0


def format_evaluation(report: dict[str, Any]) -> str:
    """Accuracy, per-class accuracy with class names, and the confusion matrix."""
    classes = report["classes"]
    lines = [f"{report['model']} ({report['backend']}) on {report['dataset']} test set, "
             f"{report['total']} images: accuracy {report['accuracy']:.2f}%, "
             f"mean loss {report['loss']:.6f}", "", "per-class accuracy:"]
    width = max(len(name) for name in classes)
    for name, accuracy in zip(classes, report["per_class_accuracy"], strict=True):
        shown = "  n/a" if accuracy is None else f"{accuracy:6.2f}%"
        lines.append(f"  {name:<{width}}  {shown}")
    lines += ["", "confusion matrix (rows: true class, columns: predicted):"]
    lines.append(" " * (width + 4) + " ".join(f"{i:>5}" for i in range(len(classes))))
    for i, (name, row) in enumerate(zip(classes, report["confusion"], strict=True)):
        lines.append(f"  {i} {name:<{width}} " + " ".join(f"{n:>5}" for n in row))
    return "\n".join(lines)


COMMANDS = {"compare": run_compare, "train": run_train, "evaluate": run_evaluate}


def run_inspect(args: argparse.Namespace) -> int:
    from scratchnet.checkpoint import atomic_write_json
    from scratchnet.inspect import (
        InspectConfig,
        format_report,
        inspect,
        plot_histograms,
    )

    report = inspect(InspectConfig(
        model=args.model, activation=args.activation, checkpoint=args.checkpoint,
        dataset=args.dataset, batch_size=args.batch_size, dtype=args.dtype,
        seed=args.seed, device=args.device, data_dir=args.data_dir,
        eval_mode=args.eval))
    print(format_report(report), flush=True)
    if args.json:
        atomic_write_json(report.to_dict(), args.json)
    if args.plot:
        plot_histograms(report, args.plot)
    return 0


COMMANDS["inspect"] = run_inspect


def run_plot_activations(args: argparse.Namespace) -> int:
    from scratchnet.viz import plot_activations

    print(f"activations: {plot_activations(args.out)}")
    return 0


COMMANDS["plot-activations"] = run_plot_activations


def run_bench(args: argparse.Namespace) -> int:
    from scratchnet.bench import config_from_args, run_benchmark, write_results

    results = run_benchmark(config_from_args(args))
    json_path, md_path = write_results(results, args.out)
    print(f"results: {json_path} and {md_path}")
    return 0


COMMANDS["bench"] = run_bench


def _one_line(message: str) -> str:
    """A multi-line message joined into one line ("a:\n  b\n  c" → "a: b; c")."""
    text = ""
    for part in (line.strip() for line in str(message).splitlines()):
        if part:
            text += part if not text else (" " if text.endswith(":") else "; ") + part
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``scratchnet`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["compare", *argv]
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv  # what --nproc runs again in each process
        return COMMANDS[args.command](args)
    except (UsageError, ScratchnetError) as error:
        print(f"{PROG}: error: {_one_line(str(error))}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `scratchnet compare | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except OSError as error:
        print(f"{PROG}: error: {_one_line(str(error))}", file=sys.stderr)
        return 1
