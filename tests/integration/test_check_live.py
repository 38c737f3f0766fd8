"""`kv check` against `kv serve` on every live backend (tests/integration/conftest.py)."""

import re
from pathlib import Path
from typing import Any

import pytest

from kv.entrypoints.cli import main
from tests.integration.test_serve import start_kv, stop_kv


def test_kv_check_passes_on_the_backend(
    tmp_path: Path, backend_settings: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    env = {
        f"KV_{name.upper()}": str(value).lower() if isinstance(value, bool) else str(value)
        for name, value in backend_settings.items()
    }
    server = start_kv(tmp_path, env)
    try:
        assert main(["check", server.url]) == 0, capsys.readouterr().out
    finally:
        stop_kv(server)
    lines = capsys.readouterr().out.splitlines()
    assert not [line for line in lines if line.startswith("FAIL")]
    summary = re.fullmatch(r"(\d+) passed, 0 failed", lines[-1])
    assert summary is not None and int(summary.group(1)) >= 20
