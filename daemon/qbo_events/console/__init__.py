"""The operator console: a static page (index.html, console.css, console.js beside this module)
over /status and the admin API, served on the health listener at `/` and `/console/{file}`.

The files are read once when the listener is built. Every answer carries a Content-Security-Policy
that allows only this origin's own script, style and API (no inline script, nothing fetched from
elsewhere, no framing), so that text from the daemon can never run as code in the page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from aiohttp import web

HERE: Final = Path(__file__).parent
FILES: Final = {
    "index.html": "text/html",
    "console.css": "text/css",
    "console.js": "text/javascript",
}
POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS: Final = {
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # The page changes with the package: a browser asks again rather than keep an old one.
    "Cache-Control": "no-cache",
}


def size() -> int:
    """The shipped files' total size in bytes."""
    return sum((HERE / name).stat().st_size for name in FILES)


def add_routes(app: web.Application) -> None:
    bodies = {name: (HERE / name).read_bytes() for name in FILES}

    def answer(name: str) -> web.Response:
        return web.Response(
            body=bodies[name],
            content_type=FILES[name],
            charset="utf-8",
            headers=HEADERS,
        )

    async def index(_: web.Request) -> web.Response:
        return answer("index.html")

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["file"]
        if name not in bodies:  # only the named files: no path reaches the file system
            raise web.HTTPNotFound(text="no such console file", headers=HEADERS)
        return answer(name)

    app.router.add_get("/", index)
    app.router.add_get("/console/{file}", static)
