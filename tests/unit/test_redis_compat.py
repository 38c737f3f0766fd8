"""The redis-py members the Redis adapter drives directly are checked when it opens."""

from collections.abc import AsyncGenerator

import pytest
import redis
from redis.asyncio.connection import AbstractConnection, ConnectionPool

from kv.adapters.redis import compat, open_redis_repository


def test_the_installed_redis_py_has_every_hooked_member() -> None:
    compat.check_redis_py()
    assert redis.__version__.startswith(compat.TESTED + ".")  # what pyproject.toml pins


def test_a_missing_member_is_named_with_the_version_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(AbstractConnection, "send_packed_command")
    with pytest.raises(compat.RedisPyMismatch) as refused:
        compat.check_redis_py()
    message = str(refused.value)
    assert "AbstractConnection.send_packed_command is missing" in message
    assert f"redis-py {compat.TESTED}.x" in message
    assert redis.__version__ in message


def test_a_member_whose_shape_changed_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    async def get_connection(self: ConnectionPool, command_name: str) -> None: ...
    async def send_packed_command(self: AbstractConnection, command: bytes) -> None: ...

    monkeypatch.setattr(ConnectionPool, "get_connection", get_connection)
    monkeypatch.setattr(AbstractConnection, "send_packed_command", send_packed_command)
    with pytest.raises(compat.RedisPyMismatch) as refused:
        compat.check_redis_py()
    assert "ConnectionPool.get_connection now requires command_name" in str(refused.value)
    assert "send_packed_command takes no `check_health`" in str(refused.value)


def test_maintenance_notifications_missing_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import redis.maint_notifications

    monkeypatch.delattr(redis.maint_notifications, "MaintNotificationsConfig")
    with pytest.raises(compat.RedisPyMismatch, match="MaintNotificationsConfig is missing"):
        compat.check_redis_py()


async def test_the_adapter_refuses_to_open_with_a_mismatched_redis_py(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(AbstractConnection, "send_packed_command")
    opening = open_redis_repository("redis://127.0.0.1:1/0", "kv:", False, 1.0)
    assert isinstance(opening, AsyncGenerator)
    try:
        with pytest.raises(compat.RedisPyMismatch, match="send_packed_command is missing"):
            await anext(opening)  # before any client is made
    finally:
        await opening.aclose()
