"""The pieces of the book pipeline that are plain Python: the chapter list and the Sphinx extension."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_toc_entry_is_an_existing_chapter(book_conftest):
    chapters = book_conftest.toc_chapters()
    assert ROOT / "book" / "preface.md" in chapters
    assert len(chapters) >= 5
    assert all(path.is_file() for path in chapters), sorted(str(p) for p in chapters if not p.is_file())


def test_toc_reader_follows_nested_parts_and_sections(book_conftest, tmp_path):
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\nparts:\n  - caption: A\n    chapters:\n"
        "      - file: one\n        sections:\n          - file: one_a\n      - file: two\n"
    )
    names = {path.stem for path in book_conftest.toc_chapters(tmp_path / "_toc.yml")}
    assert names == {"intro", "one", "one_a", "two"}


@pytest.mark.parametrize(
    "url, parts",
    [
        ("https://github.com/org/repo", ("org", "repo")),
        ("https://github.com/org/repo/", ("org", "repo")),
        ("https://gitlab.com/org/repo", None),
        ("https://github.com/org", None),
        ("", None),
    ],
)
def test_colab_button_needs_a_github_repository(book_extras, url, parts):
    assert book_extras.github_parts(url) == parts


def test_mathjax_bundle_is_installed(book_extras):
    assert (book_extras.mathjax_source() / "tex-chtml.js").is_file()


def test_built_stream_is_its_merged_first_piece(book_conftest):
    import nbformat

    def stream(text):
        return nbformat.from_dict({"output_type": "stream", "name": "stdout", "text": text})

    # The build stores the merged stream first and can keep the later pieces after it.
    built = [stream("loss 1.0\nloss 0.5\n"), stream("loss 0.5\n")]
    fresh = [stream("loss 1.0\n"), stream("loss 0.5  \n\n")]
    assert book_conftest.one_stream_each(built, built=True) == \
        book_conftest.one_stream_each(fresh, built=False) == [stream("loss 1.0\nloss 0.5\n")]
