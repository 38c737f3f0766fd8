"""The operation log: one INFO line per operation with its fields, never the value."""

import json
from pathlib import Path
from typing import Any

from loguru import logger

from kv.container import Settings
from kv.logs import OperationLog
from tests.conftest import open_client

SECRET_VALUE = "do-not-log-this-value"


async def run_every_operation(settings: Settings) -> None:
    async for client in open_client(settings):
        await client.post("/kv", json={"key": "a b", "value": SECRET_VALUE})
        await client.post("/kv", json={"key": "a b", "value": SECRET_VALUE})
        await client.put("/kv/a%20b", json={"value": SECRET_VALUE}, headers={"x-request-id": "r-1"})
        await client.put("/kv/a%20b", json={"value": 1}, headers={"if-match": '"9"'})
        await client.get("/kv/a%20b")
        await client.get("/kv/nope")
        await client.post("/kv", content=b"{bad")
        await client.delete("/kv/a%20b")
        await client.get("/health")  # not an operation: not logged


def operation_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if " key=" in line or '"operation"' in line]


async def test_text_lines_name_operation_key_outcome_status_duration_backend_and_id(
    lines: list[str],
) -> None:
    await run_every_operation(Settings())
    ops = operation_lines(lines)
    assert len(ops) == 8, ops
    expected = [
        ("create", 'key="a b"', "outcome=ok", "status=200"),
        ("create", 'key="a b"', "outcome=exists", "status=409"),
        ("overwrite", 'key="a b"', "outcome=ok", "status=200"),
        ("overwrite", 'key="a b"', "outcome=precondition_failed", "status=412"),
        ("get", 'key="a b"', "outcome=ok", "status=200"),
        ("get", 'key="nope"', "outcome=not_found", "status=404"),
        ("create", "key=-", "outcome=invalid", "status=400"),
        ("delete", 'key="a b"', "outcome=ok", "status=200"),
    ]
    for line, fields in zip(ops, expected, strict=True):
        assert "| INFO     |" in line
        for field in fields:
            assert field in line, (field, line)
        assert "backend=memory" in line and " ms=" in line and "request_id=" in line
    assert "request_id=r-1" in ops[2]
    assert f"bytes={len(json.dumps(SECRET_VALUE))}" in ops[0]
    assert not any(SECRET_VALUE in line for line in lines)


async def test_json_lines_are_one_object_each(lines: list[str]) -> None:
    await run_every_operation(Settings(log_format="json"))
    ops = [json.loads(line) for line in operation_lines(lines)]
    assert [(op["operation"], op["outcome"], op["status"]) for op in ops] == [
        ("create", "ok", 200),
        ("create", "exists", 409),
        ("overwrite", "ok", 200),
        ("overwrite", "precondition_failed", 412),
        ("get", "ok", 200),
        ("get", "not_found", 404),
        ("create", "invalid", 400),
        ("delete", "ok", 200),
    ]
    for op in ops:
        assert op["level"] == "INFO" and op["backend"] == "memory"
        assert isinstance(op["duration_ms"], float) and op["request_id"]
        assert op["time"][10] == "T"
    assert ops[0]["key"] == "a b" and ops[6]["key"] is None


async def test_a_log_level_above_info_silences_the_operation_log(lines: list[str]) -> None:
    await run_every_operation(Settings(log_level="WARNING"))
    assert operation_lines(lines) == []


async def test_the_file_sink_gets_the_same_lines(tmp_path: Path) -> None:
    path = tmp_path / "kv.log"
    await run_every_operation(Settings(log_file=str(path), log_format="json"))
    written = [json.loads(line) for line in path.read_text().splitlines()]
    ops = [entry for entry in written if "operation" in entry]
    assert len(ops) == 8
    assert any(entry["message"].startswith("kv ") for entry in written)


def test_records_wait_for_the_flush_and_leave_in_one_message() -> None:
    messages: list[Any] = []
    handler = logger.add(messages.append, format="{message}")
    try:
        log = OperationLog(backend="memory", fmt="text")
        for i in range(100):
            log.record("get", f"k{i}", 200, 0.1, f"id{i}", 3)
        assert messages == []
        log.flush()
        assert len(messages) == 1
        assert str(messages[0]).count("\n") == 100
        log.flush()
        assert len(messages) == 1
    finally:
        logger.remove(handler)


async def test_a_read_answered_304_is_logged_as_ok(lines: list[str]) -> None:
    async for client in open_client(Settings()):
        await client.post("/kv", json={"key": "cached", "value": 1})
        response = await client.get("/kv/cached", headers={"if-none-match": '"1"'})
        assert response.status_code == 304
    [line] = [line for line in operation_lines(lines) if line.startswith("get ") or " get " in line]
    assert 'key="cached" outcome=ok status=304' in line
