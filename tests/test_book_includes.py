"""Every code listing in the chapters resolves, and shows no private name, in well under a second.

Chapters show library code with MyST ``literalinclude`` directives. Each one is read here with
Sphinx's own ``LiteralIncludeReader``, which the directive uses (``:pyobject:`` is found by
``sphinx.pycode.ModuleAnalyzer``, ``:start-after:``/``:end-before:`` must match), so a renamed
function fails this test in seconds instead of the book build in minutes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sphinx.config import Config
from sphinx.directives.code import LiteralIncludeReader
from sphinx.pycode import ModuleAnalyzer

# An opening fence (```, ~~~ or :::, three or more) with the directive name, and its closing fence.
DIRECTIVE = re.compile(
    r"^(?P<fence>`{3,}|~{3,}|:{3,})\{literalinclude\}[ \t]*(?P<path>\S+)[ \t]*\n"
    r"(?P<body>.*?)^(?P=fence)[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
OPTION = re.compile(r"^:(?P<name>[\w-]+):[ \t]*(?P<value>.*?)[ \t]*$")
# _name or self._name, but not x_hat, 1_000, a dunder, a lone "_", a TeX \_ escape or a TeX
# subscript such as \hat{x}_i (Python never puts a name right after "}", ")" or "]").
PRIVATE = re.compile(r"(?<![\w\\})\]])_+[A-Za-z][A-Za-z0-9_]*")
INTEGER_OPTIONS = {"dedent", "tab-width"}


def literalincludes(chapter: Path) -> list[tuple[int, Path, dict[str, object]]]:
    """``(line, included file, options)`` of every literalinclude directive in ``chapter``."""
    text = chapter.read_text()
    found = []
    for match in DIRECTIVE.finditer(text):
        options = {}
        for line in match["body"].splitlines():
            option = OPTION.match(line.strip())
            if option is None:
                break  # the first line that is not an option starts the content
            value = option["value"]
            if option["name"] in INTEGER_OPTIONS:
                value = int(value) if value else None
            options[option["name"]] = value
        line_number = text.count("\n", 0, match.start()) + 1
        found.append((line_number, (chapter.parent / match["path"]).resolve(), options))
    return found


def private_names(text: str) -> list[str]:
    """Underscore-prefixed identifiers in ``text``, dunders (``__init__``) excepted."""
    names = (match.group() for match in PRIVATE.finditer(text))
    return sorted({name for name in names if not re.fullmatch(r"__\w+__", name)})


def listing_problem(path: Path, options: dict[str, object]) -> str | None:
    """Why a listing cannot be shown, or ``None`` when it resolves and has no private name."""
    if not path.is_file():
        return f"no file {path}"
    pyobject = options.get("pyobject")
    if pyobject is not None and pyobject not in ModuleAnalyzer.for_file(str(path), "").find_tags():
        return f"no object {pyobject!r} in {path.name}"
    try:
        text, _ = LiteralIncludeReader(str(path), dict(options), Config()).read()
    except ValueError as error:  # a start-after/end-before marker that is not there, and so on
        return f"{path.name}: {error}"
    if not text.strip():
        return f"{path.name}: the listing is empty"
    private = private_names(text)
    if private:
        return f"{path.name} {pyobject or ''} shows private names {private}"
    return None


def test_every_chapter_listing_resolves_and_shows_no_private_name(book_conftest):
    problems = []
    count = 0
    for chapter in sorted(book_conftest.toc_chapters()):
        for line, path, options in literalincludes(chapter):
            count += 1
            problem = listing_problem(path, options)
            if problem:
                problems.append(f"{chapter.name}:{line}: {problem}")
    assert count >= 5, "no literalinclude directives found: is the parser still right?"
    assert not problems, "\n".join(problems)


# The checker itself, on small chapters and modules written here

MODULE = '''
class _Base:
    def _helper(self):
        return 1

    def forward(self, x):
        # listing starts
        y = x + 1
        # listing ends
        return self._helper() + y


def public(x_hat, __dunder__=None):
    """Uses x_hat, 1_000 and TeX's \\\\_ escape, none of which is private."""
    return x_hat * 1_000
'''


@pytest.fixture
def chapter(tmp_path):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "module.py").write_text(MODULE)

    def write(directive: str) -> Path:
        path = tmp_path / "book" / "chapter.md"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"# Title\n\nText.\n\n{directive}\nMore text.\n")
        return path

    return write


def problem_of(chapter_path: Path) -> str | None:
    ((_, path, options),) = literalincludes(chapter_path)
    return listing_problem(path, options)


def test_public_function_passes(chapter):
    assert problem_of(chapter("```{literalinclude} ../code/module.py\n:pyobject: public\n```")) \
        is None


def test_private_names_in_the_listing_fail(chapter):
    problem = problem_of(chapter(
        "```{literalinclude} ../code/module.py\n:language: python\n:pyobject: _Base.forward\n```"))
    assert "_helper" in problem


def test_markers_can_cut_out_the_private_part(chapter):
    directive = ("````{literalinclude} ../code/module.py\n:pyobject: _Base.forward\n"
                 ":start-after: # listing starts\n:end-before: # listing ends\n:dedent: 8\n````")
    assert problem_of(chapter(directive)) is None


@pytest.mark.parametrize("directive, expected", [
    ("```{literalinclude} ../code/module.py\n:pyobject: renamed\n```", "no object 'renamed'"),
    ("```{literalinclude} ../code/missing.py\n:pyobject: public\n```", "no file"),
    (":::{literalinclude} ../code/module.py\n:pyobject: _Base.forward\n"
     ":start-after: # no such marker\n:::", "no such marker"),
])
def test_missing_targets_fail(chapter, directive, expected):
    assert expected in problem_of(chapter(directive))


def test_private_name_detection():
    text = r"self._foo(x_hat) + _bar + __init__ + _ + 1_000 + a\_b + \hat{x}_i + (a)_j"
    assert private_names(text) == ["_bar", "_foo"]
