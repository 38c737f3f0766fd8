"""A linearizability checker for histories of kv operations.

A history is what concurrent clients saw: for each operation, when it was invoked and when
its response came back (one monotonic clock), what it asked and what it got. The history is
linearizable when every operation can be placed at one instant between its invocation and
its response such that, run one at a time in that order, the model below gives exactly the
responses observed: the service behaves like one register per key, atomically.

The model of one key: absent, or a (value, revision) pair.

    create(v)             absent: 200 rev 1, now (v, 1)        present: 409
    overwrite(v[, rev e]) absent: 404   e given and != rev: 412   else 200 rev+1, now (v, rev+1)
    get                   absent: 404   present: 200 with its value and revision
    delete([rev e])       absent: 404   e given and != rev: 412   else 200 rev, now absent

An operation whose outcome is unknown (no response: timeout, connection lost; or a 503,
after which a write may or may not have been applied) has no return time: it may take effect
at any instant after its invocation, or never (placed last, it changes nothing observed).

The search is Wing & Gong's, with Lowe's memoization of (operations linearized, state) pairs
as in Porcupine (Athalye, 2017), run per key: linearizability is compositional (Herlihy &
Wing's locality), so a history is linearizable iff each key's sub-history is.
"""

import itertools
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["create", "overwrite", "get", "delete"]
KINDS = ("create", "overwrite", "get", "delete")
OUTCOMES = (200, 404, 409, 412)
State = tuple[str, int] | None  # (the value as canonical JSON, its revision), or absent


class _NoValue:
    def __repr__(self) -> str:
        return "<no value>"


_NO_VALUE: Any = _NoValue()


@dataclass(frozen=True, slots=True)
class Operation:
    """One request as a client saw it.

    `returned` is None when the outcome is unknown; `status`, `revision` and `observed` are
    then ignored. `value` is what create and overwrite write; `if_match` the revision an
    overwrite or delete requires; `observed` the value a successful get returned.
    """

    kind: Kind
    key: str
    invoked: float
    returned: float | None
    status: int | None = None
    revision: int | None = None
    value: Any = None
    if_match: int | None = None
    observed: Any = _NO_VALUE
    client: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown operation kind {self.kind!r}")
        if self.returned is None:
            return
        if self.returned < self.invoked:
            raise ValueError(f"{self}: returned before it was invoked")
        if self.status not in OUTCOMES:
            raise ValueError(f"{self}: status {self.status} is not one the model gives")
        if self.status == 200 and self.revision is None:
            raise ValueError(f"{self}: a 200 without its revision")
        if self.kind == "get" and self.status == 200 and self.observed is _NO_VALUE:
            raise ValueError(f"{self}: a successful get without the value it read")

    def describe(self) -> str:
        args = ""
        if self.kind in ("create", "overwrite"):
            args = canonical(self.value)
        if self.if_match is not None:
            args += f"{', ' if args else ''}If-Match {self.if_match}"
        if self.returned is None:
            result = "unknown outcome"
            span = f"[{self.invoked:.6f}, ...)"
        else:
            result = str(self.status)
            if self.status == 200:
                result += f" rev {self.revision}"
                if self.kind == "get":
                    result += f" {canonical(self.observed)}"
            span = f"[{self.invoked:.6f}, {self.returned:.6f}]"
        return f"client {self.client} {self.kind}({args}) -> {result} {span}"


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def apply(state: State, op: Operation) -> tuple[int, int | None, str | None, State]:
    """The model: (status, revision, value read, next state) of `op` on `state`."""
    if op.kind == "create":
        if state is None:
            return 200, 1, None, (canonical(op.value), 1)
        return 409, None, None, state
    if state is None:
        return 404, None, None, None
    value, revision = state
    if op.kind == "get":
        return 200, revision, value, state
    if op.if_match is not None and op.if_match != revision:
        return 412, None, None, state
    if op.kind == "overwrite":
        return 200, revision + 1, None, (canonical(op.value), revision + 1)
    return 200, revision, None, None  # delete


def step(state: State, op: Operation) -> tuple[bool, State]:
    """Whether `op`, run alone on `state`, gives what was observed; and the next state."""
    status, revision, value, after = apply(state, op)
    if op.returned is None:
        return True, after
    if status != op.status:
        return False, after
    if status == 200:
        if revision != op.revision:
            return False, after
        if op.kind == "get" and value != canonical(op.observed):
            return False, after
    return True, after


@dataclass(frozen=True, slots=True)
class Result:
    ok: bool
    key: str | None = None
    explanation: str = ""
    operations: int = 0

    def __bool__(self) -> bool:
        return self.ok


class _Entry:
    """A call or a return event in the doubly linked list the search walks."""

    __slots__ = ("index", "match", "next", "op", "prev")

    def __init__(self, op: Operation | None, index: int) -> None:
        self.op = op
        self.index = index
        self.match: _Entry | None = None  # a call's return entry; None on returns
        self.prev: _Entry | None = None
        self.next: _Entry | None = None


class CheckTooExpensive(Exception):
    """The search exceeded its budget: the history is neither proven nor refuted."""


def check(history: Iterable[Operation], *, budget: int = 5_000_000) -> Result:
    """Check every key's sub-history; the first non-linearizable one is the result."""
    by_key: dict[str, list[Operation]] = defaultdict(list)
    for op in history:
        by_key[op.key].append(op)
    total = 0
    for key, ops in by_key.items():
        result = check_key(key, ops, budget=budget)
        if not result.ok:
            return result
        total += result.operations
    return Result(True, operations=total)


def check_key(key: str, ops: Sequence[Operation], *, budget: int = 5_000_000) -> Result:
    """Wing & Gong's search with memoization over one key's operations (see the module doc)."""
    # A read whose answer was lost constrains nothing.
    ops = [op for op in ops if not (op.kind == "get" and op.returned is None)]
    events: list[tuple[float, int, int, _Entry]] = []
    calls: list[_Entry] = []
    for index, op in enumerate(ops):
        call, ret = _Entry(op, index), _Entry(None, index)
        call.match = ret
        calls.append(call)
        # On equal times a call sorts before a return: the two count as concurrent, which is
        # the lenient reading of clocks that cannot tell them apart.
        events.append((op.invoked, 0, index, call))
        events.append((math.inf if op.returned is None else op.returned, 1, index, ret))
    events.sort(key=lambda event: event[:3])
    head = _Entry(None, -1)
    previous = head
    for *_, event in events:
        previous.next, event.prev = event, previous
        previous = event

    state: State = None
    linearized = 0
    cache: set[tuple[int, State]] = set()
    stack: list[tuple[_Entry, State]] = []
    deepest: list[tuple[Operation, State]] = []
    steps = 0
    entry: _Entry | None = head.next
    while head.next is not None:
        steps += 1
        if steps > budget:
            raise CheckTooExpensive(f"key {key!r}: over {budget} steps for {len(ops)} operations")
        assert entry is not None
        if entry.match is not None:  # a call: try to linearize it now
            assert entry.op is not None
            ok, after = step(state, entry.op)
            if ok:
                marked = linearized | (1 << entry.index)
                if (marked, after) not in cache:
                    cache.add((marked, after))
                    stack.append((entry, state))
                    state, linearized = after, marked
                    _lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:  # a return whose call could not be linearized before it: backtrack
            if len(stack) > len(deepest):  # kept for the explanation, should it fail
                deepest = [(e.op, s) for e, s in stack if e.op is not None]
            if not stack:
                return Result(False, key, _explain(key, ops, deepest), len(ops))
            entry, state = stack.pop()
            linearized &= ~(1 << entry.index)
            _unlift(entry)
            entry = entry.next
    return Result(True, key, operations=len(ops))


def _lift(call: _Entry) -> None:
    for entry in (call, call.match):
        assert entry is not None and entry.prev is not None
        entry.prev.next = entry.next
        if entry.next is not None:
            entry.next.prev = entry.prev


def _unlift(call: _Entry) -> None:
    for entry in (call.match, call):
        assert entry is not None and entry.prev is not None
        entry.prev.next = entry
        if entry.next is not None:
            entry.next.prev = entry


def _explain(key: str, ops: Sequence[Operation], deepest: list[tuple[Operation, State]]) -> str:
    """The longest order found that explains a prefix, and what could not come next."""
    placed = {id(op) for op, _ in deepest}
    # The state after the longest explained prefix.
    state: State = None
    for op, _ in deepest:
        state = apply(state, op)[3]
    first_return = min(
        (op.returned for op in ops if id(op) not in placed and op.returned is not None),
        default=math.inf,
    )
    stuck = [
        op for op in ops if id(op) not in placed and op.invoked <= first_return
    ]  # the candidates for the next place: none of them fits
    lines = [
        f"key {key!r}: not linearizable ({len(ops)} operations).",
        f"The longest explainable order covers {len(deepest)}; its last steps:",
        *(f"  {op.describe()}" for op, _ in deepest[-8:]),
        f"leaving the key {'absent' if state is None else f'at {state[0]} rev {state[1]}'},",
        "where none of these can come next:",
        *(f"  {op.describe()}" for op in itertools.islice(stuck, 12)),
    ]
    return "\n".join(lines)
