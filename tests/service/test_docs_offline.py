"""`/docs` works offline: the page references only the service's own URLs, and each of them
answers (service/docs.py, the vendored Swagger UI in service/static/swagger-ui/)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from mondrian.config import load_settings
from mondrian.service.app import create_app
from mondrian.service.docs import ASSETS, ASSETS_DIR


@pytest.fixture
def client(mondrian_home):
    # No lifespan (no `with`): the docs need neither the model nor the state.
    settings = load_settings(allowed_hosts=["testserver"])
    return TestClient(create_app(settings))


class _Urls(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]


def _page_urls(html: str) -> list[str]:
    parser = _Urls()
    parser.feed(html)
    # The inline script names the OpenAPI document and the OAuth2 redirect as strings.
    return parser.urls + re.findall(r"(?:url|oauth2RedirectUrl): *'([^']+)'", html)


def test_docs_page_loads_nothing_from_elsewhere(client):
    page = client.get("/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    urls = _page_urls(page.text)
    assert len(urls) >= 4, urls  # icon, css, js, openapi.json (+ the oauth2 redirect)
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
    assert "://" not in page.text.replace("window.location", "")


def test_every_url_the_page_names_answers(client):
    for url in _page_urls(client.get("/docs").text):
        answer = client.get(url.split("#", 1)[0])
        assert answer.status_code == 200, url
    # Built in the inline script from window.location.origin: local too, and served.
    assert "window.location.origin + '/docs/oauth2-redirect'" in client.get("/docs").text
    assert client.get("/docs/oauth2-redirect").status_code == 200


def test_the_assets_are_the_vendored_files_with_their_types(client):
    for name, media_type in ASSETS.items():
        answer = client.get(f"/docs/assets/{name}")
        assert answer.status_code == 200
        assert answer.headers["content-type"] == media_type
        assert answer.content == (ASSETS_DIR / name).read_bytes()
        assert "max-age" in answer.headers["cache-control"]
    assert (ASSETS_DIR / "LICENSE").is_file() and (ASSETS_DIR / "NOTICE").is_file()


@pytest.mark.parametrize("name", ["LICENSE", "..%2F..%2Fapp.py", "index.html", "nope.js"])
def test_only_the_listed_assets_are_answered(client, name):
    answer = client.get(f"/docs/assets/{name}")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"


def test_redoc_is_not_served_from_a_cdn(client):
    assert client.get("/redoc").status_code == 404


def test_the_docs_keep_the_frame_policy(client):
    page = client.get("/docs")
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
