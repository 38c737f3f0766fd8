"""kv's defaults and init.lua's defaults fit together: `kv serve --backend tarantool` with no
Tarantool setting at all reaches an instance started with no setting at all (issue 12)."""

import re
import sys
from pathlib import Path

import httpx

from kv.adapters.tarantool import TarantoolAddress
from kv.container import Settings
from tests.servers.kv import start_kv, stop_kv
from tests.servers.tarantool import INSTANCE_FILE, TarantoolServer

KV_SERVE = (sys.executable, "-m", "kv.entrypoints.cli", "serve")


def test_the_default_url_is_where_init_lua_listens_by_default() -> None:
    listen = re.search(r"env\('KV_TARANTOOL_LISTEN', '(\d+)'\)", INSTANCE_FILE.read_text())
    assert listen is not None
    assert TarantoolAddress.parse(Settings().tarantool_url).port == int(listen[1])


def test_serve_connects_to_init_lua_without_any_credentials_set(tmp_path: Path) -> None:
    server = TarantoolServer(tmp_path)
    # init.lua's own defaults for the user and the password, not the test servers' settings.
    for name in ("KV_TARANTOOL_USER", "KV_TARANTOOL_PASSWORD"):
        del server.env[name]
    server.start()
    try:
        # The default URL with this instance's port (the default port may be taken here).
        kv = start_kv(
            tmp_path,
            {"KV_TARANTOOL_URL": f"127.0.0.1:{server.port}"},
            command=(*KV_SERVE, "--backend", "tarantool", "--port"),
        )
        try:
            with httpx.Client(base_url=kv.url, timeout=10) as client:
                assert client.get("/ready").status_code == 200
                created = client.post("/kv", json={"key": "defaults", "value": 1})
                assert created.status_code == 200, created.text
        finally:
            stop_kv(kv)
    finally:
        server.stop()
