"""The raw-TeX detector that the rendered-page tests run on every page, on small HTML snippets."""

from __future__ import annotations

import pytest
from page_text import prose_text, raw_tex

# What the backprop chapter's "compact form" rendered as when a display-maths line inside a
# numbered item started with "- \tfrac" and Markdown made it a nested bullet.
BROKEN_LIST_ITEM = """
<ol><li><p>Substituting both into <span class="math notranslate nohighlight">\\(dx\\)</span>, gives</p>
<p>$$
dx_i = \\gamma s\\, dy_i</p>
<ul><li><p>\\tfrac{1}{m}\\gamma s\\, \\hat{x}_i \\sum_j dy_j \\hat{x}_j</p></li>
<li><p>\\tfrac{1}{m} \\gamma s \\sum_j dy_j .
$$</p></li></ul></li></ol>
"""


@pytest.mark.parametrize("snippet, expected", [
    ("<p>the mean <em>$\\mu$</em> of the batch</p>", ["$\\mu$"]),
    ("<p>so \\frac{a}{b} is left</p>", ["\\frac"]),
    ("<p>a \\mathcal{L} and \\hat{x}</p>", ["\\mathcal", "\\hat"]),
    ("<p>inline \\(x\\) delimiters</p>", ["\\(", "\\)"]),
    ("<li>$$</li>", ["$$"]),
    ("<div><p>costs $5 and $7</p></div>", ["$5 and $"]),
    ("<p>gives $dx_i = 0</p>", ["$"]),
])
def test_tex_in_prose_is_found(snippet, expected):
    found = raw_tex(snippet)
    assert [item.split(" in ")[0] for item in found] == [repr(tex) for tex in expected]


def test_the_broken_compact_form_is_found():
    found = " ".join(raw_tex(BROKEN_LIST_ITEM))
    for command in ("$$", "\\gamma", "\\tfrac", "\\hat", "\\sum"):
        assert repr(command) in found
    assert "'\\\\(dx" not in found  # the typeset-to-be maths span is not prose


@pytest.mark.parametrize("snippet", [
    '<span class="math notranslate nohighlight">\\(\\hat{x} = \\frac{x - \\mu}{\\sigma}\\)</span>',
    '<div class="math notranslate nohighlight">\\[\\sum_i x_i\\]</div>',
    "<mjx-container><mjx-assistive-mml>\\frac{1}{2}</mjx-assistive-mml></mjx-container>",
    '<div class="highlight"><pre><span>x</span> = <span>"$HOME"</span>  # \\n</pre></div>',
    "<p>call <code class=\"docutils literal\"><span class=\"pre\">\\sum</span></code> here</p>",
    "<script>MathJax = {tex: {inlineMath: [['$', '$'], ['\\\\(', '\\\\)']]}};</script>",
    "<style>.x::before { content: '$a$'; }</style>",
    "<p>prices in dollars: $ signs alone are prose, and so are back\\ slashes</p>",
])
def test_code_typeset_maths_and_plain_prose_pass(snippet):
    assert raw_tex(snippet) == []


def test_prose_resumes_after_code_and_void_elements():
    html = "<p>before <code>\\frac</code> after<br>next <img src='a.png'> \\sum</p>"
    assert prose_text(html) == ["before ", " after", "next ", " \\sum"]
    assert raw_tex(html) == ["'\\\\sum' in '\\\\sum'"]


def test_unclosed_tags_do_not_hide_the_rest_of_the_page():
    html = "<div><pre>code<p>still code</pre><p>prose $x$</p></div>"
    assert [item.split(" in ")[0] for item in raw_tex(html)] == ["'$x$'"]
