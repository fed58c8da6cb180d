"""The documentation site in a real browser (Debian's chromium, driven by playwright).

The site is built with ``mkdocs build --strict`` (or taken from ``$ATTENTION_SPEC_SITE``), served
on 127.0.0.1, and every page is opened (at a phone's width, then widened). Checked: every
equation is rendered by the vendored MathJax, no request leaves the machine, no console errors,
clause <-> code links work both ways, every internal link and fragment resolves, search finds a
clause offline, and at the widths of a phone (390 px) and of a laptop (1440 px) no page is wider
than the screen.

Without chromium, playwright or mkdocs the tests are skipped, except where ``$CI`` is set:
there they fail, because CI must run them (``.ci/run`` installs chromium, the nox ``tests``
session the ``docs`` and ``browser`` extras).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import http.server
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin, urlparse

import pytest

from tests import docs_data
from tests.mutants import detection

pytestmark = pytest.mark.slow  # builds the site and starts a browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("ATTENTION_SPEC_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--no-first-run",
]
HOST = "127.0.0.1"
NARROW, WIDE = 390, 1440  # a phone's viewport and a laptop's, in CSS pixels
HEIGHT = 900


def require(ok: object, reason: str) -> None:
    """Skip without ``ok``, or fail where ``$CI`` is set (CI must run these tests)."""
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so the browser test must run")
    pytest.skip(reason)


# -- the site --------------------------------------------------------------------------------------
def _inputs_key() -> str:
    h = hashlib.sha256()
    for folder in ("docs", "spec", "transformer", "tests"):  # tests: the pins and the corpora
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                h.update(path.relative_to(ROOT).as_posix().encode())
                h.update(path.read_bytes())
    h.update((ROOT / "mkdocs.yml").read_bytes())
    return h.hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # xdist workers build once, one at a time
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="module")
def site() -> Path:
    """The built site: ``$ATTENTION_SPEC_SITE``, or built here (reused while nothing changed)."""
    given = os.environ.get("ATTENTION_SPEC_SITE")
    if given:
        require(
            Path(given, "index.html").exists(), f"$ATTENTION_SPEC_SITE={given} has no index.html"
        )
        return Path(given)
    require(importlib.util.find_spec("mkdocs"), "mkdocs is not installed: pip install -e '.[docs]'")
    target = ROOT / "build" / "docs-browser-site"
    stamp = ROOT / "build" / "docs-browser-site.key"
    with _locked(ROOT / "build" / "docs-browser-site.lock"):
        key = _inputs_key()
        if not (stamp.exists() and stamp.read_text() == key and (target / "index.html").exists()):
            stamp.unlink(missing_ok=True)
            env = {**os.environ, "DISABLE_MKDOCS_2_WARNING": "true", "NO_MKDOCS_2_WARNING": "1"}
            for variable in ("PYTEST_ADDOPTS", docs_data.KEYS_ENV, detection.DETECTION_ENV):
                env.pop(variable, None)  # the session's, not the build's
            build = subprocess.run(
                [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(target)],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=1800,  # a cold build runs the mutant and outside corpora
            )
            assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stderr[-6000:]}"
            stamp.write_text(key)
    return target


SEARCH_INDEX = "/search/search_index.json"
UNSEARCHED = "X-Attention-Spec-Unsearched"
"""A request header: the server answers a request for :data:`SEARCH_INDEX` that carries it with
the index emptied of pages. The crawl asks so: each page it opens would otherwise index the
whole site for search again (a fifth of its time), and search has a test of its own."""


@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[str]:
    index = json.loads((site / SEARCH_INDEX.lstrip("/")).read_text())
    unsearched = json.dumps({**index, "docs": []}).encode()  # read once, served to every page

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if not (self.headers.get(UNSEARCHED) and urlparse(self.path).path == SEARCH_INDEX):
                return super().do_GET()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(unsearched)))
            self.end_headers()
            self.wfile.write(unsearched)

    handler = functools.partial(Quiet, directory=str(site))
    httpd = http.server.ThreadingHTTPServer((HOST, 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


# -- the browser -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require(
        importlib.util.find_spec("playwright"),
        "playwright is not installed: pip install -e '.[browser]'",
    )
    require(
        Path(CHROMIUM).exists(),
        f"no chromium at {CHROMIUM}: apt-get install chromium",
    )
    from playwright.sync_api import sync_playwright

    # The browser's proxy for every host but the site's: a port of this machine held by a socket
    # that never listens, so that connecting to it is refused at once, and no request leaves the
    # machine (the tests note every one that is tried).
    with socket.socket() as nowhere, sync_playwright() as p:
        nowhere.bind((HOST, 0))
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            proxy={"server": f"http://{HOST}:{nowhere.getsockname()[1]}", "bypass": HOST},
        )
        try:
            yield b
        finally:
            b.close()


@dataclasses.dataclass
class Visit:
    """What one page showed."""

    url: str
    math: int = 0
    rendered: int = 0
    errors_in_math: int = 0
    ids: set[str] = dataclasses.field(default_factory=set)
    links: list[str] = dataclasses.field(default_factory=list)
    console: list[str] = dataclasses.field(default_factory=list)
    too_wide: dict[int, str] = dataclasses.field(default_factory=dict)  # width -> what overflows
    layout: list[int] = dataclasses.field(default_factory=list)  # LAYOUT_JS, widened to WIDE


@dataclasses.dataclass
class Crawl:
    visits: dict[str, Visit]
    outside: list[str]  # requests to another host (failed by the browser's proxy)
    missing: list[str]  # requests that got no file (404)


def _page(
    browser: Any,
    crawl_outside: list[str],
    crawl_missing: list[str],
    width: int = 1280,
    headers: dict[str, str] | None = None,
) -> Any:
    """A page in a context of its own, which notes every request to another host in
    ``crawl_outside`` (the browser's proxy fails them) and every URL answered
    with an error status in ``crawl_missing``.

    Requests are watched, not intercepted: playwright turns the HTTP cache off in a context
    whose requests it routes, and then every page fetches and compiles MathJax and the search
    index again."""
    context = browser.new_context(
        viewport={"width": width, "height": HEIGHT},
        service_workers="block",
        extra_http_headers=headers or {},
    )

    def request(r: Any) -> None:
        if not r.url.startswith(("data:", "blob:")) and urlparse(r.url).hostname != HOST:
            crawl_outside.append(r.url)

    context.on("request", request)
    page = context.new_page()
    page.on(
        "response",
        lambda resp: crawl_missing.append(resp.url) if resp.status >= 400 else None,
    )
    return page


def _wait_for_math(page: Any) -> None:
    page.wait_for_load_state("load")
    page.evaluate(
        "async () => { if (window.MathJax && MathJax.startup && MathJax.startup.promise)"
        " { await MathJax.startup.promise; } }"
    )


# What makes the page wider than the viewport: document.documentElement.scrollWidth is the width
# of everything laid out, innerWidth the viewport's. The culprits named are the outermost elements
# past the right edge that no ancestor below <body> scrolls or clips (overflow-x other than
# visible): a table or equation that scrolls inside its own box is fine.
OVERFLOW_JS = """() => {
  const viewport = window.innerWidth;
  const page = document.documentElement.scrollWidth;
  if (page <= viewport) return {viewport, page, culprits: []};
  const past = (e) => e.getBoundingClientRect().right + window.scrollX > viewport + 0.5;
  const contained = (e) => {
    for (let a = e.parentElement; a && a !== document.body; a = a.parentElement) {
      if (getComputedStyle(a).overflowX !== 'visible') return true;
    }
    return false;
  };
  const name = (e) => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') +
    Array.from(e.classList, c => '.' + c).join('');
  const culprits = [];
  for (const e of document.body.querySelectorAll('*')) {
    const box = e.getBoundingClientRect();
    if ((box.width === 0 && box.height === 0) || !past(e) || contained(e)) continue;
    if (e.parentElement !== document.body && past(e.parentElement)) continue;  // not outermost
    culprits.push(`${name(e)} (${Math.round(box.width)} px wide, ` +
                  `right edge at ${Math.round(box.right + window.scrollX)} px)`);
  }
  return {viewport, page, culprits};
}"""


def _too_wide(page: Any) -> str:
    """Empty when the page fits its viewport, else how wide it is and what makes it so."""
    found = page.evaluate(OVERFLOW_JS)
    if found["page"] <= found["viewport"]:
        return ""
    culprits = found["culprits"][:5] or ["no single element found"]
    more = len(found["culprits"]) - 5
    return (
        f"{found['page']} px wide in a {found['viewport']} px viewport: "
        + "; ".join(culprits)
        + (f"; and {more} more" if more > 0 else "")
    )


LAYOUT_JS = """() => [document.documentElement.scrollWidth, window.innerWidth,
                       document.body.scrollHeight]"""
"""How a page is laid out: its width, the viewport's, and its height (which moves with any change
of layout: a wrapped line, a hidden sidebar)."""


@pytest.fixture(scope="module")
def crawl(browser: Any, server: str, site: Path) -> Crawl:
    """Open every page of the site once, at the width of a phone (NARROW), and record what it
    showed; then widen the viewport to WIDE and measure the page again.

    Widening instead of opening the page again halves the crawl's time (a page load and its
    typesetting are most of it), and lays each page out just as one opened at WIDE: its width
    and height are the same, on every page of the site
    (:func:`test_a_widened_page_is_laid_out_as_one_opened_wide` keeps that true). The pages
    are given an empty search index (:data:`UNSEARCHED`)."""
    outside: list[str] = []
    missing: list[str] = []
    page = _page(browser, outside, missing, NARROW, {UNSEARCHED: "1"})
    current: list[Visit] = []
    page.on(
        "console",
        lambda m: current[-1].console.append(m.text) if m.type == "error" and current else None,
    )
    page.on("pageerror", lambda e: current[-1].console.append(str(e)) if current else None)
    visits: dict[str, Visit] = {}
    pages = sorted(
        p.relative_to(site).as_posix()
        for p in site.rglob("index.html")
        if p.parent != site / "search"
    )
    for rel in pages:
        url = urljoin(server, rel.removesuffix("index.html"))
        visit = Visit(url)
        current.append(visit)
        page.set_viewport_size({"width": NARROW, "height": HEIGHT})
        page.goto(url)
        _wait_for_math(page)
        visit.too_wide[NARROW] = _too_wide(page)
        page.set_viewport_size({"width": WIDE, "height": HEIGHT})
        visit.too_wide[WIDE] = _too_wide(page)
        visit.layout = page.evaluate(LAYOUT_JS)
        state = page.evaluate(
            """() => ({
              math: document.querySelectorAll('.arithmatex').length,
              rendered: document.querySelectorAll('.arithmatex > mjx-container').length,
              merror: document.querySelectorAll('mjx-merror').length,
              ids: Array.from(document.querySelectorAll('[id], a[name]'))
                   .map(e => e.id || e.getAttribute('name')),
              links: Array.from(document.querySelectorAll('a[href]')).map(a =>
                a.href.baseVal === undefined ? a.href   // an SVG link's href is not a string
                  : new URL(a.href.baseVal, document.baseURI).href),
            })"""
        )
        visit.math, visit.rendered = state["math"], state["rendered"]
        visit.errors_in_math = state["merror"]
        visit.ids, visit.links = set(state["ids"]), state["links"]
        visits[url] = visit
    page.context.close()
    return Crawl(visits, outside, missing)


# -- the checks ------------------------------------------------------------------------------------
def test_every_page_was_visited(crawl: Crawl, server: str) -> None:
    pages = {url.removeprefix(server) for url in crawl.visits}
    expected = {"", "conformance/", "guide/own-implementation/", "clauses/3.2.1/", "figures/"}
    assert expected <= pages
    assert len(pages) > 20


def test_every_equation_is_rendered(crawl: Crawl) -> None:
    total = sum(v.math for v in crawl.visits.values())
    assert total > 50, f"only {total} equations on the whole site"
    bad = {
        v.url: (v.math, v.rendered, v.errors_in_math)
        for v in crawl.visits.values()
        if v.rendered != v.math or v.errors_in_math
    }
    assert not bad, f"pages with unrendered equations (found, rendered, mjx-merror): {bad}"


def test_no_request_leaves_the_machine(crawl: Crawl) -> None:
    assert not crawl.outside, f"requests to other hosts: {sorted(set(crawl.outside))}"


def test_a_request_to_another_host_is_noted_and_fails(browser: Any, server: str) -> None:
    """What the check above stands on: a request a page makes to another host is noted, and the
    browser's proxy fails it (it never leaves the machine)."""
    outside: list[str] = []
    page = _page(browser, outside, [])
    try:
        page.goto(server)
        got = page.evaluate(
            "() => fetch('http://example.com/x', {mode: 'no-cors'})"
            ".then(() => 'answered', () => 'failed')"
        )
        assert (got, outside) == ("failed", ["http://example.com/x"])
    finally:
        page.context.close()


def test_nothing_is_missing(crawl: Crawl) -> None:
    assert not crawl.missing, f"requests answered 404: {sorted(set(crawl.missing))}"


def test_no_console_errors(crawl: Crawl) -> None:
    errors = {v.url: v.console for v in crawl.visits.values() if v.console}
    assert not errors, f"console errors: {errors}"


@pytest.mark.parametrize("width", [NARROW, WIDE])
def test_no_page_is_wider_than_the_screen(crawl: Crawl, width: int) -> None:
    measured = [v for v in crawl.visits.values() if width in v.too_wide]
    assert len(measured) == len(crawl.visits), f"pages not measured at {width} px"
    wide = {v.url: v.too_wide[width] for v in measured if v.too_wide[width]}
    assert not wide, f"pages wider than a {width} px screen:\n" + "\n".join(
        f"{url}: {what}" for url, what in wide.items()
    )


def test_the_width_check_names_what_overflows(browser: Any, server: str) -> None:
    """The check above can fail: an element wider than the screen is named, with its width,
    unless it sits in a box of its own that scrolls."""
    page = _page(browser, [], [], NARROW)
    try:
        page.goto(server + "clauses/")
        _wait_for_math(page)
        assert _too_wide(page) == ""
        right = page.evaluate(
            """() => {
              const wide = document.createElement('div');
              wide.id = 'too-wide';
              wide.className = 'probe';
              wide.style.width = '1000px';
              wide.style.height = '1px';
              document.querySelector('article').append(wide);
              return Math.round(wide.getBoundingClientRect().right);
            }"""
        )
        found = _too_wide(page)
        assert found.startswith(f"{right} px wide in a {NARROW} px viewport"), found
        assert f"div#too-wide.probe (1000 px wide, right edge at {right} px)" in found, found
        page.evaluate(
            """() => {
              const box = document.createElement('div');
              box.style.overflowX = 'auto';
              document.querySelector('article').append(box);
              box.append(document.getElementById('too-wide'));
            }"""
        )
        assert _too_wide(page) == ""
    finally:
        page.context.close()


def test_a_widened_page_is_laid_out_as_one_opened_wide(
    crawl: Crawl, browser: Any, server: str
) -> None:
    """The crawl measures WIDE by widening a page opened at NARROW: pages opened at WIDE are
    laid out the same (width and height), here the three longest of the site, and one of each
    kind of page (home, clause, API reference)."""
    longest = sorted(crawl.visits.values(), key=lambda v: v.layout[2])[-3:]
    chosen = {v.url for v in longest} | {
        server,
        server + "clauses/3.2.1/",
        server + "reference/transformer/attention/",
    }
    page = _page(browser, [], [], WIDE)
    try:
        for url in sorted(chosen):
            page.goto(url)
            _wait_for_math(page)
            assert page.evaluate(LAYOUT_JS) == crawl.visits[url].layout, url
    finally:
        page.context.close()


def test_every_internal_link_and_fragment_resolves(crawl: Crawl, site: Path, server: str) -> None:
    broken: list[str] = []
    checked = 0
    for visit in crawl.visits.values():
        for link in visit.links:
            if not link.startswith(server):
                continue
            target, fragment = urldefrag(link)
            rel = target.removeprefix(server)
            path = site / rel
            if rel == "" or rel.endswith("/"):
                path = path / "index.html"
            checked += 1
            if not path.is_file():
                broken.append(f"{visit.url} -> {link} (no file)")
                continue
            if fragment and path.name == "index.html":
                target_visit = crawl.visits.get(target)
                if target_visit is not None and fragment not in target_visit.ids:
                    broken.append(f"{visit.url} -> {link} (no #{fragment})")
    assert checked > 500, f"only {checked} internal links checked"
    assert not broken, "broken links:\n" + "\n".join(broken[:50])


def _open(browser: Any, url: str) -> Any:
    page = _page(browser, [], [])
    page.goto(url)
    _wait_for_math(page)
    return page


def test_clause_links_to_its_test_and_code_and_back(browser: Any, server: str) -> None:
    page = _open(browser, server + "clauses/3.2.1/")
    try:
        assert page.locator("#clause-3\\.2\\.1-eq1").count() == 1
        # clause -> reference code (the API page of scaled_dot_product_attention)
        page.locator(
            "a[href$='reference/transformer/attention/#transformer.attention.scaled_dot_product_attention']"
        ).first.click()
        page.wait_for_load_state("load")
        assert page.url.endswith(
            "reference/transformer/attention/#transformer.attention.scaled_dot_product_attention"
        )
        assert page.locator("[id='transformer.attention.scaled_dot_product_attention']").count()
        # code -> clause: the module's "Implements:" line links to the clause's anchor
        page.locator("a[href$='clauses/3.2.1/#scale']").first.click()
        page.wait_for_load_state("load")
        assert page.url.endswith("clauses/3.2.1/#scale")
        assert page.locator("#clause-3\\.2\\.1-scale").count() == 1
        # clause -> its test (API page of the suite), and the test -> its clause
        page.locator(
            "a[href$='reference/spec/suite/test_3_2_1_attention/#spec.suite.test_3_2_1_attention.test_scale']"
        ).first.click()
        page.wait_for_load_state("load")
        test_heading = page.locator("[id='spec.suite.test_3_2_1_attention.test_scale']")
        assert test_heading.count() == 1
        back = page.locator(
            "[id='spec.suite.test_3_2_1_attention.test_scale'] ~ div a[href$='clauses/3.2.1/#scale']"
        )
        assert back.count() >= 1
        back.first.click()
        page.wait_for_load_state("load")
        assert page.url.endswith("clauses/3.2.1/#scale")
    finally:
        page.context.close()


def test_clause_headings_list_their_backlinks(browser: Any, server: str) -> None:
    page = _open(browser, server + "clauses/3.2.1/")
    try:
        backlinks = page.locator(".clause-backlinks a[href*='reference/transformer/attention/']")
        assert backlinks.count() >= 1
    finally:
        page.context.close()


def test_search_finds_a_clause_offline(browser: Any, server: str) -> None:
    """With the site's whole search index (the crawl is given an empty one): a clause is found,
    nothing is asked of another host or missing, and the console shows no error."""
    outside: list[str] = []
    missing: list[str] = []
    errors: list[str] = []
    page = _page(browser, outside, missing)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(server)
        page.wait_for_load_state("load")
        page.locator("label.md-search__icon, .md-search__input").first.click()
        box = page.locator("input.md-search__input")
        box.press_sequentially("Masked connections get weight exactly zero", delay=20)
        result = page.locator(".md-search-result__link[href*='clauses/3.2.1/']")
        result.first.wait_for(timeout=15000)
        assert result.count() >= 1
        assert not outside, f"search asked other hosts: {outside}"
        assert not missing and not errors, (missing, errors)
    finally:
        page.context.close()
