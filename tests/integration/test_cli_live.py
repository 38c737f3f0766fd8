"""`kv get|put|create|delete|list|watch|txn` against a real `kv serve` on each backend: their
output, and their exit status (0 done, 1 refused by the store's rules, 2 anything else)."""

import io
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kv.entrypoints.cli import main
from tests.integration.conftest import LiveKV
from tests.servers import free_port
from tests.servers.kv import start_kv, stop_kv

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def kv(live_kv: LiveKV, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    """`kv <args>` in this process against the live server (through $KV_URL); its status,
    stdout and stderr. `stdin=` gives what it reads. A usage error's status is argparse's."""
    monkeypatch.setenv("KV_URL", live_kv.url)
    monkeypatch.delenv("KV_AUTH_TOKEN", raising=False)

    def run(*args: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        try:
            status = main(list(args))
        except SystemExit as exc:  # argparse refused the line
            status = int(exc.code or 0)
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run


@pytest.fixture
def prefix() -> str:
    """Unique to the test; a hash tag puts its keys in one slot (transactions on a cluster)."""
    return f"cli-{{{uuid.uuid4().hex[:10]}}}/"


def test_put_get_delete_and_their_refusals(kv: Run, prefix: str) -> None:
    key = prefix + "config/db host"
    assert kv("put", key, '{"host": "db1"}', "--create") == (
        0, f"created {key} (revision 1)\n", ""
    )  # fmt: skip
    assert kv("get", key) == (0, '{"host":"db1"}\n', "")
    assert kv("put", key, "[1, 2]", "--if-revision", "1")[:2] == (0, f"put {key} (revision 2)\n")
    status, out, err = kv("put", key, "3", "--if-revision", "1")
    assert (status, out) == (1, "")
    assert err == f"kv put: 412: key {key!r} is at revision 2, the request expected revision 1\n"
    assert kv("create", key, "null")[0] == 1
    record = {"key": key, "value": [1, 2], "revision": 2}
    assert kv("get", key, "--json") == (0, json.dumps(record, separators=(",", ":")) + "\n", "")
    assert kv("delete", key, "--if-revision", "1")[0] == 1
    assert kv("delete", key, "--json") == (0, f'{{"key":"{key}","revision":2}}\n', "")
    status, out, err = kv("get", key)
    assert (status, out, err) == (1, "", f"kv get: 404: key {key!r} does not exist\n")
    assert kv("delete", key)[0] == 1
    assert kv("put", prefix + "missing", "1")[0] == 1


def test_values_are_json_from_the_line_or_stdin(kv: Run, prefix: str) -> None:
    status, out, err = kv("put", prefix + "w", "word")
    assert (status, out) == (2, "")
    assert "quote it: '\"word\"'" in err
    assert kv("put", prefix + "w", "NaN", "--create")[0] == 2
    assert kv("create", prefix + "w", "-", stdin='{"from": "stdin", "ü": [true]}\n')[0] == 0
    assert kv("get", prefix + "w")[1] == '{"from":"stdin","ü":[true]}\n'
    assert kv("create", prefix + "s", '"word"')[0] == 0
    assert kv("get", prefix + "s")[1] == '"word"\n'


def test_ttl(kv: Run, prefix: str) -> None:
    status, out, _ = kv("put", prefix + "t", "1", "--create", "--ttl", "60")
    assert status == 0 and ", expires 20" in out and out.endswith("Z)\n")
    status, out, _ = kv("get", prefix + "t", "--json")
    assert json.loads(out)["expires_at"].endswith("Z")
    assert kv("put", prefix + "t", "1", "--ttl", "0")[0] == 2  # argparse: usage


def test_list(kv: Run, prefix: str) -> None:
    for name, value in (("b", "2"), ("a/x", '{"n": 1}'), ("c d", "null")):
        assert kv("create", prefix + name, value)[0] == 0
    assert kv("list", prefix) == (0, f"{prefix}a/x\t1\n{prefix}b\t1\n{prefix}c d\t1\n", "")
    assert kv("list", prefix, "--values", "--limit", "2")[1] == (
        f'{prefix}a/x\t1\t{{"n":1}}\n{prefix}b\t1\t2\n'
    )
    lines = kv("list", prefix, "--values", "--json")[1].splitlines()
    assert [json.loads(line) for line in lines] == [
        {"key": prefix + "a/x", "value": {"n": 1}, "revision": 1},
        {"key": prefix + "b", "value": 2, "revision": 1},
        {"key": prefix + "c d", "value": None, "revision": 1},
    ]
    assert kv("list", prefix + "none/") == (0, "", "")


def test_txn_from_a_file_or_stdin(kv: Run, prefix: str, tmp_path: Path) -> None:
    ops = [{"op": "create", "key": prefix + "a", "value": 1}, {"op": "get", "key": prefix + "b"}]
    path = tmp_path / "ops.json"
    path.write_text(json.dumps({"ops": ops}))
    status, out, _ = kv("txn", str(path), "--json")
    assert status == 0
    assert json.loads(out) == {"results": [{"key": prefix + "a", "value": 1, "revision": 1}, None]}
    status, _, err = kv("txn", "-", stdin=json.dumps(ops))  # a bare list does too
    assert status == 1
    assert err.startswith(f"kv txn: 409: operation 0 on key '{prefix}a' failed: the key exists")
    assert kv("txn", "-", stdin='[{"op": "rename", "key": "x"}]')[0] == 2  # a 400
    assert kv("txn", "-", stdin="{not json")[0] == 2
    assert kv("txn", str(tmp_path / "missing.json"))[0] == 2


def test_connection_errors_and_the_url(kv: Run, live_kv: LiveKV, prefix: str) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    status, out, err = kv("get", "k", "--url", nowhere)
    assert (status, out) == (2, "")
    assert err.startswith(f"kv get: cannot reach {nowhere}: ConnectError")
    assert kv("get", "k", "--url", "ftp://x")[0] == 2
    assert kv("get", "k", "--url", live_kv.url + "/wrong-prefix")[0] == 2  # 404 with no key
    assert kv("create", prefix + "u", "1", "--url", live_kv.url + "/")[0] == 0


def cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kv.entrypoints.cli", *args],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def read_events(process: subprocess.Popen[str], count: int) -> list[dict[str, Any]]:
    assert process.stdout is not None
    return [json.loads(process.stdout.readline()) for _ in range(count)]


def test_watch_prints_a_json_line_per_event_until_ctrl_c(
    kv: Run, live_kv: LiveKV, prefix: str
) -> None:
    kv("create", prefix + "old", "1")
    env = {"KV_URL": live_kv.url}
    watch = cli("watch", prefix, "--initial", env=env)
    one = cli("watch", "--key", prefix + "k", env=env)
    try:
        assert read_events(watch, 2) == [
            {"event": "put", "key": prefix + "old", "value": 1, "revision": 1, "resync": True},
            {"event": "synced", "cause": "start", "puts": 1, "deletes": 0},
        ]
        assert read_events(one, 1)[0]["event"] == "synced"
        kv("create", prefix + "k", '"v"')
        kv("delete", prefix + "old")
        assert read_events(watch, 2) == [
            {"event": "put", "key": prefix + "k", "value": "v", "revision": 1, "resync": False},
            {"event": "delete", "key": prefix + "old", "revision": 1, "reason": "deleted"},
        ]
        assert read_events(one, 1)[0]["key"] == prefix + "k"
    finally:
        for process in (watch, one):
            process.send_signal(signal.SIGINT)
    assert watch.wait(timeout=30) == 0 and one.wait(timeout=30) == 0
    assert watch.stderr is not None and watch.stderr.read() == ""


def test_watch_usage(kv: Run) -> None:
    assert kv("watch")[0] == 2
    assert kv("watch", "p/", "--key", "k")[0] == 2
    nowhere = f"http://127.0.0.1:{free_port()}"
    assert kv("watch", "p/", "--url", nowhere)[0] == 2  # the first connection must succeed


def test_the_token_from_kv_auth_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_kv(tmp_path, {"KV_BACKEND": "memory", "KV_AUTH_TOKEN": "s3cret"})
    try:
        monkeypatch.delenv("KV_AUTH_TOKEN", raising=False)
        assert main(["get", "k", "--url", server.url]) == 2
        assert "(set KV_AUTH_TOKEN to the server's token)" in capsys.readouterr().err
        monkeypatch.setenv("KV_AUTH_TOKEN", "s3cret")
        assert main(["get", "k", "--url", server.url]) == 1  # through: a missing key
    finally:
        stop_kv(server)
