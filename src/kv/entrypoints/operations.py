"""The operation table: every operation of the HTTP API, described once.

From this table the app derives its routes (and their 405 answers with `Allow`), which
routes need the bearer token, the OpenAPI document, the names in the operation log and the
route labels of the metrics. Adding an operation means adding an entry here, its handler and
its service method.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from starlette.responses import Response

from kv.container import Settings
from kv.entrypoints import handlers, listing, transactions, ui, watching
from kv.entrypoints.requests import Call

Handler = Callable[[Call], Awaitable[Response]]

KV = "kv"
V1 = "v1 (compatibility)"
SERVICE = "service"
TAGS = {
    KV: "The key-value API.",
    V1: "For clients of the earlier service.",
    SERVICE: "Information, health, docs and metrics.",
}


@dataclass(frozen=True, slots=True)
class Success:
    """The 200 answer: what it means, the schema of its body (a component name), whether it
    carries the record's ETag, and the media types when it is not JSON."""

    description: str
    schema: str | None = None
    etag: bool = False
    media_types: tuple[str, ...] = ("application/json",)


@dataclass(frozen=True, slots=True)
class Operation:
    """One entry of the table; the fields up to `errors` are given in this order."""

    name: str  # in the operation log, the metrics and the OpenAPI operationId's root
    method: str
    path: str  # as documented; a trailing "/" is ignored when routing
    handler: Handler
    summary: str
    tag: str
    ok: Success
    errors: tuple[int, ...] = ()  # documented failure statuses (401 is added with a token)
    # A failure status documented by another component response than the usual one.
    special: tuple[tuple[int, str], ...] = ()
    parameters: tuple[str, ...] = ()  # component parameter names
    body: str | None = None  # component schema name of the request body
    description: str = ""
    operation_id: str = ""  # derived from name and tag when empty
    data: bool = True  # touches the data: needs the token when one is set, and is logged
    safe: bool = True  # changes nothing: a GET of it is also served as HEAD
    enabled: Callable[[Settings], bool] = field(default=lambda _: True)

    @property
    def id(self) -> str:
        """The OpenAPI operationId: the log name, prefixed by the surface it belongs to."""
        if self.operation_id:
            return self.operation_id
        return f"v1{self.name.capitalize()}" if self.tag == V1 else self.name


RECORD = Success("The record.", "Record", etag=True)
DELETED = Success("Deleted; the record's key and last revision.", "Deleted", etag=True)
CREATED = Success("Created at revision 1.", "Record", etag=True)
CHECKED_FIRST = "The body is checked first: a bad body is 400 even for a missing key."


def _item_operations(prefix: str, tag: str) -> list[Operation]:
    """The operations on single keys, for /kv (PUT overwrites) and /v1 (PUT upserts)."""
    v1 = tag == V1
    item = prefix + "/{key}"
    put_description = CHECKED_FIRST
    if v1:
        put_description = (
            "With `If-Match` this is /kv's compare-and-set instead (404 when the key is "
            "missing, 412 when at another revision). " + CHECKED_FIRST
        )
    return [
        Operation(
            "create", "POST", prefix + "/" if v1 else prefix, handlers.create,
            "Create a key (409 if it exists)", tag, CREATED, (400, 409, 413, 503),
            body="CreateBody",
            description="Of concurrent creations of one key exactly one succeeds.",
        ),
        Operation(
            "get", "GET", item, handlers.get, "Read a key", tag, RECORD,
            (304, 400, 404, 412, 503), parameters=("Key", "IfMatch", "IfNoneMatch"),
        ),
        Operation(
            "upsert" if v1 else "overwrite", "PUT", item,
            handlers.upsert if v1 else handlers.overwrite,
            "Create or overwrite a key" if v1
            else "Overwrite a key (404 if missing), optionally only at a revision",
            tag,
            Success("Stored: revision 1 if new, else + 1.", "Record", etag=True) if v1
            else Success("Overwritten: revision + 1.", "Record", etag=True),
            (400, 404, 412, 413, 503),
            parameters=("Key", "IfMatch", "IfNoneMatchStar"), body="WriteBody",
            description=put_description,
        ),
        Operation(
            "delete", "DELETE", item, handlers.delete,
            "Delete a key (404 if missing), optionally only at a revision", tag,
            Success("Deleted; the record's key and last revision.", "Deleted", etag=True),
            (400, 404, 412, 503),
            parameters=("Key", "IfMatch"),
        ),
    ]  # fmt: skip


def _reset_operations() -> list[Operation]:
    return [
        Operation(
            name="reset",
            method=method,
            path="/_reset",
            handler=handlers.reset,
            summary="Delete every key (only when KV_ENABLE_RESET=true)",
            tag=V1,
            ok=Success("Every key is deleted.", "ResetDone"),
            errors=(503,),
            operation_id=f"reset{method.capitalize()}",
            safe=False,
            enabled=lambda settings: settings.enable_reset,
        )
        for method in ("GET", "POST")
    ]


def _service(
    name: str,
    path: str,
    handler: Handler,
    summary: str,
    ok: Success,
    *,
    errors: tuple[int, ...] = (),
    parameters: tuple[str, ...] = (),
    enabled: Callable[[Settings], bool] = lambda _: True,
) -> Operation:
    """A GET of the service itself: open without a token, not in the operation log."""
    return Operation(name, "GET", path, handler, summary, SERVICE, ok, errors, data=False,
                     parameters=parameters, enabled=enabled)  # fmt: skip


def _service_operations() -> list[Operation]:
    return [
        _service(
            "serviceInfo",
            "/",
            handlers.service_info,
            "Service name, version and backend",
            Success("The service.", "ServiceInfo"),
        ),
        _service(
            "health",
            "/health",
            handlers.health,
            "200 while the process runs",
            Success("Running.", "Health"),
        ),
        _service(
            "ready",
            "/ready",
            handlers.ready,
            "200 when the backend answers a ping",
            Success("Ready.", "Ready"),
            errors=(503,),
        ),
        _service(
            "metrics",
            "/metrics",
            handlers.metrics,
            "Prometheus metrics",
            Success(
                "The Prometheus text format (OpenMetrics when the `Accept` header asks for it). "
                "Series names start with `kv_`.",
                media_types=("text/plain", "application/openmetrics-text"),
            ),
            enabled=lambda settings: settings.metrics,
        ),
        _service(
            "openapi", "/openapi.json", handlers.openapi, "This document", Success("OpenAPI 3.1.")
        ),
        _service(
            "docs",
            "/docs",
            handlers.docs,
            "This page: the document rendered by Swagger UI, served offline",
            Success("HTML.", media_types=("text/html",)),
        ),
        # The page and its files are open like /docs: they hold no data. The page reads and
        # writes through the API, with the token when one is set.
        _service(
            "ui",
            ui.UI_PATH,
            ui.page,
            "The browser interface: browse, edit and watch the keys",
            Success("HTML; its scripts call the API.", media_types=("text/html",)),
        ),
        _service(
            "uiFile",
            ui.UI_PATH + "/{asset}",
            ui.asset,
            "A file of the browser interface (a JavaScript module, the style sheet)",
            Success("The file.", media_types=ui.DOCUMENTED_MEDIA_TYPES),
            errors=(404,),
            parameters=("UiAsset",),
        ),
    ]


def _bulk_operations() -> list[Operation]:
    """Listing, transactions and watching: operations on many keys at once."""
    return [
        Operation(
            "list", "GET", "/kv", listing.list_keys,
            "List the keys under a prefix, a page at a time", KV,
            Success("A page of records in ascending order of their keys' UTF-8 bytes.", "Page"),
            (400, 503),
            parameters=("Prefix", "Limit", "Cursor", "Values"),
            description=(
                "Pass `next` as `cursor` (with the same `prefix`) for the next page; `next` is "
                "null on the last page. Every page but the last holds exactly `limit` items."
            ),
        ),
        Operation(
            "txn", "POST", "/txn", transactions.transact,
            "Apply several operations all together, or none", KV,
            Success("Every operation applied; their results in order.", "TxnResults"),
            (400, 409, 413, 503), special=((409, "TxnFailed"),), body="TxnBody",
            description=(
                "Each operation's condition is checked in order; the first that fails "
                "aborts the transaction (409 naming its `index` and `reason`) and nothing "
                "is written. On Redis Cluster every key must hash to one slot ({tag})."
            ),
        ),
        Operation(
            "watch", "GET", "/watch", watching.watch,
            "Stream the changes to a key or under a prefix (Server-Sent Events)", KV,
            Success(
                "`event: ready` once in place, then `put` and `delete` events; ends with "
                "`overflow` or `unavailable` (list again, then watch again).",
                media_types=("text/event-stream",),
            ),
            (400, 503),
            parameters=("WatchPrefix", "WatchKey"),
        ),
    ]  # fmt: skip


OPERATIONS: tuple[Operation, ...] = (
    # The busiest first: the router tries routes in the order of their first operation.
    *_item_operations("/kv", KV),
    *_bulk_operations(),
    *_item_operations("/v1", V1),
    *_reset_operations(),
    *_service_operations(),
)


def operations(settings: Settings, table: tuple[Operation, ...] = OPERATIONS) -> list[Operation]:
    """The operations an app with `settings` serves."""
    return [operation for operation in table if operation.enabled(settings)]
