"""Execute every chapter on other seeds and another CPU code path; fail when any cell fails.

A chapter's hidden cells assert what its prose claims. This runs each chapter listed in
``_toc.yml`` (or those named on the command line) as a notebook, with ``BNLIB_SEED_OFFSET`` set
to each ``--offset`` and ``ATEN_CPU_CAPABILITY`` set to a code path other than the one the book
build takes on this machine, and reports every failing cell: the chapter, the cell, its line in
the ``.md`` file, the failing statement and the error. Nothing is written next to the chapters.

Usage: python scripts/check_claims.py [--offset N ...] [--cpu PATH] [chapter.md ...]
Exit status: 0 when every chapter ran to the end, 1 when a cell failed, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import jupytext
import yaml
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")
CELL_LINE = re.compile(r"Cell In\[\d+\], line (\d+)")
CPU_PATHS = ("default", "avx2", "avx512")


@dataclass
class Failure:
    chapter: str
    cell: int
    md_line: int
    statement: str
    error: str

    def __str__(self) -> str:
        return (f"{self.chapter}, cell {self.cell} (line {self.md_line}): {self.statement}\n"
                f"    {self.error}")


def toc_chapters() -> list[Path]:
    """The chapters of ``_toc.yml``, in reading order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    names = [toc["root"]]
    for part in toc.get("parts", []):
        names += [entry["file"] for entry in part.get("chapters", [])]
    return [ROOT / f"{name}.md" for name in names]


def native_cpu_path() -> str:
    """The code path torch takes here with no ``ATEN_CPU_CAPABILITY``: "avx512", "avx2", ..."""
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    probe = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                            text=True, check=True)
    return result.stdout.strip().lower()


def other_cpu_path(native: str) -> str:
    """A code path that differs from ``native``: AVX2 on an AVX-512 machine, else the default."""
    return "avx2" if native == "avx512" else "default"


def display_name(chapter: Path) -> str:
    """``chapter`` relative to the repository when it is inside it, else as given."""
    try:
        return chapter.relative_to(ROOT).as_posix()
    except ValueError:
        return str(chapter)


def first_failure(chapter: Path, notebook, error: Exception) -> Failure:
    """Where ``error`` happened: the failing cell, its line in the ``.md``, the statement."""
    text = chapter.read_text()
    failing = next((i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"
                    and any(o.get("output_type") == "error" for o in cell.get("outputs", []))),
                   None)
    if failing is None:
        return Failure(display_name(chapter), -1, 0, "(the kernel)",
                       str(error).strip().splitlines()[-1])
    cell = notebook.cells[failing]
    output = next(o for o in cell.outputs if o.get("output_type") == "error")
    traceback = ANSI.sub("", "\n".join(output.get("traceback", [])))
    lines = cell.source.splitlines()
    numbers = CELL_LINE.findall(traceback)
    line = int(numbers[0]) if numbers else 1
    statement = lines[line - 1].strip() if 0 < line <= len(lines) else cell.source[:80]
    start = text.find(cell.source)
    md_line = text.count("\n", 0, start) + line if start >= 0 else 0
    code_index = sum(1 for c in notebook.cells[:failing] if c.cell_type == "code") + 1
    message = f"{output.get('ename')}: {output.get('evalue')}"
    return Failure(display_name(chapter), code_index, md_line, statement, message[:600])


def run_chapter(chapter: Path, timeout: int) -> tuple[float, Failure | None]:
    """Execute ``chapter`` in its folder with the current environment; time and first failure."""
    notebook = jupytext.read(chapter)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(chapter.parent)}})
    start = time.perf_counter()
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as error:
        return time.perf_counter() - start, first_failure(chapter, notebook, error)
    return time.perf_counter() - start, None


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="check-claims",
        description="Run every chapter with shifted seeds on another CPU code path.")
    parser.add_argument("chapters", nargs="*", type=Path,
                        help="chapter .md files (default: every chapter of _toc.yml)")
    parser.add_argument("--offset", type=int, action="append", metavar="N",
                        help="BNLIB_SEED_OFFSET for a pass; repeat for several (default: 100)")
    parser.add_argument("--cpu", choices=("other", "native", *CPU_PATHS), default="other",
                        help="ATEN_CPU_CAPABILITY: 'other' (default) picks a path that differs "
                             "from this machine's native one; 'native' leaves it unset")
    parser.add_argument("--timeout", type=int, default=600, metavar="S",
                        help="seconds a single cell may run (default: 600)")
    args = parser.parse_args(argv)
    args.offset = args.offset or [100]
    if any(offset < 0 for offset in args.offset):
        parser.error("--offset must be a non-negative integer")
    missing = [str(c) for c in args.chapters if not c.is_file()]
    if missing:
        parser.error(f"no such chapter: {', '.join(missing)} (give paths such as book/cnn.md)")
    args.chapters = [c.resolve() for c in args.chapters] or toc_chapters()
    return args


def check_data() -> str | None:
    """The data error's message when the chapters' MNIST cannot be found, else None."""
    import bnlib

    try:
        for split in ("train", "test"):
            bnlib.load_mnist(split)
    except bnlib.DataError as error:
        return f"check-claims: the chapters need MNIST, which is not available.\n{error}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(sys.argv[1:] if argv is None else argv)
    problem = check_data()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    native = native_cpu_path()
    cpu = {"other": other_cpu_path(native), "native": None}.get(args.cpu, args.cpu)
    if cpu is None:
        os.environ.pop("ATEN_CPU_CAPABILITY", None)
    else:
        os.environ["ATEN_CPU_CAPABILITY"] = cpu
    failures: list[Failure] = []
    for offset in args.offset:
        os.environ["BNLIB_SEED_OFFSET"] = str(offset)
        print(f"check-claims: seed offset {offset}, CPU path {cpu or native} "
              f"(native here: {native})", flush=True)
        for chapter in args.chapters:
            seconds, failure = run_chapter(chapter, args.timeout)
            status = "ok  " if failure is None else "FAIL"
            print(f"  {status} {display_name(chapter):28s} {seconds:6.1f} s", flush=True)
            if failure is not None:
                failures.append((offset, failure))
    if failures:
        print(f"check-claims: {len(failures)} chapter run(s) failed:")
        for offset, failure in failures:
            print(f"  offset {offset}: {failure}")
        return 1
    print("check-claims: every chapter held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
