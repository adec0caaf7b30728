"""The browser console: one static page (HTML, one script, one stylesheet) over the API.

The page holds no data: it asks `/v1` for everything with the key typed into its login form,
so these routes sit outside `/v1` and need no token. Only three fixed files are served, read
from the package's `console/` folder by name (no path from the request ever reaches the file
system, so nothing can traverse). Every answer carries a strict Content-Security-Policy: the
page runs no inline script or style, and talks only to its own origin.

CSRF: the API uses no cookies and no ambient credentials; the key lives in the tab's
sessionStorage and is sent only as `Authorization: Bearer`, which another site's form or
script cannot make a browser attach. So there is no CSRF token to check.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter, Response
from fastapi.responses import RedirectResponse

router = APIRouter(include_in_schema=False)

CONSOLE_PATH = "/console"
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# The same on every console answer; the HTML alone is never stored (it is tiny, and a stale
# page must not outlive a deploy), the script and stylesheet are revalidated each time.
_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_HTML = ("console.html", "text/html; charset=utf-8", "no-store")
_JS = ("console.js", "text/javascript; charset=utf-8", "no-cache")
_CSS = ("console.css", "text/css; charset=utf-8", "no-cache")


@cache
def _read(name: str) -> bytes:
    """A file of the console folder, read once: the names are the constants above only."""
    return files("watcher.api").joinpath("console", name).read_bytes()


def _serve(file: tuple[str, str, str]) -> Response:
    name, media_type, cache_control = file
    headers = {**_SECURITY_HEADERS, "Cache-Control": cache_control}
    return Response(content=_read(name), media_type=media_type, headers=headers)


@router.get(CONSOLE_PATH)
def console_page() -> Response:
    return _serve(_HTML)


@router.get(CONSOLE_PATH + "/")
def console_slash() -> RedirectResponse:
    # The page's links are absolute, but a typed trailing slash should still land on it.
    return RedirectResponse(CONSOLE_PATH, status_code=308, headers=_SECURITY_HEADERS)


@router.get(CONSOLE_PATH + "/static/console.js")
def console_script() -> Response:
    return _serve(_JS)


@router.get(CONSOLE_PATH + "/static/console.css")
def console_stylesheet() -> Response:
    return _serve(_CSS)
