"""Collect every chapter listed in ``_toc.yml`` as an nbval notebook.

Chapters are MyST Markdown notebooks; nbval only reads ``.ipynb``. Each chapter is converted with
jupytext in memory, so nothing is written next to the source, and its code cells become test items
named ``book/<chapter>.md::Cell <n>``. The kernel runs in the current environment and starts in the
chapter's folder, as it does when a reader opens the chapter in Jupyter. Stored outputs are not
compared (chapters keep none); a cell that raises fails the suite.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import jupytext
import pytest
import yaml
from nbval.plugin import IPyNbCell, IPyNbFile, find_comment_markers, find_metadata_tags

ROOT = Path(__file__).resolve().parent


def toc_chapters(toc_file: Path = ROOT / "_toc.yml") -> set[Path]:
    """Return the resolved paths of every ``.md`` file that ``_toc.yml`` lists."""
    toc = yaml.safe_load(toc_file.read_text())
    entries = [toc["root"]]
    pending = list(toc.get("parts", [])) + list(toc.get("chapters", []))
    while pending:
        entry = pending.pop()
        if "file" in entry:
            entries.append(entry["file"])
        pending.extend(entry.get("chapters", []) + entry.get("sections", []) + entry.get("parts", []))
    return {(toc_file.parent / f"{name}.md").resolve() for name in entries}


class MystNotebookFile(IPyNbFile):
    """An nbval collector that reads a MyST Markdown notebook through jupytext."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.compare_outputs = False

    def collect(self):
        self.nb = jupytext.read(self.path)
        code_cells = (cell for cell in self.nb.cells if cell.cell_type == "code")
        for number, cell in enumerate(code_cells):
            options = defaultdict(bool, find_metadata_tags(cell.metadata))
            options.update(find_comment_markers(cell.source))
            options.setdefault("check", self.compare_outputs)
            yield IPyNbCell.from_parent(
                self, name=f"Cell {number}", cell_num=number, cell=cell, options=options
            )


def pytest_configure(config: pytest.Config) -> None:
    # Chapters run in the interpreter that runs the tests.
    config.option.nbval_current_env = True


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    if file_path.suffix == ".md" and file_path.resolve() in toc_chapters():
        return MystNotebookFile.from_parent(parent, path=file_path)
    return None
