"""Logging through loguru: text or JSON lines on stderr, an optional rotating file, and the
batched operation log.

The operation log is the hot path's only logging. A `logger.info` per request costs more than
half of a bare Starlette app's throughput, so requests append a tuple to a list and a
background task hands loguru one preformatted message per batch, every `FLUSH_SECONDS` and at
shutdown. A line therefore appears up to `FLUSH_SECONDS` after its response; a crash of the
process (SIGKILL, power loss) loses the lines of at most that window.
"""

import asyncio
import contextlib
import logging
import re
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from loguru import logger

FLUSH_SECONDS = 0.1
ROTATION = "100 MB"
RETENTION = 10
TEXT_FORMAT = (
    "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {message}"  # loguru adds the traceback
)
_MAX_LOGGED_KEY = 1100  # characters; valid keys are shorter, invalid ones are cut


# A request id printed as it is in text lines: kv's own (hex and "-") and most clients' (a
# UUID); any other is quoted as a JSON string, so that an id such as `x outcome=ok` cannot
# pass for fields of the line.
_PLAIN_ID = re.compile(r"[0-9A-Za-z._:-]+")


def shown_request_id(request_id: str) -> str:
    """`request_id` as a text line shows it: as it is when plain, else JSON-quoted."""
    if _PLAIN_ID.fullmatch(request_id):
        return request_id
    return orjson.dumps(request_id).decode()


def _text_format(record: Any) -> str:
    """TEXT_FORMAT, plus the request id of a line logged while serving a request (bound with
    `logger.bind(request_id=...)`), placed and quoted as in the operation lines."""
    request_id = record["extra"].get("request_id")
    if request_id is not None:
        record["extra"]["_request_id"] = shown_request_id(str(request_id))
        return TEXT_FORMAT + " request_id={extra[_request_id]}\n{exception}"
    return TEXT_FORMAT + "\n{exception}"


def _json_format(record: Any) -> str:
    """Render a record as one JSON object; loguru then fills `{extra[_json]}`."""
    entry = {
        "time": record["time"].isoformat(timespec="milliseconds"),
        "level": record["level"].name,
        "message": record["message"],
        **{k: v for k, v in record["extra"].items() if not k.startswith("_")},
    }
    if record["exception"] is not None:
        import traceback

        entry["exception"] = "".join(traceback.format_exception(*record["exception"]))
    record["extra"]["_json"] = orjson.dumps(entry, default=str).decode()
    return "{extra[_json]}\n"


def configure_logging(*, level: str, fmt: str, file: str | None) -> list[int]:
    """Send logs to stderr (and `file`, rotated) in `fmt`; return the handler ids to remove.

    Removes loguru's default handler, and routes the standard `logging` records of uvicorn
    and the drivers through loguru so every line has the same format.
    """
    with contextlib.suppress(ValueError):  # already removed
        logger.remove(0)
    form: Any = _text_format if fmt == "text" else _json_format
    ids = [logger.add(sys.stderr, level=level, format=form, backtrace=False, diagnose=False)]
    if file:
        ids.append(
            logger.add(
                file,
                level=level,
                format=form,
                rotation=ROTATION,
                retention=RETENTION,
                backtrace=False,
                diagnose=False,
            )
        )
    logging.basicConfig(handlers=[_InterceptHandler()], level=logging.WARNING, force=True)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
        logging.getLogger(name).setLevel(logging.INFO)
    return ids


def remove_handlers(ids: Sequence[int]) -> None:
    for handler_id in ids:
        with contextlib.suppress(ValueError):  # removed elsewhere (a test, a second app)
            logger.remove(handler_id)


class _InterceptHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(exception=record.exc_info, depth=6).log(level, record.getMessage())


Extra = Mapping[str, object] | None
Operation = tuple[float, str, str | None, str, int, float, str, int | None, Extra]
"""(unix time, operation, key, outcome, HTTP status, duration in ms, request id, value bytes,
fields of the operation's own: a transaction's keys, a watch's events)"""

OUTCOMES = {
    200: "ok",
    304: "ok",  # a conditional read that found the client's copy current
    400: "invalid",
    404: "not_found",
    409: "exists",
    412: "precondition_failed",
    413: "invalid",
    503: "unavailable",
}


class OperationLog:
    """Collects one record per operation and writes them in batches (see the module doc)."""

    def __init__(self, *, backend: str, fmt: str, enabled: bool = True) -> None:
        self.backend = backend
        self.json = fmt == "json"
        self.enabled = enabled
        self._pending: list[Operation] = []
        self._second = -1
        self._second_text = ""
        self._offset = ""

    def record(
        self,
        operation: str,
        key: str | None,
        status: int,
        duration_ms: float,
        request_id: str,
        size: int | None,
        *,
        outcome: str | None = None,
        extra: Extra = None,
    ) -> None:
        """Queue one line; `outcome` defaults to the status's, `extra` adds fields."""
        if self.enabled:
            outcome = outcome or OUTCOMES.get(status, "error")
            self._pending.append(
                (time.time(), operation, key, outcome, status, duration_ms, request_id, size, extra)
            )

    async def run(self, interval: float = FLUSH_SECONDS) -> None:
        """Flush every `interval` seconds until cancelled; the owner flushes once more after."""
        while True:
            await asyncio.sleep(interval)
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        render = self._json_line if self.json else self._text_line
        logger.opt(raw=True).info("".join(render(op) for op in pending))

    def _timestamp(self, now: float, separator: str = " ") -> str:
        """Local time to the millisecond, as loguru prints it; ISO 8601 with `separator="T"`."""
        second = int(now)
        if second != self._second:
            local = time.localtime(second)
            self._second = second
            self._second_text = time.strftime("%Y-%m-%d %H:%M:%S", local)
            offset = time.strftime("%z", local)
            self._offset = f"{offset[:3]}:{offset[3:]}"
        stamp = f"{self._second_text}.{int((now - second) * 1000):03d}"
        return stamp if separator == " " else stamp.replace(" ", "T") + self._offset

    def _text_line(self, op: Operation) -> str:
        now, operation, key, outcome, status, duration, request_id, size, extra = op
        shown = "-" if key is None else orjson.dumps(key[:_MAX_LOGGED_KEY]).decode()
        more = "" if size is None else f" bytes={size}"
        if extra:
            # JSON-encoded values: a key list or a client's text cannot fake another field.
            more += "".join(
                f" {name}={orjson.dumps(value).decode()}" for name, value in extra.items()
            )
        return (
            f"{self._timestamp(now)} | INFO     | {operation} key={shown} outcome={outcome} "
            f"status={status} ms={duration:.3f} backend={self.backend} "
            f"request_id={shown_request_id(request_id)}{more}\n"
        )

    def _json_line(self, op: Operation) -> str:
        now, operation, key, outcome, status, duration, request_id, size, extra = op
        entry = {
            "time": self._timestamp(now, "T"),
            "level": "INFO",
            "message": operation,
            "operation": operation,
            "key": None if key is None else key[:_MAX_LOGGED_KEY],
            "outcome": outcome,
            "status": status,
            "duration_ms": round(duration, 3),
            "backend": self.backend,
            "request_id": request_id,
            "bytes": size,
            **(extra or {}),
        }
        return orjson.dumps(entry).decode() + "\n"
