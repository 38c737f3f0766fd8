"""`kv check` against `kv serve` on every backend (tests/integration/conftest.py `live_kv`).

`live_kv` names the backend in KV_BACKEND: the Tarantool server's settings do not, and a
`kv serve` given only them ran on memory."""

import re

import pytest

from kv.client import Client
from kv.entrypoints.cli import main
from tests.integration.conftest import LiveKV


def test_kv_check_passes_on_the_backend(
    live_kv: LiveKV, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", live_kv.url]) == 0, capsys.readouterr().out
    lines = capsys.readouterr().out.splitlines()
    assert not [line for line in lines if line.startswith("FAIL")]
    summary = re.fullmatch(r"(\d+) passed, 0 failed", lines[-1])
    assert summary is not None and int(summary.group(1)) >= 30
    with Client(live_kv.url) as client:
        assert list(client.list("kv-check-")) == []  # every scenario cleaned up after itself
