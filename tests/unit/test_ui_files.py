"""/ui's files as kv serves them (the page itself runs in Chromium: tests/integration/
test_ui_page.py): open even with a token, only the package's own files, nothing from another
origin, and the package declares them all so that an installed kv has them too."""

import fnmatch
import re
import tomllib
from pathlib import Path

import pytest

from kv.container import Settings
from kv.entrypoints.ui import CONTENT_SECURITY_POLICY, MEDIA_TYPES
from tests.conftest import open_client

UI_FOLDER = Path(__file__).parents[2] / "src" / "kv" / "ui"
PYPROJECT = Path(__file__).parents[2] / "pyproject.toml"
# What the page names: src and href in the HTML, module specifiers in the JavaScript.
REFERENCES = re.compile(r'(?:src|href)="([^"]+)"|(?:from|import\()\s*"([^"]+)"')


def referenced(text: str, base: str = "/ui/") -> set[str]:
    found = set()
    for html, module in REFERENCES.findall(text):
        name = html or module
        found.add(base + name.removeprefix("./") if name.startswith("./") else name)
    return found


async def test_the_page_and_every_file_it_loads_are_served_open_with_a_token() -> None:
    async for http in open_client(Settings(auth_token="t")):
        page = await http.get("/ui")
        assert page.status_code == 200, page.text
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert page.headers["x-content-type-options"] == "nosniff"
        assert (await http.get("/ui/")).content == page.content  # a trailing / is ignored
        pending, seen = referenced(page.text), set()
        while pending:
            path = pending.pop()
            seen.add(path)
            assert path.startswith("/ui/"), f"{path}: the page loads only its own files"
            answer = await http.get(path)
            assert answer.status_code == 200, path
            assert answer.headers["content-type"] == MEDIA_TYPES[Path(path).suffix], path
            if path.endswith(".js"):
                pending |= referenced(answer.text, base=path.rsplit("/", 1)[0] + "/") - seen
        served = {f"/ui/{file.name}" for file in UI_FOLDER.iterdir() if file.suffix != ".html"}
        assert seen == served  # every file in the folder is used, and every one used is there


@pytest.mark.parametrize(
    "path",
    ["/ui/nothing.js", "/ui/__init__.py", "/ui/..%2F..%2Fpyproject.toml", "/ui/%2e%2e/README.md"],
)
async def test_anything_else_under_ui_is_a_404_problem(path: str) -> None:
    async for http in open_client(Settings()):
        answer = await http.get(path)
        assert answer.status_code == 404, path
        assert answer.headers["content-type"] == "application/problem+json"


def test_no_file_reaches_another_origin_or_runs_inline_code() -> None:
    """The Content-Security-Policy would block both; this says which file did it."""
    for file in UI_FOLDER.iterdir():
        text = file.read_text()
        urls = set(re.findall(r"\w+://[^\s\"')]+", text)) - {"http://www.w3.org/2000/svg"}
        assert urls == set(), file.name
        if file.suffix == ".html":
            assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", text) == [], "an inline script"
            assert "<style" not in text and " style=" not in text, "inline style"
            assert re.findall(r"\son\w+=", text) == [], "an inline event handler"
        if file.suffix == ".js":
            assert "innerHTML" not in text and "insertAdjacentHTML" not in text, file.name


def test_every_file_of_the_page_is_package_data() -> None:
    """A wheel (and so the Docker image) carries only what pyproject.toml declares."""
    declared = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-data"]["kv"]
    for file in UI_FOLDER.iterdir():
        assert file.suffix in MEDIA_TYPES, f"{file.name}: kv would not serve it"
        assert any(fnmatch.fnmatch(f"ui/{file.name}", pattern) for pattern in declared), file


async def test_the_service_info_links_the_page() -> None:
    async for http in open_client(Settings()):
        assert (await http.get("/")).json()["ui"] == "/ui"
