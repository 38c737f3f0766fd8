import pytest

from kv.domain.errors import InvalidKey, InvalidValue
from kv.domain.model import MAX_KEY_BYTES, MAX_VALUE_DEPTH, parse_key, validate_value


@pytest.mark.parametrize(
    "key",
    [
        "a",
        "config/db/host",
        "a b",
        "100%",
        "a+b",
        "日本語",
        "🙂",
        "x" * MAX_KEY_BYTES,
        "é" * (MAX_KEY_BYTES // 2),
        "/leading",
        "\u0080\u009f",
    ],
)
def test_valid_keys_pass(key: str) -> None:
    assert parse_key(key) == key


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "empty"),
        ("x" * (MAX_KEY_BYTES + 1), "at most 1024 bytes"),
        ("é" * (MAX_KEY_BYTES // 2) + "a", "at most 1024 bytes"),
        ("a\x00b", "control"),
        ("a\nb", "control"),
        ("\x1f", "control"),
        ("a\x7f", "control"),
        ("a/", "end with '/'"),
        ("/", "end with '/'"),
        ("\ud800", "surrogate"),
    ],
)
def test_invalid_keys_are_refused_with_the_reason(key: str, reason: str) -> None:
    with pytest.raises(InvalidKey, match=reason):
        parse_key(key)


@pytest.mark.parametrize("key", [1, None, True, ["a"], {"a": 1}, 1.5])
def test_a_key_must_be_a_string(key: object) -> None:
    with pytest.raises(InvalidKey, match="must be a string"):
        parse_key(key)


def nested(depth: int) -> object:
    value: object = 0
    for level in range(depth):
        value = [value] if level % 2 else {"a": value}
    return value


def test_values_up_to_the_depth_limit_pass() -> None:
    for value in [None, 1, "s", [], {}, nested(1), nested(MAX_VALUE_DEPTH)]:
        validate_value(value)


def test_values_deeper_than_the_limit_are_refused() -> None:
    with pytest.raises(InvalidValue, match="deeper than 256"):
        validate_value(nested(MAX_VALUE_DEPTH + 1))
    with pytest.raises(InvalidValue):
        validate_value([1, {"a": [2, nested(MAX_VALUE_DEPTH)]}])
