"""``python -m bnlib grade path/to/file.py:ClassName``: grade a from-scratch BN layer.

The class is loaded from the file, graded by :func:`bnlib.grade_batchnorm` against torch's
``BatchNorm1d``/``BatchNorm2d``, and the report printed. Exit status 0 when every check passes,
1 when one fails, 2 when the layer cannot be loaded (a one-line message, no traceback).
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import sys
from pathlib import Path

from torch import nn

from bnlib.grading.report import grade_batchnorm

__all__ = ["LoadError", "add_grade_parser", "load_layer_class", "run_grade"]

_DESCRIPTION = """\
Grade a batch-normalisation layer written from scratch against torch.nn.BatchNorm1d/2d, in
float64: training output and gradients, eval mode, running statistics over several steps,
num_batches_tracked, the state dict, a batch of one, and the keywords eps, momentum (also None),
affine=False and track_running_stats=False (a keyword the constructor refuses is reported as
not supported). Each failed check names the likely mistake and where the book explains it.
"""

_EPILOG = """\
examples:
  python -m bnlib grade my_bn.py:MyBatchNorm
  python -m bnlib grade my_bn.py:MyBatchNorm1d --dims 1

The class is called as ClassName(num_features, **keywords), like torch's. Exit status: 0 when
every check passes, 1 when a check fails, 2 when the file or class cannot be loaded.
"""


class LoadError(Exception):
    """The layer class cannot be loaded; the message says why, in one line."""


def add_grade_parser(commands) -> None:
    """Add the ``grade`` subcommand to ``python -m bnlib``'s subparsers."""
    parser = commands.add_parser(
        "grade", help="grade a from-scratch batch-norm layer against torch's",
        description=_DESCRIPTION, epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("layer", metavar="FILE.py:CLASS",
                        help="the Python file and the nn.Module subclass in it to grade")
    parser.add_argument("--dims", type=int, nargs="+", choices=(1, 2), default=[1, 2],
                        help="input ranks to grade: 1 for (N, C) inputs (against BatchNorm1d), "
                             "2 for (N, C, H, W) inputs (against BatchNorm2d) "
                             "(default: 1 2)")
    parser.set_defaults(command_parser=parser)


def _import_file(path: Path):
    """Run the file as a module named after it; its folder is importable while it runs."""
    spec = importlib.util.spec_from_file_location(f"bnlib_graded_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        raise LoadError(f"{path}:{error.lineno}: syntax error: {error.msg}") from None
    except Exception as error:  # noqa: BLE001  anything the file raises while it is imported
        raise LoadError(f"importing {path} raised {type(error).__name__}: {error}") from None
    finally:
        sys.path.remove(str(path.parent))
    return module


def load_layer_class(target: str) -> type[nn.Module]:
    """The class named by ``path/to/file.py:ClassName``; LoadError when it cannot be had."""
    file_name, colon, class_name = target.rpartition(":")
    if not colon or not file_name or not class_name:
        raise LoadError(f"expected FILE.py:CLASS, got {target!r}")
    path = Path(file_name)
    if not path.is_file():
        raise LoadError(f"no such file: {path}")
    module = _import_file(path)
    found = getattr(module, class_name, None)
    if found is None:
        names = sorted(name for name, value in vars(module).items()
                       if inspect.isclass(value) and issubclass(value, nn.Module)
                       and value.__module__ == module.__name__)
        raise LoadError(f"{path} has no {class_name!r}; its nn.Module classes: "
                        f"{', '.join(names) or 'none'}")
    if not (inspect.isclass(found) and issubclass(found, nn.Module)):
        raise LoadError(f"{class_name} in {path} is not an nn.Module subclass")
    return found


def run_grade(args: argparse.Namespace) -> int:
    """Load, grade and print; the exit status (0 all passed, 1 a check failed, 2 bad input)."""
    try:
        layer_class = load_layer_class(args.layer)
    except LoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report = grade_batchnorm(layer_class, dims=tuple(dict.fromkeys(args.dims)))
    print(report)
    return 0 if report.passed else 1
