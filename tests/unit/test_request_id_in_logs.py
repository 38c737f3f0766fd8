"""Every log line of a request carries its X-Request-ID: the operation line (tested in
test_operation_log) and the ERROR lines of a backend failure and of an unexpected error."""

import json
import re

import pytest

from kv.container import Settings
from tests.conftest import open_client
from tests.unit.test_errors_and_auth import BrokenRepository, UnavailableRepository, client_on


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "ERROR" in line]


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_the_error_line_of_a_backend_failure_names_the_request(
    capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    async for client in client_on(UnavailableRepository(), Settings(log_format=fmt)):
        response = await client.get("/kv/a", headers={"x-request-id": "req-503"})
        assert response.status_code == 503 and response.headers["x-request-id"] == "req-503"
    [line] = error_lines(capsys.readouterr().err)
    if fmt == "text":
        assert "| ERROR    | backend unavailable:" in line and line.endswith(" request_id=req-503")
    else:
        entry = json.loads(line)
        assert entry["level"] == "ERROR" and entry["request_id"] == "req-503"
        assert "StorageUnavailable" in entry["exception"]


async def test_an_unexpected_error_names_the_request_in_its_line_and_its_response(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async for client in client_on(BrokenRepository(), Settings()):
        response = await client.get("/kv/a", headers={"x-request-id": "req-500"})
        assert response.status_code == 500
        # Starlette sends the 500 outside the middleware that adds the header elsewhere.
        assert response.headers["x-request-id"] == "req-500"
        generated = await client.get("/kv/b")
        assert generated.headers["x-request-id"]  # generated: no header was sent
    stderr = capsys.readouterr().err
    lines = error_lines(stderr)
    assert len(lines) == 2
    assert "| ERROR    | unhandled error request_id=req-500" in lines[0]
    assert f"request_id={generated.headers['x-request-id']}" in lines[1]
    assert "RuntimeError: internal detail" in stderr  # the traceback follows the line


async def test_lines_logged_outside_a_request_have_no_request_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async for client in client_on(UnavailableRepository(), Settings()):
        await client.get("/health")
    stderr = capsys.readouterr().err
    started = [line for line in stderr.splitlines() if "ready on the memory backend" in line]
    assert started and "request_id" not in started[0]


FORGED = 'x outcome=ok status=200 "'
FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def fields_of(line: str) -> dict[str, list[str]]:
    """The `name=value` fields of a text line, a value either plain or a JSON string."""
    found: dict[str, list[str]] = {}
    for name, value in FIELD.findall(line):
        found.setdefault(name, []).append(json.loads(value) if value.startswith('"') else value)
    return found


async def test_a_forged_request_id_cannot_pass_for_fields_of_the_operation_line(
    lines: list[str],
) -> None:
    """Before: `request_id=x outcome=ok status=200` followed the real outcome unquoted."""
    async for client in open_client(Settings()):
        response = await client.get("/kv/missing", headers={"x-request-id": FORGED})
        assert response.status_code == 404 and response.headers["x-request-id"] == FORGED
        generated = (await client.get("/kv/missing")).headers["x-request-id"]
    forged_line, generated_line = [line for line in lines if 'key="missing"' in line]
    fields = fields_of(forged_line)
    assert fields["outcome"] == ["not_found"] and fields["status"] == ["404"], forged_line
    assert fields["request_id"] == [FORGED]
    # kv's own ids (and UUIDs) stay as they are.
    assert generated_line.endswith(f" request_id={generated}")


async def test_a_forged_request_id_cannot_pass_for_fields_of_an_error_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async for client in client_on(UnavailableRepository(), Settings()):
        response = await client.get("/kv/a", headers={"x-request-id": FORGED})
        assert response.status_code == 503
    [line] = error_lines(capsys.readouterr().err)
    assert line.endswith(" request_id=" + json.dumps(FORGED)), line
    assert fields_of(line)["request_id"] == [FORGED]
