"""scripts/check_claims.py: a failing hidden assert is reported with its chapter, cell, line and
statement, and the kernel sees the seed offset and the CPU code path it was given."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEADER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# A chapter
"""
CHAPTER = HEADER + """
```{code-cell} ipython3
import os

import torch

import bnlib

seed, = bnlib.seeds(1)
capability = torch.backends.cpu.get_cpu_capability()
```

```{code-cell} ipython3
:tags: [remove-cell]
print(seed, capability)
assert seed < 5, f"seed {seed} is not below 5"
```
"""


def load_script():
    path = ROOT / "scripts" / "check_claims.py"
    spec = importlib.util.spec_from_file_location("check_claims", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def check_claims():
    return load_script()


def test_other_cpu_path_differs_from_the_native_one(check_claims):
    assert check_claims.other_cpu_path("avx512") == "avx2"
    assert check_claims.other_cpu_path("avx2") == "default"


def test_a_failing_assert_is_named_with_chapter_cell_line_and_statement(
        check_claims, tmp_path, monkeypatch, capsys):
    chapter = tmp_path / "chapter.md"
    chapter.write_text(CHAPTER)
    monkeypatch.setattr(check_claims, "check_data", lambda: None)
    monkeypatch.setenv("BNLIB_SEED_OFFSET", "0")
    assert check_claims.main(["--offset", "0", "--cpu", "default", str(chapter)]) == 0
    assert check_claims.main(["--offset", "7", "--cpu", "default", str(chapter)]) == 1
    output = capsys.readouterr().out
    assert_line = CHAPTER.splitlines().index('assert seed < 5, f"seed {seed} is not below 5"') + 1
    assert f"{chapter}, cell 2 (line {assert_line}): assert seed < 5" in output
    assert "AssertionError: seed 7 is not below 5" in output
    assert "CPU path default" in output


def test_the_kernel_runs_on_the_cpu_path_it_was_given(check_claims, tmp_path, monkeypatch):
    chapter = tmp_path / "chapter.md"
    chapter.write_text(HEADER + """
```{code-cell} ipython3
import torch
assert torch.backends.cpu.get_cpu_capability() == "DEFAULT"
```
""")
    monkeypatch.setattr(check_claims, "check_data", lambda: None)
    assert check_claims.main(["--offset", "0", "--cpu", "default", str(chapter)]) == 0


def test_bad_arguments_exit_with_status_2(check_claims, capsys):
    for argv in (["--offset", "-1"], ["no/such/chapter.md"]):
        with pytest.raises(SystemExit) as exit_info:
            check_claims.main(argv)
        assert exit_info.value.code == 2
    assert "no such chapter: no/such/chapter.md" in capsys.readouterr().err
