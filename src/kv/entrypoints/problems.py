"""RFC 9457 problem details: the one shape of every error response, and the wording of the
domain's errors."""

import http
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson
from starlette.responses import Response

from kv.domain.errors import (
    Failure,
    InvalidInput,
    KeyExists,
    KeyNotFound,
    KVError,
    RevisionMismatch,
    StorageUnavailable,
    TooManyWatchers,
    TransactionFailed,
    TransactionSpansSlots,
)
from kv.entrypoints.responses import ReadyResponse

PROBLEM_TYPE = "urn:kv:problem:"
MEDIA_TYPE = "application/problem+json"
_CONTENT_TYPE = MEDIA_TYPE.encode()
_NONE: Mapping[str, object] = MappingProxyType({})


Fields = Mapping[str, object]


def problem_body(
    status: int, title: str, detail: str, *, key: str | None = None, fields: Fields = _NONE
) -> bytes:
    """The problem as JSON: type, title, status, detail, and `key` and `fields` (a failed
    transaction's `index` and `reason`, say) when they apply."""
    slug = title.lower().replace(" ", "-")
    problem: dict[str, Any] = {
        "type": PROBLEM_TYPE + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if key is not None:
        problem["key"] = key
    problem.update(fields)
    return orjson.dumps(problem)


def problem_response(
    status: int,
    title: str | None,
    detail: str,
    *,
    key: str | None = None,
    fields: Fields = _NONE,
    headers: dict[str, str] | None = None,
) -> Response:
    """A problem+json response; `title` defaults to the status's reason phrase."""
    title = title or http.HTTPStatus(status).phrase
    more = None
    if headers:
        more = [
            (name.lower().encode("latin-1"), v.encode("latin-1")) for name, v in headers.items()
        ]
    body = problem_body(status, title, detail, key=key, fields=fields)
    return ReadyResponse(body, status, _CONTENT_TYPE, more)


class HTTPProblem(Exception):
    """An error in the HTTP shape of a request (not a domain rule): bad body, size, method."""

    status = 400
    title = "Bad Request"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class BadRequest(HTTPProblem):
    pass


class PayloadTooLarge(HTTPProblem):
    status = 413
    title = "Payload Too Large"

    def __init__(self, limit: int) -> None:
        # Close the connection: the client may still be sending the rest of the body.
        super().__init__(
            f"the request body is larger than {limit} bytes", headers={"connection": "close"}
        )


class MethodNotAllowed(HTTPProblem):
    status = 405
    title = "Method Not Allowed"

    def __init__(self, method: str, allowed: tuple[str, ...]) -> None:
        super().__init__(
            f"{method} is not allowed here; allowed: {', '.join(allowed)}",
            headers={"allow": ", ".join(allowed)},
        )


# --- domain errors, worded -------------------------------------------------------------------

_BACKEND_NAMES = {"tarantool": "Tarantool", "redis": "Redis", "memory": "memory"}


_TXN_FAILURES = {
    "exists": "the key exists",
    "not_found": "the key does not exist",
    "revision_mismatch": "the key is at another revision",
}


def describe(error: KVError, *, backend_timeout: float) -> tuple[int, str, str, Fields]:
    """The status, title, detail and extra fields of the problem a domain error answers
    with."""
    key = error.key
    match error:
        case TransactionSpansSlots():
            return (
                400,
                "Bad Request",
                f"operation {error.index}: on Redis Cluster all keys of one transaction must "
                "hash to one slot, and this key hashes to another than operation 0's; give "
                "the keys a common hash tag, e.g. {user42}/name and {user42}/email",
                {"index": error.index},
            )
        case InvalidInput(index=None):
            return 400, "Bad Request", error.rule, _NONE
        case InvalidInput():
            return 400, "Bad Request", error.rule, {"index": error.index}
        case TransactionFailed():
            return (
                409,
                "Conflict",
                f"operation {error.index} on key {key!r} failed: {_TXN_FAILURES[error.reason]}; "
                "nothing was written",
                {"index": error.index, "reason": error.reason},
            )
        case TooManyWatchers():
            return (
                503,
                "Service Unavailable",
                f"this server has its limit of {error.limit} watch streams open",
                _NONE,
            )
        case KeyNotFound():
            return 404, "Not Found", f"key {key!r} does not exist", _NONE
        case KeyExists():
            return 409, "Conflict", f"key {key!r} already exists", _NONE
        case RevisionMismatch(expected=None, actual=None):
            return (
                412,
                "Precondition Failed",
                f"key {key!r} exists; the request required it absent",
                _NONE,
            )
        case RevisionMismatch(expected=None):
            return (
                412,
                "Precondition Failed",
                f"key {key!r} exists (at revision {error.actual}); the request required it absent",
                _NONE,
            )
        case RevisionMismatch():
            return (
                412,
                "Precondition Failed",
                f"key {key!r} is at revision {error.actual}, "
                f"the request expected revision {error.expected}",
                _NONE,
            )
        case StorageUnavailable():
            return 503, "Service Unavailable", _unavailable(error, backend_timeout), _NONE
    return 500, "Internal Server Error", "the server failed; the error is in its log", _NONE


def _unavailable(error: StorageUnavailable, timeout: float) -> str:
    name = _BACKEND_NAMES.get(error.backend, error.backend)
    match error.failure:
        case Failure.TIMEOUT:
            detail = f"the {name} backend did not answer within {timeout:g} s"
        case Failure.UNREACHABLE:
            detail = f"the {name} backend cannot be reached"
        case Failure.REFUSED:
            detail = f"the {name} backend failed to carry out the request"
        case Failure.BUSY:
            detail = f"too many requests are waiting for the {name} backend"
        case Failure.SHUTTING_DOWN:
            detail = "the service is shutting down"
    if error.outcome_unknown:
        detail += "; the write may or may not have been applied"
    return detail
