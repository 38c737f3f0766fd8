"""The OpenAPI 3.1 document of the service, and the offline Swagger UI page that renders it.

The document is built once, when the app is created, from the operation table the app
serves (kv.entrypoints.operations) and the shared components below, and served as
pre-encoded bytes. Tests keep it true: schemathesis calls every operation and checks the
status codes, headers and bodies against it.
"""

from collections.abc import Iterable
from typing import Any

import orjson

from kv import __version__
from kv.container import Settings
from kv.domain.model import MAX_KEY_BYTES, MAX_VALUE_DEPTH
from kv.entrypoints.operations import TAGS, Operation, Success
from kv.entrypoints.problems import MEDIA_TYPE, PROBLEM_TYPE

JSON = "application/json"
Schema = dict[str, Any]

# No control characters (U+0000-U+001F, U+007F), not ending in "/". Python's `re`, Rust's
# `regex` (schemathesis validates with it) and ECMAScript read this pattern alike. Lone
# surrogates are left out: Rust refuses them in a pattern, and JSON text cannot carry them.
KEY_PATTERN = r"^[^\u0000-\u001f\u007f]*[^\u0000-\u001f\u007f/]$"
IF_MATCH_PATTERN = r'^(\*|(W/)?"[0-9]+")$'
IF_NONE_MATCH_PATTERN = r'^(\*|(W/)?"[0-9]+"( *, *(W/)?"[0-9]+")*)$'

_KEY_DESCRIPTION = (
    f"1 to {MAX_KEY_BYTES} bytes of UTF-8, no control characters (U+0000-U+001F, U+007F), "
    "not ending in `/`. JSON Schema counts characters, not bytes, so `maxLength` here is "
    f"only an upper bound: a key of at most {MAX_KEY_BYTES} characters can still be longer "
    f"than {MAX_KEY_BYTES} bytes once encoded, and is then refused with 400."
)

_REF = "#/components/"


def ref(kind: str, name: str) -> Schema:
    return {"$ref": f"{_REF}{kind}/{name}"}


# The component response of each status besides 200 an operation may list.
_FAILURES = {
    304: "NotModified",
    400: "BadRequest",
    401: "Unauthorized",
    404: "NotFound",
    409: "Conflict",
    412: "PreconditionFailed",
    413: "PayloadTooLarge",
    503: "Unavailable",
}


def _failure_responses(settings: Settings) -> Schema:
    described = {
        400: "The body, the key, the value, a parameter or a header breaks a rule.",
        401: "`Authorization: Bearer <token>` is missing or wrong.",
        404: "No record has this key.",
        409: "A record with this key already exists.",
        412: "`If-Match` names another revision than the current one, or `If-None-Match: *` "
        "finds the key present.",
        413: f"The body is larger than {settings.max_body_bytes} bytes.",
        503: f"The backend is down or did not answer within {settings.backend_timeout:g} s.",
    }
    headers = {
        401: {"WWW-Authenticate": ref("headers", "WWWAuthenticate")},
        503: {"Retry-After": ref("headers", "RetryAfter")},
    }
    responses = {
        _FAILURES[status]: _problem_response(description, headers=headers.get(status))
        for status, description in described.items()
        if status != 401 or settings.auth_token
    }
    responses["NotModified"] = {
        "description": "`If-None-Match` names the record's current ETag (or is `*`): the "
        "copy the client holds is current. No body.",
        "headers": {"X-Request-ID": ref("headers", "RequestId"), "ETag": ref("headers", "ETag")},
    }
    return responses


def _components(settings: Settings) -> Schema:
    responses = _failure_responses(settings)
    components: Schema = {
        "schemas": {
            "Key": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_KEY_BYTES,
                "pattern": KEY_PATTERN,
                "description": _KEY_DESCRIPTION,
                "examples": ["config/db/host"],
            },
            "Value": {
                "description": (
                    "Any JSON value: object, array, string, number, true, false or null, "
                    f"nested at most {MAX_VALUE_DEPTH} arrays/objects deep (not expressible "
                    "in JSON Schema; deeper is 400). Stored as compact JSON and returned "
                    "equal to what was sent; integers of any size stay exact."
                ),
                "examples": [{"host": "db1", "port": 5432}],
            },
            "Revision": {
                "type": "integer",
                "minimum": 1,
                "description": "1 when the key is created, +1 on every overwrite.",
            },
            "CreateBody": {
                "type": "object",
                "properties": {"key": ref("schemas", "Key"), "value": ref("schemas", "Value")},
                "required": ["key", "value"],
                "additionalProperties": False,
                "description": "Other fields are 400 (to catch typos such as `vaule`).",
            },
            "WriteBody": {
                "type": "object",
                "properties": {
                    "value": ref("schemas", "Value"),
                    "key": {
                        **ref("schemas", "Key"),
                        "description": "Optional; when present it must equal the key in the path.",
                    },
                },
                "required": ["value"],
                "additionalProperties": False,
                "description": "Other fields are 400 (to catch typos such as `vaule`).",
            },
            "Record": {
                "type": "object",
                "properties": {
                    "key": ref("schemas", "Key"),
                    "value": ref("schemas", "Value"),
                    "revision": ref("schemas", "Revision"),
                },
                "required": ["key", "value", "revision"],
                "additionalProperties": False,
            },
            "Deleted": {
                "type": "object",
                "properties": {
                    "key": ref("schemas", "Key"),
                    "revision": {
                        **ref("schemas", "Revision"),
                        "description": "The revision the record had when it was deleted.",
                    },
                },
                "required": ["key", "revision"],
                "additionalProperties": False,
            },
            "Problem": {
                "type": "object",
                "description": "RFC 9457 problem details; never a traceback or a driver message.",
                "properties": {
                    "type": {"type": "string", "pattern": f"^{PROBLEM_TYPE}[a-z-]+$"},
                    "title": {"type": "string"},
                    "status": {"type": "integer", "minimum": 400, "maximum": 599},
                    "detail": {"type": "string"},
                    "key": {
                        "type": "string",
                        "description": "The key concerned, when one is (cut when too long).",
                    },
                },
                "required": ["type", "title", "status", "detail"],
                "additionalProperties": False,
            },
            "ServiceInfo": _closed_object(
                service={"const": "kv"},
                version={"type": "string"},
                backend={"type": "string"},
            ),
            "Health": _closed_object(status={"const": "ok"}),
            "Ready": _closed_object(status={"const": "ready"}, backend={"type": "string"}),
            "ResetDone": _closed_object(status={"const": "reset"}),
        },
        "headers": {
            "ETag": {
                "description": "The record's revision as a strong entity tag.",
                "required": True,
                "schema": {"type": "string", "pattern": '^"[1-9][0-9]*"$', "examples": ['"1"']},
            },
            "RequestId": {
                "description": "The request's `X-Request-ID` (taken from the request or "
                "generated); every log line of the request carries it.",
                "required": True,
                "schema": {"type": "string"},
            },
            "RetryAfter": {
                "description": "Seconds to wait before trying again.",
                "required": True,
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            },
            "WWWAuthenticate": {"required": True, "schema": {"type": "string"}},
        },
        "parameters": {
            "Key": {
                "name": "key",
                "in": "path",
                "required": True,
                "description": (
                    "The key, percent-encoded (`/` may stay literal: `/kv/config/db/host`). "
                    "Encode `.` as `%2E` in `.` and `..` segments, which HTTP clients remove. "
                    + _KEY_DESCRIPTION
                ),
                "schema": ref("schemas", "Key"),
            },
            "IfMatch": {
                "name": "If-Match",
                "in": "header",
                "required": False,
                "description": (
                    "Only if the record is at this revision (else 412, on reads too): one "
                    'strong entity tag as in `ETag` (`"3"`), or `*` for any. Tags compare '
                    'character by character: `"03"` and the weak `W/"3"` never match. '
                    "Anything else is 400, as are two If-Match lines."
                ),
                "schema": {"type": "string", "pattern": IF_MATCH_PATTERN, "examples": ['"1"']},
            },
            "IfNoneMatch": {
                "name": "If-None-Match",
                "in": "header",
                "required": False,
                "description": (
                    '`*` or entity tags (`"3", W/"4"`): 304 Not Modified, with the ETag and no '
                    "body, when one of them is the record's ETag (weak comparison) or for `*`. "
                    "Evaluated after If-Match."
                ),
                "schema": {
                    "type": "string",
                    "pattern": IF_NONE_MATCH_PATTERN,
                    "examples": ['"1"', "*"],
                },
            },
            "IfNoneMatchStar": {
                "name": "If-None-Match",
                "in": "header",
                "required": False,
                "description": (
                    "`*`: create only, 412 when the key exists (atomic, on every backend). Any "
                    "other value, or `*` together with If-Match, is 400."
                ),
                "schema": {"type": "string", "enum": ["*"]},
            },
        },
        "responses": responses,
    }
    if settings.auth_token:
        components["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "The token the service was started with (`KV_AUTH_TOKEN`).",
            }
        }
    return components


def _closed_object(**properties: Schema) -> Schema:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _problem_response(description: str, *, headers: Schema | None = None) -> Schema:
    return {
        "description": description,
        "headers": {"X-Request-ID": ref("headers", "RequestId"), **(headers or {})},
        "content": {MEDIA_TYPE: {"schema": ref("schemas", "Problem")}},
    }


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
    for status in (*op.errors, *((401,) if protected else ())):
        responses[str(status)] = ref("responses", _FAILURES[status])
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
        "components": _components(settings),
    }


def document(settings: Settings, table: Iterable[Operation]) -> bytes:
    """The document of `table`, encoded once."""
    return orjson.dumps(build_document(settings, table))
