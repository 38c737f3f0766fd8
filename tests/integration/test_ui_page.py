"""/ui in real headless Chromium against a real `kv serve` (memory backend), offline: every
host but loopback is unresolvable, and the page's Content-Security-Policy allows its own
origin only.

Driven by selenium through Debian's `chromium-driver` (the same build as `chromium`; `make
test` installs both). A person's steps: browse, create, edit, a conflicting edit by another
client, delete, changes made by others arriving live, the watch lost and regained, the token.
Another client is httpx. Every wait polls for a condition (WAIT seconds at most), none sleeps.

Screenshots of the main views at 1280 and 400 px wide go to a temporary directory, or to
$KV_UI_SCREENSHOTS when set (which is how docs/ui-*.png were made).
"""

import contextlib
import os
import re
import shutil
import signal
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.servers import free_port
from tests.servers.kv import Server, start_kv, stop_kv

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
WAIT = 20.0  # seconds: generous, the machine is shared
WIDE, NARROW = 1280, 400
TOKEN = "ui-page-token"

T = TypeVar("T")


# --- the browser ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.fail(
            "the /ui tests need Debian's chromium and chromium-driver: "
            "apt-get install chromium chromium-driver (make test installs them)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
        # Offline: any host but the loopback kv server fails to resolve.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # A driver path given: selenium does not run Selenium Manager (which would download one).
    service = Service(executable_path=CHROMEDRIVER)
    browser = webdriver.Chrome(options=options, service=service)
    assert service.process is not None
    started = _children(service.process.pid)  # chromium, started by chromedriver
    try:
        yield browser
    finally:
        browser.quit()  # ends chromium, then chromedriver
        for pid in started:  # should be gone; if not, end it by its pid rather than leak it
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _children(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # pid (comm) state ppid ...: comm may hold spaces, so read after its ")".
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(stat.parent.name))
    return found


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("KV_UI_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("ui-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def kv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_kv(tmp_path_factory.mktemp("ui-kv"), {"KV_BACKEND": "memory"})
    yield server
    if server.process.poll() is None:
        stop_kv(server)


class Page:
    """The page in the browser, as the tests see it: what a person reads, clicks and types."""

    def __init__(self, driver: WebDriver, base_url: str, screenshots: Path) -> None:
        self.driver = driver
        self.base_url = base_url
        self.screenshots = screenshots
        self.console()  # drops what earlier tests left

    def open(self, fragment: str = "", *, width: int = WIDE) -> None:
        self.driver.get("about:blank")
        self.resize(width)
        self.driver.get(f"{self.base_url}/ui{fragment}")

    def resize(self, width: int, height: int = 860) -> None:
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        script = "return innerWidth"
        self.until(lambda: self.driver.execute_script(script) == width, f"{width} px wide")

    def console(self) -> list[dict[str, Any]]:
        """The console's entries since the last call."""
        entries: list[dict[str, Any]] = self.driver.get_log("browser")  # type: ignore[no-untyped-call]
        return entries

    def until(self, condition: Callable[[], T | None], what: str, timeout: float = WAIT) -> T:
        """Polls `condition` until it is true; fails naming `what` and showing the page."""

        def check(_: Any) -> T | Literal[False]:
            value = condition()
            return value if value else False

        wait = WebDriverWait(
            self.driver, timeout, poll_frequency=0.1,
            ignored_exceptions=(StaleElementReferenceException,),
        )  # fmt: skip
        try:
            result: T = wait.until(check)
        except TimeoutException as error:
            raise AssertionError(
                f"waited {timeout} s for {what}; the page: {self.text()!r}"
            ) from error
        return result

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    # Read in one script each: the page re-renders often, and an element found in one call
    # may be replaced before the next reads it.
    def present(self, css: str) -> bool:
        return bool(
            self.driver.execute_script("return !!document.querySelector(arguments[0])", css)
        )

    def visible(self, css: str) -> bool:
        script = "return !!document.querySelector(arguments[0])?.checkVisibility()"
        return bool(self.driver.execute_script(script, css))

    def text(self, css: str = "body") -> str:
        script = "return document.querySelector(arguments[0])?.innerText ?? ''"
        return str(self.driver.execute_script(script, css)).strip()

    def row(self, kind: str, path: str) -> str:
        """The selector of a tree row: kind "f" (folder), "k" (key) or "m" (load more)."""
        return f'[role=treeitem][data-id="{kind}:{path}"]'

    # Found and used in one step, again while the element is replaced under the finger.
    def press(self, label: str) -> None:
        """Clicks the visible button labelled `label`."""

        def pressed() -> bool:
            for button in self.driver.find_elements(By.TAG_NAME, "button"):
                if button.text == label and button.is_displayed() and button.is_enabled():
                    button.click()
                    return True
            return False

        self.until(pressed, f"a button {label!r}")

    def click(self, css: str, *keys: str) -> None:
        """Clicks the element `css` (or, given keys, types them into it)."""

        def done() -> bool:
            element = self.find(css)
            if keys:
                element.send_keys(*keys)
            else:
                element.click()
            return True

        self.until(done, css)

    def type(self, css: str, text: str) -> None:
        field = self.find(css)
        field.clear()
        field.send_keys(text)

    def keys(self, *keys: str) -> None:
        self.driver.switch_to.active_element.send_keys(*keys)

    def shot(self, name: str, width: int) -> Path:
        self.resize(width)
        path = self.screenshots / f"{name}-{width}.png"
        assert self.driver.save_screenshot(str(path)), path
        return path

    def errors(self) -> list[str]:
        """Console errors other than the statuses of refused requests (401, 404, 412...),
        which the page expects and handles: a script error, a refused resource."""
        return [
            entry["message"]
            for entry in self.console()
            if entry["level"] == "SEVERE"
            and "the server responded with a status of" not in entry["message"]
        ]


@pytest.fixture
def page(driver: WebDriver, kv: Server, screenshots: Path) -> Iterator[Page]:
    shown = Page(driver, kv.url, screenshots)
    yield shown
    errors = shown.errors()
    driver.get("about:blank")  # closes the page's watch
    assert errors == []


@pytest.fixture
def http(kv: Server) -> Iterator[httpx.Client]:
    """Another client of the same server."""
    with httpx.Client(base_url=kv.url, timeout=10) as client:
        yield client


@pytest.fixture
def prefix() -> str:
    return f"ui-{uuid.uuid4().hex[:8]}/"


def seed(http: httpx.Client, records: dict[str, Any]) -> None:
    for key, value in records.items():
        assert http.post("/kv", json={"key": key, "value": value}).status_code == 200


def record_shows(page: Page, key: str, revision: int, *texts: str) -> bool:
    panel = page.text("#record")
    return (
        page.text("#record h2") == key
        and page.text("#record dd.revision") == str(revision)
        and all(text in panel for text in texts)
    )


# --- browsing, creating, editing, deleting -------------------------------------------------


def test_browse_by_keyboard_then_create_edit_and_delete(page: Page, http: httpx.Client) -> None:
    prefix = "shop/"  # the only test on this server to use it; readable in the screenshots
    seed(http, {
        f"{prefix}config/db/host": "db1.internal",
        f"{prefix}config/db/port": 5432,
        f"{prefix}config/app/name": {"name": "shop", "replicas": 3},
        f"{prefix}readme": "keys of the test",
    })  # fmt: skip
    page.open(f"#prefix={prefix}")
    page.until(lambda: page.text("#summary") == f"4 keys under “{prefix}”", "the count")
    assert page.text("#live-status") == "Live"
    folder = page.row("f", f"{prefix}config/")
    assert page.find(folder).get_attribute("aria-expanded") == "false"
    assert page.text(f"{folder} .count") == "3"  # the keys in the folder

    # Into the tree with Tab, then only the keyboard.
    page.find("#new-key").send_keys(Keys.TAB)
    assert page.driver.switch_to.active_element == page.find(folder)
    page.keys(Keys.ARROW_RIGHT)  # opens config/
    page.until(lambda: page.present(page.row("f", f"{prefix}config/db/")), "config/db/")
    page.keys(Keys.ARROW_DOWN, Keys.ARROW_DOWN)  # app/, db/
    page.keys(Keys.ARROW_RIGHT)  # opens db/
    page.until(lambda: page.present(page.row("k", f"{prefix}config/db/host")), "the db keys")
    page.keys(Keys.ARROW_RIGHT)  # into db/: its first key
    page.keys(Keys.ENTER)
    page.until(lambda: record_shows(page, f"{prefix}config/db/host", 1, '"db1.internal"'), "host")
    assert (
        page.find(page.row("k", f"{prefix}config/db/host")).get_attribute("aria-selected") == "true"
    )
    page.keys(Keys.ARROW_LEFT)  # back to db/
    assert page.driver.switch_to.active_element == page.find(page.row("f", f"{prefix}config/db/"))

    # Create a key (JSON checked before sending), with a ttl.
    page.click("#new-key")
    page.until(
        lambda: page.find("#create-key").get_attribute("value") == f"{prefix}config/db/", "form"
    )
    page.type("#create-key", f"{prefix}config/db/user")
    page.type("#create-value", '{"name": "app", "roles": [1, 2')
    page.press("Create")
    page.until(lambda: "Not valid JSON" in page.text("#create-error"), "the JSON error")
    assert page.find("#create-value").get_attribute("aria-invalid") == "true"
    assert http.get(f"/kv/{prefix}config/db/user").status_code == 404  # nothing was sent
    page.type("#create-value", '{"name": "app", "roles": [1, 2]}')
    page.type("#create-ttl", "300")
    page.press("Create")
    page.until(lambda: record_shows(page, f"{prefix}config/db/user", 1, '"roles"'), "created")
    assert re.fullmatch(r"in (5 min 0|4 min \d+) s", page.text("#record .remaining"))
    stored = http.get(f"/kv/{prefix}config/db/user").json()
    assert stored["value"] == {"name": "app", "roles": [1, 2]} and "expires_at" in stored
    assert page.text("#record time") == stored["expires_at"]
    page.until(lambda: page.present(page.row("k", f"{prefix}config/db/user")), "it in the tree")
    for width in (WIDE, NARROW):
        page.shot("browse", width)
    page.resize(WIDE)

    # Edit: the ttl field keeps about the current expiry; If-Match the revision shown.
    page.press("Edit")
    assert 290 <= float(page.find("#edit-ttl").get_attribute("value") or "nan") <= 300
    page.type("#edit-value", '{"name": "app", "roles": [3]')
    page.press("Save")
    page.until(lambda: "Not valid JSON" in page.text("#edit-error"), "the JSON error")
    page.type("#edit-value", '{"name": "app", "roles": [3]}')
    for width in (WIDE, NARROW):
        page.shot("edit", width)
    page.resize(WIDE)
    page.press("Save")
    page.until(lambda: record_shows(page, f"{prefix}config/db/user", 2, "[\n    3\n  ]"), "saved")
    stored = http.get(f"/kv/{prefix}config/db/user").json()
    assert stored["value"] == {"name": "app", "roles": [3]} and stored["revision"] == 2
    assert "expires_at" in stored

    # Delete, after a confirmation; cancelling it deletes nothing.
    page.press("Delete…")
    page.until(lambda: page.visible("#confirm"), "the confirmation")
    assert f"{prefix}config/db/user (revision 2)" in page.text("#confirm")
    page.press("Cancel")
    page.until(lambda: not page.visible("#confirm"), "the confirmation to close")
    assert http.get(f"/kv/{prefix}config/db/user").status_code == 200
    page.press("Delete…")
    page.until(lambda: page.visible("#confirm"), "the confirmation")
    page.click("#confirm button[value=yes]")
    page.until(lambda: "Deleted." in page.text("#record"), "deleted")
    assert http.get(f"/kv/{prefix}config/db/user").status_code == 404
    page.until(lambda: not page.present(page.row("k", f"{prefix}config/db/user")), "the row gone")
    page.until(lambda: page.text("#summary") == f"4 keys under “{prefix}”", "the count")


def test_a_folder_is_listed_a_page_at_a_time(page: Page, http: httpx.Client, prefix: str) -> None:
    seed(http, {f"{prefix}many/{i:02d}": i for i in range(23)} | {f"{prefix}z": 0})
    page.open(f"#prefix={prefix}")
    page.until(lambda: page.text("#summary") == f"24 keys under “{prefix}”", "the listing")
    Select(page.find("#page-size")).select_by_visible_text("10")
    page.press("Show")
    # 10 of the 23 keys in many/: the count says there are more.
    folder = page.row("f", f"{prefix}many/")
    page.until(lambda: page.text(f"{folder} .count") == "10+", "a partial count")
    assert "more to load" in page.text("#summary")
    page.click(folder)
    more = page.row("m", f"{prefix}many/")
    page.until(lambda: page.present(more), "load more")
    assert "page 2" in page.text(more)
    page.click(more)
    page.until(lambda: page.text(f"{folder} .count") == "20+", "the second page")
    page.click(more, Keys.ENTER)
    page.until(lambda: page.text(f"{folder} .count") == "23", "every key")
    assert not page.present(more)
    rows = page.driver.find_elements(
        By.CSS_SELECTOR, "[role=treeitem][data-kind=key][aria-level='2']"
    )
    assert [row.text.split()[0] for row in rows] == [f"{i:02d}" for i in range(23)]


# --- others' changes ------------------------------------------------------------------------


def test_a_conflicting_edit_is_shown_and_never_overwritten(
    page: Page, http: httpx.Client, prefix: str
) -> None:
    key = f"{prefix}settings"
    seed(http, {key: {"mode": "original"}})
    page.open(f"#prefix={prefix}&key={key}")
    page.until(lambda: record_shows(page, key, 1, '"original"'), "the record")
    page.press("Edit")
    page.type("#edit-value", '{"mode": "mine"}')

    # Another client saves first; the page says so while the edit goes on.
    assert http.put(f"/kv/{key}", json={"value": {"mode": "theirs"}}).status_code == 200
    page.until(lambda: "Another client saved revision 2" in page.text("#record"), "the notice")
    assert page.find("#edit-value").get_attribute("value") == '{"mode": "mine"}'
    page.press("Save")
    page.until(lambda: "Your edit was not saved" in page.text("#record [role=alert]"), "conflict")
    assert '"theirs"' in page.text("#record pre.theirs")
    assert '"mine"' in page.text("#record pre.mine")
    assert http.get(f"/kv/{key}").json() == {"key": key, "value": {"mode": "theirs"}, "revision": 2}
    for width in (WIDE, NARROW):
        page.shot("conflict", width)
    page.resize(WIDE)

    # Only when asked, and only over the revision shown.
    page.press("Save my edit over revision 2")
    page.until(lambda: record_shows(page, key, 3, '"mine"'), "saved over revision 2")
    assert http.get(f"/kv/{key}").json()["value"] == {"mode": "mine"}

    # A deletion confirmed for revision 3 is refused once another client wrote revision 4.
    page.press("Delete…")
    page.until(lambda: page.visible("#confirm"), "the confirmation")
    assert http.put(f"/kv/{key}", json={"value": {"mode": "later"}}).status_code == 200
    page.until(lambda: page.text("#record dd.revision") == "4", "the live update behind")
    page.click("#confirm button[value=yes]")
    page.until(lambda: "The key was not deleted" in page.text("#record"), "the refusal")
    assert '"later"' in page.text("#record pre.theirs")
    assert http.get(f"/kv/{key}").json()["revision"] == 4


def test_changes_by_another_client_appear_without_reload(
    page: Page, http: httpx.Client, prefix: str
) -> None:
    seed(http, {f"{prefix}a": 1})
    page.open(f"#prefix={prefix}&key={prefix}a")
    page.until(lambda: record_shows(page, f"{prefix}a", 1), "the record")

    http.post("/kv", json={"key": f"{prefix}new/x", "value": "x"})
    page.until(lambda: page.present(page.row("f", f"{prefix}new/")), "the new folder")
    page.until(lambda: page.text("#summary") == f"2 keys under “{prefix}”", "the count")
    http.put(f"/kv/{prefix}a", json={"value": {"changed": True}})
    page.until(lambda: record_shows(page, f"{prefix}a", 2, '"changed": true'), "the new value")
    assert "Changed by another client" in page.text("#record")
    assert page.text(page.row("k", f"{prefix}a")).endswith("r2")
    http.delete(f"/kv/{prefix}new/x")
    page.until(lambda: not page.present(page.row("f", f"{prefix}new/")), "the folder gone")
    http.delete(f"/kv/{prefix}a")
    page.until(lambda: "Deleted by another client" in page.text("#record"), "the deletion")

    # A key that expires: its watch event removes it, and the open view says so.
    http.post("/kv", json={"key": f"{prefix}brief", "value": 1, "ttl": 4})
    page.until(lambda: page.present(page.row("k", f"{prefix}brief")), "the brief key")
    page.click(page.row("k", f"{prefix}brief"))
    page.until(lambda: "Expires" in page.text("#record") and page.present("#record time"), "expiry")
    page.until(lambda: "Expired." in page.text("#record"), "its expiry", timeout=WAIT + 4)
    assert not page.present(page.row("k", f"{prefix}brief"))


def test_a_lost_watch_shows_a_banner_and_the_page_reconnects(
    driver: WebDriver, screenshots: Path, tmp_path: Path
) -> None:
    port = free_port()
    for run in ("first", "second"):
        (tmp_path / run).mkdir()
    first = start_kv(tmp_path / "first", {"KV_BACKEND": "memory"}, port=port)
    second = None
    try:
        page = Page(driver, first.url, screenshots)
        httpx.post(f"{first.url}/kv", json={"key": "before", "value": 1}, timeout=10)
        page.open()
        page.until(lambda: page.present(page.row("k", "before")), "the key")
        page.until(lambda: page.text("#live-status") == "Live", "live")
        assert not page.visible("#banner")

        # A crash: the stream breaks, then connections are refused. (SIGTERM would end it
        # only after uvicorn's 10 s grace: test_watch_serve.py.)
        first.process.kill()
        first.process.wait(timeout=10)
        page.until(lambda: page.visible("#banner"), "the banner")
        assert "Live updates stopped" in page.text("#banner")
        page.until(lambda: page.text("#live-status") == "Reconnecting…", "reconnecting")

        # A new server (the memory backend starts empty): the page lists it again once back.
        second = start_kv(tmp_path / "second", {"KV_BACKEND": "memory"}, port=port)
        httpx.post(f"{second.url}/kv", json={"key": "after", "value": 2}, timeout=10)
        page.until(lambda: page.present(page.row("k", "after")), "the re-listing", timeout=30)
        assert not page.present(page.row("k", "before"))
        page.until(lambda: not page.visible("#banner"), "the banner to go")
        assert page.text("#live-status") == "Live"
        httpx.post(f"{second.url}/kv", json={"key": "live-again", "value": 3}, timeout=10)
        page.until(lambda: page.present(page.row("k", "live-again")), "a live change")
    finally:
        driver.get("about:blank")  # closes the watch before the server stops
        for server in (first, second):
            if server is not None and server.process.poll() is None:
                stop_kv(server)


# --- the token ----------------------------------------------------------------------------


def test_with_a_token_the_page_asks_for_it_and_a_401_asks_again(
    driver: WebDriver, screenshots: Path, tmp_path: Path
) -> None:
    server = start_kv(tmp_path, {"KV_BACKEND": "memory", "KV_AUTH_TOKEN": TOKEN})
    auth = {"authorization": f"Bearer {TOKEN}"}
    try:
        with httpx.Client(base_url=server.url, timeout=10, headers=auth) as http:
            http.post("/kv", json={"key": "secret/plan", "value": "launch at dawn"})
            page = Page(driver, server.url, screenshots)
            page.open("#key=secret/plan")
            page.until(lambda: page.visible("#login"), "the token prompt")
            assert not page.visible("#main") and page.text("#login-message") == ""
            assert "secret" not in page.text() and "dawn" not in page.driver.page_source
            for width in (WIDE, NARROW):
                page.shot("token", width)
            page.resize(WIDE)

            page.type("#token", "not-the-token")
            page.press("Use this token")
            page.until(lambda: "refused" in page.text("#login-message"), "the refusal")
            assert page.visible("#login") and not page.visible("#main")
            assert page.driver.execute_script("return sessionStorage.getItem('kv.token')") is None

            page.type("#token", TOKEN)
            page.find("#token").send_keys(Keys.ENTER)
            page.until(lambda: record_shows(page, "secret/plan", 1, "dawn"), "the record")
            stored = page.driver.execute_script("return sessionStorage.getItem('kv.token')")
            assert stored == TOKEN
            # The watch carries the token too (fetch, not EventSource).
            page.until(lambda: page.text("#live-status") == "Live", "live")
            http.post("/kv", json={"key": "secret/other", "value": 2})
            page.until(lambda: page.present(page.row("k", "secret/other")), "a live change")

            # Kept for the tab: a reload does not ask again.
            page.driver.refresh()
            page.until(lambda: record_shows(page, "secret/plan", 1, "dawn"), "after a reload")
            assert not page.visible("#login")
            page.press("Forget token")
            page.until(lambda: page.text("#login-message") == "Token forgotten.", "forgotten")
            assert page.driver.execute_script("return sessionStorage.getItem('kv.token')") is None
            assert not page.visible("#main") and "dawn" not in page.text()
            page.type("#token", TOKEN)
            page.press("Use this token")
            page.until(lambda: page.present(page.row("k", "secret/other")), "the keys again")

            # A token that stops working (here: replaced) leads back to the prompt, no data.
            page.driver.execute_script("sessionStorage.setItem('kv.token', 'revoked')")
            page.click(page.row("k", "secret/other"))
            page.until(lambda: page.visible("#login"), "the prompt again")
            assert "refused" in page.text("#login-message")
            assert not page.visible("#main") and page.text("#tree") == ""
            assert "dawn" not in page.text()
            assert page.errors() == []
    finally:
        driver.get("about:blank")
        stop_kv(server)


# --- layout, and the modules on their own -------------------------------------------------


def test_readable_at_1280_and_400_px(page: Page, http: httpx.Client, prefix: str) -> None:
    long_key = f"{prefix}{'segment-' * 12}end"
    seed(http, {long_key: {"text": "word " * 200}})
    page.open(f"#prefix={prefix}&key={long_key}")
    page.until(lambda: record_shows(page, long_key, 1), "the record")
    for width in (WIDE, NARROW):
        page.resize(width)
        layout = page.driver.execute_script(
            "const b = document.querySelector('.browse').getBoundingClientRect();"
            "const r = document.querySelector('.record').getBoundingClientRect();"
            "return {scroll: document.documentElement.scrollWidth, side: r.left >= b.right,"
            "        below: r.top >= b.bottom};"
        )
        assert layout["scroll"] <= width, layout  # nothing wider than the window
        assert layout["side"] is (width == WIDE) and layout["below"] is (width == NARROW), layout


def test_keys_named_dot_and_dot_dot_are_reached_through_txn(page: Page, http: httpx.Client) -> None:
    """A browser drops "." and ".." segments from a URL, even percent-encoded ones."""
    for key in (".", ".."):
        http.post("/txn", json={"ops": [{"op": "delete", "key": key}]})
        seed(http, {key: "dots"})
        page.open(f"#prefix={key}&key={key}")
        page.until(partial(record_shows, page, key, 1, '"dots"'), f"the key {key!r}")
        page.press("Edit")
        page.type("#edit-value", '"edited"')
        page.press("Save")
        page.until(partial(record_shows, page, key, 2, '"edited"'), "saved")
        page.press("Delete…")
        page.until(lambda: page.visible("#confirm"), "the confirmation")
        page.click("#confirm button[value=yes]")
        page.until(lambda: "Deleted." in page.text("#record"), "deleted")
        answer = http.post("/txn", json={"ops": [{"op": "get", "key": key}]}).json()
        assert answer == {"results": [None]}


MODULE_CHECKS = """
const done = arguments[arguments.length - 1];
Promise.all([import('/ui/sse.js'), import('/ui/keys.js'), import('/ui/api.js')])
  .then(([sse, keys, api]) => {
    const stream = 'event: ready\\r\\ndata: {}\\r\\n\\r\\n: idle\\n\\nevent: put\\ndata: {"key":' +
      '"a","value":1}\\n\\nevent:delete\\rdata:{"key":"a"}\\r\\rdata: x\\ndata: y\\n\\n';
    const whole = new sse.EventParser().push(stream);
    const split = new sse.EventParser();
    const pieces = [];
    for (const char of stream) pieces.push(...split.push(char));
    const order = ['\\u{1F600}', '\\uFFFD', 'b', 'a/b', 'a'];
    const big = api.prettyJson(api.parseJson('{"n": 12345678901234567890, "f": 1.50}'));
    done({ whole, pieces, sorted: order.sort(keys.compareKeys), big });
  })
  .catch((error) => done({ error: String(error) }));
"""


def test_the_modules_parse_events_order_keys_and_keep_numbers(page: Page) -> None:
    page.driver.get(f"{page.base_url}/health")  # same origin, without the page's own script
    result = page.driver.execute_async_script(MODULE_CHECKS)
    events = [
        {"type": "ready", "data": "{}"},
        {"type": "put", "data": '{"key":"a","value":1}'},
        {"type": "delete", "data": '{"key":"a"}'},
        {"type": "message", "data": "x\ny"},
    ]
    assert result.get("whole") == events, result
    assert result["pieces"] == events  # fed one character at a time, CR and LF apart
    # kv's order: UTF-8 bytes, where U+FFFD comes before U+1F600 (not so in UTF-16).
    assert result["sorted"] == ["a", "a/b", "b", "\ufffd", "\U0001f600"]
    assert result["big"] == '{\n  "n": 12345678901234567890,\n  "f": 1.50\n}'


# The watch's answers, one per connection the page makes, from a stand-in for fetch().
LIVE_CHECKS = """
const done = arguments[arguments.length - 1];
const answers = [
  'event: ready\\ndata: {}\\n\\nevent: put\\ndata: {"key":"k","value":1,"revision":1}\\n\\n' +
    'event: overflow\\ndata: {}\\n\\n',
  'event: ready\\ndata: {}\\n\\n: idle\\n\\nevent: unavailable\\ndata: {}\\n\\n',
  new TypeError('Failed to fetch'),
  new Response('{"detail": "too many watchers"}', { status: 503 }),
  'event: ready\\ndata: {}\\n\\n',  // then the stream ends
  new Response('{"detail": "no token"}', { status: 401 }),
];
const calls = [];
const headers = [];
window.fetch = async (url, init) => {
  headers.push(init.headers.authorization ?? null);
  const answer = answers.shift();
  if (answer instanceof Error) throw answer;
  if (answer instanceof Response) return answer;
  return new Response(new Blob([answer]).stream(), { status: 200 });
};
sessionStorage.setItem('kv.token', 't0ken');
import('/ui/live.js').then(({ Live }) => {
  const live = new Live({
    ready: () => calls.push('ready'),
    change: (type, data) => calls.push(`${type} ${data.key}`),
    lost: (reason) => calls.push(`lost: ${reason}`),
    unauthorized: () => {
      calls.push('unauthorized');
      sessionStorage.removeItem('kv.token');
      done({ calls, headers });
    },
  });
  live.start('');
}).catch((error) => done({ error: String(error) }));
"""


def test_the_watch_says_why_it_was_lost_and_reconnects_until_refused(page: Page) -> None:
    page.driver.get(f"{page.base_url}/health")
    result = page.driver.execute_async_script(LIVE_CHECKS)
    assert result.get("calls") == [
        "ready",
        "put k",
        "lost: too many changes arrived at once (overflow)",
        "ready",
        "lost: the server's change feed is unavailable",
        "lost: the connection was lost",
        "lost: the server refused the watch: too many watchers",
        "ready",
        "lost: the server closed the stream",
        "unauthorized",  # and no more attempts
    ], result
    assert result["headers"] == ["Bearer t0ken"] * 6
