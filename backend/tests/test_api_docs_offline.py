"""``/docs`` and ``/redoc`` work offline: their pages name only this server's assets, and those are served."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import httpx
import pytest

pytestmark = pytest.mark.asyncio


class _References(HTMLParser):
    """Every ``src`` and ``href`` of a page, and every URL its inline scripts mention."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in {"src", "href", "spec-url"} and value]
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.urls += re.findall(r"""url:\s*['"]([^'"]+)""", data)
            self.urls += re.findall(r"https?://[^\s'\"]+", data)


def references(page: str) -> list[str]:
    parser = _References()
    parser.feed(page)
    return parser.urls


@pytest.mark.parametrize(("path", "assets"), [("/docs", 3), ("/redoc", 2)])
async def test_the_documentation_page_loads_only_local_assets_and_they_are_served(
    anonymous: httpx.AsyncClient, path: str, assets: int
) -> None:
    # When the documentation page is fetched
    page = await anonymous.get(path)
    assert page.status_code == 200
    urls = references(page.text)
    # and the browser is told to load from this server only
    assert "default-src 'self'" in page.headers["content-security-policy"]
    # Then it names no other host (no CDN, no fonts, no validator), only paths on this server
    assert urls
    assert all(url.startswith("/") and not url.startswith("//") for url in urls), urls
    assert "cdn" not in page.text
    assert "fonts.googleapis" not in page.text
    # And each of them is served: the vendored scripts and styles, and the OpenAPI schema
    served = [url for url in urls if url.startswith("/docs/assets/")]
    assert len(served) == assets, urls
    for url in urls:
        answer = await anonymous.get(url)
        assert answer.status_code == 200, url
        assert len(answer.content) > 100, url
    assert "/openapi.json" in urls


async def test_swagger_ui_has_no_validator_badge_and_its_oauth2_redirect_is_served(
    anonymous: httpx.AsyncClient,
) -> None:
    page = (await anonymous.get("/docs")).text
    assert '"validatorUrl": null' in page
    assert (await anonymous.get("/docs/oauth2-redirect")).status_code == 200


async def test_the_vendored_bundles_are_the_real_libraries_with_their_licences(anonymous: httpx.AsyncClient) -> None:
    swagger = await anonymous.get("/docs/assets/swagger-ui/swagger-ui-bundle.js")
    assert swagger.headers["content-type"].startswith(("application/javascript", "text/javascript"))
    assert "SwaggerUIBundle" in swagger.text
    redoc = await anonymous.get("/docs/assets/redoc/redoc.standalone.js")
    assert "Redoc" in redoc.text[:2000]
    for licence in ("/docs/assets/swagger-ui/LICENSE", "/docs/assets/redoc/LICENSE"):
        assert "License" in (await anonymous.get(licence)).text
