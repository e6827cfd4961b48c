"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) from vendored files (backend/app/dashboard/vendor/), so the
API's documentation works offline: no page loads anything from another host."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

VENDOR = Path(__file__).resolve().parents[1] / "dashboard" / "vendor"
ASSETS = "/docs/assets"
SWAGGER_UI = f"{ASSETS}/swagger-ui"
REDOC = f"{ASSETS}/redoc"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"
# The pages may load only from this server: ReDoc's bundle, for one, shows a logo from its vendor's CDN, which
# the browser now refuses (the image hides itself) instead of asking another host. Swagger UI's start-up script
# is inline (FastAPI's page); ReDoc compiles JSON-schema validators at run time (eval) and searches in a worker.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "frame-ancestors 'none'"
)


def _local_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


def add_offline_docs(app: FastAPI) -> None:
    """The app must be created with ``docs_url=None, redoc_url=None``; these routes take their place."""
    app.mount(SWAGGER_UI, StaticFiles(directory=VENDOR / "swagger-ui"), name="swagger-ui-assets")
    app.mount(REDOC, StaticFiles(directory=VENDOR / "redoc"), name="redoc-assets")
    title = app.title
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return _local_only(
            get_swagger_ui_html(
                openapi_url=openapi_url,
                title=f"{title} - Swagger UI",
                oauth2_redirect_url=OAUTH2_REDIRECT,
                swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
                swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
                swagger_favicon_url=f"{SWAGGER_UI}/favicon-32x32.png",
                # no validator badge: Swagger UI would otherwise ask validator.swagger.io about the spec
                swagger_ui_parameters={"validatorUrl": None},
            )
        )

    @app.get(OAUTH2_REDIRECT, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return _local_only(get_swagger_ui_oauth2_redirect_html())

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return _local_only(
            get_redoc_html(
                openapi_url=openapi_url,
                title=f"{title} - ReDoc",
                redoc_js_url=f"{REDOC}/redoc.standalone.js",
                redoc_favicon_url=f"{SWAGGER_UI}/favicon-32x32.png",
                with_google_fonts=False,
            )
        )
