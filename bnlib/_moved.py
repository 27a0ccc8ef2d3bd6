"""The module paths and top-level names of bnlib 0.1, kept for one release as aliases that warn.

bnlib 0.1 was 40 flat modules; 0.2 groups them into sub-packages (``bnlib.nn``,
``bnlib.by_hand``, ``bnlib.engine``, ...). Importing an old path, such as ``bnlib.layers``, gives
the module at its new path, ``bnlib.by_hand.layers`` (the same module object, so the same
functions and classes), with a ``DeprecationWarning`` that names the new path. The same goes for
the top-level names that moved to a sub-package (``bnlib.plot_sweep``, ...). Both tables go in
the next release.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

__all__ = ["LAZY_NAMES", "MOVED_MODULES", "MOVED_NAMES", "install", "moved_name"]

# Old module path -> new module path. The old paths that are now packages (bnlib.data,
# bnlib.training, bnlib.engine, bnlib.diagnostics, bnlib.plotting, bnlib.grading) need no alias:
# each package exports what its old module did, from its own group.
MOVED_MODULES = {
    "bnlib.batch_renorm": "bnlib.nn.renorm",
    "bnlib.batched": "bnlib.engine.stacked",
    "bnlib.batchnorm": "bnlib.nn.batchnorm",
    "bnlib.bn_registry": "bnlib.nn.registry",
    "bnlib.channels": "bnlib.nn._channels",
    "bnlib.cli_grade": "bnlib.grading.cli",
    "bnlib.data_parallel": "bnlib.training.data_parallel",
    "bnlib.device": "bnlib.training.device",
    "bnlib.distributed": "bnlib.training.distributed",
    "bnlib.download": "bnlib.data.download",
    "bnlib.engine_layers": "bnlib.engine.steps",
    "bnlib.engine_support": "bnlib.engine.support",
    "bnlib.frozen": "bnlib.nn.frozen",
    "bnlib.functional": "bnlib.nn.functional",
    "bnlib.fusion": "bnlib.inference.fusion",
    "bnlib.ghost_batchnorm": "bnlib.nn.ghost",
    "bnlib.gradcheck": "bnlib.by_hand.gradcheck",
    "bnlib.grading_checks": "bnlib.grading.checks",
    "bnlib.grading_mistakes": "bnlib.grading.mistakes",
    "bnlib.grading_probes": "bnlib.grading.probes",
    "bnlib.grading_running": "bnlib.grading.running",
    "bnlib.groupnorm": "bnlib.nn.groupnorm",
    "bnlib.history": "bnlib.training.history",
    "bnlib.idx": "bnlib.data.idx",
    "bnlib.landscape": "bnlib.diagnostics.landscape",
    "bnlib.layernorm": "bnlib.nn.layernorm",
    "bnlib.layers": "bnlib.by_hand.layers",
    "bnlib.manual_backward": "bnlib.nn.autograd",
    "bnlib.mnist_files": "bnlib.data.files",
    "bnlib.optim": "bnlib.engine.optim",
    "bnlib.optim_steps": "bnlib.by_hand.optim",
    "bnlib.parallel": "bnlib.training.processes",
    "bnlib.plot_diagnostics": "bnlib.plotting.diagnostics",
    "bnlib.recalibrate": "bnlib.inference.recalibrate",
    "bnlib.shifts": "bnlib.data.shifts",
    "bnlib.stacked_optim": "bnlib.by_hand.stacked_optim",
    "bnlib.sweep": "bnlib.training.sweep",
    "bnlib.sync_batchnorm": "bnlib.nn.sync",
}

# Top-level names of bnlib 0.1 that now live only in their sub-package: name -> module.
MOVED_NAMES = {
    "BatchNormFunction": "bnlib.nn",
    "brightness": "bnlib.data",
    "contrast": "bnlib.data",
    "data_root": "bnlib.data",
    "default_device": "bnlib.training",
    "group_norm": "bnlib.nn",
    "invert": "bnlib.data",
    "layer_norm": "bnlib.nn",
    "numerical_gradient": "bnlib.by_hand",
    "relative_error": "bnlib.by_hand",
    "plot_histories": "bnlib.plotting",
    "plot_step_loss": "bnlib.plotting",
}

# The figures the chapters draw, importable from the top level but imported at their first use
# (matplotlib is slow to import, and `import bnlib` should not pay for it).
LAZY_NAMES = ("plot_activation_histograms", "plot_comparison", "plot_depth_sweep",
              "plot_gradient_histograms", "plot_saturation", "plot_seed_spread", "plot_sweep",
              "plot_update_ratios")


def _warn(old: str, new: str) -> None:
    # The warning is charged to the first frame outside this module, bnlib/__init__.py and the
    # import machinery, so that it names the line that used the old path. warnings.warn skips
    # the import machinery's frames itself: only this package's frames are counted.
    inside = (__file__, sys.modules["bnlib"].__file__)
    level, frame = 2, sys._getframe(1)  # stacklevel 2 is the frame that called _warn
    while frame is not None and (frame.f_code.co_filename.startswith("<frozen importlib")
                                 or frame.f_code.co_filename in inside):
        if frame.f_code.co_filename in inside:
            level += 1
        frame = frame.f_back
    warnings.warn(f"{old} is deprecated and goes in the next release; use {new}",
                  DeprecationWarning, stacklevel=level)


class _AliasLoader(importlib.abc.Loader):
    """Loads an old path as the module at its new path."""

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # a placeholder module, replaced by the real one in exec_module

    def exec_module(self, module: ModuleType) -> None:
        new = MOVED_MODULES[module.__name__]
        _warn(module.__name__, new)
        # The import system returns what sys.modules holds under the old name once this returns:
        # the module at the new path itself, not a copy.
        sys.modules[module.__name__] = importlib.import_module(new)


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Finds the old module paths of :data:`MOVED_MODULES`, and nothing else."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED_MODULES:
            return importlib.machinery.ModuleSpec(fullname, _AliasLoader())
        return None


def install() -> None:
    """Put the finder of old paths on ``sys.meta_path``, once."""
    if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())  # before any finder that might hold old files


def moved_name(name: str):
    """The object a lazy or moved top-level name names (a moved one with a warning);
    ``AttributeError`` for a name that never was one."""
    if name in LAZY_NAMES:
        return getattr(importlib.import_module("bnlib.plotting"), name)
    if f"bnlib.{name}" in MOVED_MODULES:  # an old module used as an attribute: bnlib.layers
        return importlib.import_module(f"bnlib.{name}")
    if name not in MOVED_NAMES:
        raise AttributeError(f"module 'bnlib' has no attribute {name!r}")
    new = MOVED_NAMES[name]
    _warn(f"bnlib.{name}", f"{new}.{name}")
    return getattr(importlib.import_module(new), name)
