"""`kv check URL`: run scenarios against a live server over HTTP and report every step.

Every key the check writes lives under a random prefix (`kv-check-<hex>/`) and is deleted
before the check ends, so it can run against a server holding real data; it never calls
`/_reset`. Keys contain spaces, `/`, `%`, `+`, `?`, `#` and non-ASCII letters, each sent
percent-encoded as one path segment, so a server (or a proxy in front of it) that decodes
paths wrongly fails a step.
"""

import json
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import quote

import httpx

DEFAULT_TIMEOUT = 5.0

EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_UNREACHABLE = 2


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    passed: bool
    detail: str = ""

    def line(self) -> str:
        return f"PASS {self.name}" if self.passed else f"FAIL {self.name}: {self.detail}"


@dataclass(slots=True)
class Report:
    url: str
    prefix: str
    steps: list[Step] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(step.passed for step in self.steps)

    @property
    def failed(self) -> int:
        return len(self.steps) - self.passed

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.passed > 0

    def summary(self) -> str:
        return f"{self.passed} passed, {self.failed} failed"

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "prefix": self.prefix,
            "ok": self.ok,
            "passed": self.passed,
            "failed": self.failed,
            "steps": [
                {"name": step.name, "passed": step.passed, "detail": step.detail}
                for step in self.steps
            ],
        }


class Unreachable(Exception):
    """The server did not answer the first request (refused, unresolvable, timed out)."""


class StepFailed(Exception):
    """A response differed from what the contract promises; the message says how."""


class ServerLost(Exception):
    """The server stopped answering mid-run: the remaining steps are not run."""


# --- talking to the server -----------------------------------------------------------------


def item_path(surface: str, key: str) -> str:
    """`/kv/<key>` or `/v1/<key>`, the key percent-encoded whole (`/` included)."""
    return f"{surface}/{quote(key, safe='')}"


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON: unlike `==`, `1`, `1.0` and `true` differ."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


_ABSENT = object()


def expect(
    response: httpx.Response,
    status: int,
    *,
    key: str | None = None,
    value: Any = _ABSENT,
    revision: int | None = None,
) -> dict[str, Any]:
    """The response's JSON body, after checking its status and the fields given."""
    request = f"{response.request.method} {response.request.url.raw_path.decode('ascii')}"
    if response.status_code != status:
        detail = ""
        if response.headers.get("content-type", "").startswith("application/problem+json"):
            detail = f" ({_field(response, 'detail')})"
        raise StepFailed(f"{request} answered {response.status_code}, expected {status}{detail}")
    try:
        body = response.json()
    except ValueError:
        raise StepFailed(f"{request} answered {status} with a body that is not JSON") from None
    if not isinstance(body, dict):
        raise StepFailed(f"{request} answered {status} with {body!r}, not a JSON object")
    if key is not None and body.get("key") != key:
        raise StepFailed(f"{request} answered key {body.get('key')!r}, expected {key!r}")
    if value is not _ABSENT and ("value" not in body or not same_json(body["value"], value)):
        shown = repr(body["value"]) if "value" in body else "no value"
        raise StepFailed(f"{request} answered value {shown}, expected {value!r}")
    if revision is not None:
        if body.get("revision") != revision:
            raise StepFailed(
                f"{request} answered revision {body.get('revision')!r}, expected {revision}"
            )
        etag = f'"{revision}"'
        if status == 200 and response.headers.get("etag") != etag:
            raise StepFailed(
                f"{request} answered ETag {response.headers.get('etag')!r}, expected {etag!r}"
            )
    return body


def _field(response: httpx.Response, name: str) -> str:
    try:
        return str(response.json().get(name, ""))
    except (ValueError, AttributeError):
        return ""


class Checker:
    """Runs steps against one server, remembering every key written so it can remove them."""

    def __init__(
        self, client: httpx.Client, report: Report, on_step: Callable[[Step], None]
    ) -> None:
        self.client = client
        self.report = report
        self.on_step = on_step
        self.written: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.report.prefix}/{name}"

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Record the step named `name`: passed unless its body raises StepFailed."""
        try:
            yield
        except StepFailed as exc:
            self._record(Step(name, False, str(exc)))
        except httpx.HTTPError as exc:
            self._record(Step(name, False, f"the server stopped answering: {_describe(exc)}"))
            raise ServerLost from exc
        else:
            self._record(Step(name, True))

    def _record(self, step: Step) -> None:
        self.report.steps.append(step)
        self.on_step(step)

    # One method per request the scenarios make; writes remember their key.

    def get(self, surface: str, key: str) -> httpx.Response:
        return self.client.get(item_path(surface, key))

    def put(
        self, surface: str, key: str, value: Any, *, if_match: int | None = None
    ) -> httpx.Response:
        self.written.add(key)
        headers = {} if if_match is None else {"if-match": f'"{if_match}"'}
        return self.client.put(item_path(surface, key), json={"value": value}, headers=headers)

    def post(self, path: str, key: str, value: Any) -> httpx.Response:
        self.written.add(key)
        return self.client.post(path, json={"key": key, "value": value})

    def delete(self, surface: str, key: str, *, if_match: int | None = None) -> httpx.Response:
        headers = {} if if_match is None else {"if-match": f'"{if_match}"'}
        return self.client.delete(item_path(surface, key), headers=headers)

    def clean_up(self, scenario: str) -> None:
        with self.step(f"{scenario}: clean up"):
            for key in sorted(self.written):
                response = self.delete("/kv", key)
                if response.status_code not in (200, 404):
                    expect(response, 200)
            self.written.clear()


# --- scenarios -----------------------------------------------------------------------------


def overwrite_scenario(c: Checker) -> None:
    keys = [
        c.key("overwrite/plain"),
        c.key("overwrite/with space/и юникод"),
        c.key("overwrite/100% + more"),
    ]
    values: list[Any] = [{"n": 1, "nested": {"list": [1, 2]}}, ["ü", 2.5, None], "text"]

    with c.step("overwrite: PUT /v1 creates three keys"):
        for key, value in zip(keys, values, strict=True):
            expect(c.put("/v1", key, value), 200, key=key, value=value, revision=1)
        for key, value in zip(keys, values, strict=True):
            expect(c.get("/v1", key), 200, key=key, value=value, revision=1)

    with c.step("overwrite: PUT /v1 overwrites one key and GET reads the new value"):
        new: Any = {"overwritten": True}
        expect(c.put("/v1", keys[1], new), 200, key=keys[1], value=new, revision=2)
        expect(c.get("/v1", keys[1]), 200, key=keys[1], value=new, revision=2)
        expect(c.get("/v1", keys[0]), 200, value=values[0], revision=1)

    with c.step("overwrite: POST /v1/ of an existing key is 409 and keeps its value"):
        expect(c.post("/v1/", keys[0], "must not be stored"), 409)
        expect(c.get("/v1", keys[0]), 200, value=values[0], revision=1)

    with c.step("overwrite: POST /v1/ of a new key is 200"):
        key = c.key("overwrite/new?key#not-a-fragment")
        expect(c.post("/v1/", key, [True, False]), 200, key=key, value=[True, False], revision=1)
        expect(c.get("/v1", key), 200, value=[True, False], revision=1)

    with c.step("overwrite: ten overwrites of one key, the last one wins"):
        revisions = [
            expect(c.put("/v1", keys[2], {"write": i}), 200).get("revision") for i in range(10)
        ]
        body = expect(c.get("/v1", keys[2]), 200, value={"write": 9})
        first = revisions[0]
        if not isinstance(first, int) or revisions != list(range(first, first + 10)):
            raise StepFailed(f"the ten PUTs answered revisions {revisions}, not one apart")
        if body.get("revision") != revisions[-1]:
            raise StepFailed(
                f"GET answered revision {body.get('revision')!r} after the last PUT's "
                f"{revisions[-1]!r}"
            )


def deletion_scenario(c: Checker) -> None:
    # "%07" is three characters here; sent unencoded it would decode to a control character.
    keys = [c.key(f"delete/{i} ключ/%0{i}") for i in range(10)]
    first, rest = keys[:5], keys[5:]

    with c.step("deletion: PUT /v1 creates ten keys"):
        for i, key in enumerate(keys):
            expect(c.put("/v1", key, i), 200, key=key, value=i, revision=1)

    with c.step("deletion: DELETE /v1 removes five of them"):
        for key in first:
            expect(c.delete("/v1", key), 200, key=key, revision=1)

    with c.step("deletion: deleting them again is 404"):
        for key in first:
            expect(c.delete("/v1", key), 404)

    with c.step("deletion: GET of a deleted key is 404, the others remain"):
        for key in first:
            expect(c.get("/v1", key), 404)
        for i, key in enumerate(rest, start=5):
            expect(c.get("/v1", key), 200, value=i, revision=1)

    with c.step("deletion: delete, create again at revision 1, delete"):
        key = rest[0]
        expect(c.delete("/v1", key), 200, key=key, revision=1)
        expect(c.get("/v1", key), 404)
        expect(c.put("/v1", key, "again"), 200, key=key, value="again", revision=1)
        expect(c.get("/v1", key), 200, value="again", revision=1)
        expect(c.delete("/v1", key), 200, key=key, revision=1)
        expect(c.get("/v1", key), 404)

    with c.step("deletion: remove the rest, then every key is gone"):
        for key in rest[1:]:
            expect(c.delete("/v1", key), 200, key=key, revision=1)
        for key in keys:
            expect(c.get("/v1", key), 404)


def kv_scenario(c: Checker) -> None:
    key = c.key("kv/config/db host/é 50%")
    missing = c.key("kv/never written")

    with c.step("kv: POST /kv creates a key at revision 1"):
        expect(c.post("/kv", key, {"host": "db"}), 200, key=key, value={"host": "db"}, revision=1)

    with c.step("kv: POST /kv of an existing key is 409 and keeps its value"):
        expect(c.post("/kv", key, "must not be stored"), 409)
        expect(c.get("/kv", key), 200, value={"host": "db"}, revision=1)

    with c.step("kv: PUT /kv overwrites at revision 2"):
        expect(c.put("/kv", key, {"host": "db2"}), 200, key=key, value={"host": "db2"}, revision=2)
        expect(c.get("/kv", key), 200, value={"host": "db2"}, revision=2)

    with c.step("kv: GET, PUT and DELETE of a missing key are 404"):
        expect(c.get("/kv", missing), 404)
        expect(c.put("/kv", missing, 1), 404)
        expect(c.delete("/kv", missing), 404)
        expect(c.get("/kv", missing), 404)

    with c.step("kv: If-Match with a stale revision is 412 and changes nothing"):
        expect(c.put("/kv", key, "stale write", if_match=1), 412)
        expect(c.delete("/kv", key, if_match=1), 412)
        expect(c.get("/kv", key), 200, value={"host": "db2"}, revision=2)

    with c.step("kv: DELETE /kv at the current revision removes the key"):
        expect(c.delete("/kv", key, if_match=2), 200, key=key, revision=2)
        expect(c.get("/kv", key), 404)


SCENARIOS: list[tuple[str, Callable[[Checker], None]]] = [
    ("overwrite", overwrite_scenario),
    ("deletion", deletion_scenario),
    ("kv", kv_scenario),
]


# --- running -------------------------------------------------------------------------------


def run_check(
    url: str,
    *,
    token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    on_step: Callable[[Step], None] = lambda _: None,
) -> Report:
    """Run every scenario against the server at `url`; raise Unreachable if it never answers.

    Steps run one after another, each checking what it can even when an earlier one failed;
    if the server stops answering, the run ends there with that step failed.
    """
    report = Report(url=url, prefix=f"kv-check-{uuid.uuid4().hex[:12]}")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=url, headers=headers, timeout=timeout) as client:
        try:
            client.get("/health")
        except httpx.HTTPError as exc:
            raise Unreachable(f"cannot reach {url}: {_describe(exc)}") from exc
        checker = Checker(client, report, on_step)
        for name, scenario in SCENARIOS:
            try:
                scenario(checker)
                checker.clean_up(name)
            except ServerLost:
                break
    return report


def main(
    url: str,
    *,
    token: str | None,
    timeout: float,
    as_json: bool,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Print the report (a line per step and a summary, or JSON); return the exit status.

    `out` and `err` default to the streams current at the call (not at import), so a
    redirected sys.stdout is honoured.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    if "://" not in url:
        url = f"http://{url}"

    def print_step(step: Step) -> None:
        print(step.line(), file=out, flush=True)

    try:
        report = run_check(
            url, token=token, timeout=timeout, on_step=(lambda _: None) if as_json else print_step
        )
    except Unreachable as exc:
        print(f"kv check: {exc}", file=err)
        if as_json:
            print(json.dumps({"url": url, "ok": False, "error": str(exc)}), file=out)
        return EXIT_UNREACHABLE
    if as_json:
        print(json.dumps(report.as_dict(), ensure_ascii=False, indent=2), file=out)
    else:
        print(report.summary(), file=out)
    return EXIT_PASSED if report.ok else EXIT_FAILED


def _describe(exc: httpx.HTTPError) -> str:
    text = str(exc)
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer in time ({text or type(exc).__name__})"
    return text or type(exc).__name__
