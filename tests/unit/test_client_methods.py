"""kv.client.methods writes each method once for both clients: each client must still get
it as written out for its kind (a plain method of Client, an `async def` of AsyncClient,
with the signature and documentation of the one description), and mypy must still see
its types (the functions below are type-checked, never run)."""

import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any, assert_type

from kv.client import AsyncClient, AsyncWatch, Client, Deleted, Entry, Record, Watch

ONE_CALL = ["get", "create", "put", "upsert", "delete", "txn", "info"]


def test_each_client_gets_each_method_for_its_kind() -> None:
    sync, aio = Client("http://kv.test"), AsyncClient("http://kv.test")
    for name in ONE_CALL:
        blocking, awaited = getattr(sync, name), getattr(aio, name)
        assert not inspect.iscoroutinefunction(blocking)
        assert inspect.iscoroutinefunction(awaited)
        assert blocking.__name__ == awaited.__name__ == name
        assert blocking.__doc__ == awaited.__doc__
        assert blocking.__doc__
        assert inspect.signature(blocking) == inspect.signature(awaited)
        assert inspect.signature(getattr(Client, name)).parameters.keys() == {
            "self",
            *inspect.signature(blocking).parameters,
        }
    signature = inspect.signature(sync.put)
    assert list(signature.parameters) == ["key", "value", "if_revision", "ttl"]
    assert signature.return_annotation is Record
    assert inspect.signature(aio.delete).return_annotation is Deleted


def _sync_types(kv: Client) -> None:
    assert_type(kv.get("k"), Record)
    assert_type(kv.put("k", 1, if_revision=2), Record)
    assert_type(kv.delete("k"), Deleted)
    assert_type(kv.list("p/"), Iterator[Entry])
    assert_type(kv.list("p/", values=True), Iterator[Record])
    assert_type(kv.watch("p/"), Watch)
    assert_type(kv.info(), dict[str, Any])


async def _async_types(kv: AsyncClient) -> None:
    assert_type(await kv.get("k"), Record)
    assert_type(await kv.put("k", 1, if_revision=2), Record)
    assert_type(await kv.delete("k"), Deleted)
    assert_type(kv.list("p/"), AsyncIterator[Entry])
    assert_type(kv.list("p/", values=True), AsyncIterator[Record])
    assert_type(kv.watch("p/"), AsyncWatch)
    assert_type(await kv.info(), dict[str, Any])
