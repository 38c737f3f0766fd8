"""`POST /txn`: several operations applied all together, or none of them."""

from typing import Any

import orjson
from starlette.responses import Response

from kv.domain import txn
from kv.domain.commands import Transaction
from kv.domain.errors import InvalidInput
from kv.domain.model import Record, expected_revision, parse_key, parse_ttl
from kv.entrypoints.bodies import check_fields, encode_value
from kv.entrypoints.handlers import JSON, record_json
from kv.entrypoints.problems import BadRequest
from kv.entrypoints.requests import Call

# The fields of each kind of operation: all it allows, and those it requires.
FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "create": (("op", "key", "value", "ttl"), ("op", "key", "value")),
    "put": (("op", "key", "value", "if_revision", "ttl"), ("op", "key", "value")),
    "delete": (("op", "key", "if_revision"), ("op", "key")),
    "get": (("op", "key"), ("op", "key")),
    "check": (("op", "key", "revision"), ("op", "key", "revision")),
}
WRITES = (txn.Create, txn.Put, txn.Delete)


async def transact(call: Call) -> Response:
    command = await _parse(call)
    operations = command.operations
    written = [op.key for op in operations if isinstance(op, WRITES)]
    call.key = operations[0].key
    call.extra = {"ops": len(operations), "written": written}
    results = await call.service.transact(command)
    body = b'{"results":[%b]}' % b",".join(
        _result_json(op, result) for op, result in zip(operations, results, strict=True)
    )
    return Response(body, media_type=JSON)


async def _parse(call: Call) -> Transaction:
    """The transaction in the body; its parsed JSON dies here, only encoded values live on."""
    data, _ = await call.json_object(("ops",), ("ops",))
    ops = data["ops"]
    if not isinstance(ops, list):
        raise BadRequest("ops must be an array of operations")
    return Transaction(txn.check([_operation(i, op) for i, op in enumerate(ops)]))


def _operation(index: int, op: Any) -> txn.Op:
    """Operation `index` of the body, checked; a broken one is a 400 naming its index."""
    try:
        if not isinstance(op, dict):
            raise InvalidInput(None, "an operation is a JSON object")
        kind = op.get("op")
        if not isinstance(kind, str) or kind not in FIELDS:
            raise InvalidInput(None, f"op must be one of {', '.join(FIELDS)}, not {kind!r}")
        check_fields(op, *FIELDS[kind])
        key = parse_key(op["key"])
        match kind:
            case "create":
                return txn.Create(key, encode_value(op["value"]), parse_ttl(op.get("ttl")))
            case "put":
                expected = _revision(op.get("if_revision"), "if_revision")
                value = encode_value(op["value"])
                return txn.Put(key, value, expected, parse_ttl(op.get("ttl")))
            case "delete":
                return txn.Delete(key, _revision(op.get("if_revision"), "if_revision"))
            case "get":
                return txn.Get(key)
            case _:
                return txn.Check(key, _revision(op["revision"], "revision"))
    except (InvalidInput, BadRequest) as exc:
        rule = exc.rule if isinstance(exc, InvalidInput) else exc.detail
        named = exc.key if isinstance(exc, InvalidInput) else None
        raise InvalidInput(named, f"operation {index}: {rule}", index=index) from None


def _revision(value: object, name: str) -> int | None:
    """A revision field: null for none (or, for `check`, absent), else a whole number >= 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(None, f"{name} must be a whole number from 1 (or null), not {value!r}")
    return expected_revision(value)


def _result_json(op: txn.Op, result: txn.Result) -> bytes:
    if isinstance(result, Record):
        return record_json(result)
    if isinstance(op, txn.Get):
        return b"null"
    return b'{"key":%b,"revision":%b}' % (orjson.dumps(op.key), orjson.dumps(result))
