"""The linearizability checker: it accepts what a register allows and rejects what it does
not, so a history it passes (tests/integration/test_linearizability.py) means something."""

import random
from typing import Any

import pytest

from tests.linearizability import CheckTooExpensive, Kind, Operation, apply, check

K = "k"


def op(
    kind: Any,
    invoked: float,
    returned: float | None,
    status: int | None = None,
    revision: int | None = None,
    *,
    value: Any = None,
    if_match: int | None = None,
    observed: Any = None,
    key: str = K,
    client: int = 0,
) -> Operation:
    extra: dict[str, Any] = {}
    if kind == "get" and status == 200:
        extra["observed"] = observed
    return Operation(
        kind=kind,
        key=key,
        invoked=invoked,
        returned=returned,
        status=status,
        revision=revision,
        value=value,
        if_match=if_match,
        client=client,
        **extra,
    )


# --- accepted -------------------------------------------------------------------------------

LINEARIZABLE = {
    "sequential life of a key": [
        op("get", 0, 1, 404),
        op("create", 2, 3, 200, 1, value="a"),
        op("create", 4, 5, 409, value="x"),
        op("overwrite", 6, 7, 200, 2, value={"b": [1]}),
        op("overwrite", 8, 9, 412, value="c", if_match=1),
        op("overwrite", 10, 11, 200, 3, value="c", if_match=2),
        op("get", 12, 13, 200, 3, observed="c"),
        op("delete", 14, 15, 412, if_match=2),
        op("delete", 16, 17, 200, 3, if_match=3),
        op("delete", 18, 19, 404),
        op("overwrite", 20, 21, 404, value="d"),
        op("create", 22, 23, 200, 1, value="again"),  # revisions restart after a delete
        op("get", 24, 25, 200, 1, observed="again"),
    ],
    "a read during a write may see the old value or the new one": [
        op("create", 0, 1, 200, 1, value="old"),
        op("overwrite", 2, 10, 200, 2, value="new", client=1),
        op("get", 3, 4, 200, 1, observed="old", client=2),
        op("get", 5, 6, 200, 2, observed="new", client=3),
        op("get", 11, 12, 200, 2, observed="new", client=2),
    ],
    "concurrent creates: one wins, the others see it exists": [
        op("create", 0, 5, 409, value="a", client=1),
        op("create", 1, 4, 200, 1, value="b", client=2),
        op("create", 2, 6, 409, value="c", client=3),
        op("get", 7, 8, 200, 1, observed="b"),
    ],
    "concurrent compare-and-sets at one revision: one wins": [
        op("create", 0, 1, 200, 1, value=0),
        op("overwrite", 2, 6, 412, value=1, if_match=1, client=1),
        op("overwrite", 3, 5, 200, 2, value=2, if_match=1, client=2),
        op("overwrite", 2, 7, 200, 3, value=3, client=3),
        op("get", 8, 9, 200, 3, observed=3),
    ],
    "a write with a lost answer that took effect": [
        op("create", 0, 1, 200, 1, value="a"),
        op("overwrite", 2, None, value="b", client=1),
        op("get", 3, 4, 200, 2, observed="b", client=2),
    ],
    "a write with a lost answer that never took effect": [
        op("create", 0, 1, 200, 1, value="a"),
        op("overwrite", 2, None, value="b", client=1),
        op("get", 3, 4, 200, 1, observed="a", client=2),
        op("get", 100, 101, 200, 1, observed="a", client=2),
    ],
    "a write with a lost answer that took effect long after it was sent": [
        op("create", 0, 1, 200, 1, value="a"),
        op("delete", 2, None, client=1),
        op("get", 3, 4, 200, 1, observed="a", client=2),
        op("get", 50, 51, 404, client=2),
    ],
    "equal timestamps count as concurrent": [
        op("create", 0, 1, 200, 1, value="a"),
        op("overwrite", 1, 2, 200, 2, value="b"),
        op("get", 0.5, 1, 200, 2, observed="b"),
    ],
    "keys are independent": [
        op("create", 0, 1, 200, 1, value="a", key="x"),
        op("create", 0, 1, 200, 1, value="a", key="y"),
        op("get", 2, 3, 200, 1, observed="a", key="x"),
        op("get", 2, 3, 404, key="z"),
    ],
}


@pytest.mark.parametrize("name", list(LINEARIZABLE))
def test_linearizable_histories_are_accepted(name: str) -> None:
    result = check(LINEARIZABLE[name])
    assert result.ok, result.explanation


# --- rejected -------------------------------------------------------------------------------

NOT_LINEARIZABLE = {
    "a stale read after an acknowledged write completed": [
        op("create", 0, 1, 200, 1, value="a"),
        op("overwrite", 2, 3, 200, 2, value="b", client=1),
        op("get", 4, 5, 200, 1, observed="a", client=2),
    ],
    "a read of the right revision with the wrong value": [
        op("create", 0, 1, 200, 1, value="a"),
        op("get", 2, 3, 200, 1, observed="b"),
    ],
    "two creates both 200": [
        op("create", 0, 2, 200, 1, value="a", client=1),
        op("create", 1, 3, 200, 1, value="b", client=2),
    ],
    "a lost update: two overwrites both answered revision 2": [
        op("create", 0, 1, 200, 1, value=0),
        op("overwrite", 2, 4, 200, 2, value=1, client=1),
        op("overwrite", 3, 5, 200, 2, value=2, client=2),
    ],
    "a lost update: two compare-and-sets at revision 1 both succeed": [
        op("create", 0, 1, 200, 1, value=0),
        op("overwrite", 2, 4, 200, 2, value=1, if_match=1, client=1),
        op("overwrite", 3, 5, 200, 3, value=2, if_match=1, client=2),
    ],
    "a lost update: the later write is read, then the earlier one": [
        op("create", 0, 1, 200, 1, value=0),
        op("overwrite", 2, 3, 200, 2, value=1, client=1),
        op("overwrite", 4, 5, 200, 3, value=2, client=2),
        op("get", 6, 7, 200, 2, observed=1),
    ],
    "a revision that goes backwards": [
        op("create", 0, 1, 200, 1, value="a"),
        op("overwrite", 2, 3, 200, 2, value="b"),
        op("overwrite", 4, 5, 200, 3, value="c"),
        op("get", 6, 7, 200, 3, observed="c", client=1),
        op("get", 8, 9, 200, 2, observed="b", client=2),
    ],
    "a revision that goes backwards between concurrent readers": [
        op("create", 0, 1, 200, 1, value="a"),
        op("overwrite", 2, 20, 200, 2, value="b"),
        op("get", 3, 4, 200, 2, observed="b", client=1),
        op("get", 5, 6, 200, 1, observed="a", client=2),
    ],
    "a read of a value before it was written": [
        op("get", 0, 1, 200, 1, observed="a", client=1),
        op("create", 2, None, value="a", client=2),
    ],
    "a delete that is not seen": [
        op("create", 0, 1, 200, 1, value="a"),
        op("delete", 2, 3, 200, 1),
        op("get", 4, 5, 200, 1, observed="a"),
    ],
    "a delete answering a revision the record never had": [
        op("create", 0, 1, 200, 1, value="a"),
        op("delete", 2, 3, 200, 2),
    ],
    "a compare-and-set refused at the current revision": [
        op("create", 0, 1, 200, 1, value="a"),
        op("overwrite", 2, 3, 412, value="b", if_match=1),
    ],
    "a 404 for a key that exists": [
        op("create", 0, 1, 200, 1, value="a"),
        op("get", 2, 3, 404),
    ],
    "a revision that does not restart after a delete": [
        op("create", 0, 1, 200, 1, value="a"),
        op("delete", 2, 3, 200, 1),
        op("create", 4, 5, 200, 2, value="b"),
    ],
    "one bad key among good ones": [
        op("create", 0, 1, 200, 1, value="a", key="good"),
        op("create", 0, 1, 200, 1, value="a", key="bad"),
        op("create", 2, 3, 200, 1, value="b", key="bad"),
    ],
}


@pytest.mark.parametrize("name", list(NOT_LINEARIZABLE))
def test_non_linearizable_histories_are_rejected(name: str) -> None:
    result = check(NOT_LINEARIZABLE[name])
    assert not result.ok
    assert "not linearizable" in result.explanation and "none of these" in result.explanation


def test_the_explanation_names_the_key_and_the_operations() -> None:
    result = check(NOT_LINEARIZABLE["a stale read after an acknowledged write completed"])
    assert result.key == K
    assert 'get() -> 200 rev 1 "a"' in result.explanation
    assert 'overwrite("b") -> 200 rev 2' in result.explanation


def test_a_malformed_operation_is_refused() -> None:
    with pytest.raises(ValueError, match="status 500"):
        op("get", 0, 1, 500)
    with pytest.raises(ValueError, match="without its revision"):
        op("create", 0, 1, 200, value=1)
    with pytest.raises(ValueError, match="returned before"):
        op("get", 2, 1, 404)


# --- generated ------------------------------------------------------------------------------


def simulate(seed: int, *, clients: int = 6, per_client: int = 40) -> list[Operation]:
    """A history that is linearizable by construction: each operation takes effect on a
    model at one random instant inside its own random [invoked, returned] span, and reports
    what the model said. Some answers are then lost (unknown outcome)."""
    rng = random.Random(seed)
    kinds: list[Kind] = ["create", "overwrite", "overwrite", "get", "get", "delete"]
    effects = []
    for client in range(clients):
        now = rng.random()
        for i in range(per_client):
            invoked = now
            effect = invoked + rng.random() * 0.5
            returned = effect + rng.random() * 0.5
            now = returned + rng.random() * 0.2
            kind = rng.choice(kinds)
            if_match = None
            if kind in ("overwrite", "delete"):
                if_match = rng.choice([None, None, 1, 2, 3])
            effects.append((effect, client, i, kind, invoked, returned, if_match))
    effects.sort()
    states: dict[str, Any] = {}
    history = []
    for _, client, i, kind, invoked, returned, if_match in effects:
        key = rng.choice(["a", "b"])
        value = f"{client}.{i}"
        probe = Operation(kind, key, invoked, returned, 404, value=value, if_match=if_match)
        status, revision, read, states[key] = apply(states.get(key), probe)
        lost = rng.random() < 0.03 and kind != "get"
        history.append(
            Operation(
                kind,
                key,
                invoked,
                None if lost else returned,
                None if lost else status,
                revision,
                value=value,
                if_match=if_match,
                observed=None if read is None else read.strip('"'),
                client=client,
            )
        )
    return history


@pytest.mark.parametrize("seed", range(30))
def test_histories_linearizable_by_construction_are_accepted(seed: int) -> None:
    result = check(simulate(seed))
    assert result.ok, result.explanation


@pytest.mark.parametrize("seed", range(30))
def test_a_generated_history_with_one_answer_falsified_is_rejected(seed: int) -> None:
    """One successful answer changed to something no order can give: a revision the key
    never reaches, or (for a read) a value nobody wrote."""
    history = simulate(seed)
    rng = random.Random(seed)
    index = rng.choice([i for i, o in enumerate(history) if o.status == 200 and o.returned])
    original = history[index]
    fields: dict[str, Any] = {
        "kind": original.kind,
        "key": original.key,
        "invoked": original.invoked,
        "returned": original.returned,
        "status": 200,
        "revision": original.revision,
        "value": original.value,
        "if_match": original.if_match,
        "client": original.client,
    }
    if original.kind == "get":
        fields["observed"] = original.observed
        if rng.random() < 0.5:
            fields["observed"] = "never written"
        else:
            fields["revision"] = 10_000
    else:
        fields["revision"] = 10_000
    history[index] = Operation(**fields)
    assert check(history).ok is False


def test_a_search_over_budget_says_so_rather_than_guessing() -> None:
    with pytest.raises(CheckTooExpensive):
        check(simulate(1), budget=10)
