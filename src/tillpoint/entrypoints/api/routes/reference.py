"""The documentation the service serves itself, so it works without internet: Swagger UI from
the `swagger-ui-bundle-v2` package's files and the API reference (docs/api.md) as HTML.

Problem documents' `type` URIs point at rows of the reference's error table
(`/docs/reference#<code>`), so a client can follow `type` to the meaning of a code.
"""

from __future__ import annotations

import html
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Final

import swagger_ui_bundle
from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from markdown_it import MarkdownIt
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from tillpoint.entrypoints.api.problems import REFERENCE

ASSETS: Final = "/docs/assets"

router = APIRouter(include_in_schema=False)


def reference_path() -> Path:
    """docs/api.md: packaged into the wheel, or read from the source tree of a checkout."""
    packaged = resources.files("tillpoint") / "reference" / "api.md"
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[5] / "docs" / "api.md"


@cache
def _reference_html() -> str:
    text = reference_path().read_text(encoding="utf-8")
    body = MarkdownIt("commonmark", {"html": True}).enable("table").render(text)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape('tillpoint API reference')}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;"
        "padding:0 1em;line-height:1.45}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.25em .5em;vertical-align:top}"
        "code{background:#f4f4f4}:target{background:#fff3b0}</style>"
        f"</head><body>{body}</body></html>"
    )


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="tillpoint - Swagger UI",
        swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
    )


@router.get(REFERENCE)
async def api_reference() -> HTMLResponse:
    return HTMLResponse(_reference_html())


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")
