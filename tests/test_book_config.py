"""The book's configuration tolerates what readers do next to the chapters; no build needed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from jupyter_book.config import get_final_config
from sphinx.project import Project
from sphinx.util.matching import Matcher

ROOT = Path(__file__).resolve().parents[1]
# What Sphinx reads as documents once myst-nb is loaded (MyST Markdown and notebooks).
SOURCE_SUFFIXES = (".rst", ".md", ".ipynb")


def sphinx_exclude_patterns() -> list[str]:
    """``exclude_patterns`` as jupyter-book hands them to Sphinx, from ``_config.yml``."""
    config, _ = get_final_config(user_yaml=ROOT / "_config.yml", sourcedir=ROOT,
                                 cli_config={"latex_individualpages": False})
    return config["exclude_patterns"]


def test_a_notebook_converted_from_a_chapter_is_not_a_second_source(tmp_path, book_conftest):
    """``jupytext --to ipynb book/<chapter>.md`` (as the preface suggests) writes the notebook
    beside its chapter; Sphinx must still read the chapter, and only the chapter."""
    chapters = [path.relative_to(ROOT) for path in book_conftest.toc_chapters()]
    for chapter in chapters:
        (tmp_path / chapter).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / chapter, tmp_path / chapter)
        (tmp_path / chapter.with_suffix(".ipynb")).write_text("{}")
    exclude = sphinx_exclude_patterns()
    project = Project(tmp_path, SOURCE_SUFFIXES)
    docnames = project.discover(exclude_paths=exclude)
    assert docnames == {chapter.with_suffix("").as_posix() for chapter in chapters}
    for chapter in chapters:
        assert project.doc2path(chapter.with_suffix("").as_posix(), absolute=False) == str(chapter)
    # Without the pattern the notebook would be read too ("multiple files found").
    assert Matcher(exclude)("book/bn_transform.ipynb")
    assert not Matcher([p for p in exclude if p != "**.ipynb"])("book/bn_transform.ipynb")


def test_nbval_does_not_collect_a_converted_notebook(book_conftest):
    """Only the .md chapters run under nbval; nbval reads .ipynb files only with --nbval."""
    assert book_conftest.pytest_collect_file(file_path=ROOT / "book" / "bn_transform.ipynb",
                                             parent=None) is None
    addopts = (ROOT / "pyproject.toml").read_text().split("addopts", 1)[1].splitlines()[0]
    assert "--nbval" not in addopts


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                    reason="needs git and a clone")
def test_git_ignores_a_converted_notebook():
    result = subprocess.run(["git", "check-ignore", "-q", "book/bn_transform.ipynb"], cwd=ROOT)
    assert result.returncode == 0


def test_the_environment_opens_and_runs_chapters():
    """requirements.txt brings a Jupyter front end (JupyterLab, with jupytext's extension for the
    .md chapters) and nbconvert, so a downloaded chapter .ipynb opens and runs there."""
    scripts = Path(sys.executable).parent
    for command in ("jupyter-lab", "jupyter-nbconvert", "jupytext"):
        assert (scripts / command).is_file(), f"{command} is missing from the environment"
    enabled = Path(sys.prefix) / "etc" / "jupyter" / "jupyter_server_config.d" / "jupytext.json"
    extensions = json.loads(enabled.read_text())["ServerApp"]["jpserver_extensions"]
    assert extensions["jupyterlab_jupytext"] is True
