"""The methods `Client` and `AsyncClient` share, each written once: its signature, its
documentation and what it sends (kv.client.core builds the requests). The two clients differ
only in how they send, sleep and read: `Client.execute` returns a call's result and
`AsyncClient.execute` is a coroutine of it; `list` and `watch` are iterated with `for` or
with `async for`.

A method that sends one call is an `Operation`. Python's types cannot say "returns T in one
class, an awaitable of T in the other" of one method (that takes higher-kinded types), but
they can say it of a descriptor: `Operation.__get__` is typed per kind of client, and gives
`AsyncClient` an `async def`, so that each client's method is what it was when written out
twice.
"""

import builtins
import inspect
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Mapping, Sequence
from types import MethodType
from typing import (
    Any,
    Concatenate,
    Generic,
    Literal,
    ParamSpec,
    Protocol,
    TypeVar,
    get_args,
    overload,
)

from kv.client import core
from kv.client.core import Call, ListCursor
from kv.client.model import Deleted, JSONValue, Record, Seconds, TxnOp, TxnResult
from kv.client.retry import DEFAULT_RETRY, RetryPolicy
from kv.client.transport import DEFAULT_TIMEOUT, client_options
from kv.client.urls import Endpoint
from kv.client.watching import DEFAULT_BACKOFF, DEFAULT_READ_TIMEOUT, Backoff, WatchState

P = ParamSpec("P")
T = TypeVar("T")
TransportT = TypeVar("TransportT")  # what the client's httpx client sends through
EntriesT = TypeVar("EntriesT")  # what `list` returns: an iterator of Entry
RecordsT = TypeVar("RecordsT")  # what `list(values=True)` returns: an iterator of Record
WatchT = TypeVar("WatchT")  # what `watch` returns


class Blocking(Protocol):
    """A client whose `execute` returns a call's result: `Client`."""

    def execute(self, call: Call[T], /) -> T: ...


class Awaiting(Protocol):
    """A client whose `execute` is a coroutine of a call's result: `AsyncClient`."""

    def execute(self, call: Call[T], /) -> Coroutine[Any, Any, T]: ...


class Operation(Generic[P, T]):
    """A method that sends the call `build` makes of its arguments, and returns its result
    (awaited, on an `Awaiting` client). `build` gives it its signature and documentation.
    """

    def __init__(self, build: Callable[P, Call[T]]) -> None:
        def send(client: Blocking, /, *args: P.args, **kwargs: P.kwargs) -> T:
            return client.execute(build(*args, **kwargs))

        async def send_async(client: Awaiting, /, *args: P.args, **kwargs: P.kwargs) -> T:
            return await client.execute(build(*args, **kwargs))

        built = inspect.signature(build)
        signature = built.replace(
            parameters=[_SELF, *built.parameters.values()],
            return_annotation=get_args(built.return_annotation)[0],  # T of Call[T]
        )
        for function in (send, send_async):
            function.__doc__ = build.__doc__
            function.__signature__ = signature  # type: ignore[union-attr]
        self._send = send
        self._send_async = send_async

    def __set_name__(self, owner: type, name: str) -> None:
        for function in (self._send, self._send_async):
            function.__name__ = name
            function.__qualname__ = f"{owner.__qualname__}.{name}"

    @overload
    def __get__(self, client: None, owner: type) -> Callable[Concatenate[Any, P], Any]: ...

    @overload
    def __get__(self, client: Awaiting, owner: type) -> Callable[P, Coroutine[Any, Any, T]]: ...

    @overload
    def __get__(self, client: Blocking, owner: type) -> Callable[P, T]: ...

    def __get__(self, client: Blocking | Awaiting | None, owner: type) -> Callable[..., Any]:
        # What the overloads tell apart by type, told apart at run time: the class's execute.
        asynchronous = inspect.iscoroutinefunction(getattr(owner, "execute", None))
        function = self._send_async if asynchronous else self._send
        return function if client is None else MethodType(function, client)


_SELF = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)


# --- the operations, as the calls they send ------------------------------------------------


def _get(key: str) -> Call[Record]:
    """The record of `key`; KeyNotFound when absent."""
    return core.get(key)


def _create(key: str, value: JSONValue, *, ttl: Seconds | None = None) -> Call[Record]:
    """Create `key` at revision 1; KeyExists when it is present."""
    return core.create(key, value, ttl=ttl)


def _put(
    key: str, value: JSONValue, *, if_revision: int | None = None, ttl: Seconds | None = None
) -> Call[Record]:
    """Overwrite a present `key` (KeyNotFound otherwise), only while it is at
    `if_revision` when given (RevisionMismatch otherwise). Without `ttl`, an expiry
    the record had is removed."""
    return core.put(key, value, if_revision=if_revision, ttl=ttl)


def _upsert(key: str, value: JSONValue, *, ttl: Seconds | None = None) -> Call[Record]:
    """Create or overwrite `key` (PUT /v1/{key})."""
    return core.put(key, value, ttl=ttl, surface="/v1")


def _delete(key: str, *, if_revision: int | None = None) -> Call[Deleted]:
    """Delete `key` (KeyNotFound when absent), only at `if_revision` when given."""
    return core.delete(key, if_revision=if_revision)


def _txn(ops: Sequence[TxnOp | Mapping[str, Any]]) -> Call[builtins.list[TxnResult]]:
    """Apply `ops` all together or none (TransactionFailed names the first that failed);
    their results in order."""
    return core.txn(ops)


def _info() -> Call[dict[str, Any]]:
    """GET /: the service's name, version and backend."""
    return core.service_info()


class ClientMethods(ABC, Generic[TransportT, EntriesT, RecordsT, WatchT]):
    """The base of `Client` and `AsyncClient`: what they share. A client opens its httpx
    client (`_open`), sends a call (`execute`), pages through a listing (`_list`) and follows
    a watch (`_watch`), each its own way."""

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        watch_read_timeout: float = DEFAULT_READ_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY,
        transport: TransportT | None = None,
    ) -> None:
        self.endpoint = Endpoint.parse(url)
        self.timeout = timeout
        self.watch_read_timeout = watch_read_timeout
        self.retry = retry
        self._open(transport, client_options(token, timeout))

    @abstractmethod
    def _open(self, transport: TransportT | None, options: dict[str, Any]) -> None:
        """Open the client's httpx client with `options`."""

    # --- single keys ------------------------------------------------------------------------

    get = Operation(_get)
    create = Operation(_create)
    put = Operation(_put)
    upsert = Operation(_upsert)
    delete = Operation(_delete)

    # --- many keys --------------------------------------------------------------------------

    @overload
    def list(
        self,
        prefix: str = "",
        *,
        values: Literal[False] = False,
        page_size: int = ...,
        limit: int | None = ...,
    ) -> EntriesT: ...

    @overload
    def list(
        self,
        prefix: str = "",
        *,
        values: Literal[True],
        page_size: int = ...,
        limit: int | None = ...,
    ) -> RecordsT: ...

    def list(
        self,
        prefix: str = "",
        *,
        values: bool = False,
        page_size: int = 100,
        limit: int | None = None,
    ) -> EntriesT | RecordsT:
        """Every record whose key starts with `prefix`, in the order of the keys' UTF-8
        bytes, fetched a page of `page_size` at a time as the iteration goes; at most `limit`
        of them. `values`: Records with their values, else Entries (key, revision,
        expires_at). A key present for the whole iteration is seen exactly once."""
        return self._list(ListCursor(prefix, values, page_size, limit))

    @abstractmethod
    def _list(self, cursor: ListCursor) -> EntriesT | RecordsT:
        """The items of the listing `cursor` starts, page after page."""

    txn = Operation(_txn)

    def watch(
        self,
        prefix: str | None = None,
        *,
        key: str | None = None,
        initial: bool = True,
        give_up_after: float | None = None,
        read_timeout: float | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
    ) -> WatchT:
        """The changes under `prefix` ("" for every key) or to `key`, as events, reconnecting
        and listing again when the stream is lost (see kv.client.watching for what the caller
        sees). The first connection must succeed (else its error is raised); later ones are
        retried with `backoff` for `give_up_after` seconds (None: for ever). `read_timeout`
        (default `watch_read_timeout`) is how long a silent stream is trusted: keep it above
        the server's 15 s heartbeat."""
        state = WatchState(
            prefix=prefix, key=key, initial=initial, give_up_after=give_up_after,
            backoff=backoff, clock=time.monotonic,
        )  # fmt: skip
        return self._watch(state, read_timeout or self.watch_read_timeout)

    @abstractmethod
    def _watch(self, state: WatchState, read_timeout: float) -> WatchT:
        """The events of the watch `state` describes."""

    # --- the service ------------------------------------------------------------------------

    info = Operation(_info)
