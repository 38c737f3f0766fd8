"""KV_TARANTOOL_URL and KV_TARANTOOL_SPACE are checked when the settings are built (no I/O)."""

import pytest

from kv.adapters.tarantool import TarantoolAddress
from kv.container import ConfigError, Settings


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # Without a user: init.lua's default user and password.
        ("127.0.0.1:3301", TarantoolAddress("127.0.0.1", 3301, "kv", "kv")),
        ("localhost", TarantoolAddress("localhost", 3301, "kv", "kv")),
        (":secret@db", TarantoolAddress("db", 3301, "kv", "secret")),
        ("guest@db", TarantoolAddress("db", 3301, "guest", None)),
        ("kv:kv@db:3302", TarantoolAddress("db", 3302, "kv", "kv")),
        ("tarantool://kv:p%40ss%3A@db:3301", TarantoolAddress("db", 3301, "kv", "p@ss:")),
        ("TARANTOOL://admin@[::1]:3301", TarantoolAddress("::1", 3301, "admin", None)),
        ("kv:@db:1", TarantoolAddress("db", 1, "kv", "")),
    ],
)
def test_urls_that_parse(url: str, expected: TarantoolAddress) -> None:
    assert TarantoolAddress.parse(url) == expected


@pytest.mark.parametrize(
    "url", ["", ":3301", "db:0", "db:65536", "db:port", "redis://db:6379", "db:3301/kv", "db?x=1"]
)
def test_urls_that_do_not(url: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (each case has its own message)
        TarantoolAddress.parse(url)


def test_the_address_is_shown_without_its_password() -> None:
    assert str(TarantoolAddress.parse("kv:secret@db:3301")) == "kv@db:3301"
    assert str(TarantoolAddress.parse("[::1]:3301")) == "kv@[::1]:3301"


def test_kvs_default_url_is_init_luas_default_user() -> None:
    """KV_TARANTOOL_URL's default, 127.0.0.1:3301, connects as the user init.lua creates by
    default (tests/integration/test_tarantool_defaults.py runs them together)."""
    address = TarantoolAddress.parse(Settings().tarantool_url)
    assert (address.user, address.password) == ("kv", "kv")


def test_a_bad_url_is_a_config_error_that_does_not_echo_the_password() -> None:
    with pytest.raises(ConfigError, match="KV_TARANTOOL_URL") as caught:
        Settings(backend="tarantool", tarantool_url="tarantool://kv:secret@db:99999")
    assert "secret" not in str(caught.value)


def test_the_url_is_checked_only_for_the_tarantool_backend() -> None:
    assert Settings(backend="memory", tarantool_url="db:99999").backend == "memory"


@pytest.mark.parametrize("space", ["kv-1", "1kv", "k.v", "", "kvé"])
def test_a_space_name_must_be_an_identifier(space: str) -> None:
    with pytest.raises(ConfigError, match="KV_TARANTOOL_SPACE"):
        Settings(backend="tarantool", tarantool_space=space)


def test_tarantool_is_a_backend() -> None:
    settings = Settings.from_env({"KV_BACKEND": "Tarantool", "KV_TARANTOOL_SPACE": "records"})
    assert (settings.backend, settings.tarantool_space) == ("tarantool", "records")
