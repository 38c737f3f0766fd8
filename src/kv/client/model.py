"""The values a kv client hands back and takes: records, listing entries, transaction
operations and their results. Plain frozen dataclasses; JSON values are Python values as
`json.loads` gives them (dict, list, str, int, float, bool, None)."""

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeAlias

JSONValue: TypeAlias = Any  # any value json.dumps accepts without NaN or Infinity
Seconds: TypeAlias = float | timedelta


@dataclass(frozen=True, slots=True)
class _Written:
    """`as_json`: the object as the API writes it: its fields by name (a transaction's
    operation led by its `op`), an optional field (default None) only when it is set, times
    in RFC 3339 and ttls in seconds."""

    op: ClassVar[str | None] = None

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {} if self.op is None else {"op": self.op}
        for field in fields(self):
            value = getattr(self, field.name)
            if value is None and field.default is None:
                continue
            write = _WRITE.get(field.name)
            data[field.name] = value if write is None else write(value)
        return data


@dataclass(frozen=True, slots=True)
class Record(_Written):
    """A key's record: its value, its revision (1 when created, +1 on every overwrite) and,
    when it has a ttl, when it expires (an aware UTC datetime)."""

    key: str
    value: JSONValue
    revision: int
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Entry(_Written):
    """A key in a listing made without values."""

    key: str
    revision: int
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Deleted(_Written):
    """What a delete answers: the key and the revision the deleted record had."""

    key: str
    revision: int


@dataclass(frozen=True, slots=True)
class Checked(_Written):
    """A transaction's `check` result: the key's revision, None when it is absent."""

    key: str
    revision: int | None


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing; `next` is the cursor of the following page, None on the last."""

    items: list[Entry | Record]
    next: str | None


# --- transactions ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TxnCreate(_Written):
    """Create `key`; fails with reason `exists` when it is present."""

    op = "create"
    key: str
    value: JSONValue
    ttl: Seconds | None = None


@dataclass(frozen=True, slots=True)
class TxnPut(_Written):
    """Overwrite a present `key`, at revision `if_revision` when given; fails with reason
    `not_found` when it is absent, `revision_mismatch` when it is at another revision."""

    op = "put"
    key: str
    value: JSONValue
    if_revision: int | None = None
    ttl: Seconds | None = None


@dataclass(frozen=True, slots=True)
class TxnDelete(_Written):
    """Delete a present `key`, at revision `if_revision` when given; fails as TxnPut does."""

    op = "delete"
    key: str
    if_revision: int | None = None


@dataclass(frozen=True, slots=True)
class TxnGet(_Written):
    """Read `key` (None in the results when absent; never a condition)."""

    op = "get"
    key: str


@dataclass(frozen=True, slots=True)
class TxnCheck(_Written):
    """Require `key` at `revision`, or absent when `revision` is None; fails with reason
    `exists` (present, required absent), `not_found` or `revision_mismatch`."""

    op = "check"
    key: str
    revision: int | None


TxnOp: TypeAlias = TxnCreate | TxnPut | TxnDelete | TxnGet | TxnCheck
TXN_OPS = (TxnCreate, TxnPut, TxnDelete, TxnGet, TxnCheck)
# A result per operation, in order: a Record for create, put and a found get; None for a get
# of a missing key; Deleted for a delete; Checked for a check.
TxnResult: TypeAlias = Record | Deleted | Checked | None


def ttl_seconds(ttl: Seconds) -> float:
    return ttl.total_seconds() if isinstance(ttl, timedelta) else ttl


# --- JSON in and out ------------------------------------------------------------------------


def encode_json(data: Any) -> bytes:
    """A request body: compact UTF-8 JSON. NaN and Infinity are refused (ValueError) here,
    as the server would refuse them."""
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def canonical(value: JSONValue) -> str:
    """A value as one text per JSON value, for comparing values as JSON (where 1, 1.0 and
    true differ, which `==` does not see)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def format_time(moment: datetime) -> str:
    """As kv writes times: RFC 3339 in UTC, milliseconds, `Z` (`2026-11-25T20:15:03.120Z`)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_WRITE: dict[str, Callable[[Any], Any]] = {"expires_at": format_time, "ttl": ttl_seconds}


def parse_time(text: object) -> datetime:
    """`2026-11-25T20:15:03.120Z` as an aware datetime in UTC."""
    if not isinstance(text, str):
        raise ValueError(f"expires_at must be an RFC 3339 string, not {text!r}")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"expires_at {text!r} has no time zone")
    return moment


def parse_record(data: object) -> Record:
    fields = _object(data, "key", "value", "revision")
    return Record(fields["key"], fields["value"], _revision(fields), _expiry(fields))


def parse_entry(data: object) -> Entry | Record:
    """A listing item: a Record when it carries a value, else an Entry."""
    fields = _object(data, "key", "revision")
    if "value" in fields:
        return parse_record(fields)
    return Entry(fields["key"], _revision(fields), _expiry(fields))


def parse_deleted(data: object) -> Deleted:
    fields = _object(data, "key", "revision")
    return Deleted(fields["key"], _revision(fields))


def parse_checked(data: object) -> Checked:
    fields = _object(data, "key", "revision")
    revision = fields["revision"]
    if revision is not None and not _is_revision(revision):
        raise ValueError(f"revision must be a whole number or null, not {revision!r}")
    return Checked(fields["key"], revision)


def _object(data: object, *required: str) -> Mapping[str, Any]:
    """`data` as a JSON object with every field of `required`; ValueError otherwise."""
    if not isinstance(data, Mapping):
        raise ValueError(f"expected a JSON object, got {data!r}"[:200])
    missing = [name for name in required if name not in data]
    if missing:
        raise ValueError(f"the object lacks {', '.join(missing)}: {data!r}"[:200])
    if not isinstance(data["key"], str):
        raise ValueError(f"key must be a string, not {data['key']!r}")
    return data


def _revision(fields: Mapping[str, Any]) -> int:
    revision = fields["revision"]
    if not _is_revision(revision):
        raise ValueError(f"revision must be a whole number from 1, not {revision!r}")
    return int(revision)


def _is_revision(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _expiry(fields: Mapping[str, Any]) -> datetime | None:
    text = fields.get("expires_at")
    return None if text is None else parse_time(text)
