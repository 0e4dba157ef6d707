"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) from files shipped with the package: no CDN, no
Google Fonts, so that the API documentation works on a machine without the internet, under a
policy that lets the pages load nothing from elsewhere and run no inline script.

FastAPI's own pages fetch both from jsDelivr and start Swagger UI with an inline script; here the
scripts come from ``fastapi-offline`` (a package that ships exactly these files, kept up to date
with their releases) and ``docs.js`` starts them.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException

router = APIRouter()

DOCS_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
}


def _folder() -> Path:
    import fastapi_offline

    return Path(fastapi_offline.__file__).resolve().parent / "static"


def _page(title: str, head: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n"
        '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">\n'
        f"{head}</head>\n<body>\n{body}</body>\n</html>\n"
    )


SWAGGER = _page(
    "mnist_mlp API: Swagger UI",
    '<link rel="stylesheet" href="/docs-assets/swagger-ui.css">\n',
    '<div id="swagger-ui"></div>\n<script src="/docs-assets/swagger-ui-bundle.js"></script>\n'
    '<script src="/static/docs.js"></script>\n',
)
REDOC = _page(
    "mnist_mlp API: ReDoc",
    "",
    '<redoc spec-url="/openapi.json"></redoc>\n'
    '<script src="/docs-assets/redoc.standalone.js"></script>\n',
)


@router.get("/docs", response_class=HTMLResponse, include_in_schema=False)
def swagger() -> HTMLResponse:
    return HTMLResponse(SWAGGER)


@router.get("/redoc", response_class=HTMLResponse, include_in_schema=False)
def redoc() -> HTMLResponse:
    return HTMLResponse(REDOC)


@router.get("/docs-assets/{name}", include_in_schema=False)
def asset(name: str, request: Request) -> Response:
    """One of :data:`DOCS_ASSETS`, by name from a fixed table (read once, then kept)."""
    if name not in DOCS_ASSETS:
        raise HTTPException(404)
    cache = request.app.state.docs_assets
    if name not in cache:
        cache[name] = (_folder() / name).read_bytes()
    return Response(
        cache[name], media_type=DOCS_ASSETS[name], headers={"Cache-Control": "max-age=86400"}
    )
