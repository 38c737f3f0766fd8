"""Where kv keeps its data in Redis, and how a record and a change are written there.

Every name starts with the prefix (`kv:` by default). A record is one string at
`<prefix><key>` holding `<revision>:<value>`, or `<revision>,<expires_at>:<value>` when it
expires (milliseconds since the epoch, by Redis's clock); records written by kv before expiry
existed are the first form and read as records without expiry.

Beside the records, per group of records (see below):
- `index/`, a sorted set of their keys, all scored 0, so `ZRANGE ... BYLEX` pages through
  them in the order of their UTF-8 bytes;
- `expiry/`, a sorted set of the keys that expire, scored by `expires_at`, which the sweeper
  walks to find what is due;
- `expiring/`, a hash from those keys to their revision, so that an expiry can be announced
  with the revision the record had even after Redis has dropped the record itself.

On a standalone Redis there is one group: `<prefix>index/` and so on. On a Redis Cluster a
script may touch one slot only, so there is one group per slot, named with a hash tag that
maps to that slot: `<prefix>{<tag>}index/`. A group then lives in the same slot as its records
and moves with them when the slot is resharded. kv's own names end with `/`, which no key
may, so none of them can be taken for a record.

Changes are published on the group's channel, `<prefix>changes/` (`<prefix>{<tag>}changes/`,
a shard channel of that slot, on a Cluster), as `<kind><revision>:<expires_at>:<key length>:
<value length>:<key><value>` (lengths in bytes), the changes of one script to one group
concatenated in one message; kind `p` is a put, `d` a delete, `x` an expiry.
"""

import functools
import itertools
import string
from collections.abc import Sequence

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from kv.domain.model import Change, Record

STRUCTURES = ("index/", "expiry/", "expiring/")
ALPHABET = string.ascii_letters + string.digits


class Layout:
    """The names kv uses under `prefix`, on a standalone Redis or a Cluster."""

    def __init__(self, prefix: str, *, cluster: bool) -> None:
        if cluster and ("{" in prefix or "}" in prefix):
            # A hash tag in the prefix would put every record in one slot, and the slot tags
            # of kv's own names (below) would no longer choose theirs.
            raise ValueError(
                f"KV_REDIS_PREFIX={prefix!r}: on a Redis Cluster the prefix must not contain "
                "'{' or '}' (they would make it a hash tag)"
            )
        self.prefix = prefix
        self.cluster = cluster
        # Set once every record has an index entry (see upkeep.py's reindex).
        self.marker = prefix + "format/"
        self.reindex_cursors = prefix + "reindexing/"
        self.sweep_lock = prefix + "sweeping/"

    def record(self, key: str) -> str:
        return self.prefix + key

    def tag_of(self, record: str) -> str:
        """The tag of the group that holds `record`'s entries ('' on a standalone Redis)."""
        return slot_tags()[key_slot(record.encode())] if self.cluster else ""

    def structures(self, tag: str) -> tuple[str, str, str]:
        """The index, expiry and expiring names of the group `tag`."""
        base = self.prefix + "{" + tag + "}" if tag else self.prefix
        return (base + STRUCTURES[0], base + STRUCTURES[1], base + STRUCTURES[2])

    def channel(self, tag: str) -> str:
        """Where the changes of the group `tag` are published."""
        return (self.prefix + "{" + tag + "}" if tag else self.prefix) + "changes/"

    def tags(self, slots: Sequence[tuple[int, int]]) -> list[str]:
        """The tags of the groups of the slots in the given (first, last) ranges."""
        if not self.cluster:
            return [""]
        table = slot_tags()
        return [table[slot] for first, last in slots for slot in range(first, last + 1)]

    def groups(self, slots: Sequence[tuple[int, int]]) -> list[str]:
        """The groups of the slots in the given ranges, as the scripts over several groups
        take them in ARGV: "first-last" ranges ('' on a standalone Redis)."""
        if not self.cluster:
            return [""]
        return [f"{first}-{last}" for first, last in slots]

    def key_of(self, name: str) -> str | None:
        """The key of a record's Redis name, None for a name of kv's own."""
        if name.endswith("/") or not name.startswith(self.prefix):
            return None
        return name[len(self.prefix) :]


@functools.cache
def slot_tags() -> tuple[str, ...]:
    """For each Cluster slot, the first tag of three letters or digits that hashes to it.

    Every kv process must name a slot's group alike, so the choice is fixed: the first in the
    order of itertools.product over ALPHABET (every slot has one; found in about 0.15 s, once
    per process). Three characters each, so that a script finds a slot's tag in one string.
    """
    table: list[str | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
    for letters in itertools.product(ALPHABET, repeat=3):
        tag = "".join(letters)
        slot = key_slot(tag.encode())
        if table[slot] is None:
            table[slot] = tag
    tags = tuple(tag for tag in table if tag is not None)
    assert len(tags) == REDIS_CLUSTER_HASH_SLOTS
    return tags


def parse_record(key: str, stored: str) -> Record:
    """The record a record string holds."""
    head, _, value = stored.partition(":")
    revision, _, expires_at = head.partition(",")
    return Record(key, value, int(revision), int(expires_at) if expires_at else None)


_COLON = ord(":")


def parse_changes(message: bytes, encoding: str = "utf-8") -> list[Change]:
    """The changes of one published message (see the module docstring)."""
    changes: list[Change] = []
    at, end = 0, len(message)
    while at < end:
        kind = message[at]
        c1 = message.index(_COLON, at)
        c2 = message.index(_COLON, c1 + 1)
        c3 = message.index(_COLON, c2 + 1)
        c4 = message.index(_COLON, c3 + 1)
        revision = int(message[at + 1 : c1])
        expires_at = int(message[c1 + 1 : c2]) if c2 > c1 + 1 else None
        key_end = c4 + 1 + int(message[c2 + 1 : c3])
        value_end = key_end + int(message[c3 + 1 : c4])
        key = message[c4 + 1 : key_end].decode(encoding)
        if kind == ord("p"):
            value = message[key_end:value_end].decode(encoding)
            changes.append(Change(key, revision, value, expires_at))
        else:
            changes.append(Change(key, revision, None, expired=kind == ord("x")))
        at = value_end
    return changes
