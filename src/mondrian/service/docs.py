"""`/docs` without a network: Swagger UI's page with its script, style and icon served here.

FastAPI's own `/docs` loads Swagger UI from a CDN, so offline (the demo, an air-gapped
machine) the page is blank. The assets are vendored in `service/static/swagger-ui/`
(swagger-ui-dist, Apache-2.0, see the README there) and answered from an allow-list of
names under `/docs/assets/`; the page is FastAPI's `get_swagger_ui_html` pointed at them.
ReDoc (`/redoc`) is not served: it would need its own bundle, and `/docs` covers the API.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse

from mondrian.errors import NotFound

SWAGGER_UI_VERSION = "5.35.0"
ASSETS_DIR = Path(__file__).parent / "static" / "swagger-ui"
ASSETS_URL = "/docs/assets"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"

# The files the page loads, and their types; nothing else under ASSETS_DIR is answered.
ASSETS: dict[str, str] = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
# The assets change only with the package: a day in the browser's cache is safe.
CACHE_CONTROL = "public, max-age=86400"


def docs_router(title: str, openapi_url: str) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/docs")
    def swagger_page() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon-32x32.png",
            oauth2_redirect_url=OAUTH2_REDIRECT_URL,
        )

    @router.get(OAUTH2_REDIRECT_URL)
    def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @router.get(ASSETS_URL + "/{name}")
    def asset(name: str) -> FileResponse:
        media_type = ASSETS.get(name)
        if media_type is None:  # the allow-list: no path from the request reaches the disk
            raise NotFound(f"no docs asset {name[:60]!r}")
        return FileResponse(
            ASSETS_DIR / name, media_type=media_type, headers={"Cache-Control": CACHE_CONTROL}
        )

    return router


def install_docs(app: FastAPI) -> None:
    """Serve `/docs` from the vendored assets; the app must be made with docs_url=None and
    redoc_url=None, so FastAPI adds no CDN page of its own."""
    app.include_router(docs_router(app.title, app.openapi_url or "/openapi.json"))
