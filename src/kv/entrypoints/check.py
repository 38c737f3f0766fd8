"""`kv check URL`: run scenarios against a live server through kv.client and report every step.

Every key the check writes lives under a random prefix (`kv-check-<hex>/`) and is deleted
before the check ends, so it can run against a server holding real data; it never calls
`/_reset`. The scenarios (check_scenarios.py) cover /v1 and /kv on single keys, listing,
ttl, watch and transactions; the steps (check_steps.py) say what was sent, what came back
and what was expected.
"""

import json
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from kv.client import ConnectionFailed, KVError
from kv.entrypoints.check_scenarios import SCENARIOS
from kv.entrypoints.check_steps import Checker, ServerLost, Step

DEFAULT_TIMEOUT = 5.0

EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_UNREACHABLE = 2


@dataclass(slots=True)
class Report:
    url: str
    prefix: str
    steps: list[Step] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(step.passed for step in self.steps)

    @property
    def failed(self) -> int:
        return len(self.steps) - self.passed

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.passed > 0

    def summary(self) -> str:
        return f"{self.passed} passed, {self.failed} failed"

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "prefix": self.prefix,
            "ok": self.ok,
            "passed": self.passed,
            "failed": self.failed,
            "steps": [
                {"name": step.name, "passed": step.passed, "detail": step.detail}
                for step in self.steps
            ],
        }


class Unreachable(Exception):
    """The server did not answer the first request (refused, unresolvable, timed out)."""


# --- running -------------------------------------------------------------------------------


def run_check(
    url: str,
    *,
    token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    on_step: Callable[[Step], None] = lambda _: None,
) -> Report:
    """Run every scenario against the server at `url`; raise Unreachable if it never answers.

    Steps run one after another, each checking what it can even when an earlier one failed;
    if the server stops answering, the run ends there with that step failed.
    """
    report = Report(url=url, prefix=f"kv-check-{uuid.uuid4().hex[:12]}")

    def record(step: Step) -> None:
        report.steps.append(step)
        on_step(step)

    try:
        checker = Checker(url, report.prefix, token=token, timeout=timeout, record=record)
    except ValueError as exc:  # not an http(s) URL
        raise Unreachable(str(exc)) from None
    with checker.client:
        try:
            checker.client.info()
        except ConnectionFailed as exc:  # TimedOut's detail says "no answer in time"
            raise Unreachable(f"cannot reach {url}: {exc.detail}") from exc
        except KVError:
            pass  # it answered: what is wrong with the answers, the steps say
        for name, scenario in SCENARIOS:
            try:
                scenario(checker)
                checker.clean_up(name)
            except ServerLost:
                break
    return report


def main(
    url: str,
    *,
    token: str | None,
    timeout: float,
    as_json: bool,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Print the report (a line per step and a summary, or JSON); return the exit status.

    `out` and `err` default to the streams current at the call (not at import), so a
    redirected sys.stdout is honoured.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    if "://" not in url:
        url = f"http://{url}"

    def print_step(step: Step) -> None:
        print(step.line(), file=out, flush=True)

    try:
        report = run_check(
            url, token=token, timeout=timeout, on_step=(lambda _: None) if as_json else print_step
        )
    except Unreachable as exc:
        print(f"kv check: {exc}", file=err)
        if as_json:
            print(json.dumps({"url": url, "ok": False, "error": str(exc)}), file=out)
        return EXIT_UNREACHABLE
    if as_json:
        print(json.dumps(report.as_dict(), ensure_ascii=False, indent=2), file=out)
    else:
        print(report.summary(), file=out)
    return EXIT_PASSED if report.ok else EXIT_FAILED
