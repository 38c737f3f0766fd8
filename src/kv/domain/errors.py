"""The domain's error hierarchy.

Errors carry fields, not sentences: the HTTP layer (kv.entrypoints.problems) words them
once. Every error carries the key it concerns (None when none does).
"""

import enum


class KVError(Exception):
    """Base of every error the domain raises."""

    def __init__(self, key: str | None) -> None:
        super().__init__(key)
        self.key = key


class InvalidInput(KVError):
    """A key, a value or a parameter breaks the store's rules; `rule` says which, in words
    a client can act on (rules are the domain's own text, not a driver's). `index`: the
    operation of a transaction it concerns."""

    def __init__(self, key: str | None, rule: str, *, index: int | None = None) -> None:
        super().__init__(key)
        self.rule = rule
        self.index = index

    def __str__(self) -> str:
        return self.rule


class InvalidKey(InvalidInput):
    pass


class InvalidValue(InvalidInput):
    pass


class KeyExists(KVError):
    pass


class KeyNotFound(KVError):
    pass


class RevisionMismatch(KVError):
    """The record is at `actual`, the request required `expected` (None: that it be absent).

    `actual` is None when the backend did not say (a create-only write finds the key present
    without reading its revision)."""

    def __init__(self, key: str, *, expected: int | None, actual: int | None) -> None:
        super().__init__(key)
        self.expected = expected
        self.actual = actual


class Failure(enum.Enum):
    """Why a backend call failed."""

    TIMEOUT = "timeout"  # no answer within the backend timeout
    UNREACHABLE = "unreachable"  # no connection
    REFUSED = "refused"  # the backend answered with an error (out of memory, say)
    BUSY = "busy"  # too many calls already wait for the backend
    SHUTTING_DOWN = "shutting_down"  # the service is stopping


class StorageUnavailable(KVError):
    """The backend did not carry out a call.

    `outcome_unknown`: the call was a write that may or may not have been applied (it was
    sent, and no answer came back).
    """

    def __init__(
        self,
        backend: str,
        failure: Failure,
        *,
        outcome_unknown: bool = False,
        key: str | None = None,
    ) -> None:
        super().__init__(key)
        self.backend = backend
        self.failure = failure
        self.outcome_unknown = outcome_unknown

    def __str__(self) -> str:
        unknown = ", outcome unknown" if self.outcome_unknown else ""
        return f"{self.backend}: {self.failure.value}{unknown}"


class ChangesLost(KVError):
    """The change feed fell too far behind the backend: some changes cannot be delivered."""

    def __init__(self) -> None:
        super().__init__(None)


class TransactionFailed(KVError):
    """An operation's condition failed (`reason`: exists, not_found, revision_mismatch);
    nothing was written."""

    def __init__(self, key: str, *, index: int, reason: str) -> None:
        super().__init__(key)
        self.index = index
        self.reason = reason


class TransactionSpansSlots(InvalidInput):
    """Redis Cluster: the keys of one transaction must hash to one slot; operation `index`
    is the first whose key hashes to another slot than the first operation's."""

    def __init__(self, key: str, *, index: int) -> None:
        super().__init__(
            key,
            "on Redis Cluster the keys of one transaction must hash to one slot",
            index=index,
        )


class TooManyWatchers(KVError):
    def __init__(self, limit: int) -> None:
        super().__init__(None)
        self.limit = limit
