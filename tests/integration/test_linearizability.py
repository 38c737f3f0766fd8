"""Concurrent clients against a real `kv serve` see one atomic register per key.

8 clients, each with its own connection, issue 300 random creates, overwrites (half with
If-Match), reads and deletes (half with If-Match) on 3 keys, a third of them as one-operation
transactions (POST /txn); the history, timed by one monotonic clock, must be linearizable
(tests/linearizability.py). With `--soak` (or KV_SOAK=1): 16 clients, 2000 operations each.
"""

import asyncio
import dataclasses
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.workload import LIVE_BACKENDS, kv_environment, run_clients
from tests.linearizability import check
from tests.servers.kv import start_kv, stop_kv


@pytest.mark.parametrize("backend", LIVE_BACKENDS)
def test_concurrent_clients_see_a_linearizable_history(
    backend: str, backend_settings: dict[str, Any], tmp_path: Path, soak: bool
) -> None:
    clients, operations = (16, 2000) if soak else (8, 300)
    server = start_kv(tmp_path, kv_environment(backend, backend_settings))
    prefix = uuid.uuid4().hex[:8]
    keys = [f"{prefix}/lin {n}" for n in range(3)]
    try:
        run = asyncio.run(
            run_clients(
                server.url, keys, clients=clients, operations=operations, transactions=1 / 3
            )
        )
    finally:
        stop_kv(server)

    (tmp_path / "history.jsonl").write_text(
        "".join(json.dumps(dataclasses.asdict(op), default=repr) + "\n" for op in run.history)
    )
    assert not run.unexpected(), run.unexpected()[:5]
    assert len(run.history) == clients * operations
    # A history without contention would prove little: each outcome must occur.
    statuses = run.statuses()
    assert all(statuses.get(status, 0) > 0 for status in (200, 404, 409, 412)), statuses
    through_txn = sum(1 for answer in run.answers if "-txn-" in (answer.request_id or ""))
    assert through_txn > operations, through_txn  # single-key operations made as transactions
    result = check(run.history)
    assert result.ok, f"{result.explanation}\n(history: {tmp_path / 'history.jsonl'})"
