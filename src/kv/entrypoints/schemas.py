"""The schemas of the OpenAPI document's components (kv.entrypoints.components), and what
the rest of the document uses to refer to them."""

from typing import Any

from kv.domain import txn
from kv.domain.model import MAX_KEY_BYTES, MAX_PAGE, MAX_TTL_SECONDS, MAX_VALUE_DEPTH
from kv.entrypoints.problems import PROBLEM_TYPE

Schema = dict[str, Any]

# No control characters (U+0000-U+001F, U+007F), not ending in "/". Python's `re`, Rust's
# `regex` (schemathesis validates with it) and ECMAScript read this pattern alike. Lone
# surrogates are left out: Rust refuses them in a pattern, and JSON text cannot carry them.
KEY_PATTERN = r"^[^\u0000-\u001f\u007f]*[^\u0000-\u001f\u007f/]$"
EXPIRES_AT_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$"

KEY_DESCRIPTION = (
    f"1 to {MAX_KEY_BYTES} bytes of UTF-8, no control characters (U+0000-U+001F, U+007F), "
    "not ending in `/`. JSON Schema counts characters, not bytes, so `maxLength` here is "
    f"only an upper bound: a key of at most {MAX_KEY_BYTES} characters can still be longer "
    f"than {MAX_KEY_BYTES} bytes once encoded, and is then refused with 400."
)

_REF = "#/components/"


def ref(kind: str, name: str) -> Schema:
    return {"$ref": f"{_REF}{kind}/{name}"}


def schemas() -> Schema:
    return {
        "Key": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_KEY_BYTES,
            "pattern": KEY_PATTERN,
            "description": KEY_DESCRIPTION,
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
                    "maxItems": txn.MAX_OPERATIONS,
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
    }


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


def closed_object(**properties: Schema) -> Schema:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
