"""The shared components of the OpenAPI document: schemas, parameters, headers and the
responses of failures, which the operations of the table refer to by name. The schemas are
built in kv.entrypoints.schemas."""

from kv.container import Settings
from kv.domain.model import DEFAULT_PAGE, MAX_PAGE
from kv.entrypoints.problems import MEDIA_TYPE
from kv.entrypoints.schemas import KEY_DESCRIPTION, Schema, ref, schemas

JSON = "application/json"

IF_MATCH_PATTERN = r'^(\*|(W/)?"[0-9]+")$'
IF_NONE_MATCH_PATTERN = r'^(\*|(W/)?"[0-9]+"( *, *(W/)?"[0-9]+")*)$'

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
        "schemas": schemas(),
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
                    + KEY_DESCRIPTION
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


def problem_response(description: str, *, headers: Schema | None = None) -> Schema:
    return {
        "description": description,
        "headers": {"X-Request-ID": ref("headers", "RequestId"), **(headers or {})},
        "content": {MEDIA_TYPE: {"schema": ref("schemas", "Problem")}},
    }
