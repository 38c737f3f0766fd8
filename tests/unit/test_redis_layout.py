"""The Redis adapter's layout: names, slot tags, the record and change formats (no server)."""

import pytest
from redis.crc import key_slot

from kv.adapters.redis.layout import Layout, parse_changes, parse_record, slot_tags
from kv.adapters.redis.upkeep import part_of
from kv.domain.model import Change, Record


def test_every_slot_has_a_three_character_tag_that_hashes_to_it() -> None:
    tags = slot_tags()
    assert len(tags) == 16384
    assert all(len(tag) == 3 and tag.isalnum() for tag in tags)
    assert [key_slot(tag.encode()) for tag in tags] == list(range(16384))


def test_a_group_lives_in_the_slot_of_its_records() -> None:
    layout = Layout("kv:", cluster=True)
    for key in ("a", "config/db/host", "{user1}/a", "日本/🙂"):
        record = layout.record(key)
        for name in layout.structures(layout.tag_of(record)):
            assert key_slot(name.encode()) == key_slot(record.encode())
        assert key_slot(layout.channel(layout.tag_of(record)).encode()) == key_slot(record.encode())


def test_kv_names_can_never_be_records() -> None:
    layout = Layout("kv:", cluster=True)
    names = [*layout.structures("abc"), layout.marker, layout.reindex_cursors, layout.sweep_lock]
    assert all(layout.key_of(name) is None for name in names)  # they end with '/', keys do not
    assert layout.key_of("kv:a/b") == "a/b"
    assert layout.key_of("other:a") is None


def test_a_prefix_with_a_hash_tag_is_refused_on_a_cluster() -> None:
    with pytest.raises(ValueError, match="must not contain"):
        Layout("kv{x}:", cluster=True)
    assert Layout("kv{x}:", cluster=False).structures("") == (
        "kv{x}:index/",
        "kv{x}:expiry/",
        "kv{x}:expiring/",
    )


def test_records_of_both_formats_are_read() -> None:
    assert parse_record("k", '3:{"a":1}') == Record("k", '{"a":1}', 3)  # the earlier kv's
    assert parse_record("k", "3,1795647047666:x:y") == Record("k", "x:y", 3, 1795647047666)


def test_changes_are_parsed_by_byte_lengths() -> None:
    key, value = "é/🙂:a", '{"s":"a:b\\n"}'
    message = b"".join(
        [
            b"p3:1795647047666:%d:%d:" % (len(key.encode()), len(value.encode())),
            key.encode() + value.encode(),
            b"d4::%d:0:" % len(key.encode()) + key.encode(),
            b"x1::1:0:k",
        ]
    )
    assert parse_changes(message) == [
        Change(key, 3, value, 1795647047666),
        Change(key, 4, None),
        Change("k", 1, None, expired=True),
    ]


def test_the_sweep_parts_cover_every_slot_once() -> None:
    owned = [(0, 1583), (1585, 5460)]
    parts = [part_of(owned, part, 8) for part in range(8)]
    slots = [slot for ranges in parts for first, last in ranges for slot in range(first, last + 1)]
    assert slots == [*range(0, 1584), *range(1585, 5461)]
    assert all(len(ranges) <= 2 for ranges in parts)  # a few ranges, not slot by slot
    assert part_of([(7, 8)], 5, 8) == []  # a master with fewer slots than parts
