"""/docs works on a network with no way out: Swagger UI comes from the app's vendored files, the
page references nothing elsewhere, and in Chromium it renders the API without a request that
leaves this server."""

from __future__ import annotations

import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from api.dashboard import STATIC_DIR
from tests.test_api import client  # noqa: F401 - fixture
from tests.test_api_stream import live_server  # noqa: F401 - fixture
from tests.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS

VENDOR = STATIC_DIR / "vendor"


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]


def test_docs_reference_only_files_the_app_serves(client):  # noqa: F811
    page = client.get("/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text
    parser = _References()
    parser.feed(page.text)
    assert len(parser.urls) >= 3  # the script, the stylesheet, the icon
    for url in parser.urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and url.startswith("/"), url
        assert client.get(url).status_code == 200, url
    # Nothing absolute anywhere in the page (inline script included), and the spec is local.
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", page.text), "an outside URL"
    assert "'/openapi.json'" in page.text or '"/openapi.json"' in page.text
    assert '"validatorUrl": null' in page.text
    assert client.get("/redoc").status_code == 404  # FastAPI's ReDoc page would need a CDN


def test_vendored_files_are_the_ones_the_readme_says():
    readme = (VENDOR / "README.md").read_text()
    listed = dict(re.findall(r"`(swagger-ui/[\w.-]+)` `([0-9a-f]{64})`", readme))
    assert set(listed) == {"swagger-ui/swagger-ui-bundle.js", "swagger-ui/swagger-ui.css"}
    for name, digest in listed.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
    for name in ("LICENSE", "NOTICE"):
        assert (VENDOR / "swagger-ui" / name).stat().st_size > 0


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="make test installs Debian's chromium")
@pytest.mark.timeout(120)
def test_docs_render_in_chromium_with_the_network_cut_off(live_server):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    base = live_server()
    host = urlsplit(base).netloc
    outside: list[str] = []

    def only_this_server(route) -> None:
        if urlsplit(route.request.url).netloc == host:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.route("**/*", only_this_server)
            page.goto(f"{base}/docs")
            expect(page.locator(".opblock").first).to_be_visible(timeout=20_000)
            expect(
                page.locator(".opblock-summary-path", has_text="/api/v1/stream/ticket")
            ).to_be_visible()
        finally:
            browser.close()
    assert outside == []
