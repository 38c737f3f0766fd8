"""The Tarantool backend, over asynctnt.

Records live in one memtx space of `(key, value, revision, expires_at)` tuples, set up by
`deploy/tarantool/init.lua`, which also defines the Lua functions that make each operation
one atomic step inside Tarantool, in one round trip: `<space>_batch` (gets and single-key
writes: the requests of one event-loop turn share one call, see calls.py),
`<space>_list` (a page), `<space>_transact`, `<space>_watch` (the change feed) and
`<space>_clear`. Expiry is decided inside those functions, by Tarantool's clock. Writes
answer `applied, revision, expires_at` and never send the value back: the adapter has it.

Time and failures: every call has a deadline of `timeout` seconds that measures Tarantool,
not kv's own event loop (see deadline.py). While the connection is down a call fails at once,
and asynctnt reconnects in the background every `RECONNECT_SECONDS`, so the service recovers
by itself when Tarantool is back; that includes a Tarantool that is down when kv starts. A
timeout or a lost connection is `StorageUnavailable`; for a write its outcome is unknown.

- address.py: where and as whom to connect (KV_TARANTOOL_URL);
- repository.py: the port's operations, one call of init.lua's functions each;
- calls.py: how a call reaches Tarantool, and the batching of one loop turn's gets and writes;
- deadline.py: a timeout that measures Tarantool, not kv's own event loop;
- feed.py: the change feed, a long poll of `watch`;
- startup.py: connecting and checking the set-up (at start-up, or later in the background),
  and closing;
- errors.py: what a failed call becomes, and the adapter's own errors.
"""

from collections.abc import AsyncIterator

from kv.adapters.tarantool.address import TarantoolAddress
from kv.adapters.tarantool.errors import TarantoolOperationError, TarantoolSetupError
from kv.adapters.tarantool.repository import TarantoolRepository
from kv.adapters.tarantool.startup import RECONNECT_SECONDS

__all__ = [
    "TarantoolAddress",
    "TarantoolOperationError",
    "TarantoolRepository",
    "TarantoolSetupError",
    "open_tarantool_repository",
]


async def open_tarantool_repository(
    url: str,
    space: str,
    timeout: float,  # noqa: ASYNC109 (the bound of every request, the connection's setting)
) -> AsyncIterator[TarantoolRepository]:
    """The Resource the container starts: connect, check the set-up, close on exit.

    Fails at start-up when Tarantool answers but lacks what `deploy/tarantool/init.lua`
    creates, or refuses the credentials (TarantoolSetupError). A Tarantool that does not
    answer is waited for in the background, while calls get 503.
    """
    address = TarantoolAddress.parse(url)
    connection = address.connection(timeout=timeout, reconnect=RECONNECT_SECONDS)
    repository = TarantoolRepository(connection, address=address, space=space, timeout=timeout)
    try:
        await repository.start()
        yield repository
    finally:
        await repository.close()
