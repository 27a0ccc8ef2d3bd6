"""Command line: ``python -m bnlib compare`` reruns the batch-normalisation experiment.

Two 784-32-32-10 ReLU networks, one with batch normalisation before each activation and one
without, train in lockstep on the same batches of MNIST; both are evaluated on the full test set
after every epoch. The command prints a per-epoch table and writes ``curves.png`` and
``history.json`` into the output folder.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from bnlib.data import DataError, load_mnist
from bnlib.download import write_atomically
from bnlib.history import History
from bnlib.models import build_mlp
from bnlib.plotting import plot_comparison
from bnlib.training import TrainConfig, compare

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

MNIST is read from DIR/MNIST/raw/ (--data-dir), else from $BNLIB_DATA, else from
~/.cache/bnlib; missing files are downloaded unless --no-download is given. A missing or
corrupt data set ends with exit status 2 and a message saying how to fix it.
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    add = parser.add_argument
    add("--epochs", type=_positive_int, default=defaults.epochs,
        help="passes over the training set (default: %(default)s)")
    add("--batch-size", type=int, default=defaults.batch_size,
        help="examples per step, at least 2 (default: %(default)s)")
    add("--lr", type=float, default=defaults.lr, help="learning rate (default: %(default)s)")
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
        help="torch device such as cpu or cuda (default: cuda when available, else cpu)")
    add("--threads", type=_positive_int, default=1,
        help="CPU threads for torch (torch.set_num_threads). One is fastest for these small "
             "networks, whose operations are too short to share (default: %(default)s)")
    add("--train-subset", metavar="N", type=_positive_int, default=None,
        help="train on the first N training images only (default: all 60,000)")
    add("--no-progress", action="store_true", help="hide the progress bar")


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of ``python -m bnlib``, with the ``compare`` subcommand."""
    parser = argparse.ArgumentParser(
        prog="python -m bnlib", description="Batch normalisation experiments on MNIST.",
        epilog="run 'python -m bnlib compare --help' for the experiment's options")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    compare_parser = commands.add_parser(
        "compare", help="train an MLP with and without batch norm, side by side",
        description=_COMPARE_DESCRIPTION, epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_compare_arguments(compare_parser)
    compare_parser.set_defaults(command_parser=compare_parser)
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


def _save_results(out: Path, histories: Mapping[str, History], config: TrainConfig,
                  args: argparse.Namespace) -> None:
    out.mkdir(parents=True, exist_ok=True)
    record = {"config": asdict(config), "bn": args.bn, "train_subset": args.train_subset,
              "histories": {name: h.to_dict() for name, h in histories.items()}}
    write_atomically(out / "history.json", (json.dumps(record, indent=2) + "\n").encode())
    image = io.BytesIO()
    plot_comparison(histories).savefig(image, format="png", dpi=120)
    write_atomically(out / "curves.png", image.getvalue())


def _config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the arguments ask for; ValueError on an impossible setting."""
    if args.device is not None and args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available here; use --device cpu")
    return TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                       optimizer=args.optimizer, momentum=args.momentum, seed=args.seed,
                       device=args.device, progress=not args.no_progress)


def _run_compare(args: argparse.Namespace, config: TrainConfig) -> int:
    torch.set_num_threads(args.threads)
    train_set = load_mnist("train", root=args.data_dir, download=not args.no_download)
    test_set = load_mnist("test", root=args.data_dir, download=not args.no_download)
    if args.train_subset is not None:
        train_set = train_set.subset(min(args.train_subset, len(train_set)))
    models = {"BN": build_mlp(norm=args.bn, seed=args.seed),
              "no BN": build_mlp(norm="none", seed=args.seed)}
    histories = compare(models, train_set, test_set, config)
    print(format_table(histories))
    _save_results(Path(args.out), histories, config, args)
    print(f"wrote {Path(args.out) / 'curves.png'} and {Path(args.out) / 'history.json'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    Bad arguments end, as usual with argparse, in ``SystemExit(2)`` after a usage message; a
    missing or corrupt data set prints the reason on stderr and returns 2, without a traceback.

    Args:
        argv: arguments without the program name. Default: ``None`` (``sys.argv[1:]``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = _config(args)
    except ValueError as error:
        args.command_parser.error(str(error))
    try:
        return _run_compare(args, config)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
