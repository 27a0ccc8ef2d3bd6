"""Command line: ``python -m bnlib compare`` reruns the batch-normalisation experiment, and
``python -m bnlib grade`` grades a from-scratch BN layer (:mod:`bnlib.grading.cli`).

Two 784-32-32-10 ReLU networks, one with batch normalisation before each activation and one
without, train in lockstep on the same batches of MNIST; both are evaluated on the full test set
after every epoch. The command prints a per-epoch table and writes ``curves.png`` and
``history.json`` into the output folder.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import math
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from bnlib.data import MNIST, DataError, load_mnist
from bnlib.data.download import write_atomically
from bnlib.engine import ENGINES
from bnlib.grading.cli import add_grade_parser, run_grade
from bnlib.models import build_mlp
from bnlib.training import History, TrainConfig, check_device, compare

__all__ = ["build_parser", "main"]

_COMPARE_DESCRIPTION = """\
Train two 784-32-32-10 ReLU networks on MNIST, one with batch normalisation before each
activation and one without, in lockstep on the same batches; evaluate both on the full test set
after every epoch. Prints a per-epoch table and writes curves.png and history.json into --out.
"""

_EPILOG = """\
examples:
  python -m bnlib compare --epochs 10 --batch-size 32 --lr 0.01 --out results
  python -m bnlib compare --epochs 1 --train-subset 5000 --threads 1 --no-progress
  python -m bnlib compare --epochs 1 --engine autograd

MNIST is read from DIR/MNIST/raw/ (--data-dir), else from $BNLIB_DATA, else from
~/.cache/bnlib; missing files are downloaded unless --no-download is given.

Bad input (an impossible setting, an unavailable --device, an --out that cannot be written, a
missing, corrupt or unreadable data set) ends with exit status 2 and a message saying how to fix
it, before any training. Ctrl-C during training writes the epochs that finished and exits with
status 130. history.json is strict JSON: a value that is not finite (a run that diverged) is
written as null.
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _subset_size(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(
            f"expected an integer >= 2 (a batch-normalised step needs two images), got {text}")
    return value


def _learning_rate(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text}")
    return value


def _add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    add = parser.add_argument
    add("--epochs", type=_positive_int, default=defaults.epochs,
        help="passes over the training set (default: %(default)s)")
    add("--batch-size", type=int, default=defaults.batch_size,
        help="examples per step, at least 2 (default: %(default)s)")
    add("--lr", type=_learning_rate, default=defaults.lr,
        help="learning rate (default: %(default)s)")
    add("--optimizer", choices=("adam", "sgd"), default=defaults.optimizer,
        help="optimizer of both models (default: %(default)s)")
    add("--momentum", type=float, default=defaults.momentum,
        help="momentum of sgd (default: %(default)s)")
    add("--seed", type=int, default=defaults.seed,
        help="seed of the weights and of the batch order (default: %(default)s)")
    add("--bn", choices=("torch", "bnlib"), default="torch",
        help="batch-norm layer: torch.nn.BatchNorm1d or bnlib's (default: %(default)s)")
    add("--data-dir", metavar="DIR", default=None,
        help="dataset root holding MNIST/raw/ (default: $BNLIB_DATA, else ~/.cache/bnlib)")
    add("--no-download", action="store_true",
        help="fail instead of downloading missing MNIST files")
    add("--out", metavar="DIR", default="results",
        help="folder for curves.png and history.json, created if needed (default: %(default)s)")
    add("--device", default=None,
        help="torch device such as cpu or cuda, checked to exist here "
             "(default: cuda when available, else cpu)")
    add("--threads", type=_positive_int, default=1,
        help="CPU threads for torch (torch.set_num_threads). One is fastest for these small "
             "networks, whose operations are too short to share (default: %(default)s)")
    add("--train-subset", metavar="N", type=_subset_size, default=None,
        help="train on the first N training images only, N >= 2 (default: all 60,000)")
    add("--engine", choices=ENGINES, default=defaults.engine,
        help="how a training step is computed: manual (hand-written forward and backward, "
             "faster for these small networks), autograd (the model's forward and "
             "loss.backward()), or auto, which picks manual for every network it supports "
             "(both networks here); the two give the same results up to float32 rounding "
             "(default: %(default)s)")
    add("--no-progress", action="store_true", help="hide the progress bar")


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of ``python -m bnlib``, with the ``compare`` and ``grade``
    subcommands."""
    parser = argparse.ArgumentParser(
        prog="python -m bnlib",
        description="Batch normalisation experiments on MNIST, and a grader for BN layers "
                    "written from scratch.",
        epilog="run 'python -m bnlib compare --help' for the experiment's options and "
               "'python -m bnlib grade --help' for the grader's")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    compare_parser = commands.add_parser(
        "compare", help="train an MLP with and without batch norm, side by side",
        description=_COMPARE_DESCRIPTION, epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_compare_arguments(compare_parser)
    compare_parser.set_defaults(command_parser=compare_parser)
    add_grade_parser(commands)
    return parser


def format_table(histories: Mapping[str, History]) -> str:
    """One row per epoch and model: training and test loss and accuracy."""
    width = max(len("model"), *(len(name) for name in histories))
    lines = [f"{'epoch':>5}  {'model':<{width}}  {'train loss':>10}  {'train acc':>9}  "
             f"{'test loss':>9}  {'test acc':>8}"]
    epochs = len(next(iter(histories.values())).test_acc)
    for epoch in range(epochs):
        for name, h in histories.items():
            lines.append(f"{epoch + 1:>5}  {name:<{width}}  {h.train_loss[epoch]:>10.4f}  "
                         f"{h.train_acc[epoch]:>9.4f}  {h.test_loss[epoch]:>9.4f}  "
                         f"{h.test_acc[epoch]:>8.4f}")
    return "\n".join(lines)


def _check_out(out: Path) -> None:
    """ValueError unless ``out`` is, or can become, a folder this process can write into.

    Checked before the data are read, so that a run is never trained and then lost. Nothing is
    left behind: writability is probed by making and removing an empty folder.
    """
    fix = "give --out a folder you can write to (it is created if needed)"
    existing = next(folder for folder in (out, *out.absolute().parents) if folder.exists())
    if not existing.is_dir():
        problem = "is a file" if existing == out else f"lies under the file {existing}"
        raise ValueError(f"--out {out} {problem}; {fix}")
    for name in ("history.json", "curves.png"):
        if (out / name).is_dir():
            raise ValueError(f"--out {out}: {out / name} is a folder; {fix}")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".bnlib-probe-", dir=existing))
    except OSError as error:
        reason = error.strerror or str(error)
        raise ValueError(f"--out {out}: cannot write into {existing} ({reason}); {fix}") from None


def _save_results(out: Path, histories: Mapping[str, History], config: TrainConfig,
                  args: argparse.Namespace, epochs_done: int) -> None:
    record = {"config": asdict(config), "bn": args.bn, "train_subset": args.train_subset,
              "epochs_done": epochs_done,
              "histories": {name: h.to_dict() for name, h in histories.items()}}
    text = json.dumps(record, indent=2, allow_nan=False) + "\n"
    write_atomically(out / "history.json", text.encode())
    from bnlib.plotting.histories import (
        plot_comparison,  # matplotlib's import is paid only when drawing
    )

    image = io.BytesIO()
    plot_comparison(histories).savefig(image, format="png", dpi=120)
    write_atomically(out / "curves.png", image.getvalue())


def _config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the arguments ask for; ValueError on an impossible setting."""
    check_device(args.device)
    _check_out(Path(args.out))
    return TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                       optimizer=args.optimizer, momentum=args.momentum, seed=args.seed,
                       device=args.device, progress=not args.no_progress, engine=args.engine)


def _load(args: argparse.Namespace) -> tuple[MNIST, MNIST]:
    """The training and test sets; DataError (or OSError) when they cannot be read."""
    train_set = load_mnist("train", root=args.data_dir, download=not args.no_download)
    test_set = load_mnist("test", root=args.data_dir, download=not args.no_download)
    if args.train_subset is not None:
        if args.train_subset > len(train_set):
            args.command_parser.error(f"--train-subset {args.train_subset}: the training set has "
                                      f"only {len(train_set)} images; give at most that many")
        train_set = train_set.subset(args.train_subset)
    return train_set, test_set


def _run_compare(args: argparse.Namespace, config: TrainConfig, data: tuple[MNIST, MNIST]) -> int:
    """Train, print the table and write the results; after Ctrl-C, keep the finished epochs."""
    models = {"BN": build_mlp(norm=args.bn, seed=args.seed),
              "no BN": build_mlp(norm="none", seed=args.seed)}
    finished: dict[str, History] = {}
    epochs_done = 0

    def keep(epochs: int, histories: Mapping[str, History]) -> None:
        nonlocal epochs_done
        finished.update(copy.deepcopy(dict(histories)))
        epochs_done = epochs

    out = Path(args.out)
    try:
        compare(models, *data, config, on_epoch=keep)
    except KeyboardInterrupt:
        if not epochs_done:
            print("interrupted before the first epoch ended; nothing was written", file=sys.stderr)
            return 130
        status = 130
    else:
        status = 0
    print(format_table(finished))
    out.mkdir(parents=True, exist_ok=True)
    _save_results(out, finished, config, args, epochs_done)
    written = f"{out / 'curves.png'} and {out / 'history.json'}"
    if status:
        print(f"interrupted after {epochs_done} of {config.epochs} epochs; wrote the finished "
              f"epochs to {written}", file=sys.stderr)
    else:
        print(f"wrote {written}")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    Every bad input ends before any training, with a message that says what to fix and exit
    status 2: bad arguments (an impossible setting, an unavailable ``--device``, an ``--out``
    that cannot be written) through argparse's ``SystemExit(2)`` after a usage message; a
    missing, corrupt or unreadable data set by printing the reason on stderr and returning 2.
    Ctrl-C during training writes the epochs that finished and returns 130. ``grade`` returns
    0 when every check passes, 1 when one fails and 2 when the layer cannot be loaded.

    Args:
        argv: arguments without the program name. Default: ``None`` (``sys.argv[1:]``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "grade":
        return run_grade(args)
    try:
        config = _config(args)
    except ValueError as error:
        args.command_parser.error(str(error))
    torch.set_num_threads(args.threads)
    try:
        data = _load(args)
    except (DataError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted while reading the data; nothing was written", file=sys.stderr)
        return 130
    return _run_compare(args, config, data)
