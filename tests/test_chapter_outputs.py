"""nbval, as the root ``conftest.py`` sets it up, compares a chapter's fresh outputs with the book
build's stored outputs; run end to end on a small chapter in a scratch project."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]
CELLS = [
    ('print("six times seven is", 6 * 7)', "six times seven is 42\n"),  # same output
    ('print("six times seven is", 6 * 7)', "six times seven is 41\n"),  # another output
    ('print(f"took {3 + len(str(id(0))) % 2} s")', "took 9 s\n"),       # a duration
    ('print("six times seven is", 6 * 7)', "six times seven is 41\n"),  # tagged, so ignored
]
HEADER = textwrap.dedent("""\
    ---
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
    """)


def write_chapter(project: Path) -> Path:
    cells = []
    for number, (source, _) in enumerate(CELLS):
        options = ":tags: [nbval-ignore-output]\n" if number == 3 else ""
        cells.append(f"```{{code-cell}} ipython3\n{options}{source}\n```\n")
    chapter = project / "book" / "chapter.md"
    chapter.parent.mkdir(parents=True)
    chapter.write_text(HEADER + "\n" + "\n".join(cells))
    return chapter


def write_build(project: Path, chapter: Path) -> None:
    """What the book build stores: the executed chapter, outputs included."""
    notebook = jupytext.read(chapter)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for number, (cell, (_, printed)) in enumerate(zip(code, CELLS)):
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=printed)]
        cell.execution_count = number + 1
    built = project / "_build" / "jupyter_execute" / "book" / "chapter.ipynb"
    built.parent.mkdir(parents=True)
    nbformat.write(notebook, built)


def test_fresh_outputs_are_compared_with_the_build(tmp_path):
    shutil.copy(ROOT / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/chapter\n")
    write_build(tmp_path, write_chapter(tmp_path))
    environment = {name: value for name, value in os.environ.items() if name != "BNLIB_BOOK_BUILD"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "book/chapter.md", "-q", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=environment)
    summary = result.stdout[-3000:]
    assert re.findall(r"FAILED (\S+ \d+)", result.stdout) == ["book/chapter.md::Cell 1"], summary
    assert "1 failed, 3 passed" in result.stdout, summary
    assert "Cell outputs differ" in result.stdout and "six times seven is 41" in result.stdout


def test_a_build_of_other_code_is_not_a_reference(book_conftest, tmp_path):
    chapter = write_chapter(tmp_path)
    built = tmp_path / "built.ipynb"
    notebook = jupytext.read(chapter)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    nbformat.write(notebook, built)
    assert book_conftest.reference_cells(code, built) is not None
    code[2].source = "print('changed since the build')"
    assert book_conftest.reference_cells(code, built) is None
    assert book_conftest.reference_cells(code, tmp_path / "no-build.ipynb") is None
