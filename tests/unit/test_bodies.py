"""Reading JSON bodies within bounded loop time (#20 item 2): the mechanisms (no cyclic GC
while parsing, no depth walk for most bodies), the exact depth rule they must keep, orjson
kept away from deep values (it corrupts memory encoding them), and a generous time bound
that only a regression to hundreds of ms can fail.

bench/body_cost.py measures the loop time by shape; the README quotes it.
"""

import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kv.container import Settings
from kv.domain.errors import InvalidValue
from kv.entrypoints.bodies import (
    MAX_NUMBER_DIGITS,
    ORJSON_SAFE_DEPTH,
    CyclicGCPaused,
    _parse_value_body,
    encode_value,
    parse_json,
    read_value_body,
)
from kv.entrypoints.problems import BadRequest
from tests.conftest import open_client

MiB = 1024 * 1024
FIELDS = (("key", "value"), ("key", "value"))


def nested(depth: int, leaf: Any = 0, *, kind: type = list) -> Any:
    """A value nesting `depth` arrays (or objects) around `leaf`."""
    value = leaf
    for _ in range(depth):
        value = [value] if kind is list else {"k": value}
    return value


def depth_of(value: Any) -> int:
    stack, deepest = [(value, 0)], 0
    while stack:
        node, depth = stack.pop()
        if isinstance(node, list | dict):
            depth += 1
            stack.extend(
                (child, depth) for child in (node.values() if isinstance(node, dict) else node)
            )
        deepest = max(deepest, depth)
    return deepest


def body_of(items: bytes, *, tail: bytes = b"") -> bytes:
    """A create body of close to 1 MiB: `items` repeated in the value's array, then `tail`."""
    head, end = b'{"key":"k","value":[', b"]}"
    count = (MiB - len(head) - len(end) - len(tail)) // (len(items) + 1)
    return head + b",".join([items] * count) + tail + end


def put_body(body: bytes) -> bytes:
    """The PUT body of the same value as a create body."""
    return body.replace(b'"key":"k",', b"", 1)


# Shapes a client can fill 1 MiB with, the costliest for the parser or the encoder.
SHAPES = {
    "empty arrays": body_of(b"[]"),
    "empty objects": body_of(b"{}"),
    "256-deep arrays": body_of(b"[" * 255 + b"]" * 255),
    "empty arrays, one 256 deep": body_of(b"[]", tail=b"," + b"[" * 255 + b"]" * 255),
    "floats and an integer beyond 64 bits": body_of(b"1.5", tail=b",123456789012345678901"),
}


# --- orjson and deep values -----------------------------------------------------------------

# A value of 8 arrays each nesting 253 levels (4 KB of JSON): orjson 3.13.0 writes past the
# end of its buffer encoding it. PYTHONMALLOC=debug turns the heap corruption (otherwise
# silent, or "realloc(): invalid next size" later) into an abort.
OVERFLOWING = "[" + ",".join(["[" * 253 + "0" + "]" * 253] * 8) + "]"


def run_under_malloc_debug(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONMALLOC": "debug"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_orjson_still_writes_past_its_buffer_encoding_deep_values() -> None:
    """Why ORJSON_SAFE_DEPTH exists. When an orjson upgrade makes this fail, the bug is fixed
    and the bound may be raised (after the same scan, tests' docstring in bodies.py)."""
    done = run_under_malloc_debug(f"import orjson; orjson.dumps(orjson.loads({OVERFLOWING!r}))")
    assert done.returncode != 0 and "bad trailing pad byte" in done.stderr, done.stderr[-500:]


def test_kv_stores_the_values_that_make_orjson_overflow_without_harm() -> None:
    """Before: kv handed such a value to orjson.dumps, and one 4 KB request corrupted its heap."""
    code = f"""
import asyncio, json
from kv.container import Settings
from tests.conftest import open_client
value = json.loads({OVERFLOWING!r})
async def main():
    async for client in open_client(Settings()):
        for name, body in (("a", value), ("b", {{"x": value}}), ("c", [value, [value]])):
            response = await client.put("/v1/" + name, json={{"value": body}})
            assert response.status_code == 200, response.text
            assert json.loads(response.content)["value"] == body
asyncio.run(main())
print("stored")
"""
    done = run_under_malloc_debug(code)
    assert done.returncode == 0 and "stored" in done.stdout, done.stderr[-2000:]


@pytest.mark.parametrize(
    "body",
    [
        b'{"key":"k","value":%b}' % OVERFLOWING.encode(),
        b'{"key":"k","value":%b}' % (b"[" * 31 + b"[]" + b"]" * 31),
        b'{"key":"k","value":[%b]}' % b",".join([b"[[[]]]"] * 2000),  # many brackets, shallow
    ],
)
def test_orjson_encodes_nothing_nesting_deeper_than_the_safe_depth(
    body: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    deepest: list[int] = []
    dumps = orjson.dumps

    def watched(value: Any, *args: Any, **kwargs: Any) -> bytes:
        deepest.append(depth_of(value))
        return dumps(value, *args, **kwargs)

    monkeypatch.setattr("kv.entrypoints.bodies.orjson.dumps", watched)
    text = read_value_body(body, *FIELDS)[1]
    assert json.loads(text) == json.loads(body)["value"]
    assert max(deepest, default=0) <= ORJSON_SAFE_DEPTH


# --- the depth rule, exactly ---------------------------------------------------------------


@pytest.mark.parametrize("depth", [ORJSON_SAFE_DEPTH, ORJSON_SAFE_DEPTH + 1, 255, 256, 257, 300])
@pytest.mark.parametrize("kind", [list, dict])
def test_values_of_up_to_256_levels_are_encoded_and_deeper_ones_refused(
    depth: int, kind: type
) -> None:
    for value in (
        nested(depth, kind=kind),
        [list(range(1000)), nested(depth - 1, kind=kind), {"a": 1}],  # deep in the middle
        {"wide": [[]] * 10_000, "deep": nested(depth - 1, "x", kind=kind)},
        [nested(depth - 1, i, kind=kind) for i in range(50)],  # every member deep
    ):
        assert depth_of(value) == depth
        if depth <= 256:
            assert encode_value(value) == json.dumps(value, separators=(",", ":"))
        else:
            with pytest.raises(InvalidValue, match="deeper than 256 levels"):
                encode_value(value)


def deep_or_shallow() -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=3)
    chains = st.builds(
        nested,
        st.sampled_from([1, 29, 30, 31, 100, 254, 255, 256, 257]),
        scalars,
        kind=st.sampled_from([list, dict]),
    )
    return st.recursive(
        scalars | chains,
        lambda children: (
            st.lists(children, max_size=5)
            | st.dictionaries(st.text(max_size=3), children, max_size=5)
        ),
        max_leaves=20,
    )


@settings(max_examples=300, deadline=None)
@given(deep_or_shallow())
def test_any_value_is_encoded_as_json_dumps_would_or_refused_when_deeper_than_256(
    value: Any,
) -> None:
    if depth_of(value) <= 256:
        assert encode_value(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    else:
        with pytest.raises(InvalidValue):
            encode_value(value)


# --- numbers --------------------------------------------------------------------------------


def test_integers_beyond_64_bits_are_kept_as_sent_and_other_fields_as_ints() -> None:
    body = b'{"value": [-9223372036854775809, 18446744073709551616, 1.5, 1e15], "key": 7}'
    fields, text = read_value_body(body, ("value", "key"), ("value",))
    assert text == "[-9223372036854775809,18446744073709551616,1.5,1000000000000000.0]"
    assert fields == {"key": 7}
    body = b'{"value": 1, "key": 123456789012345678901234567890}'
    key = read_value_body(body, ("value", "key"), ("value",))[0]["key"]
    assert key == 123456789012345678901234567890 and type(key) is int


def test_long_runs_of_digits_in_strings_leave_the_body_to_orjson() -> None:
    """A 20-digit id in a key or a value is a string: the exact (standard library) parser,
    ~10 times slower on small bodies, is only for integers beyond 64 bits."""
    in_strings = b'{"key":"new-17641296001234567890-1","value":{"id":"-12345678901234567890"}}'
    assert _parse_value_body(in_strings)[2] is False
    assert parse_json(in_strings) == orjson.loads(in_strings)
    as_number = b'{"key":"k-12345678901234567890","value":{"id":-12345678901234567890}}'
    assert _parse_value_body(as_number)[2] is True
    assert parse_json(as_number)["value"]["id"] == -12345678901234567890


def test_numbers_of_more_than_4300_digits_are_refused_and_digits_in_strings_are_not() -> None:
    ok = b'{"key":"k","value":[%b]}' % (b"9" * MAX_NUMBER_DIGITS)
    assert read_value_body(ok, *FIELDS)[1] == "[" + "9" * MAX_NUMBER_DIGITS + "]"
    with pytest.raises(BadRequest, match="more than 4300 digits"):
        read_value_body(b'{"key":"k","value":[-%b]}' % (b"9" * 4301), *FIELDS)
    text = b'"a\\\\",' + b"9" * 5000  # an escaped backslash ends the string: digits outside
    with pytest.raises(BadRequest, match="more than 4300 digits"):
        read_value_body(b'{"key":"k","value":[%b]}' % text, *FIELDS)
    inside = b'"a\\"' + b"9" * 5000 + b'"'  # an escaped quote does not: digits inside
    assert read_value_body(b'{"key":"k","value":[%b]}' % inside, *FIELDS)[1].endswith('9"]')


# --- loop time ------------------------------------------------------------------------------


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """The generations of the cyclic GC's passes while the test runs."""
    started: list[int] = []

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started.append(info["generation"])

    gc.callbacks.append(record)
    yield started
    gc.callbacks.remove(record)


async def test_the_cyclic_gc_does_not_run_while_a_1_mib_body_is_handled(
    collections: list[int],
) -> None:
    """Before: 350k `[]` in a POST ran ~970 passes of the GC, over a second in all."""
    assert gc.isenabled()
    async for client in open_client(Settings()):
        await client.post("/kv", json={"key": "warm-up", "value": 1})
        collections.clear()
        response = await client.post("/kv", content=SHAPES["empty arrays"])
        assert response.status_code == 200, response.text
        assert len(collections) <= 2 and 2 not in collections, collections
    assert gc.isenabled()


def test_the_gc_is_enabled_again_only_if_it_was(collections: list[int]) -> None:
    gc.disable()
    try:
        read_value_body(SHAPES["empty arrays"], *FIELDS)
        assert not gc.isenabled()
        with CyclicGCPaused(), pytest.raises(BadRequest), CyclicGCPaused():
            read_value_body(b"{bad", *FIELDS)
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(BadRequest):
        read_value_body(b"[" * 100 + b"]" * 99, *FIELDS)
    assert gc.isenabled()
    assert collections == []


@pytest.mark.parametrize("shape", [shape for shape in SHAPES if shape != "256-deep arrays"])
async def test_a_1_mib_body_takes_well_under_half_a_second(shape: str) -> None:
    """A regression bound, not the target: bench/body_cost.py measures 45-110 ms for these
    on a loaded 2-core machine; before, 350k `[]` took 0.7-1.3 s. Best of three, so that a
    busy machine does not fail it. (Values nesting more than 30 levels take ~200 ms, by
    design: see README, Limits.)"""
    body = SHAPES[shape]
    assert len(body) <= MiB
    async for client in open_client(Settings()):
        best = float("inf")
        for attempt in range(3):
            started = time.perf_counter()
            response = await client.put("/v1/k", content=put_body(body))
            best = min(best, time.perf_counter() - started)
            assert response.status_code == 200, response.text
            assert response.json()["revision"] == attempt + 1
        assert best < 0.4, f"{shape}: {best * 1000:.0f} ms"


async def test_1_mib_bodies_through_http_are_stored_exactly(client: httpx.AsyncClient) -> None:
    for shape, body in SHAPES.items():
        response = await client.put("/v1/" + shape.replace(" ", "-"), content=put_body(body))
        assert response.status_code == 200, (shape, response.text)
        expected = json.loads(body)["value"]
        assert json.loads(response.content)["value"] == expected, shape
