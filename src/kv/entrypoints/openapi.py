"""The OpenAPI 3.1 document of the service, and the offline Swagger UI page that renders it.

The document is built once, when the app is created, from the operation table the app
serves (kv.entrypoints.operations) and the shared components below, and served as
pre-encoded bytes. Tests keep it true: schemathesis calls every operation and checks the
status codes, headers and bodies against it.
"""

from collections.abc import Iterable

import orjson

from kv import __version__
from kv.container import Settings
from kv.entrypoints.components import FAILURES, JSON, components
from kv.entrypoints.operations import TAGS, Operation, Success
from kv.entrypoints.schemas import Schema, ref


def _success(ok: Success) -> Schema:
    headers: Schema = {"X-Request-ID": ref("headers", "RequestId")}
    if ok.etag:
        headers["ETag"] = ref("headers", "ETag")
    schema = ref("schemas", ok.schema) if ok.schema else {}
    content = {media: {"schema": schema} for media in ok.media_types}
    return {"description": ok.description, "headers": headers, "content": content}


def _bodiless(response: Schema) -> Schema:
    """A HEAD answer: the GET's status and headers, no body."""
    if "$ref" not in response:
        return {key: value for key, value in response.items() if key != "content"}
    headers: Schema = {"X-Request-ID": ref("headers", "RequestId")}
    if response["$ref"].endswith("/Unavailable"):
        headers["Retry-After"] = ref("headers", "RetryAfter")
    return {"description": "The status the GET would have; no body.", "headers": headers}


def _operation(op: Operation, settings: Settings) -> Schema:
    protected = op.data and bool(settings.auth_token)
    responses: Schema = {"200": _success(op.ok)}
    special = dict(op.special)
    for status in (*op.errors, *((401,) if protected else ())):
        responses[str(status)] = ref("responses", special.get(status) or FAILURES[status])
    operation: Schema = {
        "operationId": op.id,
        "summary": op.summary,
        "tags": [op.tag],
        "responses": dict(sorted(responses.items())),
    }
    if op.description:
        operation["description"] = op.description
    if op.parameters:
        operation["parameters"] = [ref("parameters", name) for name in op.parameters]
    if op.body is not None:
        operation["requestBody"] = {
            "required": True,
            "description": "Read as JSON whatever the Content-Type.",
            "content": {JSON: {"schema": ref("schemas", op.body)}},
        }
    if protected:
        operation["security"] = [{"bearer": []}]
    return operation


def _head(get: Schema) -> Schema:
    """The HEAD operation of a data GET: its statuses and headers without bodies."""
    head = {**get, "operationId": get["operationId"] + "Head"}
    head["summary"] = get["summary"] + " (status and headers only)"
    head["responses"] = {status: _bodiless(r) for status, r in get["responses"].items()}
    return head


def build_document(settings: Settings, table: Iterable[Operation]) -> Schema:
    """The OpenAPI document of the operations in `table`."""
    paths: dict[str, Schema] = {}
    for op in table:
        item = paths.setdefault(op.path, {})
        item[op.method.lower()] = _operation(op, settings)
        if op.method == "GET" and op.data and op.safe:
            item["head"] = _head(item["get"])
    used_tags = {tag for item in paths.values() for op in item.values() for tag in op["tags"]}
    description = (
        "A key-value store: any JSON value under a string key, with a revision for "
        "compare-and-set.\n\n"
        "- A trailing `/` on any path is ignored.\n"
        "- Other methods than those listed get 405 with an `Allow` header.\n"
        "- Errors are `application/problem+json` (RFC 9457).\n"
        "- `X-Request-ID` is taken from the request (up to 128 printable ASCII characters) "
        "or generated, and returned on every response."
    )
    if settings.auth_token:
        description += (
            "\n- Data operations need `Authorization: Bearer <token>`; use **Authorize** to "
            "set it here."
        )
    return {
        "openapi": "3.1.0",
        "info": {"title": "kv", "version": __version__, "description": description},
        "tags": [
            {"name": name, "description": text} for name, text in TAGS.items() if name in used_tags
        ],
        "paths": paths,
        "components": components(settings),
    }


def document(settings: Settings, table: Iterable[Operation]) -> bytes:
    """The document of `table`, encoded once."""
    return orjson.dumps(build_document(settings, table))
