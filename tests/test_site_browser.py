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
