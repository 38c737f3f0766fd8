"""JSON request bodies: parsed, checked, and their value encoded as the text to store, within
a bounded time of the event loop and leaving nothing behind but that text.

What a 1 MiB body costs (`bench/body_cost.py` has the figures by shape) is kept down by:

- **No cyclic GC while a body is parsed and encoded.** The parsed JSON holds no reference
  cycles, so reference counting frees it; with the collector on, each of its passes walks the
  growing tree again: 350k `[]` took ~5 times longer to parse.
- **orjson, and no depth walk of a large value.** A body with at most ORJSON_SAFE_DEPTH + 1
  brackets cannot nest deeper; one with fewer than _WALK_BELOW is walked (cheaply); a larger
  one is parsed inside 993 more arrays, which orjson's parser takes only if the value nests
  at most ORJSON_SAFE_DEPTH levels (it refuses 1024 in all).
- **Integers beyond 64 bits, exactly.** orjson reads those as floats. A body with a run of
  digits outside its strings that could be one (19 after a `-`, else 20) is read by the
  standard library instead, each integer kept as the text it was sent in
  (`orjson.Fragment`): never converted, so never rounded, and no quadratic string-to-int
  conversion. Numbers are limited to MAX_NUMBER_DIGITS digits in a row, Python's own default
  limit for integers, so that a Python client can read back whatever kv stores.

**Why orjson never encodes a value nesting more than ORJSON_SAFE_DEPTH levels.** Its
encoder writes closing brackets without checking for room in its buffer, and writes past
the buffer's end when a long run of them meets the end of the buffer: a heap corruption
(`realloc(): invalid next size`, or silently), from a request of 4 KB. Seen with orjson
3.13.0 from ~200 levels, with 3.11.9 from 32 (3.11's code: after an empty string only ~31
bytes are sure to be free); tests/unit/test_bodies.py has reproducers, run in a subprocess
under PYTHONMALLOC=debug. Values nesting deeper (up to the 256 allowed) take the standard
library's encoder, slower, and so rare outside of attacks that only those pay for it.

Runs of digits, and brackets, are counted in one `body.translate(_DIGITS)` (digits → `0`,
`-` kept, `[` and `{` → `[`, the rest → space) with `bytes.find` and `count`: ~2 ms per MiB,
where the regular expression main used took ~20.
"""

import gc
import json
from types import TracebackType
from typing import Any

import orjson

from kv.domain.errors import InvalidValue
from kv.domain.model import MAX_VALUE_DEPTH
from kv.entrypoints.problems import BadRequest

MAX_NUMBER_DIGITS = 4300
"""The most digits a number may have in a row (sys.int_info.default_max_str_digits)."""

ORJSON_SAFE_DEPTH = 30
"""The deepest nesting orjson.dumps is given (see the module's doc)."""
# Below this many brackets a walk of the parsed value is cheaper than the wrapping.
_WALK_BELOW = 1000
# Bodies up to this size allocate fewer objects than the GC's first threshold (700).
_GC_PAUSE_ABOVE = 1024

# Digits to "0", "-" kept, "[" and "{" to "[" (to count them in the same pass), the rest to " ".
_DIGITS = bytes(
    48 if 48 <= byte <= 57 else byte if byte in b"-[" else 91 if byte == 123 else 32
    for byte in range(256)
)
# In a body translated by _DIGITS: a run of digits that may be an integer orjson would read
# as a float (below -2**63: 19 digits and a sign; above 2**64 - 1: 20 digits).
_NEGATIVE_RUN = b"-" + b"0" * 19
_POSITIVE_RUN = b"0" * 20
_TOO_LONG_RUN = b"0" * (MAX_NUMBER_DIGITS + 1)

_NOT_JSON = "the body is not valid JSON: "
_TOO_MANY_DIGITS = (
    f"a number in the body has more than {MAX_NUMBER_DIGITS} digits in a row; integers are "
    f"kept exact up to {MAX_NUMBER_DIGITS} digits"
)
_TOO_DEEP = f"the value nests deeper than {MAX_VALUE_DEPTH} levels"
_SURROGATE = "the value has a lone surrogate (\\ud800-\\udfff) in a string, which UTF-8 cannot hold"


class CyclicGCPaused:
    """`with CyclicGCPaused():` the cyclic garbage collector does not run inside; it is
    enabled again on the way out only if it was enabled on the way in."""

    __slots__ = ("was_enabled",)

    def __enter__(self) -> None:
        self.was_enabled = gc.isenabled()
        gc.disable()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.was_enabled:
            gc.enable()


def read_value_body(
    body: bytes, allowed: tuple[str, ...], required: tuple[str, ...]
) -> tuple[dict[str, Any], str]:
    """The fields of a JSON object body other than `value`, and `value` encoded as the
    compact JSON text to store (`value` must be one of `allowed`).

    Everything parsed from the body that is not returned is freed before this returns, with
    the cyclic GC paused throughout (see the module's doc). The hot path of every write:
    ~2 µs for a small body.
    """
    # Small bodies allocate too little for the collector to run: no need to pause it.
    was_enabled = gc.isenabled() and len(body) > _GC_PAUSE_ABOVE
    if was_enabled:
        gc.disable()
    try:
        data, nesting, exact = _parse_value_body(body)
        check_fields(data, allowed, required)
        text = _encode(data.pop("value"), nesting)
        if exact:
            for name, field in data.items():
                if isinstance(field, orjson.Fragment):  # an integer, as its text
                    data[name] = int(orjson.dumps(field))
        return data, text
    finally:
        if was_enabled:
            gc.enable()


def parse_json(body: bytes) -> Any:
    """Decode a request body strictly: UTF-8, one document, no NaN or Infinity; integers of
    any size exact (as int) up to MAX_NUMBER_DIGITS digits."""
    with CyclicGCPaused():
        outside = _wide_integer_digits(body, body.translate(_DIGITS))
        if outside is not None:
            return _parse_exactly(body, outside, int)
        return _loads(body)


def check_fields(data: Any, allowed: tuple[str, ...], required: tuple[str, ...]) -> None:
    """400 unless `data` is a JSON object with only `allowed` fields and every `required` one."""
    if type(data) is not dict:
        raise BadRequest(f"the body must be a JSON object with the fields {', '.join(allowed)}")
    for name in data:
        if name not in allowed:
            unknown = ", ".join(repr(name) for name in data if name not in allowed)
            raise BadRequest(f"unknown field(s) {unknown}; allowed: {', '.join(allowed)}")
    for name in required:
        if name not in data:
            missing = ", ".join(repr(name) for name in required if name not in data)
            raise BadRequest(f"missing field(s) {missing}")


def encode_value(value: Any) -> str:
    """The compact JSON text stored for a decoded `value` (400 if it breaks a value rule)."""
    with CyclicGCPaused():
        return _encode(value, UNKNOWN)


# --- parsing --------------------------------------------------------------------------------


# What is known of how deep a body's value nests.
SHALLOW = 0  # at most ORJSON_SAFE_DEPTH levels: orjson may encode it
ALLOWED = 1  # at most MAX_VALUE_DEPTH levels
UNKNOWN = 2  # not checked


def _parse_value_body(body: bytes) -> tuple[Any, int, bool]:
    """A body holding one value at the top, `{"value": ...}`: what it holds, how deep the
    value nests (SHALLOW, ALLOWED, UNKNOWN), and whether it was read by the standard
    library (its integers then orjson Fragments).

    The nesting is found without a walk when the body is large: orjson parses a body inside
    993 more arrays only if it nests at most ORJSON_SAFE_DEPTH + 1 levels (its top object
    and the value), and inside 767 only if it nests at most MAX_VALUE_DEPTH + 1.
    """
    digits = body.translate(_DIGITS)
    brackets = digits.count(b"[")  # `[` and `{`, strings' too: an upper bound
    outside = _wide_integer_digits(body, digits)
    if outside is not None:
        data = _parse_exactly(body, outside, orjson.Fragment)
        shallow = brackets <= ORJSON_SAFE_DEPTH + 1 or not _nests_deeper(
            data, ORJSON_SAFE_DEPTH + 1
        )
        return data, SHALLOW if shallow else UNKNOWN, True
    if brackets <= ORJSON_SAFE_DEPTH + 1:
        return _loads(body), SHALLOW, False
    if brackets < _WALK_BELOW:
        data = _loads(body)
        return data, UNKNOWN if _nests_deeper(data, ORJSON_SAFE_DEPTH + 1) else SHALLOW, False
    for limit, nesting in ((ORJSON_SAFE_DEPTH, SHALLOW), (MAX_VALUE_DEPTH, ALLOWED)):
        data = _loads_wrapped(body, 1024 - (limit + 1))
        if data is not _REFUSED:
            return data, nesting, False
    return _loads(body), UNKNOWN, False  # not JSON (400), or too deep


def _wide_integer_digits(body: bytes, digits: bytes) -> bytes | None:
    """The digits of `body` outside its strings (translated by _DIGITS) if they have a run
    that could be an integer beyond 64 bits, else None. `digits` is all of `body` translated:
    runs inside strings (ids, timestamps in keys) are not numbers, but the strings are taken
    out (a few passes over the body) only when `digits` has such a run."""
    if _NEGATIVE_RUN not in digits and _POSITIVE_RUN not in digits:
        return None
    outside = _digits_outside(body)
    return outside if _NEGATIVE_RUN in outside or _POSITIVE_RUN in outside else None


def _parse_exactly(
    body: bytes, outside: bytes, exact_ints: type[int] | type[orjson.Fragment]
) -> Any:
    """Parse `body` (`outside`: its digits outside strings, by _wide_integer_digits) with the
    standard library, keeping integers exact: as int, or as orjson Fragments holding their
    digits."""
    if _TOO_LONG_RUN in outside:
        raise BadRequest(_TOO_MANY_DIGITS)
    try:
        return json.loads(
            body.decode("utf-8"),
            parse_int=exact_ints,
            # orjson's float reading: the same floats as on the path above, and it refuses a
            # number beyond a double's range (1e400) instead of reading it as infinity.
            parse_float=orjson.loads,
            parse_constant=_reject_constant,
        )
    except orjson.JSONDecodeError as exc:  # from parse_float: its position is not the body's
        raise BadRequest(f"{_NOT_JSON}{exc.msg}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadRequest(f"{_NOT_JSON}{exc}") from None


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"{_NOT_JSON}{exc}") from None


_REFUSED = object()


def _loads_wrapped(body: bytes, arrays: int) -> Any:
    """`body` parsed inside `arrays` arrays (so as to meet orjson's limit of 1024 levels),
    or _REFUSED when orjson refuses it so (too deep then, or not JSON at all)."""
    try:
        data = orjson.loads(b"[" * arrays + body + b"]" * arrays)
    except orjson.JSONDecodeError:
        return _REFUSED
    for _ in range(arrays):
        # Exactly one member at every level: a body such as `1],[2` closes a wrapping array
        # and opens another, and is not one JSON document.
        if len(data) != 1:
            raise BadRequest(f"{_NOT_JSON}it is not one JSON document")
        data = data[0]
    return data


def _nests_deeper(value: Any, limit: int) -> bool:
    """Whether `value` nests more than `limit` levels of arrays and objects: level by level,
    keeping only containers (~2 times faster than validate_value's walk with a stack)."""
    level = [value] if type(value) is list or type(value) is dict else []
    for _ in range(limit):
        if not level:
            return False
        below = []
        for node in level:
            for child in node.values() if type(node) is dict else node:
                if type(child) is list or type(child) is dict:
                    below.append(child)
        level = below
    return bool(level)


def _digits_outside(body: bytes) -> bytes:
    """The digits of `body` outside its strings, translated by _DIGITS."""
    return _outside_strings(body).translate(_DIGITS)


def _outside_strings(body: bytes) -> bytes:
    """`body` without what its JSON strings hold (escaped quotes do not end a string)."""
    plain = body.replace(b"\\\\", b"  ").replace(b'\\"', b"  ")
    return b" ".join(plain.split(b'"')[0::2])


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


# --- encoding -------------------------------------------------------------------------------


def _encode(value: Any, nesting: int) -> str:
    """The JSON text of `value`: by orjson when it nests at most ORJSON_SAFE_DEPTH levels,
    else (and for what orjson cannot write) by the standard library; 400 when it nests more
    than MAX_VALUE_DEPTH."""
    if nesting == UNKNOWN:
        if _nests_deeper(value, MAX_VALUE_DEPTH):
            raise InvalidValue(None, _TOO_DEEP)
        nesting = ALLOWED if _nests_deeper(value, ORJSON_SAFE_DEPTH) else SHALLOW
    if nesting == SHALLOW:
        try:
            return orjson.dumps(value).decode()
        except orjson.JSONEncodeError as exc:
            if "surrogates" in str(exc):  # a string from the standard library's parser
                raise InvalidValue(None, _SURROGATE) from None
            # Else an int beyond 64 bits, as parse_json keeps them.
    try:
        text = json.dumps(
            value,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
            default=_fragment_as_int,
        )
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidValue(None, _SURROGATE) from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise BadRequest(f"the value cannot be stored as JSON: {exc}") from None
    return text


def _fragment_as_int(part: object) -> int:
    """An integer kept as text (a Fragment, at most MAX_NUMBER_DIGITS digits) as an int."""
    if isinstance(part, orjson.Fragment):
        return int(orjson.dumps(part))
    raise TypeError(f"{type(part).__name__} is not a JSON value")
