"""kv.client: Python clients of a kv server, sync (`Client`) and asyncio (`AsyncClient`).

    from kv.client import Client, KeyExists

    with Client("http://127.0.0.1:8000") as kv:
        kv.create("config/db", {"host": "db1"})
        record = kv.get("config/db")            # Record(key, value, revision, expires_at)
        kv.put("config/db", {"host": "db2"}, if_revision=record.revision)
        for entry in kv.list("config/"):        # every page, fetched as the loop goes
            print(entry.key, entry.revision)

It needs only httpx and the standard library.
"""

from kv.client.aio import AsyncClient, AsyncWatch
from kv.client.errors import (
    BadRequest,
    ConnectionFailed,
    KeyExists,
    KeyNotFound,
    KVError,
    PayloadTooLarge,
    Rejected,
    RevisionMismatch,
    TimedOut,
    TransactionFailed,
    Unauthorized,
    Unavailable,
    UnexpectedResponse,
)
from kv.client.model import (
    Checked,
    Deleted,
    Entry,
    Record,
    TxnCheck,
    TxnCreate,
    TxnDelete,
    TxnGet,
    TxnOp,
    TxnPut,
    TxnResult,
)
from kv.client.retry import RetryPolicy
from kv.client.sync import Client, Watch
from kv.client.watching import (
    Backoff,
    DeleteEvent,
    Interrupted,
    PutEvent,
    Synced,
    WatchEvent,
)

__all__ = [
    "AsyncClient",
    "AsyncWatch",
    "Backoff",
    "BadRequest",
    "Checked",
    "Client",
    "ConnectionFailed",
    "DeleteEvent",
    "Deleted",
    "Entry",
    "Interrupted",
    "KVError",
    "KeyExists",
    "KeyNotFound",
    "PayloadTooLarge",
    "PutEvent",
    "Record",
    "Rejected",
    "RetryPolicy",
    "RevisionMismatch",
    "Synced",
    "TimedOut",
    "TransactionFailed",
    "TxnCheck",
    "TxnCreate",
    "TxnDelete",
    "TxnGet",
    "TxnOp",
    "TxnPut",
    "TxnResult",
    "Unauthorized",
    "Unavailable",
    "UnexpectedResponse",
    "Watch",
    "WatchEvent",
]
