"""The scenarios of `kv check`, each a list of steps run with a Checker (check_steps.py).

Keys contain spaces, `/`, `%`, `+`, `?`, `#`, `.` segments and non-ASCII letters, sent as
kv.client writes them (percent-encoded but for `/`), so a server or proxy that decodes or
normalizes paths wrongly fails a step.
"""

import time
from collections.abc import Callable
from typing import Any

from kv.client import (
    Checked,
    Deleted,
    DeleteEvent,
    KeyNotFound,
    PutEvent,
    Record,
    Synced,
    TxnCheck,
    TxnCreate,
    TxnDelete,
    TxnGet,
    TxnPut,
    WatchEvent,
    core,
)
from kv.entrypoints.check_steps import Checker, StepFailed

V1 = "/v1"


def overwrite_scenario(c: Checker) -> None:
    keys = [
        c.key("overwrite/plain"),
        c.key("overwrite/with space/и юникод"),
        c.key("overwrite/100% + more"),
    ]
    values: list[Any] = [{"n": 1, "nested": {"list": [1, 2]}}, ["ü", 2.5, None], "text"]

    with c.step("overwrite: PUT /v1 creates three keys"):
        for key, value in zip(keys, values, strict=True):
            c.expect(c.put(key, value, surface=V1), key=key, value=value, revision=1)
        for key, value in zip(keys, values, strict=True):
            c.expect(c.get(key, surface=V1), key=key, value=value, revision=1)

    with c.step("overwrite: PUT /v1 overwrites one key and GET reads the new value"):
        new: Any = {"overwritten": True}
        c.expect(c.put(keys[1], new, surface=V1), key=keys[1], value=new, revision=2)
        c.expect(c.get(keys[1], surface=V1), key=keys[1], value=new, revision=2)
        c.expect(c.get(keys[0], surface=V1), value=values[0], revision=1)

    with c.step("overwrite: POST /v1/ of an existing key is 409 and keeps its value"):
        c.refused(c.create(keys[0], "must not be stored", surface=V1), 409)
        c.expect(c.get(keys[0], surface=V1), value=values[0], revision=1)

    with c.step("overwrite: POST /v1/ of a new key is 200"):
        key = c.key("overwrite/new?key#not-a-fragment")
        c.expect(c.create(key, [True, False], surface=V1), key=key, value=[True, False], revision=1)
        c.expect(c.get(key, surface=V1), value=[True, False], revision=1)

    with c.step("overwrite: ten overwrites of one key, the last one wins"):
        revisions = [c.run(c.put(keys[2], {"write": i}, surface=V1)).revision for i in range(10)]
        record = c.expect(c.get(keys[2], surface=V1), value={"write": 9})
        if revisions != list(range(revisions[0], revisions[0] + 10)):
            raise StepFailed(f"the ten PUTs answered revisions {revisions}, not one apart")
        if record.revision != revisions[-1]:
            raise StepFailed(
                f"GET answered revision {record.revision!r} after the last PUT's {revisions[-1]!r}"
            )


def deletion_scenario(c: Checker) -> None:
    # "%07" is three characters here; sent unencoded it would decode to a control character.
    keys = [c.key(f"delete/{i} ключ/%0{i}") for i in range(10)]
    first, rest = keys[:5], keys[5:]

    def delete(key: str, revision: int) -> None:
        call = core.delete(key, surface=V1)
        deleted = c.run(call)
        if deleted.key != key:
            raise StepFailed(f"{call.request} answered key {deleted.key!r}, expected {key!r}")
        c.expect_revision(call.request, deleted.revision, revision)

    with c.step("deletion: PUT /v1 creates ten keys"):
        for i, key in enumerate(keys):
            c.expect(c.put(key, i, surface=V1), key=key, value=i, revision=1)

    with c.step("deletion: DELETE /v1 removes five of them"):
        for key in first:
            delete(key, 1)

    with c.step("deletion: deleting them again is 404"):
        for key in first:
            c.refused(core.delete(key, surface=V1), 404)

    with c.step("deletion: GET of a deleted key is 404, the others remain"):
        for key in first:
            c.refused(c.get(key, surface=V1), 404)
        for i, key in enumerate(rest, start=5):
            c.expect(c.get(key, surface=V1), value=i, revision=1)

    with c.step("deletion: delete, create again at revision 1, delete"):
        key = rest[0]
        delete(key, 1)
        c.refused(c.get(key, surface=V1), 404)
        c.expect(c.put(key, "again", surface=V1), key=key, value="again", revision=1)
        c.expect(c.get(key, surface=V1), value="again", revision=1)
        delete(key, 1)
        c.refused(c.get(key, surface=V1), 404)

    with c.step("deletion: remove the rest, then every key is gone"):
        for key in rest[1:]:
            delete(key, 1)
        for key in keys:
            c.refused(c.get(key, surface=V1), 404)


def kv_scenario(c: Checker) -> None:
    key = c.key("kv/config/db host/é 50%")
    missing = c.key("kv/never written")

    with c.step("kv: POST /kv creates a key at revision 1"):
        c.expect(c.create(key, {"host": "db"}), key=key, value={"host": "db"}, revision=1)

    with c.step("kv: POST /kv of an existing key is 409 and keeps its value"):
        c.refused(c.create(key, "must not be stored"), 409)
        c.expect(c.get(key), value={"host": "db"}, revision=1)

    with c.step("kv: PUT /kv overwrites at revision 2"):
        c.expect(c.put(key, {"host": "db2"}), key=key, value={"host": "db2"}, revision=2)
        c.expect(c.get(key), value={"host": "db2"}, revision=2)

    with c.step("kv: GET, PUT and DELETE of a missing key are 404"):
        c.refused(c.get(missing), 404)
        c.refused(core.put(missing, 1), 404)
        c.refused(core.delete(missing), 404)
        c.refused(c.get(missing), 404)

    with c.step("kv: If-Match with a stale revision is 412 and changes nothing"):
        c.refused(c.put(key, "stale write", if_revision=1), 412)
        c.refused(core.delete(key, if_revision=1), 412)
        c.expect(c.get(key), value={"host": "db2"}, revision=2)

    with c.step("kv: DELETE /kv at the current revision removes the key"):
        call = core.delete(key, if_revision=2)
        c.expect_revision(call.request, c.run(call).revision, 2)
        c.refused(c.get(key), 404)


def listing_scenario(c: Checker) -> None:
    prefix = c.key("list/")
    keys = [prefix + name for name in ("a", "b c", "b/./d", "z%2F", "é+?")]
    ordered = sorted(keys, key=lambda key: key.encode())

    def listed(**options: Any) -> list[str]:
        return [entry.key for entry in c.client.list(prefix, **options)]

    with c.step("listing: five keys, listed in byte order two to a page"):
        for i, key in enumerate(keys):
            c.run(c.create(key, i))
        if (found := listed(page_size=2)) != ordered:
            raise StepFailed(f"GET /kv?prefix= listed {found}, expected {ordered}")

    with c.step("listing: values=true gives each value; limit stops early"):
        values = {r.key: r.value for r in c.client.list(prefix, values=True, page_size=3)}
        expected = {key: i for i, key in enumerate(keys)}
        if not all(key in values and values[key] == i for key, i in expected.items()):
            raise StepFailed(f"the listing with values gave {values}, expected {expected}")
        if (found := listed(limit=2)) != ordered[:2]:
            raise StepFailed(f"a listing limited to 2 gave {found}, expected {ordered[:2]}")

    with c.step("listing: a prefix no key has lists nothing; a deleted key is gone"):
        if found := [entry.key for entry in c.client.list(prefix + "none/")]:
            raise StepFailed(f"the prefix {prefix}none/ listed {found}")
        c.run(core.delete(ordered[0]))
        if (found := listed()) != ordered[1:]:
            raise StepFailed(f"after a delete the listing gave {found}, expected {ordered[1:]}")


def ttl_scenario(c: Checker) -> None:
    short, long = c.key("ttl/short"), c.key("ttl/long")

    with c.step("ttl: a key created with a ttl carries expires_at"):
        created = c.expect(c.create(short, "soon gone", ttl=0.5), revision=1)
        if created.expires_at is None:
            raise StepFailed(f"POST /kv with a ttl answered no expires_at: {created}")
        if c.run(c.get(short)).expires_at not in (created.expires_at, None):
            raise StepFailed("GET answered another expires_at than POST")

    with c.step("ttl: an overwrite without ttl removes the expiry"):
        if c.run(c.create(long, 1, ttl=300)).expires_at is None:
            raise StepFailed("POST /kv with ttl 300 answered no expires_at")
        if (record := c.run(c.put(long, 2))).expires_at is not None:
            raise StepFailed(f"PUT /kv without ttl kept expires_at {record.expires_at}")

    with c.step("ttl: once expired the key is gone for GET, PUT and listings"):
        # The server's clock decides; this one only bounds the wait (the ttl and 5 s).
        deadline = time.monotonic() + 5.5
        while True:
            try:
                c.run(c.get(short))
            except KeyNotFound:
                break
            if time.monotonic() > deadline:
                raise StepFailed(f"{short!r} was still there 5 s after its ttl of 0.5 s")
            time.sleep(0.1)
        c.refused(core.put(short, "late"), 404)
        if short in [entry.key for entry in c.client.list(c.key("ttl/"))]:
            raise StepFailed(f"{short!r} was listed after it expired")
        c.expect(c.create(short, "afresh"), revision=1)


def watch_scenario(c: Checker) -> None:
    prefix = c.key("watch/{watch}/")  # a hash tag: one slot for the transaction on a cluster
    before, key, other = prefix + "before", prefix + "k ey/é", prefix + "other"
    watch = c.client.watch(prefix, read_timeout=c.timeout)  # connects on the first event

    def next_event() -> WatchEvent:
        try:
            return next(watch)
        except StopIteration:
            raise StepFailed("GET /watch: the watch ended") from None

    def take(count: int) -> list[WatchEvent]:
        events = [next_event() for _ in range(count)]
        lost = [event for event in events if not isinstance(event, PutEvent | DeleteEvent)]
        if lost:
            raise StepFailed(f"GET /watch gave {lost[0]} among {events}")
        return events

    try:
        with c.step("watch: a watch of a prefix starts with its records, then is synced"):
            c.run(c.create(before, 0))
            first = [next_event(), next_event()]
            if first != [PutEvent(before, 0, 1, None, True), Synced("start", 1, 0)]:
                raise StepFailed(f"GET /watch?prefix= began with {first}")

        with c.step("watch: a create, an overwrite and a delete arrive in order"):
            c.run(c.create(key, 1))
            c.run(c.put(key, 2))
            c.run(core.delete(key))
            expected = [PutEvent(key, 1, 1), PutEvent(key, 2, 2), DeleteEvent(key, 2, "deleted")]
            if (events := take(3)) != expected:
                raise StepFailed(f"GET /watch gave {events}, expected {expected}")

        with c.step("watch: each write of a transaction arrives"):
            c.written_too(key, other)
            c.client.txn([TxnCreate(key, "a"), TxnCreate(other, "b"), TxnDelete(before)])
            expected = [
                PutEvent(key, "a", 1),
                PutEvent(other, "b", 1),
                DeleteEvent(before, 1, "deleted"),
            ]
            if sorted(map(repr, events := take(3))) != sorted(map(repr, expected)):
                raise StepFailed(f"GET /watch gave {events}, expected {expected}")
    finally:
        watch.close()


def txn_scenario(c: Checker) -> None:
    # A hash tag puts every key in one slot, as a transaction on Redis Cluster needs.
    a, b, other = c.key("txn/{txn}/a"), c.key("txn/{txn}/b b"), c.key("txn/{txn}/other")
    missing = c.key("txn/{txn}/missing")
    c.written_too(a, b)

    with c.step("txn: every operation applies, results in order"):
        c.run(c.create(a, 1))
        c.run(c.create(other, "old"))
        results = c.client.txn(
            [TxnCheck(other, 1), TxnPut(a, 2, if_revision=1), TxnCreate(b, "new"), TxnGet(missing)]
        )
        expected = [Checked(other, 1), Record(a, 2, 2), Record(b, "new", 1), None]
        if results != expected:
            raise StepFailed(f"POST /txn answered {results}, expected {expected}")
        c.expect(c.get(a), value=2, revision=2)

    with c.step("txn: a failed condition writes nothing and names the operation"):
        error = c.refused(core.txn([TxnDelete(b), TxnPut(a, 3, if_revision=1)]), 409)
        got = (error.problem.get("index"), error.key, error.problem.get("reason"))
        if got != (1, a, "revision_mismatch"):
            raise StepFailed(f"POST /txn answered index, key, reason {got}")
        c.expect(c.get(b), value="new", revision=1)

    with c.step("txn: a malformed operation is 400 naming its index"):
        error = c.refused(core.txn([TxnGet(a), {"op": "rename", "key": b}]), 400)
        if error.problem.get("index") != 1:
            raise StepFailed(f"POST /txn answered {error.problem}, expected index 1")
        if c.run(core.txn([TxnDelete(a, if_revision=2)])) != [Deleted(a, 2)]:
            raise StepFailed("POST /txn of one delete did not answer its revision")


SCENARIOS: list[tuple[str, Callable[[Checker], None]]] = [
    ("overwrite", overwrite_scenario),
    ("deletion", deletion_scenario),
    ("kv", kv_scenario),
    ("listing", listing_scenario),
    ("ttl", ttl_scenario),
    ("watch", watch_scenario),
    ("txn", txn_scenario),
]
