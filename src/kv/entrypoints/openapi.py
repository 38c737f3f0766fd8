"""The OpenAPI 3.1 document of the service, and the offline Swagger UI page that renders it.

The document is built in code, once, when the app is created, from the routes the app
actually has (a route this module does not describe is left out, and a test fails on it),
and served as pre-encoded bytes. Tests keep it true: schemathesis calls every operation
and checks the status codes and bodies against it.
"""

from collections.abc import Iterable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from kv import __version__
from kv.container import Settings
from kv.domain.model import MAX_KEY_BYTES, MAX_VALUE_DEPTH
from kv.entrypoints.problems import MEDIA_TYPE, PROBLEM_TYPE
from kv.metrics import strip_convertors

OPENAPI_PATH = "/openapi.json"
DOCS_PATH = "/docs"
DOCS_ASSETS_PATH = "/docs/static"

JSON = "application/json"
Schema = dict[str, Any]

# No control characters (U+0000-U+001F, U+007F), not ending in "/". Python's `re`, Rust's
# `regex` (schemathesis validates with it) and ECMAScript read this pattern alike. Lone
# surrogates are left out: Rust refuses them in a pattern, and JSON text cannot carry them.
KEY_PATTERN = r"^[^\u0000-\u001f\u007f]*[^\u0000-\u001f\u007f/]$"
IF_MATCH_PATTERN = r'^(\*|(W/)?"[0-9]+")$'

_KEY_DESCRIPTION = (
    f"1 to {MAX_KEY_BYTES} bytes of UTF-8, no control characters (U+0000-U+001F, U+007F), "
    "not ending in `/`. JSON Schema counts characters, not bytes, so `maxLength` here is "
    f"only an upper bound: a key of at most {MAX_KEY_BYTES} characters can still be longer "
    f"than {MAX_KEY_BYTES} bytes once encoded, and is then refused with 400."
)

_REF = "#/components/"


def ref(kind: str, name: str) -> Schema:
    return {"$ref": f"{_REF}{kind}/{name}"}


def _components(settings: Settings) -> Schema:
    problem_statuses = {
        "BadRequest": (400, "The body, the key, the value or a header breaks a rule."),
        "NotFound": (404, "No record has this key."),
        "Conflict": (409, "A record with this key already exists."),
        "PreconditionFailed": (412, "`If-Match` names another revision than the current one."),
        "PayloadTooLarge": (413, f"The body is larger than {settings.max_body_bytes} bytes."),
    }
    responses: Schema = {
        name: _problem_response(description) for name, (_, description) in problem_statuses.items()
    }
    responses["Unavailable"] = _problem_response(
        f"The backend is down or did not answer within {settings.backend_timeout:g} s.",
        headers={"Retry-After": ref("headers", "RetryAfter")},
    )
    if settings.auth_token:
        responses["Unauthorized"] = _problem_response(
            "`Authorization: Bearer <token>` is missing or wrong.",
            headers={"WWW-Authenticate": ref("headers", "WWWAuthenticate")},
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
                    "Write only if the record is at this revision: one strong entity tag as in "
                    '`ETag` (`"3"`), or `*` for any. A weak tag (`W/"3"`) never matches (412); '
                    "anything else is 400."
                ),
                "schema": {"type": "string", "pattern": IF_MATCH_PATTERN, "examples": ['"1"']},
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


def _ok(description: str, schema: str, *, etag: bool = False, body: bool = True) -> Schema:
    headers: Schema = {"X-Request-ID": ref("headers", "RequestId")}
    if etag:
        headers["ETag"] = ref("headers", "ETag")
    response: Schema = {"description": description, "headers": headers}
    if body:
        response["content"] = {JSON: {"schema": ref("schemas", schema)}}
    return response


def _bodiless(response: Schema) -> Schema:
    """A HEAD answer: the GET's status and headers, no body."""
    return {key: value for key, value in response.items() if key != "content"}


class _Operations:
    """Builds the operations of one document; knows whether auth is on."""

    def __init__(self, settings: Settings) -> None:
        self.protected = bool(settings.auth_token)

    def data(
        self,
        operation_id: str,
        summary: str,
        tag: str,
        responses: dict[str, Schema],
        *,
        description: str = "",
        parameters: list[Schema] | None = None,
        body: str | None = None,
        head: bool = False,
    ) -> Schema:
        """An operation on the data (/kv, /v1, /_reset): bearer-protected when auth is on.

        `head`: a HEAD operation, whose answers have no body.
        """
        answers = dict(responses)
        if self.protected:
            answers["401"] = _bodiless_ref() if head else ref("responses", "Unauthorized")
        answers["503"] = (
            _bodiless_ref(retry_after=True) if head else ref("responses", "Unavailable")
        )
        operation: Schema = {
            "operationId": operation_id,
            "summary": summary,
            "tags": [tag],
            "responses": dict(sorted(answers.items())),
        }
        if description:
            operation["description"] = description
        if parameters:
            operation["parameters"] = parameters
        if body is not None:
            operation["requestBody"] = {
                "required": True,
                "description": "Read as JSON whatever the Content-Type.",
                "content": {JSON: {"schema": ref("schemas", body)}},
            }
        if self.protected:
            operation["security"] = [{"bearer": []}]
        return operation


def _service_operation(
    operation_id: str, summary: str, responses: dict[str, Schema], description: str = ""
) -> Schema:
    operation: Schema = {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["service"],
        "responses": responses,
    }
    if description:
        operation["description"] = description
    return operation


def _kv_paths(ops: _Operations) -> dict[str, Schema]:
    key = ref("parameters", "Key")
    if_match = ref("parameters", "IfMatch")
    record = _ok("The record.", "Record", etag=True)
    bad = ref("responses", "BadRequest")
    missing = ref("responses", "NotFound")
    differs = ref("responses", "PreconditionFailed")
    large = ref("responses", "PayloadTooLarge")
    return {
        "/kv": {
            "post": ops.data(
                "createRecord",
                "Create a key (409 if it exists)",
                "kv",
                {
                    "200": _ok("Created at revision 1.", "Record", etag=True),
                    "400": bad,
                    "409": ref("responses", "Conflict"),
                    "413": large,
                },
                description="Of concurrent creations of one key exactly one succeeds.",
                body="CreateBody",
            )
        },
        "/kv/{key}": {
            "get": ops.data(
                "getRecord",
                "Read a key",
                "kv",
                {"200": record, "400": bad, "404": missing},
                parameters=[key],
            ),
            "head": ops.data(
                "headRecord",
                "Read a key's status and ETag only",
                "kv",
                {"200": _bodiless(record), "400": _bodiless_ref(), "404": _bodiless_ref()},
                parameters=[key],
                head=True,
            ),
            "put": ops.data(
                "replaceRecord",
                "Overwrite a key (404 if missing), optionally only at a revision",
                "kv",
                {
                    "200": _ok("Overwritten: revision + 1.", "Record", etag=True),
                    "400": bad,
                    "404": missing,
                    "412": differs,
                    "413": large,
                },
                description="The body is checked first: a bad body is 400 even for a missing key.",
                parameters=[key, if_match],
                body="WriteBody",
            ),
            "delete": ops.data(
                "deleteRecord",
                "Delete a key (404 if missing), optionally only at a revision",
                "kv",
                {
                    "200": _ok(
                        "Deleted; the record's key and last revision.", "Deleted", etag=True
                    ),
                    "400": bad,
                    "404": missing,
                    "412": differs,
                },
                parameters=[key, if_match],
            ),
        },
    }


def _bodiless_ref(*, retry_after: bool = False) -> Schema:
    headers: Schema = {"X-Request-ID": ref("headers", "RequestId")}
    if retry_after:
        headers["Retry-After"] = ref("headers", "RetryAfter")
    return {
        "description": "The status the GET would have; a HEAD answer has no body.",
        "headers": headers,
    }


def _v1_paths(ops: _Operations) -> dict[str, Schema]:
    key = ref("parameters", "Key")
    if_match = ref("parameters", "IfMatch")
    record = _ok("The record.", "Record", etag=True)
    bad = ref("responses", "BadRequest")
    missing = ref("responses", "NotFound")
    differs = ref("responses", "PreconditionFailed")
    large = ref("responses", "PayloadTooLarge")
    tag = "v1 (compatibility)"
    return {
        "/v1/": {
            "post": ops.data(
                "v1Create",
                "Create a key (409 if it exists)",
                tag,
                {
                    "200": _ok("Created at revision 1.", "Record", etag=True),
                    "400": bad,
                    "409": ref("responses", "Conflict"),
                    "413": large,
                },
                body="CreateBody",
            )
        },
        "/v1/{key}": {
            "get": ops.data(
                "v1Get",
                "Read a key",
                tag,
                {"200": record, "400": bad, "404": missing},
                parameters=[key],
            ),
            "head": ops.data(
                "v1Head",
                "Read a key's status and ETag only",
                tag,
                {"200": _bodiless(record), "400": _bodiless_ref(), "404": _bodiless_ref()},
                parameters=[key],
                head=True,
            ),
            "put": ops.data(
                "v1Upsert",
                "Create or overwrite a key",
                tag,
                {
                    "200": _ok("Stored: revision 1 if new, else + 1.", "Record", etag=True),
                    "400": bad,
                    "404": missing,
                    "412": differs,
                    "413": large,
                },
                description=(
                    "With `If-Match` this is /kv's compare-and-set instead (404 when the key "
                    "is missing, 412 when at another revision)."
                ),
                parameters=[key, if_match],
                body="WriteBody",
            ),
            "delete": ops.data(
                "v1Delete",
                "Delete a key (404 if missing)",
                tag,
                {
                    "200": _ok(
                        "Deleted; the record's key and last revision.", "Deleted", etag=True
                    ),
                    "400": bad,
                    "404": missing,
                    "412": differs,
                },
                parameters=[key, if_match],
            ),
        },
    }


def _reset_path(ops: _Operations) -> dict[str, Schema]:
    done = {"200": _ok("Every key is deleted.", "ResetDone")}
    return {
        "/_reset": {
            method: ops.data(
                f"reset{method.capitalize()}",
                "Delete every key (only when KV_ENABLE_RESET=true)",
                "v1 (compatibility)",
                done,
            )
            for method in ("get", "post")
        }
    }


def _service_paths(metrics: bool) -> dict[str, Schema]:
    paths: dict[str, Schema] = {
        "/": {
            "get": _service_operation(
                "serviceInfo",
                "Service name, version and backend",
                {"200": _ok("The service.", "ServiceInfo")},
            )
        },
        "/health": {
            "get": _service_operation(
                "health", "200 while the process runs", {"200": _ok("Running.", "Health")}
            )
        },
        "/ready": {
            "get": _service_operation(
                "ready",
                "200 when the backend answers a ping",
                {"200": _ok("Ready.", "Ready"), "503": ref("responses", "Unavailable")},
            )
        },
        OPENAPI_PATH: {
            "get": _service_operation(
                "openapi",
                "This document",
                {"200": {"description": "OpenAPI 3.1.", "content": {JSON: {"schema": {}}}}},
            )
        },
        DOCS_PATH: {
            "get": _service_operation(
                "docs",
                "This page: the document rendered by Swagger UI, served offline",
                {"200": {"description": "HTML.", "content": {"text/html": {"schema": {}}}}},
            )
        },
    }
    if metrics:
        paths["/metrics"] = {
            "get": _service_operation(
                "metrics",
                "Prometheus metrics",
                {
                    "200": {
                        "description": "The Prometheus text format (OpenMetrics when the "
                        "`Accept` header asks for it). Series names start with `kv_`.",
                        "content": {
                            "text/plain": {"schema": {"type": "string"}},
                            "application/openmetrics-text": {"schema": {"type": "string"}},
                        },
                    }
                },
            )
        }
    return paths


_TAGS = [
    {"name": "kv", "description": "The key-value API."},
    {"name": "v1 (compatibility)", "description": "For clients of the earlier service."},
    {"name": "service", "description": "Information, health, docs and metrics."},
]


def build_document(settings: Settings, route_paths: Iterable[str]) -> Schema:
    """The OpenAPI document of the routes whose path templates are `route_paths`."""
    ops = _Operations(settings)
    present = {strip_convertors(path).rstrip("/") or "/" for path in route_paths}
    known: dict[str, Schema] = {
        **_kv_paths(ops),
        **_v1_paths(ops),
        **_service_paths("/metrics" in present),
    }
    if settings.enable_reset:
        known.update(_reset_path(ops))
    paths = {path: item for path, item in known.items() if (path.rstrip("/") or "/") in present}
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
            "\n- `/kv`, `/v1` and `/_reset` need `Authorization: Bearer <token>`; use "
            "**Authorize** to set it here."
        )
    return {
        "openapi": "3.1.0",
        "info": {"title": "kv", "version": __version__, "description": description},
        "tags": [tag for tag in _TAGS if tag["name"] in used_tags],
        "paths": paths,
        "components": _components(settings),
    }


# --- serving ---------------------------------------------------------------------------------

_DOCS_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>kv API</title>
<link rel="stylesheet" href="{DOCS_ASSETS_PATH}/swagger-ui.css">
<link rel="icon" type="image/png" href="{DOCS_ASSETS_PATH}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{DOCS_ASSETS_PATH}/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{
  url: "{OPENAPI_PATH}",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  validatorUrl: null
}});
</script>
</body>
</html>
"""


def docs_routes(settings: Settings, route_paths: Iterable[str]) -> list[BaseRoute]:
    """`/openapi.json`, `/docs` and the Swagger UI files, for an app with these routes."""
    paths = [*route_paths, OPENAPI_PATH, DOCS_PATH]
    document = orjson.dumps(build_document(settings, paths))
    page = _DOCS_PAGE.encode()

    async def openapi(_: Request) -> Response:
        return Response(document, media_type=JSON)

    async def docs(_: Request) -> Response:
        return HTMLResponse(page)

    return [
        Route(OPENAPI_PATH, openapi, methods=["GET"]),
        Route(DOCS_PATH, docs, methods=["GET"]),
        Mount(DOCS_ASSETS_PATH, StaticFiles(directory=str(swagger_ui_path))),
    ]
