"""The book builds warning-free and renders properly in a real browser with no network.

The build runs ``jupyter-book build . -W -n --keep-going`` into ``_build/`` (jupyter-cache makes a
rebuild of unchanged chapters cheap). The rendered pages are then served on the loopback interface
and opened in headless Chromium, which checks that formulas typeset, every image loads, every
internal link resolves, and nothing is fetched from outside the book. The chapters' animations
(matplotlib's JavaScript player, every frame embedded) must step and play there, and keep their
pages under a size limit.

Every page's prose, before and after MathJax runs, must be free of TeX: a formula that the Markdown
parser did not recognise shows its source to the reader (see ``page_text.py``).

Chromium and its driver come from Debian's ``chromium`` and ``chromium-driver`` packages. Where they
are missing the browser tests are skipped, unless ``BNLIB_REQUIRE_BROWSER=1`` (set by CI) makes that
a failure. ``BNLIB_BOOK_BUILD=<folder>`` checks the pages of an existing build, for example one made
with ``jupyter-book build . --path-output <folder>``, instead of building the book.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

import pytest
from page_text import raw_tex

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.book


@pytest.fixture(scope="session")
def book_build() -> subprocess.CompletedProcess | None:
    """Build the whole book once per session, executing every chapter (None: an existing build
    named by ``BNLIB_BOOK_BUILD`` is checked instead)."""
    if os.environ.get("BNLIB_BOOK_BUILD"):
        return None
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    command = [str(jupyter_book), "build", str(ROOT), "-W", "-n", "--keep-going"]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT)


@pytest.fixture(scope="session")
def html_root(book_build) -> Path:
    """The built site's folder."""
    if book_build is None:
        return Path(os.environ["BNLIB_BOOK_BUILD"]) / "_build" / "html"
    if book_build.returncode != 0:
        pytest.fail(f"the book did not build:\n{book_build.stdout[-6000:]}\n{book_build.stderr[-6000:]}")
    return ROOT / "_build" / "html"


@pytest.fixture(scope="session")
def html_pages(html_root) -> list[Path]:
    return sorted((html_root / "book").glob("*.html"))


def test_book_builds_without_warnings(book_build):
    if book_build is None:
        pytest.skip("BNLIB_BOOK_BUILD names an existing build: its log is not available")
    log = book_build.stdout + book_build.stderr
    sphinx_warnings = [line for line in log.splitlines() if "WARNING:" in line or "ERROR:" in line]
    assert book_build.returncode == 0, log[-8000:]
    assert sphinx_warnings == []


def test_every_notebook_chapter_is_rendered_with_a_notebook_download(html_root, book_conftest):
    notebooks = [p for p in book_conftest.toc_chapters() if "kernelspec:" in p.read_text(encoding="utf-8")]
    assert len(notebooks) >= 5
    for source in notebooks:
        chapter = source.relative_to(ROOT).with_suffix("").as_posix()
        page = html_root / f"{chapter}.html"
        assert page.is_file(), f"{chapter} was not rendered"
        assert (html_root / "_sources" / f"{chapter}.ipynb").is_file(), f"{chapter} has no .ipynb download"
        assert f"_sources/{chapter}.ipynb" in page.read_text(), f"{chapter} has no download button"


class _IdCollector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("id", "name") and value:
                self.ids.add(value)


@functools.cache
def anchors_of(page: Path) -> frozenset[str]:
    collector = _IdCollector()
    collector.feed(page.read_text(encoding="utf-8"))
    return frozenset(collector.ids)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_no_page_shows_raw_tex(html_pages):
    """The static HTML, as served: prose holds no TeX (maths sits in its own elements)."""
    assert html_pages, "no chapter pages were built"
    found = {page.name: raw_tex(page.read_text(encoding="utf-8")) for page in html_pages}
    assert {name: tex for name, tex in found.items() if tex} == {}


@pytest.fixture(scope="session")
def server(html_root):
    handler = functools.partial(_QuietHandler, directory=str(html_root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    if not (CHROMIUM and CHROMEDRIVER):
        message = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        if os.environ.get("BNLIB_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


WAIT_FOR_MATHJAX = """
const done = arguments[arguments.length - 1];
if (!window.MathJax || !MathJax.startup) {
  done(document.querySelector('.math') ? 'formulas but no MathJax' : 'ok');
  return;
}
MathJax.startup.promise.then(() => done('ok'), (error) => done('error: ' + error));
"""

PAGE_REPORT = """
const maths = Array.from(document.querySelectorAll('.math'));
return {
  maths: maths.length,
  untypeset: maths.filter((m) => !m.querySelector('mjx-container')).map((m) => m.textContent.slice(0, 80)),
  errors: document.querySelectorAll('mjx-merror').length,
  html: document.body.outerHTML,
  images: Array.from(document.images).map((i) => ({src: i.src, ok: i.complete && i.naturalWidth > 0})),
  links: Array.from(document.querySelectorAll('a[href]')).map((a) => a.href),
  resources: performance.getEntriesByType('resource').map((r) => r.name),
};
"""


def page_report(browser, url: str) -> dict:
    browser.get(url)
    assert browser.execute_async_script(WAIT_FOR_MATHJAX) == "ok"
    return browser.execute_script(PAGE_REPORT)


def broken_internal_links(links: list[str], base: str, html_root: Path) -> list[str]:
    broken = []
    for link in links:
        if not link.startswith(base):
            continue
        address, fragment = urldefrag(link)
        target = html_root / unquote(urlparse(address).path).lstrip("/")
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file() or (fragment and target.suffix == ".html" and fragment not in anchors_of(target)):
            broken.append(link)
    return broken


@pytest.mark.browser
def test_pages_render_offline(html_root, html_pages, server, browser):
    assert html_pages, "no chapter pages were built"
    pages_with_maths = 0
    for page in html_pages:
        url = f"{server}/{page.relative_to(html_root).as_posix()}"
        report = page_report(browser, url)
        pages_with_maths += report["maths"] > 0
        assert report["untypeset"] == [], f"{page.name}: formulas left as raw TeX"
        assert report["errors"] == 0, f"{page.name}: MathJax could not typeset a formula"
        assert raw_tex(report["html"]) == [], f"{page.name}: raw TeX in the rendered prose"
        assert [i["src"] for i in report["images"] if not i["ok"]] == [], f"{page.name}: images failed"
        assert broken_internal_links(report["links"], server, html_root) == [], f"{page.name}: broken links"
        outside = [r for r in report["resources"] if not r.startswith(server) and not r.startswith("data:")]
        assert outside == [], f"{page.name}: fetched from outside the book"
    assert pages_with_maths >= 3, "the chapters' formulas were not found"


# The chapters that show an animation (matplotlib's JavaScript player, frames embedded as PNG),
# and the most a page may weigh with its frames inside it.
ANIMATED_PAGES = ("bn_transform.html", "covariate_shift.html", "train_eval.html")
PAGE_BYTES_LIMIT = 3_000_000

PLAYER_STATE = """
const player = arguments[0], image = player.querySelector('img');
return {src: image.src, loaded: image.complete && image.naturalWidth > 0,
        slider: player.querySelector('input.anim-slider').value,
        frames: Number(player.querySelector('input.anim-slider').max) + 1};
"""


def test_animated_pages_stay_small(html_root):
    for name in ANIMATED_PAGES:
        page = html_root / "book" / name
        text = page.read_text(encoding="utf-8")
        assert text.count('<div class="animation">') == 1, f"{name}: expected one animation"
        assert page.stat().st_size < PAGE_BYTES_LIMIT, f"{name}: {page.stat().st_size:,} bytes"


def click(browser, element) -> None:
    """Click as a reader would, with the element scrolled to the middle of the window."""
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    element.click()


def check_player(browser, url: str, name: str) -> None:
    """The page's one player shows its first frame, the step button moves it on, and play keeps
    it moving."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    players = browser.find_elements(By.CSS_SELECTOR, "div.animation")
    assert len(players) == 1, f"{name}: expected one animation"
    player = players[0]

    def state(_=None) -> dict:
        return browser.execute_script(PLAYER_STATE, player)

    WebDriverWait(browser, 10).until(lambda _: state()["loaded"])
    first = state()
    assert first["src"].startswith("data:image/png;base64,") and first["slider"] == "0", name
    assert first["frames"] >= 10, f"{name}: only {first['frames']} frames"
    click(browser, player.find_element(By.CSS_SELECTOR, 'button[aria-label="Next frame"]'))
    second = state()
    assert second["slider"] == "1" and second["src"] != first["src"], f"{name}: step did nothing"
    click(browser, player.find_element(By.CSS_SELECTOR, 'button[aria-label="Play"]'))
    WebDriverWait(browser, 10).until(lambda _: state()["slider"] not in ("0", "1"))
    click(browser, player.find_element(By.CSS_SELECTOR, 'button[aria-label="Pause"]'))
    playing = state()
    assert playing["loaded"] and playing["src"] not in (first["src"], second["src"]), name


@pytest.mark.browser
def test_animations_step_and_play(html_root, server, browser):
    for name in ANIMATED_PAGES:
        check_player(browser, f"{server}/book/{name}", name)
