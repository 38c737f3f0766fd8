"""`/ui`: the browser interface, a page of plain JavaScript modules (no build step).

Its files (HTML, CSS, JavaScript) are in the package's `kv/ui` folder. They are read the first
time one is asked for (not when the app is built: `app = create_app()` runs at import and does
no I/O) and then served from memory. They are open without a token, like `/docs`: they hold
no data; the page asks the API for the data, with the token when the server has one.
"""

from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import PurePath

from starlette.responses import Response

from kv.entrypoints.problems import problem_response
from kv.entrypoints.requests import Call

UI_PATH = "/ui"
PAGE = "index.html"

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    # A module script of another type is refused by the browser.
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}

# As documented (OpenAPI names media types without their parameters).
DOCUMENTED_MEDIA_TYPES = tuple(sorted({media.split(";")[0] for media in MEDIA_TYPES.values()}))

# The page loads only its own files and talks only to its own origin: that it works offline
# is then enforced by the browser, and markup that reached the DOM from a value could not run
# a script (the page writes values as text, never as markup, besides).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    # Small files, fetched again when kv is upgraded rather than served stale from a cache.
    "cache-control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class UiFile:
    body: bytes
    media_type: str


class UiFiles:
    """The files of the page, by name; `kv/ui` is flat, so a name never holds a `/`."""

    def __init__(self, package: str = "kv", folder: str = "ui") -> None:
        self.package = package
        self.folder = folder

    @cached_property
    def by_name(self) -> dict[str, UiFile]:
        found: dict[str, UiFile] = {}
        for entry in (resources.files(self.package) / self.folder).iterdir():
            media_type = MEDIA_TYPES.get(PurePath(entry.name).suffix)
            if media_type is not None and entry.is_file():
                found[entry.name] = UiFile(entry.read_bytes(), media_type)
        return found

    def response(self, name: str) -> Response:
        file = self.by_name.get(name)
        if file is None:
            return problem_response(404, "Not Found", f"the page has no file {name[:100]!r}")
        return Response(file.body, media_type=file.media_type, headers=_HEADERS)


def _files(call: Call) -> UiFiles:
    files: UiFiles = call.scope["app"].state.ui
    return files


async def page(call: Call) -> Response:
    return _files(call).response(PAGE)


async def asset(call: Call) -> Response:
    name: str = call.scope["path_params"]["asset"]
    return _files(call).response(name)
