"""The steps of `kv check`: a `Checker` runs each step's requests through kv.client, records
whether the answers were those the contract promises, and remembers every key written."""

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from kv.client import Client, ConnectionFailed, KVError, Record, core


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    passed: bool
    detail: str = ""

    def line(self) -> str:
        return f"PASS {self.name}" if self.passed else f"FAIL {self.name}: {self.detail}"


class StepFailed(Exception):
    """An answer differed from what the contract promises; the message says how."""


class ServerLost(Exception):
    """The server stopped answering mid-run: the remaining steps are not run."""


class LastHeaders(httpx.HTTPTransport):
    """Remembers the headers of the last answer, for the checks the client leaves to its
    caller (a 200 carries the record's ETag)."""

    def __init__(self) -> None:
        super().__init__()
        self.headers = httpx.Headers()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.headers = response.headers
        return response


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON: unlike `==`, `1`, `1.0` and `true` differ."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


_ABSENT = object()


class Checker:
    """Runs steps against one server, remembering every key written so it can remove them."""

    def __init__(
        self, url: str, prefix: str, *, token: str | None, timeout: float,
        record: Callable[[Step], None],
    ) -> None:  # fmt: skip
        self.transport = LastHeaders()
        self.client = Client(url, token=token, timeout=timeout, transport=self.transport)
        self.prefix = prefix
        self.timeout = timeout
        self.record = record
        self.written: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Record the step named `name`: passed unless its body raises StepFailed or gets
        an error it did not expect."""
        try:
            yield
        except StepFailed as exc:
            self.record(Step(name, False, str(exc)))
        except ConnectionFailed as exc:
            self.record(Step(name, False, f"the server stopped answering: {exc.detail}"))
            raise ServerLost from exc
        except KVError as exc:
            self.record(Step(name, False, unexpected(exc, 200)))
        else:
            self.record(Step(name, True))

    # --- requests: each the call of kv.client.core it sends; writes remember their key --------

    def run(self, call: core.Call[core.T]) -> core.T:
        return self.client.execute(call)

    def get(self, key: str, *, surface: str = "/kv") -> core.Call[Record]:
        return core.get(key, surface=surface)

    def create(
        self, key: str, value: Any, *, surface: str = "/kv", **options: Any
    ) -> core.Call[Record]:
        self.written.add(key)
        return core.create(key, value, surface=surface, **options)

    def put(
        self, key: str, value: Any, *, surface: str = "/kv", **options: Any
    ) -> core.Call[Record]:
        self.written.add(key)
        return core.put(key, value, surface=surface, **options)

    def written_too(self, *keys: str) -> None:
        """Remember keys written otherwise (by a transaction)."""
        self.written.update(keys)

    def clean_up(self, scenario: str) -> None:
        with self.step(f"{scenario}: clean up"):
            for key in sorted(self.written):
                try:
                    self.run(core.delete(key))
                except KVError as error:
                    if error.status != 404 or isinstance(error, ConnectionFailed):
                        raise
            self.written.clear()

    # --- expectations ------------------------------------------------------------------------

    def expect(
        self,
        call: core.Call[Record],
        *,
        key: str | None = None,
        value: Any = _ABSENT,
        revision: int | None = None,
    ) -> Record:
        """The record `call` answers, after checking the fields given (and its ETag)."""
        request = call.request
        record = self.run(call)
        if key is not None and record.key != key:
            raise StepFailed(f"{request} answered key {record.key!r}, expected {key!r}")
        if value is not _ABSENT and not same_json(record.value, value):
            raise StepFailed(f"{request} answered value {record.value!r}, expected {value!r}")
        if revision is not None:
            self.expect_revision(request, record.revision, revision)
        return record

    def expect_revision(self, request: core.Request, actual: int, expected: int) -> None:
        if actual != expected:
            raise StepFailed(f"{request} answered revision {actual!r}, expected {expected}")
        etag = self.transport.headers.get("etag")
        if etag != f'"{expected}"':
            raise StepFailed(f"{request} answered ETag {etag!r}, expected '\"{expected}\"'")

    def refused(self, call: core.Call[Any], status: int) -> KVError:
        """The error `call` gets, which must have `status`."""
        try:
            self.run(call)
        except ConnectionFailed:
            raise
        except KVError as error:
            if error.status != status:
                raise StepFailed(unexpected(error, status)) from None
            return error
        raise StepFailed(f"{call.request} answered 200, expected {status}")


def unexpected(error: KVError, expected: int) -> str:
    """What a step that expected `expected` got instead."""
    if error.status in (None, 200):
        return f"{error.request}: {error.detail}"
    return f"{error.request} answered {error.status}, expected {expected} ({error.detail})"
