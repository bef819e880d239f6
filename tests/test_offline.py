"""The app works with no internet: every page loads in a real browser whose every request to a
host other than this machine is refused, and none is even attempted.

One server (``bench.serve``, as ``test_browser`` starts it) and one browser; the pages are
visited as a person does, by the top navigation, in one session.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from playwright.sync_api import Route, expect, sync_playwright

from bench.serve import CHROMIUM, CHROMIUM_ARGS, streamlit_app

PAGES = ("Model", "Explore", "Download", "Trade-off", "Learn")  # titles, in the navigation's order
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
TIMEOUT_MS = 30_000


def test_every_page_loads_with_the_internet_blocked(tmp_path: Path) -> None:
    elsewhere: list[str] = []

    def local_only(route: Route) -> None:
        if urlparse(route.request.url).hostname in LOOPBACK:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort("internetdisconnected")

    with streamlit_app(tmp_path / "server.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1440, "height": 1000})
        context.route("**/*", local_only)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        for title in PAGES:
            if title != PAGES[0]:
                page.get_by_role("link", name=title, exact=True).click()
            heading = page.get_by_role("heading", name=title, exact=True, level=1)
            expect(heading).to_be_visible(timeout=TIMEOUT_MS)
            if title in ("Explore", "Learn"):  # a Plotly chart drawn: its code loaded and ran
                expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=TIMEOUT_MS)
        # The tab's icon is inline, not fetched (Streamlit fetches a ":material/...:" one).
        icon = page.locator("link[rel='shortcut icon']").get_attribute("href")
        browser.close()
    assert elsewhere == []
    assert icon.startswith("data:image/svg+xml"), icon
