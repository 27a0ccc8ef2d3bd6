"""Collect every chapter listed in ``_toc.yml`` as an nbval notebook.

Chapters are MyST Markdown notebooks; nbval only reads ``.ipynb``. Each chapter is converted with
jupytext in memory, so nothing is written next to the source, and its code cells become test items
named ``book/<chapter>.md::Cell <n>``. The kernel runs in the current environment and starts in the
chapter's folder, as it does when a reader opens the chapter in Jupyter. A cell that raises fails
the suite.

Chapters keep no outputs; the book build stores what it executed in
``_build/jupyter_execute/book/<chapter>.ipynb`` (``$BNLIB_BOOK_BUILD/_build/...`` when that is
set). When that notebook holds exactly the chapter's code cells, nbval compares each fresh output
with the build's, so a chapter that prints something different on a second run (a result that is
not reproducible, or a build that reused outputs of older code) fails. Not compared: images,
stderr (warnings name temporary files), durations (``12 s``, ``340 us``), values passed to
``glue`` (the build keeps them apart from the outputs; the chapters' hidden assertions check them)
and cells tagged ``nbval-ignore-output``. Without a matching build, cells are only run.
"""

from __future__ import annotations

import os
from collections import OrderedDict, defaultdict
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml
from nbval.plugin import IPyNbCell, IPyNbFile, find_comment_markers, find_metadata_tags

ROOT = Path(__file__).resolve().parent
GLUE_MIME_PREFIX = "application/papermill.record/"
# A duration as chapters print one: a number and a unit of time.
DURATION = (r"\b\d[\d,.]*(?:e[-+]?\d+)?\s*(?:ns|us|µs|ms|s|sec|seconds|min|minutes)\b", "<duration>")


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


def built_notebook(chapter: Path, build_root: Path) -> Path:
    """Where the book build under ``build_root`` stores the executed ``chapter``."""
    name = chapter.resolve().relative_to(ROOT).with_suffix(".ipynb")
    return build_root / "_build" / "jupyter_execute" / name


def reference_cells(code_cells: list, built: Path) -> list | None:
    """The built notebook's code cells, if it holds exactly ``code_cells`` (else None)."""
    if not built.is_file():
        return None
    reference = [cell for cell in nbformat.read(built, as_version=4).cells
                 if cell.cell_type == "code"]
    if [cell.source.strip() for cell in reference] != [cell.source.strip() for cell in code_cells]:
        return None
    return reference


def one_stream_each(outputs: list, *, built: bool) -> list:
    """``outputs`` with one output per stream name, its text without blank lines or trailing
    spaces.

    The build merges each cell's stream outputs into the first one of each name
    (``nb_merge_streams``), stripping line ends as it goes, but its stored notebook can still
    hold the later pieces after the merged one: for a ``built`` notebook the first output of a name
    is taken as the whole stream. A fresh execution's pieces are joined instead.
    """
    result, streams = [], {}
    for output in outputs:
        if output.get("output_type") != "stream":
            result.append(output)
        elif output["name"] not in streams:
            streams[output["name"]] = nbformat.from_dict(dict(output))
            result.append(streams[output["name"]])
        elif not built:
            streams[output["name"]]["text"] += output["text"]
    for stream in streams.values():
        lines = (line.rstrip() for line in stream["text"].splitlines())
        stream["text"] = "".join(f"{line}\n" for line in lines if line)
    return result


class MystNotebookCell(IPyNbCell):
    """A chapter's code cell; the values it glues are not among the outputs compared."""

    def compare_outputs(self, test, ref, skip_compare=None):
        shown = [output for output in test
                 if not any(key.startswith(GLUE_MIME_PREFIX) for key in output.get("data", {}))]
        return super().compare_outputs(one_stream_each(shown, built=False),
                                       one_stream_each(ref, built=False), skip_compare)


class MystNotebookFile(IPyNbFile):
    """An nbval collector that reads a MyST Markdown notebook through jupytext, and compares
    fresh outputs with the book build's when the build executed the same code."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.skip_compare = (*self.skip_compare, "stderr")
        self.code_cells: list = []
        self.cell_options: list[dict] = []

    def collect(self):
        self.nb = jupytext.read(self.path)
        self.code_cells = [cell for cell in self.nb.cells if cell.cell_type == "code"]
        for number, cell in enumerate(self.code_cells):
            options = defaultdict(bool, find_metadata_tags(cell.metadata))
            options.update(find_comment_markers(cell.source))
            self.cell_options.append(options)
            yield MystNotebookCell.from_parent(
                self, name=f"Cell {number}", cell_num=number, cell=cell, options=options
            )

    def setup(self):
        """Start the kernel; take the build's outputs as references, which exist only now (the
        build runs earlier in the session)."""
        super().setup()
        self.sanitize_patterns = OrderedDict([DURATION, *self.sanitize_patterns.items()])
        built = built_notebook(self.path, Path(os.environ.get("BNLIB_BOOK_BUILD") or ROOT))
        reference = reference_cells(self.code_cells, built)
        if reference is None and built.is_file():
            self.warn(pytest.PytestWarning(f"{built} was built from other code than {self.path}: "
                                           f"outputs not compared (rebuild the book)"))
        for number, (cell, options) in enumerate(zip(self.code_cells, self.cell_options)):
            options.setdefault("check", reference is not None)
            if reference is not None:
                cell.outputs = one_stream_each(reference[number].outputs, built=True)
                cell.execution_count = reference[number].execution_count or number + 1


def pytest_configure(config: pytest.Config) -> None:
    # Chapters run in the interpreter that runs the tests.
    config.option.nbval_current_env = True


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    if file_path.suffix == ".md" and file_path.resolve() in toc_chapters():
        return MystNotebookFile.from_parent(parent, path=file_path)
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the unit tests first, then the book build and its pages (marked ``book``), then the
    chapters under nbval, which compare their outputs with that build's."""
    def stage(item: pytest.Item) -> int:
        if isinstance(item, IPyNbCell):
            return 2
        return 1 if item.get_closest_marker("book") else 0

    items.sort(key=stage)
