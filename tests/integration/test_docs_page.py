"""/docs in a real headless browser against a real `kv serve`, with every host but loopback
unresolvable: the page must render the document and list every operation, offline.

Needs Debian's `chromium` (`make test` installs it); skipped with a reason where it is absent.
"""

import html
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers.kv import Server, start_kv, stop_kv

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (make test installs it)")

TOKEN = "docs-page-token"
HTTP_METHODS = ("get", "head", "post", "put", "delete")


def chromium(tmp_path: Path, url: str, *mode: str) -> str:
    """Run headless Chromium on `url` with `mode` (--dump-dom or --screenshot=...)."""
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-', dir=tmp_path)}",
        # Offline: any host but the loopback kv server fails to resolve.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--hide-scrollbars",
        "--window-size=1280,1800",
        # Lets the page load its scripts, fetch /openapi.json and render before the dump.
        "--virtual-time-budget=15000",
        *mode,
        url,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.fixture(params=["open", "token"])
def docs_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    env = {"KV_BACKEND": "memory"}
    if request.param == "token":
        env["KV_AUTH_TOKEN"] = TOKEN
    server = start_kv(tmp_path, env)
    yield server
    if server.process.poll() is None:
        stop_kv(server)


def test_the_docs_page_renders_every_operation_offline(docs_server: Server, tmp_path: Path) -> None:
    document = httpx.get(f"{docs_server.url}/openapi.json", timeout=10).json()
    expected = sorted(
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    )
    dom = chromium(tmp_path, f"{docs_server.url}/docs", "--dump-dom")

    assert "Failed to load API definition" not in dom
    assert "Unable to render this definition" not in dom
    rendered = sorted(
        (method, html.unescape(path))
        for method, path in re.findall(
            r'class="opblock-summary-method">(\w+)</span>.*?'
            r'class="opblock-summary-path" data-path="([^"]+)"',
            dom,
        )
    )
    assert rendered == expected
    assert ("/kv", "POST") in {(path, method) for method, path in rendered}
    has_authorize = 'class="btn authorize' in dom
    assert has_authorize is ("securitySchemes" in document["components"])

    # A deep link opens one operation, with the button that lets a person send a request.
    opened = chromium(tmp_path, f"{docs_server.url}/docs#/kv/get", "--dump-dom")
    assert re.search(r'class="[^"]*try-out__btn[^"]*">Try it out\s*<', opened), "no Try it out"

    screenshot = tmp_path / "docs.png"
    chromium(tmp_path, f"{docs_server.url}/docs", f"--screenshot={screenshot}")
    png = screenshot.read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000  # a rendered page, not a blank one
