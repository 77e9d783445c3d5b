"""The rendered site in a real headless Chromium: the index, a chapter's figure and its typeset math are visible.

Uses Debian's ``chromium`` (``.ci/run`` installs it) driven by Playwright; no
browser is downloaded. The site is served on loopback only and must render
offline: MathJax comes from the site itself. Screenshots are written next to
the built site (``_build/html/../screenshots``) so that they can be looked at.
When Chromium is missing the test is skipped, unless ``HYDRALIB_REQUIRE_BROWSER=1``
(set by CI), where it fails.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest

CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("HYDRALIB_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is not installed (apt-get install -y chromium)")
        pytest.skip("chromium is not installed")
    return path


@pytest.fixture(scope="module")
def served(site):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def page(served, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=executable, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        offsite = []
        context.route("**/*", lambda route: (offsite.append(route.request.url), route.abort())
                      if not route.request.url.startswith(served) else route.continue_())
        page = context.new_page()
        page.offsite_requests = offsite
        yield page
        context.close()


@pytest.mark.timeout(300)
def test_index_page_renders(page, served, site):
    page.goto(f"{served}/index.html")
    page.wait_for_load_state("networkidle")
    assert "Merging low-rank adapters" in page.title()
    shots = site.parent / "screenshots"
    shots.mkdir(exist_ok=True)
    page.screenshot(path=str(shots / "index.png"))
    assert (shots / "index.png").stat().st_size > 10_000
    assert page.locator("nav a", has_text="Adapter sets").count() >= 1


@pytest.mark.timeout(300)
def test_chapter_figure_and_math_are_visible(page, served, site):
    page.goto(f"{served}/book/adapter_sets.html")
    page.wait_for_selector("mjx-container", timeout=30_000)  # MathJax typeset the equations
    math = page.locator("mjx-container").first
    box = math.bounding_box()
    assert box is not None and box["width"] > 20 and box["height"] > 5
    assert page.locator("mjx-container").count() >= 5
    assert page.locator("span.math, div.math").filter(has_not=page.locator("mjx-container")).count() == 0
    figure = page.locator("figure img").first
    figure.scroll_into_view_if_needed()
    assert figure.is_visible()
    natural = figure.evaluate("img => img.complete ? [img.naturalWidth, img.naturalHeight] : [0, 0]")
    assert natural[0] > 100 and natural[1] > 50
    shots = site.parent / "screenshots"
    shots.mkdir(exist_ok=True)
    figure.screenshot(path=str(shots / "chapter-figure.png"))
    page.screenshot(path=str(shots / "chapter.png"), full_page=True)
    assert (shots / "chapter.png").stat().st_size > 50_000
    assert not [u for u in page.offsite_requests if "mathjax" in u.lower()]


# Checked on every page of the built site, at a 1000 px wide window: no element inside the article is wider than
# its column (code blocks may scroll), every image loaded, every equation typeset, no stderr or traceback output,
# every figure captioned, and no request left the site.
OVERFLOW_JS = """
() => {
  const article = document.querySelector('article.bd-article') || document.querySelector('main article')
                  || document.querySelector('main');
  const right = article.getBoundingClientRect().right + 2;
  const skip = 'pre, div.highlight, .cell_input, mjx-assistive-mml, .headerlink, script, style';
  const out = [];
  for (const el of article.querySelectorAll('*')) {
    if (el.closest(skip)) continue;
    const box = el.getBoundingClientRect();
    if (box.width === 0 || box.height === 0) continue;
    if (box.right > right) {
      out.push(`${el.tagName.toLowerCase()}.${[...el.classList].join('.')} `
               + `"${(el.textContent || '').trim().slice(0, 60)}" right ${Math.round(box.right)} > ${Math.round(right)}`);
    }
  }
  return out;
}
"""


def _pages(site: Path) -> list[Path]:
    return sorted(p for p in [site / "index.html", *(site / "book").glob("*.html")] if p.is_file())


@pytest.mark.timeout(900)
def test_every_page_fits_its_column_and_renders_cleanly(page, served, site):
    pages = _pages(site)
    assert len(pages) >= 10
    page.set_viewport_size({"width": 1000, "height": 900})
    problems = {}
    for path in pages:
        rel = path.relative_to(site).as_posix()
        page.goto(f"{served}/{rel}")
        page.wait_for_load_state("networkidle")
        if page.locator("span.math, div.math").count():
            page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise"
                                   " && document.querySelectorAll('mjx-container').length > 0", timeout=30_000)
            page.evaluate("() => MathJax.startup.promise")
        found = list(page.evaluate(OVERFLOW_JS))
        untypeset = page.locator("span.math, div.math").filter(has_not=page.locator("mjx-container")).count()
        if untypeset:
            found.append(f"{untypeset} equations not typeset")
        broken = page.evaluate("() => [...document.images].filter(i => !(i.complete && i.naturalWidth > 0))"
                               ".map(i => i.src)")
        found += [f"image not loaded: {src}" for src in broken]
        stderr = page.locator("div.output.stderr, div.output.traceback, div.output.error").count()
        if stderr:
            found.append(f"{stderr} stderr/traceback outputs")
        uncaptioned = page.evaluate("() => [...document.querySelectorAll('article figure')]"
                                    ".filter(f => !(f.querySelector('figcaption')?.textContent.trim())).length")
        if uncaptioned:
            found.append(f"{uncaptioned} figures without a caption")
        if found:
            problems[rel] = found[:8]
    assert not page.offsite_requests, page.offsite_requests[:5]
    assert not problems, "\n".join(f"{k}: {v}" for k, v in problems.items())
