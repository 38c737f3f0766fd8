"""Records and the rules a key and a value must follow."""

import math
import re
from decimal import Decimal
from typing import NamedTuple, NewType

from kv.domain.errors import InvalidInput, InvalidKey, InvalidValue

MAX_KEY_BYTES = 1024
MAX_VALUE_DEPTH = 256
# Revisions are 64-bit in every backend; an expected revision outside 1..MAX_REVISION is one
# no record can have.
MAX_REVISION = 2**63 - 1
NO_REVISION = 0
MAX_TTL_SECONDS = 315_360_000  # ten years
MAX_PAGE = 1000
DEFAULT_PAGE = 100

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

Key = NewType("Key", str)
"""A key that passed `parse_key`."""


class Record(NamedTuple):
    """One stored key: its value as compact JSON text, its revision (1 on creation), and
    when it expires (milliseconds since the Unix epoch, by the backend's clock), if ever."""

    key: str
    value: str
    revision: int
    expires_at: int | None = None


class Stale(NamedTuple):
    """A repository's answer when the record is at another revision than the one expected."""

    revision: int


class Entry(NamedTuple):
    """A record as a listing shows it: its value only when the listing asked for values."""

    key: str
    revision: int
    expires_at: int | None = None
    value: str | None = None


class Page(NamedTuple):
    """Entries in ascending key order, and whether more follow the last of them."""

    entries: list[Entry]
    more: bool


class Change(NamedTuple):
    """One committed change to one key, as watchers see it.

    A put carries the new value (and expiry); a delete has `value` None and the revision the
    record had, `expired` telling whether its expiry removed it.
    """

    key: str
    revision: int
    value: str | None
    expires_at: int | None = None
    expired: bool = False


def expected_revision(revision: int) -> int:
    """`revision` as repositories take it: a number no record has (0) when out of range, so
    that an If-Match of 0 or of 30 digits is a mismatch, never an error."""
    return revision if 0 < revision <= MAX_REVISION else NO_REVISION


def parse_key(key: object) -> Key:
    """Return `key` if it is a valid key, else raise InvalidKey saying why."""
    if not isinstance(key, str):
        raise InvalidKey(None, f"a key must be a string, not {_json_type(key)}")
    if not key:
        raise InvalidKey(key, "a key must not be empty")
    try:
        size = len(key) if key.isascii() else len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidKey(None, "a key must be valid Unicode (no lone surrogates)") from None
    if size > MAX_KEY_BYTES:
        raise InvalidKey(
            key[:64] + "…", f"a key must be at most {MAX_KEY_BYTES} bytes in UTF-8, not {size}"
        )
    if _CONTROL.search(key):
        raise InvalidKey(key, "a key must not contain control characters (U+0000-U+001F, U+007F)")
    if key[-1] == "/":
        raise InvalidKey(key, "a key must not end with '/'")
    return Key(key)


def validate_value(value: object) -> None:
    """Raise InvalidValue if a decoded JSON value nests deeper than MAX_VALUE_DEPTH levels.

    Depth counts containers: a scalar is 0, `[]` is 1, `[[1]]` is 2.
    """
    if not isinstance(value, dict | list):
        return
    # Iterative on purpose: recursion would hit Python's own limit before ours on hostile input.
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_VALUE_DEPTH:
            raise InvalidValue(None, f"the value nests deeper than {MAX_VALUE_DEPTH} levels")
        children = node.values() if isinstance(node, dict) else node
        for child in children:  # type: ignore[attr-defined]
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))


def _json_type(value: object) -> str:
    match value:
        case None:
            return "null"
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case list():
            return "an array"
        case dict():
            return "an object"
        case _:
            return type(value).__name__


def parse_ttl(ttl: object) -> int | None:
    """The milliseconds of a `ttl` in seconds (rounded up), None for none (absent or null)."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= MAX_TTL_SECONDS:
        raise InvalidInput(
            None,
            f"ttl must be a number of seconds above 0 and at most {MAX_TTL_SECONDS} (or null), "
            f"not {ttl!r}"[:200],
        )
    if isinstance(ttl, int):
        return ttl * 1000
    # Decimal of the shortest repr: 1.1 s is 1100 ms, where 1.1 * 1000 is 1100.0000000000002.
    return max(1, math.ceil(Decimal(repr(ttl)) * 1000))


def check_page_size(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(None, f"limit must be from 1 to {MAX_PAGE}, not {limit}")
    return limit
