"""What a client asks of the service, parsed and typed at the edge (the HTTP handlers).

Keys arrive validated (`Key`), values as the compact JSON text to store.
"""

from dataclasses import dataclass
from typing import Literal

from kv.domain import txn
from kv.domain.model import Key

ANY_REVISION: Literal["*"] = "*"
Condition = int | Literal["*"] | None
"""An `If-Match`: the revision the record must be at, `*` (it must exist), or None."""


@dataclass(frozen=True, slots=True)
class _OnKey:
    """A command on one present key, applied only if it is at `if_match` when given (else
    RevisionMismatch); KeyNotFound when the key is absent."""

    key: Key
    if_match: Condition = None


@dataclass(frozen=True, slots=True)
class Get(_OnKey):
    """Read a key."""


@dataclass(frozen=True, slots=True)
class Delete(_OnKey):
    """Delete a key; the service answers the revision it had."""


@dataclass(frozen=True, slots=True)
class Create:
    """Store `value` at revision 1; the key must be absent."""

    key: Key
    value: str
    ttl_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Put:
    """Overwrite a present key, under `if_match` when given.

    `upsert` (the /v1 surface): an absent key is created instead, unless `if_match` is
    given, which makes the upsert a compare-and-set like /kv's PUT: a client holding a
    revision never silently recreates a key deleted meanwhile.

    `if_absent`: create only, on either surface; a present key is a RevisionMismatch with
    no expected revision (it was required absent). Not combined with `if_match`.
    """

    key: Key
    value: str
    if_match: Condition = None
    upsert: bool = False
    ttl_ms: int | None = None
    if_absent: bool = False


@dataclass(frozen=True, slots=True)
class ListKeys:
    """A page of the keys starting with `prefix`, after the key `after` (a cursor's)."""

    prefix: str
    limit: int
    after: str | None = None
    values: bool = False


@dataclass(frozen=True, slots=True)
class Transaction:
    operations: tuple[txn.Op, ...]


@dataclass(frozen=True, slots=True)
class Watch:
    """Changes to the keys starting with `prefix`, or to the one key `prefix` when `exact`."""

    prefix: str
    exact: bool = False

    def matches(self, key: str) -> bool:
        return key == self.prefix if self.exact else key.startswith(self.prefix)
