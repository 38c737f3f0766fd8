"""Hypothesis properties: the service against a dict model, and values and keys through HTTP."""

import asyncio
import json
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from kv.adapters.memory import MemoryRepository
from kv.container import Settings
from kv.domain.commands import Create, Delete, Get, Put
from kv.domain.errors import KeyExists, KeyNotFound, RevisionMismatch
from kv.domain.model import MAX_KEY_BYTES, Key
from kv.domain.service import KVService
from tests.conftest import open_client

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(exclude_categories=["Cs"])),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.text(alphabet=st.characters(exclude_categories=["Cs"])), children, max_size=5
        )
    ),
    max_leaves=30,
)

valid_keys = st.text(
    alphabet=st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=64
).filter(lambda k: not k.endswith("/") and len(k.encode()) <= MAX_KEY_BYTES and "\x7f" not in k)


QUIET = Settings(log_level="WARNING")


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(value=json_values)
async def test_any_json_value_round_trips_through_post_and_get(value: Any) -> None:
    async for http in open_client(QUIET):
        body = json.dumps({"key": "k", "value": value}).encode()
        created = await http.post("/kv", content=body)
        assert created.status_code == 200, created.text
        got = await http.get("/kv/k")
        assert got.status_code == 200
        assert json.loads(got.content) == {"key": "k", "value": value, "revision": 1}


@settings(max_examples=150, deadline=None)
@given(key=valid_keys)
async def test_any_valid_key_round_trips_through_its_percent_encoded_url(key: str) -> None:
    async for http in open_client(QUIET):
        created = await http.post("/kv", json={"key": key, "value": 1})
        assert created.status_code == 200, created.text
        # "." too: clients remove "." and ".." path segments before sending (RFC 3986 5.2.4).
        url = "/kv/" + quote(key, safe="").replace(".", "%2E")
        got = await http.get(url)
        assert got.status_code == 200, got.text
        assert got.json()["key"] == key
        assert (await http.put(url, json={"value": 2})).json()["revision"] == 2
        assert (await http.delete(url)).status_code == 200


KEYS = st.sampled_from(["a", "b", "c/d", "é"])
VALUES = st.integers(min_value=0, max_value=9).map(str)
REVISIONS = st.none() | st.integers(min_value=0, max_value=4)


class ServiceMachine(RuleBasedStateMachine):
    """Random sequences of operations agree with a dict of key -> (value, revision)."""

    @initialize()
    def start(self) -> None:
        self.runner = asyncio.Runner()
        self.service = KVService(MemoryRepository())
        self.model: dict[str, tuple[str, int]] = {}

    def run(self, coroutine: Any) -> Any:
        return self.runner.run(coroutine)

    @rule(key=KEYS, value=VALUES)
    def create(self, key: str, value: str) -> None:
        try:
            record = self.run(self.service.create(Create(Key(key), value)))
        except KeyExists:
            assert key in self.model
        else:
            assert key not in self.model and record.revision == 1
            self.model[key] = (value, 1)

    @rule(key=KEYS, value=VALUES, expected=REVISIONS)
    def replace(self, key: str, value: str, expected: int | None) -> None:
        try:
            record = self.run(self.service.put(Put(Key(key), value, if_match=expected)))
        except KeyNotFound:
            assert key not in self.model
        except RevisionMismatch as exc:
            assert expected is not None and self.model[key][1] == exc.actual != expected
        else:
            assert key in self.model
            assert expected in (None, self.model[key][1])
            assert record.revision == self.model[key][1] + 1
            self.model[key] = (value, record.revision)

    @rule(key=KEYS, value=VALUES)
    def upsert(self, key: str, value: str) -> None:
        record = self.run(self.service.put(Put(Key(key), value, upsert=True)))
        assert record.revision == self.model.get(key, ("", 0))[1] + 1
        self.model[key] = (value, record.revision)

    @rule(key=KEYS, expected=REVISIONS)
    def delete(self, key: str, expected: int | None) -> None:
        try:
            revision = self.run(self.service.delete(Delete(Key(key), if_match=expected)))
        except KeyNotFound:
            assert key not in self.model
        except RevisionMismatch as exc:
            assert expected is not None and self.model[key][1] == exc.actual != expected
        else:
            assert revision == self.model.pop(key)[1]
            assert expected in (None, revision)

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        try:
            record = self.run(self.service.get(Get(Key(key))))
        except KeyNotFound:
            assert key not in self.model
        else:
            assert (record.value, record.revision) == self.model[key]

    @precondition(lambda self: hasattr(self, "service"))
    @invariant()
    def every_key_agrees(self) -> None:
        for key in ("a", "b", "c/d", "é"):
            stored = self.run(self.service.repository.get(Key(key)))
            expected = self.model.get(key)
            assert (None if stored is None else (stored.value, stored.revision)) == expected

    def teardown(self) -> None:
        if hasattr(self, "runner"):
            self.runner.close()


TestServiceMachine = ServiceMachine.TestCase
TestServiceMachine.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
