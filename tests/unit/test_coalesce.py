"""CoalescingTransport: a response's writes leave in one write, nothing is lost or reordered,
and what is written after the transport closes, or before an abort, is dropped."""

import asyncio

from kv.entrypoints.coalesce import CoalescingTransport


class Recording(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 7


async def test_writes_are_held_until_flush_then_leave_in_one_write_in_order() -> None:
    inner = Recording()
    outer = CoalescingTransport(inner, asyncio.get_running_loop())
    outer.write(b"HTTP/1.1 200 OK\r\n\r\n")
    outer.write(bytearray(b"body"))
    assert inner.writes == []
    assert outer.get_write_buffer_size() == 7 + len(b"HTTP/1.1 200 OK\r\n\r\nbody")
    outer.flush()
    assert inner.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    await asyncio.sleep(0)  # the scheduled flush finds nothing more to write
    assert inner.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]


async def test_what_nobody_flushes_leaves_on_the_loops_next_turn() -> None:
    inner = Recording()
    outer = CoalescingTransport(inner, asyncio.get_running_loop())
    outer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    await asyncio.sleep(0)
    assert inner.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    outer.writelines([b"a", b"b"])
    await asyncio.sleep(0)
    assert inner.writes == [b"HTTP/1.1 100 Continue\r\n\r\n", b"ab"]


async def test_close_writes_what_is_held_first_and_abort_drops_it() -> None:
    loop = asyncio.get_running_loop()
    closed, aborted = Recording(), Recording()
    CoalescingTransport(closed, loop).write(b"last words")
    wrapper = CoalescingTransport(closed, loop)
    wrapper.write(b"answer")
    wrapper.close()
    assert closed.writes == [b"answer"] and closed.closed
    await asyncio.sleep(0)  # the first wrapper's flush: its transport is closing by now
    assert closed.writes == [b"answer"]
    wrapper = CoalescingTransport(aborted, loop)
    wrapper.write(b"never sent")
    wrapper.abort()
    await asyncio.sleep(0)
    assert aborted.writes == [] and aborted.aborted
