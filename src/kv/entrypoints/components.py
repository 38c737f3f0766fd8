"""The shared components of the OpenAPI document: schemas, parameters, headers and the
responses of failures, which the operations of the table refer to by name."""

from typing import Any

from kv.container import Settings
from kv.domain.model import (
    DEFAULT_PAGE,
    MAX_KEY_BYTES,
    MAX_PAGE,
    MAX_TRANSACTION,
    MAX_TTL_SECONDS,
    MAX_VALUE_DEPTH,
)
from kv.entrypoints.problems import MEDIA_TYPE, PROBLEM_TYPE

JSON = "application/json"
Schema = dict[str, Any]

# No control characters (U+0000-U+001F, U+007F), not ending in "/". Python's `re`, Rust's
# `regex` (schemathesis validates with it) and ECMAScript read this pattern alike. Lone
# surrogates are left out: Rust refuses them in a pattern, and JSON text cannot carry them.
KEY_PATTERN = r"^[^\u0000-\u001f\u007f]*[^\u0000-\u001f\u007f/]$"
IF_MATCH_PATTERN = r'^(\*|(W/)?"[0-9]+")$'
IF_NONE_MATCH_PATTERN = r'^(\*|(W/)?"[0-9]+"( *, *(W/)?"[0-9]+")*)$'
EXPIRES_AT_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$"

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
FAILURES = {
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
        FAILURES[status]: problem_response(description, headers=headers.get(status))
        for status, description in described.items()
        if status != 401 or settings.auth_token
    }
    responses["NotModified"] = {
        "description": "`If-None-Match` names the record's current ETag (or is `*`): the "
        "copy the client holds is current. No body.",
        "headers": {"X-Request-ID": ref("headers", "RequestId"), "ETag": ref("headers", "ETag")},
    }
    return responses


def components(settings: Settings) -> Schema:
    responses = _failure_responses(settings)
    responses["TxnFailed"] = problem_response(
        "An operation's condition failed (`index`, `key`, `reason`); nothing was written."
    )
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
            "Ttl": {
                "type": ["number", "null"],
                "exclusiveMinimum": 0,
                "maximum": MAX_TTL_SECONDS,
                "description": "Seconds until the record expires (rounded up to a millisecond); "
                "null or absent: never. An overwrite without it removes the expiry.",
            },
            "Revision": {
                "type": "integer",
                "minimum": 1,
                "description": "1 when the key is created, +1 on every overwrite.",
            },
            "CreateBody": {
                "type": "object",
                "properties": {
                    "key": ref("schemas", "Key"),
                    "value": ref("schemas", "Value"),
                    "ttl": ref("schemas", "Ttl"),
                },
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
                    "ttl": ref("schemas", "Ttl"),
                },
                "required": ["value"],
                "additionalProperties": False,
                "description": "Other fields are 400 (to catch typos such as `vaule`).",
            },
            "ExpiresAt": {
                "type": "string",
                "pattern": EXPIRES_AT_PATTERN,
                "description": "When the record expires: RFC 3339, UTC, milliseconds. Only on "
                "a record written with a `ttl`.",
                "examples": ["2026-11-25T20:15:03.120Z"],
            },
            "Record": {
                "type": "object",
                "properties": {
                    "key": ref("schemas", "Key"),
                    "value": ref("schemas", "Value"),
                    "revision": ref("schemas", "Revision"),
                    "expires_at": ref("schemas", "ExpiresAt"),
                },
                "required": ["key", "value", "revision"],
                "additionalProperties": False,
            },
            "Item": {
                "type": "object",
                "properties": {
                    "key": ref("schemas", "Key"),
                    "revision": ref("schemas", "Revision"),
                    "expires_at": ref("schemas", "ExpiresAt"),
                    "value": {**ref("schemas", "Value"), "description": "With `values=true`."},
                },
                "required": ["key", "revision"],
                "additionalProperties": False,
            },
            "Page": closed_object(
                items={"type": "array", "items": ref("schemas", "Item"), "maxItems": MAX_PAGE},
                next={
                    "type": ["string", "null"],
                    "description": "The cursor of the next page; null on the last page.",
                },
            ),
            "TxnBody": {
                "type": "object",
                "properties": {
                    "ops": {
                        "type": "array",
                        "items": ref("schemas", "TxnOp"),
                        "minItems": 1,
                        "maxItems": MAX_TRANSACTION,
                        "description": "Each key at most once.",
                    }
                },
                "required": ["ops"],
                "additionalProperties": False,
            },
            "TxnOp": {"oneOf": [ref("schemas", f"Txn{kind}") for kind in _TXN_KINDS]},
            **{f"Txn{kind}": schema for kind, schema in _txn_ops().items()},
            "TxnResults": closed_object(
                results={
                    "type": "array",
                    "description": "In the order of the operations: a record for create, put "
                    "and a found get, null for a get of a missing key, {key, revision} for "
                    "delete (the deleted record's) and check (null when absent).",
                    "items": {
                        "oneOf": [
                            ref("schemas", "Record"),
                            {"type": "null"},
                            closed_object(
                                key=ref("schemas", "Key"),
                                revision={"type": ["integer", "null"], "minimum": 1},
                            ),
                        ]
                    },
                },
            ),
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
                    "index": {
                        "type": "integer",
                        "minimum": 0,
                        "description": "The transaction's operation concerned (0-based).",
                    },
                    "reason": {
                        "enum": ["exists", "not_found", "revision_mismatch"],
                        "description": "Why a transaction's operation failed.",
                    },
                },
                "required": ["type", "title", "status", "detail"],
                "additionalProperties": False,
            },
            "ServiceInfo": closed_object(
                service={"const": "kv"},
                version={"type": "string"},
                backend={"type": "string"},
                ui={"type": "string", "description": "The path of the browser interface."},
            ),
            "Health": closed_object(status={"const": "ok"}),
            "Ready": closed_object(status={"const": "ready"}, backend={"type": "string"}),
            "ResetDone": closed_object(status={"const": "reset"}),
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
            **_query_parameters(),
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
            "UiAsset": {
                "name": "asset",
                "in": "path",
                "required": True,
                "description": "The file's name, as the page refers to it (`app.js`).",
                "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
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


_TXN_KINDS = ("Create", "Put", "Delete", "Get", "Check")


def _txn_ops() -> dict[str, Schema]:
    key, value = ref("schemas", "Key"), ref("schemas", "Value")
    ttl = ref("schemas", "Ttl")
    revision = {"type": ["integer", "null"], "minimum": 1}

    def op(kind: str, required: tuple[str, ...], **optional: Schema) -> Schema:
        fields = {"key": key, "value": value, "revision": revision}
        properties = {"op": {"const": kind.lower()}, **{n: fields[n] for n in required}}
        return {
            "type": "object",
            "properties": {**properties, **optional},
            "required": ["op", *required],
            "additionalProperties": False,
        }

    return {
        "Create": op("Create", ("key", "value"), ttl=ttl),
        "Put": op("Put", ("key", "value"), if_revision=revision, ttl=ttl),
        "Delete": op("Delete", ("key",), if_revision=revision),
        "Get": op("Get", ("key",)),
        "Check": op("Check", ("key", "revision")),
    }


def _query_parameters() -> Schema:
    def query(name: str, description: str, schema: Schema) -> Schema:
        return {"name": name, "in": "query", "description": description, "schema": schema}

    return {
        "Prefix": query("prefix", "List the keys that start with it (all when empty).",
                        {"type": "string"}),
        "Limit": query("limit", f"Items a page holds at most (default {DEFAULT_PAGE}).",
                       {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
        "Cursor": query("cursor", "The `next` of the previous page, with the same prefix.",
                        {"type": "string"}),
        "Values": query("values", "Include each record's value.",
                        {"type": "string", "enum": ["true", "false"]}),
        "WatchPrefix": query("prefix", "Watch the keys that start with it (every key when "
                             "empty). Give this or `key`.", {"type": "string"}),
        "WatchKey": query("key", "Watch one key. Give this or `prefix`.",
                          ref("schemas", "Key")),
    }  # fmt: skip


def closed_object(**properties: Schema) -> Schema:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def problem_response(description: str, *, headers: Schema | None = None) -> Schema:
    return {
        "description": description,
        "headers": {"X-Request-ID": ref("headers", "RequestId"), **(headers or {})},
        "content": {MEDIA_TYPE: {"schema": ref("schemas", "Problem")}},
    }
