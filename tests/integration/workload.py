"""Concurrent clients against a live `kv serve`, each request recorded as an Operation.

Shared by the reliability suites: linearizability (the history is checked), graceful shutdown
and faults under load (every answer is classified and timed), durability (the acknowledged
writes are read back).
"""

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from tests.linearizability import Kind, Operation

# The backends the load suites run `kv serve` on; a live one through its `<backend>_server`
# fixture (tests/servers/), as `backend_settings` resolves it.
LIVE_BACKENDS = ["memory", "tarantool", "redis", "redis_cluster"]

# Statuses an operation of the workload may get, besides 503 (the backend is unavailable).
EXPECTED = {200, 404, 409, 412}

ALL_KINDS: tuple[Kind, ...] = ("create", "overwrite", "get", "delete")
WEIGHTS = {"create": 2, "overwrite": 4, "get": 5, "delete": 2}


def kv_environment(backend: str, settings: dict[str, Any], **extra: Any) -> dict[str, str]:
    """The `KV_*` variables that run `kv serve` on `backend` with `settings` (Settings
    fields, as the `<backend>_server` fixtures give them)."""
    environ = {"KV_BACKEND": backend}  # a test-only name ("redis_cluster") is in `settings`
    for name, value in {**settings, **extra}.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        environ[f"KV_{name.upper()}"] = str(value)
    return environ


@dataclass
class Answer:
    """One request and what came of it: a status, or the transport error instead."""

    operation: Operation
    latency: float
    status: int | None
    error: str | None = None
    request_id: str | None = None


@dataclass
class Run:
    answers: list[Answer] = field(default_factory=list)

    @property
    def history(self) -> list[Operation]:
        return [answer.operation for answer in self.answers]

    def statuses(self) -> dict[int | None, int]:
        counts: dict[int | None, int] = {}
        for answer in self.answers:
            counts[answer.status] = counts.get(answer.status, 0) + 1
        return counts

    def unexpected(self) -> list[Answer]:
        """Answers that are neither an outcome of the model nor a 503."""
        return [a for a in self.answers if a.status not in EXPECTED and a.status != 503]

    def acknowledged_writes(self) -> list[Operation]:
        return [
            op
            for op in self.history
            if op.kind in ("create", "overwrite") and op.status == 200 and op.returned
        ]


@dataclass(frozen=True)
class Plan:
    url: str
    keys: Sequence[str]
    operations: int | None
    until: asyncio.Event | None
    kinds: list[Kind]
    seed: int
    request_timeout: float
    headers: dict[str, str] | None
    transactions: float  # the share of operations sent as one-operation transactions


async def run_clients(
    url: str,
    keys: Sequence[str],
    *,
    clients: int,
    operations: int | None = None,
    until: asyncio.Event | None = None,
    kinds: Sequence[Kind] = ALL_KINDS,
    seed: int = 0,
    request_timeout: float = 30.0,
    headers: dict[str, str] | None = None,
    into: Run | None = None,
    transactions: float = 0.0,
) -> Run:
    """`clients` tasks, each with its own connection, issue random operations on `keys`
    until each has done `operations` or `until` is set. Transport errors are recorded (the
    outcome is unknown), not raised. Answers are appended to `into` (a new Run by default)
    as they come, for a caller that watches the run while it goes on."""
    assert operations is not None or until is not None
    weighted = [kind for kind in kinds for _ in range(WEIGHTS[kind])]
    plan = Plan(
        url, keys, operations, until, weighted, seed, request_timeout, headers, transactions
    )
    run = Run() if into is None else into
    await asyncio.gather(*(_client(plan, number, run) for number in range(clients)))
    return run


async def _client(plan: Plan, number: int, run: Run) -> None:
    rng = random.Random(plan.seed * 1000 + number)
    seen: dict[str, int] = {}  # the last revision this client saw per key, for If-Match
    async with httpx.AsyncClient(
        base_url=plan.url,
        timeout=plan.request_timeout,
        headers=plan.headers,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
    ) as client:
        done = 0
        while plan.operations is None or done < plan.operations:
            if plan.until is not None and plan.until.is_set():
                break
            kind = rng.choice(plan.kinds)
            key = rng.choice(plan.keys)
            if_match = None
            if kind in ("overwrite", "delete") and rng.random() < 0.5:
                if_match = seen.get(key, rng.randint(1, 3))
            value = {"client": number, "n": done}
            send = transaction if rng.random() < plan.transactions else request
            answer = await send(client, number, kind, key, value, if_match)
            run.answers.append(answer)
            if answer.error is not None:
                await asyncio.sleep(0.05)  # the server is gone or going: do not spin
            op = answer.operation
            if op.status == 200 and op.revision is not None:
                seen[key] = op.revision
            done += 1


async def request(
    client: httpx.AsyncClient,
    number: int,
    kind: Kind,
    key: str,
    value: Any,
    if_match: int | None,
) -> Answer:
    path = "/kv/" + quote(key, safe="/")
    headers = {"x-request-id": f"c{number}-{time.monotonic_ns()}"}
    if if_match is not None:
        headers["if-match"] = f'"{if_match}"'
    if kind == "create":
        args: dict[str, Any] = {
            "method": "POST",
            "url": "/kv",
            "json": {"key": key, "value": value},
        }
    elif kind == "overwrite":
        args = {"method": "PUT", "url": path, "json": {"value": value}}
    else:
        args = {"method": "GET" if kind == "get" else "DELETE", "url": path}
    invoked = time.monotonic()
    try:
        response = await client.request(headers=headers, **args)
    except httpx.TransportError as exc:
        returned = time.monotonic()
        op = Operation(kind, key, invoked, None, value=value, if_match=if_match, client=number)
        return Answer(op, returned - invoked, None, f"{type(exc).__name__}: {exc}")
    returned = time.monotonic()
    status = response.status_code
    if status not in EXPECTED:  # 503: unknown outcome; anything else: the caller judges
        op = Operation(kind, key, invoked, None, value=value, if_match=if_match, client=number)
        return Answer(op, returned - invoked, status, response.text[:300], headers["x-request-id"])
    body = response.json() if status == 200 else {}
    extra = {"observed": body["value"]} if kind == "get" and status == 200 else {}
    op = Operation(
        kind,
        key,
        invoked,
        returned,
        status,
        body.get("revision"),
        value=value,
        if_match=if_match,
        client=number,
        **extra,
    )
    return Answer(op, returned - invoked, status, None, headers["x-request-id"])


# A one-operation transaction is the same register operation, answered in the txn's terms.
_TXN_OPS = {"create": "create", "overwrite": "put", "get": "get", "delete": "delete"}
_TXN_STATUS = {"exists": 409, "not_found": 404, "revision_mismatch": 412}


async def transaction(
    client: httpx.AsyncClient,
    number: int,
    kind: Kind,
    key: str,
    value: Any,
    if_match: int | None,
) -> Answer:
    """`kind` on `key` sent as POST /txn with one operation, mapped back to the status the
    single-key request would have had (so the same model checks it)."""
    op: dict[str, Any] = {"op": _TXN_OPS[kind], "key": key}
    if kind in ("create", "overwrite"):
        op["value"] = value
    if if_match is not None:
        op["if_revision"] = if_match
    headers = {"x-request-id": f"c{number}-txn-{time.monotonic_ns()}"}
    invoked = time.monotonic()
    try:
        response = await client.post("/txn", json={"ops": [op]}, headers=headers)
    except httpx.TransportError as exc:
        returned = time.monotonic()
        unknown = Operation(kind, key, invoked, None, value=value, if_match=if_match, client=number)
        return Answer(unknown, returned - invoked, None, f"{type(exc).__name__}: {exc}")
    returned = time.monotonic()
    body = response.json() if response.status_code in (200, 409) else {}
    status: int | None = response.status_code
    revision = observed = None
    if status == 409:
        status = _TXN_STATUS.get(body.get("reason", ""), 409)
    elif status == 200:
        (result,) = body["results"]
        if result is None:  # a get of a missing key
            status = 404
        else:
            revision = result["revision"]
            observed = result.get("value")
    if status not in EXPECTED:
        unknown = Operation(kind, key, invoked, None, value=value, if_match=if_match, client=number)
        return Answer(
            unknown, returned - invoked, status, response.text[:300], headers["x-request-id"]
        )
    extra = {"observed": observed} if kind == "get" and status == 200 else {}
    recorded = Operation(
        kind, key, invoked, returned, status, revision,
        value=value, if_match=if_match, client=number, **extra,
    )  # fmt: skip
    return Answer(recorded, returned - invoked, status, None, headers["x-request-id"])
