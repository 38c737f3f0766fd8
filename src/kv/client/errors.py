"""The errors a kv client raises: one hierarchy mirroring the service's problem+json answers.

    KVError
    ├── Rejected              the store's rules refused the operation (the CLI's exit 1)
    │   ├── KeyNotFound           404 naming a key
    │   ├── KeyExists             409
    │   ├── RevisionMismatch      412
    │   └── TransactionFailed     409 of POST /txn: index, key, reason; nothing was written
    ├── BadRequest            400 (index: the transaction's operation, when one is named)
    │   └── PayloadTooLarge       413
    ├── Unauthorized          401: no token, or the wrong one
    ├── Unavailable           503: the backend is down or slow (retry_after, in seconds)
    ├── ConnectionFailed      no HTTP answer at all: refused, reset, unresolvable
    │   └── TimedOut              no answer within the client's timeout
    └── UnexpectedResponse    anything else: 5xx but 503, 405, a proxy's HTML page, a 404
                              that names no key (a wrong base URL), a malformed body

Every error keeps the fields of the problem it was built from (`status`, `title`, `detail`,
`key`, `problem`: the whole body) and the request that got it (`request`: "GET /kv/a").
"""

from collections.abc import Mapping
from typing import Any

TXN_REASONS = ("exists", "not_found", "revision_mismatch")


class KVError(Exception):
    """Any failure of a kv call."""

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        title: str = "",
        key: str | None = None,
        request: str = "",
        problem: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.title = title
        self.key = key
        self.request = request
        self.problem: Mapping[str, Any] = problem or {}

    def __str__(self) -> str:
        answered = f" answered {self.status}" if self.status is not None else ""
        where = f"{self.request}{answered}: " if self.request else ""
        return f"{where}{self.detail}"


class Rejected(KVError):
    """The store refused the operation by its rules (a missing key, an existing one, another
    revision, a failed transaction); retrying the same request gets the same answer."""


class KeyNotFound(Rejected):
    pass


class KeyExists(Rejected):
    pass


class RevisionMismatch(Rejected):
    pass


class TransactionFailed(Rejected):
    """Operation `index` (0-based) of a transaction failed its condition, for `reason`:
    `exists`, `not_found` or `revision_mismatch`. Nothing of the transaction was written."""

    def __init__(self, detail: str, *, index: int, reason: str, **fields: Any) -> None:
        super().__init__(detail, **fields)
        self.index = index
        self.reason = reason


class BadRequest(KVError):
    """The request was malformed (a bad key, value, ttl, cursor, transaction...). `index`
    names the operation of a transaction that was, when the server said."""

    def __init__(self, detail: str, *, index: int | None = None, **fields: Any) -> None:
        super().__init__(detail, **fields)
        self.index = index


class PayloadTooLarge(BadRequest):
    pass


class Unauthorized(KVError):
    pass


class Unavailable(KVError):
    """503: the backend is down or too slow, or the server has its limit of watch streams.
    A write that got this may or may not have been applied (the detail says when)."""

    def __init__(self, detail: str, *, retry_after: float | None = None, **fields: Any) -> None:
        super().__init__(detail, **fields)
        self.retry_after = retry_after


class ConnectionFailed(KVError):
    """No HTTP answer: the connection was refused, reset or cut, or the name did not resolve.
    A write cut off after it was sent may or may not have been applied."""


class TimedOut(ConnectionFailed):
    pass


class UnexpectedResponse(KVError):
    """An answer the contract does not describe for this request."""
