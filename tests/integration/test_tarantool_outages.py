"""The service when Tarantool stops, hangs, crashes or is not set up.

Each outage test runs the app on a Tarantool of its own (`private_tarantool_server`) with a
short backend timeout, and checks what a client sees: 503 with Retry-After within the timeout,
then success again without restarting the app.
"""

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from kv.adapters.tarantool import TarantoolSetupError
from kv.container import Settings
from tests.conftest import open_client
from tests.servers.tarantool import TarantoolServer
from tests.support import timed

pytestmark = pytest.mark.slow

TIMEOUT = 0.5  # KV_BACKEND_TIMEOUT for these tests
BOUND = TIMEOUT + 1.0  # what a client may wait for a 503, with room for a slow machine
RECOVERY_SECONDS = 15.0


@asynccontextmanager
async def service(server: TarantoolServer, **changes: Any) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        backend="tarantool", backend_timeout=TIMEOUT, **(server.settings() | changes)
    )
    async for client in open_client(settings):
        yield client


async def eventually(
    request: Callable[[], Awaitable[httpx.Response]],
    accept: Callable[[httpx.Response], bool] = lambda response: response.status_code == 200,
) -> httpx.Response:
    """Repeat `request` until its response is accepted or RECOVERY_SECONDS pass; the last one."""
    deadline = time.monotonic() + RECOVERY_SECONDS
    while True:
        response = await request()
        if accept(response) or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.05)


def assert_unavailable(response: httpx.Response, elapsed: float) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"].isdigit()
    assert response.headers["content-type"] == "application/problem+json"
    assert "Tarantool" in response.json()["detail"]
    assert elapsed < BOUND


async def test_stopped_tarantool_gives_503_and_the_service_recovers_when_it_returns(
    private_tarantool_server: TarantoolServer,
) -> None:
    server = private_tarantool_server
    async with service(server) as client:
        assert (await client.post("/kv", json={"key": "k", "value": 1})).status_code == 200

        server.stop()
        for request in (
            client.get("/kv/k"),
            client.post("/kv", json={"key": "other", "value": 1}),
            client.put("/kv/k", json={"value": 2}),
            client.delete("/kv/k"),
            client.get("/ready"),
            client.get("/kv/k"),  # still refused, not hanging, after the first failures
        ):
            assert_unavailable(*await timed(request))
        assert (await client.get("/health")).status_code == 200

        server.start()
        response = await eventually(lambda: client.get("/kv/k"))
        assert response.status_code == 200
        assert response.json() == {"key": "k", "value": 1, "revision": 1}
        assert (await client.put("/kv/k", json={"value": 2})).json()["revision"] == 2
        assert (await client.get("/ready")).status_code == 200


async def test_hung_tarantool_gives_503_within_the_timeout_and_the_write_may_still_land(
    private_tarantool_server: TarantoolServer,
) -> None:
    server = private_tarantool_server
    async with service(server) as client:
        await client.post("/kv", json={"key": "k", "value": 1})

        server.pause()
        try:
            response, elapsed = await timed(client.put("/kv/k", json={"value": 2}))
            assert_unavailable(response, elapsed)
            assert elapsed >= TIMEOUT * 0.9  # it waited for the backend, then gave up
            assert_unavailable(*await timed(client.get("/ready")))
        finally:
            server.resume()

        # A 503 on a write means "outcome unknown": this one reached Tarantool before it froze,
        # and Tarantool carried it out once it ran again.
        response = await eventually(
            lambda: client.get("/kv/k"),
            lambda response: response.status_code == 200 and response.json()["revision"] == 2,
        )
        assert response.json() == {"key": "k", "value": 2, "revision": 2}


async def test_acknowledged_writes_survive_a_kill_9(
    private_tarantool_server: TarantoolServer,
) -> None:
    """Writers run while Tarantool is killed; every write that got a 200 is there after restart.

    Each writer creates its key (value 0, revision 1) then overwrites it with 1, 2, ... so the
    value is always revision - 1; it stops at its first failure.
    """
    server = private_tarantool_server
    writers, writes_per_key, kill_after = 100, 50, 200
    acknowledged: dict[str, int] = {}  # key -> last revision answered with 200
    enough = asyncio.Event()

    async with service(server) as client:

        async def write(key: str) -> None:
            for value in range(writes_per_key):
                if value == 0:
                    response = await client.post("/kv", json={"key": key, "value": 0})
                else:
                    response = await client.put(f"/kv/{key}", json={"value": value})
                if response.status_code != 200:
                    assert_unavailable(response, 0.0)
                    return
                assert response.json()["revision"] == value + 1
                acknowledged[key] = value + 1
                if sum(acknowledged.values()) >= kill_after:
                    enough.set()

        tasks = [asyncio.create_task(write(f"key-{i}")) for i in range(writers)]
        await asyncio.wait_for(enough.wait(), RECOVERY_SECONDS)
        server.kill()
        await asyncio.gather(*tasks)
        total = sum(acknowledged.values())
        assert total >= kill_after
        assert total < writers * writes_per_key, "every write finished before the kill"

        server.start()
        assert (await eventually(lambda: client.get("/ready"))).status_code == 200
        for key, revision in acknowledged.items():
            response = await client.get(f"/kv/{key}")
            assert response.status_code == 200
            record = response.json()
            # The write in flight at the kill may have landed too: outcome unknown, not lost.
            assert record["revision"] in (revision, revision + 1), key
            assert record["value"] == record["revision"] - 1


async def test_a_write_tarantool_refuses_is_a_503_that_tells_nothing_of_tarantool_internals(
    tmp_path: Path,
) -> None:
    # An instance sized for a smaller body limit than the service's: tuples up to 1 MiB.
    server = TarantoolServer(tmp_path, env={"KV_MAX_BODY_BYTES": "1000"})
    server.start()
    try:
        async with service(server) as client:
            numbers = b",".join([b"1e15"] * 100_000)  # 500 kB sent, 1.9 MB stored
            response = await client.post("/kv", content=b'{"key":"big","value":[%b]}' % numbers)
            assert response.status_code == 503
            detail = response.json()["detail"]
            assert "memtx" not in detail
            assert "tuple" not in detail
            assert (await client.get("/kv/big")).status_code == 404
            assert (await client.post("/kv", json={"key": "small", "value": 1})).status_code == 200
    finally:
        server.stop()


async def test_tarantools_own_words_for_a_refused_write_are_in_the_error_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 20, item 16: the 503 says nothing of Tarantool's internals, the log says all."""
    server = TarantoolServer(tmp_path, env={"KV_TARANTOOL_MEMTX_MEMORY": str(64 * 1024 * 1024)})
    server.start()
    try:
        async with service(server) as client:
            value = "x" * 900_000
            for i in range(200):  # ~30 fit
                response = await client.post("/kv", json={"key": f"fill/{i}", "value": value})
                if response.status_code != 200:
                    break
            else:
                pytest.fail("Tarantool's memory never filled")
            assert response.status_code == 503
            assert "allocate" not in response.text
            log = capsys.readouterr().err
            (line,) = [line for line in log.splitlines() if "ERROR" in line]
            assert "backend unavailable" in line
            # Tarantool's own message, from the exception chained to the logged error.
            assert "Failed to allocate" in log and "memtx_tuple" in log
    finally:
        server.stop()


async def test_a_missing_space_is_a_start_up_error_naming_the_instance_file(
    tarantool_server: TarantoolServer, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(TarantoolSetupError, match=r"deploy/tarantool/init\.lua") as caught:
        async with service(tarantool_server, tarantool_space="elsewhere"):
            pass
    assert "'elsewhere'" in str(caught.value)
    # ... and the log says it, since that is all `kv serve` shows of a failed start.
    assert f"kv cannot start on the tarantool backend: {caught.value}" in capsys.readouterr().err


async def test_wrong_credentials_are_a_start_up_error(tarantool_server: TarantoolServer) -> None:
    url = tarantool_server.settings()["tarantool_url"].replace("kv:kv@", "kv:wrong@")
    with pytest.raises(TarantoolSetupError, match="KV_TARANTOOL_URL"):
        async with service(tarantool_server, tarantool_url=url):
            pass


async def test_a_tarantool_down_at_start_gives_503_until_it_appears(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = TarantoolServer(tmp_path)  # its port is chosen, nothing listens there yet
    started = time.monotonic()
    async with service(server) as client:
        assert time.monotonic() - started < BOUND  # the app started, waiting only the timeout
        assert "does not answer" in capsys.readouterr().err  # ... and said why it gives 503
        for request in (client.get("/kv/k"), client.get("/ready"), client.delete("/kv/k")):
            assert_unavailable(*await timed(request))
        assert (await client.get("/health")).status_code == 200

        server.start()
        try:
            assert (await eventually(lambda: client.get("/ready"))).status_code == 200
            assert (await client.post("/kv", json={"key": "k", "value": 1})).status_code == 200
            assert (await client.get("/kv/k")).json()["revision"] == 1
        finally:
            server.stop()


async def test_a_tarantool_that_appears_without_kv_set_up_keeps_503_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A Tarantool whose space has another name than the service's.
    server = TarantoolServer(tmp_path, env={"KV_TARANTOOL_SPACE": "elsewhere"})
    async with service(server) as client:
        server.start()
        try:
            deadline = time.monotonic() + RECOVERY_SECONDS
            while "kv cannot use Tarantool" not in (log := capsys.readouterr().err):
                assert time.monotonic() < deadline, "the set-up was never checked"
                await asyncio.sleep(0.1)
            assert "deploy/tarantool/init.lua" in log
            assert_unavailable(*await timed(client.get("/ready")))
            assert_unavailable(*await timed(client.get("/kv/k")))
        finally:
            server.stop()
