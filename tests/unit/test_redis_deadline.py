"""The Redis adapter's deadline measures Redis, not kv's own event loop (issue 20).

A peer on a socket pair plays Redis: it answers from a thread, at a chosen moment, while the
test holds the event loop (as validating a large body does) past the deadline.
"""

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from kv.adapters.redis.deadline import GRACE_SECONDS, RedisDeadline

TIMEOUT = 0.2
SLACK = 0.15  # a loaded machine's timers


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, redis_side = socket.socketpair()
    ours.setblocking(False)
    yield ours, redis_side
    ours.close()
    redis_side.close()


def send_in(seconds: float, peer: socket.socket, data: bytes) -> None:
    """Have Redis's side send `data` in `seconds` (from a thread, whatever the loop does)."""

    def send() -> None:
        with contextlib.suppress(OSError):  # the test is over and closed the pair
            peer.sendall(data)

    threading.Timer(seconds, send).start()


def answer_in(seconds: float, peer: socket.socket) -> None:
    send_in(seconds, peer, b"+OK\r\n")


async def read(ours: socket.socket) -> bytes:
    return await asyncio.get_running_loop().sock_recv(ours, 64)


async def test_an_answer_that_came_while_the_loop_was_stalled_is_read(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    answer_in(0.05, peer)  # Redis answers well in time
    asyncio.get_running_loop().call_later(0.01, time.sleep, 3 * TIMEOUT)  # kv's loop is held
    async with RedisDeadline(TIMEOUT):
        assert await read(ours) == b"+OK\r\n"


async def test_asyncio_timeout_alone_would_have_blamed_redis(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """What the deadline is for: the same moment under a plain timeout fails."""
    ours, peer = pair
    answer_in(0.05, peer)
    asyncio.get_running_loop().call_later(0.01, time.sleep, 3 * TIMEOUT)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(TIMEOUT):
            await read(ours)


async def test_a_silent_redis_still_fails_in_time(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, _ = pair
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        async with RedisDeadline(TIMEOUT):
            await read(ours)
    assert TIMEOUT <= time.monotonic() - start < TIMEOUT + GRACE_SECONDS + SLACK


async def test_a_silent_redis_fails_soon_after_a_stall_too(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, _ = pair
    start = time.monotonic()
    asyncio.get_running_loop().call_later(0.01, time.sleep, 2 * TIMEOUT)
    with pytest.raises(TimeoutError):
        async with RedisDeadline(TIMEOUT):
            await read(ours)
    stalled_until = 0.01 + 2 * TIMEOUT
    assert time.monotonic() - start < stalled_until + 2 * GRACE_SECONDS + SLACK


async def test_an_answer_coming_in_parts_is_read_but_not_for_ever(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """Progress past the deadline earns a grace at a time, never more than a second timeout."""
    ours, peer = pair

    async def replies_for_ever() -> None:
        deadline = RedisDeadline(TIMEOUT)
        async with deadline:
            while True:  # a reply every 10 ms
                send_in(0.01, peer, b"+")
                await read(ours)
                deadline.progress()

    start = time.monotonic()
    with pytest.raises(TimeoutError):
        await replies_for_ever()
    assert 2 * TIMEOUT <= time.monotonic() - start < 2 * TIMEOUT + GRACE_SECONDS + SLACK
