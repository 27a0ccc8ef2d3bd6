"""Sphinx extension with the book's two additions to Jupyter Book.

* **Offline maths.** The HTML pages load MathJax 3 from ``_static/mathjax/`` (the copy shipped by the
  ``django-static-mathjax`` package) instead of a CDN, so formulas typeset with no network.
* **Colab button.** Colab opens only ``.ipynb`` files from GitHub, while the chapters are MyST Markdown.
  The build already writes each executed chapter to ``_sources/<page>.ipynb``; once the HTML is
  published to the ``gh-pages`` branch (``ghp-import -n -p -f _build/html``), the button opens that
  notebook.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

COLAB_URL = "https://colab.research.google.com/github/{org}/{repo}/blob/{branch}/_sources/{page}.ipynb"


def mathjax_source() -> Path:
    """Return the folder of MathJax's ES5 bundles inside the installed package."""
    try:
        import mathjax
    except ImportError as error:
        raise ExtensionError(
            "The book serves MathJax itself, from the 'django-static-mathjax' package, which is not "
            "installed. Run: pip install -r requirements.txt"
        ) from error
    return Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"


def copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    shutil.copytree(mathjax_source(), Path(app.outdir) / "_static" / "mathjax", dirs_exist_ok=True)


def github_parts(repository_url: str) -> tuple[str, str] | None:
    """Split ``https://github.com/<org>/<repo>`` into ``(org, repo)``; ``None`` for other hosts."""
    prefix = "https://github.com/"
    if not repository_url.startswith(prefix):
        return None
    parts = repository_url[len(prefix):].strip("/").split("/")
    return (parts[0], parts[1]) if len(parts) >= 2 else None


def add_colab_button(app: Sphinx, pagename: str, templatename, context: dict, doctree) -> None:
    if not context.get("ipynb_source"):
        return
    parts = github_parts(app.config.html_theme_options.get("repository_url", ""))
    launch = [b for b in context.get("header_buttons", []) if b.get("label") == "launch-buttons"]
    if parts is None or not launch:
        return
    org, repo = parts
    url = COLAB_URL.format(org=org, repo=repo, branch=app.config.book_colab_branch, page=pagename)
    launch[0]["buttons"].append(
        {
            "type": "link",
            "text": "Colab",
            "tooltip": "Launch on Colab",
            "icon": "_static/images/logo_colab.png",
            "url": url,
        }
    )


def setup(app: Sphinx) -> dict:
    app.add_config_value("book_colab_branch", "gh-pages", "html")
    app.connect("build-finished", copy_mathjax)
    # After sphinx-book-theme has built its launch menu (priority 501).
    app.connect("html-page-context", add_colab_button, priority=502)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
