"""bnlib 0.1's flat module paths and dropped top-level names still work for one release: they give
the same objects as their new places, with a DeprecationWarning that names the new path."""

import importlib
import subprocess
import sys
import warnings

import pytest

import bnlib
from bnlib import _moved

MOVED = sorted(_moved.MOVED_MODULES.items())


def forget(name):
    """Drop an old path from the import caches, so that importing it runs the alias again."""
    sys.modules.pop(name, None)
    bnlib.__dict__.pop(name.rpartition(".")[2], None)


@pytest.mark.parametrize("old, new", MOVED, ids=[old for old, _ in MOVED])
def test_an_old_module_path_warns_and_is_the_new_module(old, new):
    forget(old)
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated.*use {new}$"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    forget(old)


def test_from_an_old_path_gives_the_same_objects_and_names_the_caller():
    forget("bnlib.layers")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from bnlib.layers import linear_forward
    from bnlib.by_hand.layers import linear_forward as new
    assert linear_forward is new
    assert [w.filename for w in caught] == [__file__]
    forget("bnlib.layers")


def test_an_old_module_as_an_attribute_of_bnlib_warns():
    forget("bnlib.parallel")
    with pytest.warns(DeprecationWarning, match="use bnlib.training.processes"):
        module = bnlib.parallel
    assert module.map_in_processes is bnlib.map_in_processes
    forget("bnlib.parallel")


@pytest.mark.parametrize("name, package", sorted(_moved.MOVED_NAMES.items()))
def test_a_dropped_top_level_name_warns_and_is_the_same_object(name, package):
    bnlib.__dict__.pop(name, None)
    with pytest.warns(DeprecationWarning, match=f"bnlib.{name} is deprecated.*use {package}.{name}"):
        value = getattr(bnlib, name)
    assert value is getattr(importlib.import_module(package), name)
    bnlib.__dict__.pop(name, None)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        bnlib.no_such_name  # noqa: B018
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("bnlib.no_such_module")


def test_importing_bnlib_imports_neither_matplotlib_nor_an_old_path():
    code = ("import sys, warnings; warnings.simplefilter('error'); import bnlib; "
            "assert 'matplotlib' not in sys.modules; "
            "assert not set(sys.modules) & set(bnlib._moved.MOVED_MODULES); "
            "bnlib.plot_sweep; assert 'matplotlib' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_top_level_name_is_importable_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in bnlib.__all__:
            getattr(bnlib, name)
