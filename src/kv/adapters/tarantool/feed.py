"""The change feed: a long poll of init.lua's `watch`, on a connection of its own."""

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import asynctnt

from kv.adapters.tarantool.calls import Calls
from kv.adapters.tarantool.errors import FAILURES, unavailable
from kv.domain.errors import ChangesLost
from kv.domain.model import Change

# The change feed: how long one `watch` call waits in Tarantool for a change before it
# answers an empty batch. A Tarantool that stops answering is noticed within this plus the
# timeout; an idle feed costs one call per this many seconds.
FEED_WAIT_SECONDS = 2.0


class Feed(Calls):
    """The change feed (`changes`): a long poll of `watch`, on a connection of its own."""

    async def changes(self) -> AsyncGenerator[Sequence[Change], None]:
        """The feed, on a connection of its own: `watch` calls, each answering the changes
        after the sequence this feed has seen, or waiting up to FEED_WAIT_SECONDS for one.

        A long poll rather than box.session.push: each call has a deadline (a push stream
        would have none), nothing piles up in Tarantool for a kv that does not read (pushes
        are written out without waiting for the reader), and closing the feed leaves no
        fiber behind. A batch costs one round trip; under load batches grow by themselves.
        """
        connection = self._address.connection(timeout=self._timeout, reconnect=0)
        try:
            try:
                async with asyncio.timeout(self._timeout):
                    await connection.connect()
                _, epoch, cursor = await self._poll(connection, None, None, 0)
            except FAILURES as exc:
                raise unavailable(exc, None, write=False) from exc
            yield ()
            while True:
                try:
                    answer = await self._poll(connection, epoch, cursor, FEED_WAIT_SECONDS)
                except FAILURES as exc:
                    raise unavailable(exc, None, write=False) from exc
                if answer[0] != "changes":  # "lost": this feed fell behind Tarantool's ring
                    raise ChangesLost()
                _, cursor, rows = answer
                if rows:
                    yield [Change(*row) for row in rows]
        finally:
            connection.close()  # a call still out is cancelled with its awaiting task

    async def _poll(
        self, connection: asynctnt.Connection, epoch: str | None, cursor: int | None, wait: float
    ) -> Any:
        call = connection.call(self._watch, (epoch, cursor, wait), timeout=0)
        response = await self._bound(call, wait + self._timeout)
        return response[0]
