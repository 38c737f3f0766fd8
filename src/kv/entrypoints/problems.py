"""RFC 9457 problem details: the one shape of every error response."""

from typing import Any

import orjson

PROBLEM_TYPE = "urn:kv:problem:"
MEDIA_TYPE = "application/problem+json"


def problem_body(status: int, title: str, detail: str, *, key: str | None = None) -> bytes:
    slug = title.lower().replace(" ", "-")
    problem: dict[str, Any] = {
        "type": PROBLEM_TYPE + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if key is not None:
        problem["key"] = key
    return orjson.dumps(problem)


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
