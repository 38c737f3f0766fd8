"""What a failed Tarantool call becomes (StorageUnavailable, with the failure named), and the
adapter's own errors."""

from asynctnt.exceptions import TarantoolDatabaseError, TarantoolError

from kv.domain.errors import Failure, StorageUnavailable

# What asynctnt raises when a request fails (a timeout is asyncio's, an OSError).
FAILURES = (TarantoolError, OSError)


class TarantoolSetupError(RuntimeError):
    """Tarantool answers, but is not set up for kv (space, functions or credentials)."""


def unavailable(exc: BaseException, key: str | None, *, write: bool) -> StorageUnavailable:
    """The StorageUnavailable that a failure `exc` of a call on `key` becomes (the log gets
    `exc`, chained; the response only the fields)."""
    if isinstance(exc, TimeoutError):
        failure = Failure.TIMEOUT
    elif isinstance(exc, TarantoolDatabaseError | TarantoolOperationError):
        # Tarantool refused: the write was not applied.
        return StorageUnavailable("tarantool", Failure.REFUSED, key=key)
    else:
        failure = Failure.UNREACHABLE
    return StorageUnavailable("tarantool", failure, outcome_unknown=write, key=key)


def describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class TarantoolOperationError(Exception):
    """One operation of a batch failed inside Tarantool; the others went on."""
