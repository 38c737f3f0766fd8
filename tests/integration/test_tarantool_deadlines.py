"""A backend deadline measures Tarantool, not kv's own event loop (issue 20, item 2).

`kv serve` runs uvloop, whose loop runs due timers before it reads its sockets: when kv
was held up inside an I/O callback (reading a large body, say), a deadline timer that came
due meanwhile fired before the answer Tarantool had sent in time was read, and the request
got a 503 blaming Tarantool (asyncio's own loop reads first). These tests hold an I/O
callback for longer than the timeout right after a call left, on uvloop, and expect the
answers.
"""

import asyncio
import socket
import time
from collections.abc import Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import uvloop

from kv.adapters.tarantool import open_tarantool_repository
from kv.domain.model import Key, Record
from tests.servers.tarantool import TarantoolServer

TIMEOUT = 0.3
STALL = 2 * TIMEOUT


def on_uvloop(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())


def test_a_stall_of_kvs_loop_after_a_call_left_is_not_a_timeout(
    tarantool_server: TarantoolServer,
) -> None:
    url = tarantool_server.settings()["tarantool_url"]
    key = Key(f"deadline-{time.monotonic_ns()}")

    async def scenario() -> None:
        async with asynccontextmanager(open_tarantool_repository)(url, "kv", TIMEOUT) as repo:
            await repo.create(key, "1")
            loop = asyncio.get_running_loop()
            busy, wake = socket.socketpair()
            busy.setblocking(False)

            def read_slowly() -> None:  # kv's own work in an I/O callback, as uvicorn's
                busy.recv(1)
                time.sleep(STALL)

            loop.add_reader(busy, read_slowly)
            for call in (
                lambda: repo.get(key),  # a batch
                lambda: repo.list(key, after=None, limit=1, values=False),  # a call of its own
            ):
                request = asyncio.ensure_future(call())
                # The call leaves within two turns of the loop, and Tarantool answers at once;
                # meanwhile kv's loop is held up for longer than the timeout.
                loop.call_soon(lambda: loop.call_soon(wake.send, b"x"))
                started = time.monotonic()
                assert await request
                assert time.monotonic() - started >= STALL  # the stall did happen
            loop.remove_reader(busy)
            busy.close()
            wake.close()
            assert await repo.get(key) == Record(key, "1", 1)

    on_uvloop(scenario)
