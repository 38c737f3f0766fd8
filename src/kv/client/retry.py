"""Retrying reads after a 503: how long the server asks to wait, and how long a call may."""

import email.utils
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kv.client.core import Reply, Request


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delay-seconds or an HTTP date); None when
    absent or unreadable. A date in the past is 0."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:  # "-0000": UTC by RFC 5322
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How reads (GET of a key, a listing page) are sent again after a 503.

    At most `attempts` sends in all, waiting what `Retry-After` says (`default_delay` when it
    says nothing), and never more than `budget` seconds of waiting in all: a wait that would
    pass the budget is not started, the 503 is raised instead. Writes are never retried.
    """

    attempts: int = 4
    budget: float = 10.0
    default_delay: float = 1.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.budget < 0 or self.default_delay < 0:
            raise ValueError(f"{self}: attempts from 1, budget and default_delay from 0")

    def start(self) -> "Retries":
        return Retries(self)


DEFAULT_RETRY = RetryPolicy()


class Retries:
    """The retry state of one call."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.sent = 0
        self.waited = 0.0

    def delay(self, request: "Request", reply: "Reply") -> float | None:
        """Seconds to wait before sending `request` again, or None to take `reply` as final."""
        self.sent += 1
        if not request.retry or reply.status != 503 or self.sent >= self.policy.attempts:
            return None
        delay = parse_retry_after(reply.headers.get("retry-after"))
        delay = self.policy.default_delay if delay is None else delay
        if self.waited + delay > self.policy.budget:
            return None
        self.waited += delay
        return delay
