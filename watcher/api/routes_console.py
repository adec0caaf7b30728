"""The browser console: one static page (HTML, a few ES modules, one stylesheet) over the API.

The page holds no data: it asks `/v1` for everything with the key typed into its login form,
so these routes sit outside `/v1` and need no token. Only the fixed files named in `STATIC`
are served, one route each, read from the package's `console/` folder by that name: no path
from the request ever reaches the file system, so nothing can traverse. Every answer carries a
strict Content-Security-Policy: the page runs no inline script or style (its modules load with
`script-src 'self'`), and talks only to its own origin.

CSRF: the API uses no cookies and no ambient credentials; the key lives only in the page's
memory (a JavaScript variable: no storage another script of this origin could read) and is
sent only as `Authorization: Bearer`, which another site's form or script cannot make a
browser attach. So there is no CSRF token to check.
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
# page must not outlive a deploy), the scripts and the stylesheet are revalidated each time.
_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_HTML = ("console.html", "text/html; charset=utf-8", "no-store")
_JS = "text/javascript; charset=utf-8"
# Every file under /console/static/, by name: the only names ever read (pyproject's package
# data ships console/*.js and console/*.css). main.js imports the other modules.
STATIC: dict[str, str] = {
    "main.js": _JS,
    "session.js": _JS,
    "api.js": _JS,
    "dom.js": _JS,
    "lists.js": _JS,
    "payments.js": _JS,
    "subscriptions.js": _JS,
    "deliveries.js": _JS,
    "events.js": _JS,
    "console.css": "text/css; charset=utf-8",
}
STATIC_PREFIX = CONSOLE_PATH + "/static/"


@cache
def _read(name: str) -> bytes:
    """A file of the console folder, read once: the names are those above only."""
    return files("watcher.api").joinpath("console", name).read_bytes()


def _serve(name: str, media_type: str, cache_control: str) -> Response:
    headers = {**_SECURITY_HEADERS, "Cache-Control": cache_control}
    return Response(content=_read(name), media_type=media_type, headers=headers)


@router.get(CONSOLE_PATH)
def console_page() -> Response:
    return _serve(*_HTML)


@router.get(CONSOLE_PATH + "/")
def console_slash() -> RedirectResponse:
    # The page's links are absolute, but a typed trailing slash should still land on it.
    return RedirectResponse(CONSOLE_PATH, status_code=308, headers=_SECURITY_HEADERS)


def _static_route(name: str, media_type: str) -> None:
    """One GET route for one named file: its path is fixed, it takes no parameter."""

    def static_file() -> Response:
        return _serve(name, media_type, "no-cache")

    router.add_api_route(STATIC_PREFIX + name, static_file, methods=["GET"], name=f"console {name}")


for _name, _media_type in STATIC.items():
    _static_route(_name, _media_type)
