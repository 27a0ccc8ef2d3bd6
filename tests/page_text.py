"""Find TeX left as plain text on a rendered page.

A formula the Markdown parser did not recognise (for example a display-maths line that a list
turned into a bullet) reaches the page as its source, ``\\tfrac{1}{m} \\sum_j ...`` or ``$x$``, and
MathJax leaves it alone because it only typesets the book's maths elements. This module reads a
page's HTML, keeps the text a reader sees as prose, and reports every TeX command and every
``$...$`` in it. Code (``pre``, ``code``, ``kbd``, ``samp``), typeset maths (``mjx-container``)
and maths source awaiting MathJax (elements of class ``math``) are not prose, nor are scripts and
styles.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

NOT_PROSE_TAGS = frozenset({"pre", "code", "kbd", "samp", "script", "style", "template",
                            "textarea", "mjx-container", "math", "svg"})
NOT_PROSE_CLASSES = frozenset({"math"})
VOID_TAGS = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                       "source", "track", "wbr"})
# A TeX command (\frac, \tfrac, \sum, \hat, \mathcal...), a TeX maths delimiter (\( \) \[ \]),
# display maths ($$), a $...$ pair on one line, or a $ that opens maths ($x, $\hat, ${).
RAW_TEX = re.compile(r"\\[A-Za-z]+|\\[()\[\]]|\$\$|\$[^$\n]+\$|\$(?=[A-Za-z\\{])")


class _ProseText(HTMLParser):
    """Collects the text outside code, maths, scripts and styles, one string per text node."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool]] = []  # (tag, inside something that is not prose)
        self.texts: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in VOID_TAGS:
            return
        classes = set((dict(attrs).get("class") or "").split())
        outside = bool(self.stack and self.stack[-1][1])
        not_prose = tag in NOT_PROSE_TAGS or bool(classes & NOT_PROSE_CLASSES)
        self.stack.append((tag, outside or not_prose))

    def handle_endtag(self, tag):
        for depth in range(len(self.stack) - 1, -1, -1):  # close up to the matching tag
            if self.stack[depth][0] == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data):
        if not (self.stack and self.stack[-1][1]) and data.strip():
            self.texts.append(data)


def prose_text(html: str) -> list[str]:
    """The text nodes of ``html`` that a reader sees as prose (see the module docstring)."""
    parser = _ProseText()
    parser.feed(html)
    parser.close()
    return parser.texts


def raw_tex(html: str) -> list[str]:
    """Every piece of TeX in the prose of ``html``, each with the text around it."""
    found = []
    for text in prose_text(html):
        for match in RAW_TEX.finditer(text):
            start, end = max(match.start() - 30, 0), match.end() + 30
            found.append(f"{match.group()!r} in {' '.join(text[start:end].split())!r}")
    return found
