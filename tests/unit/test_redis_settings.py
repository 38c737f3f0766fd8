"""The Redis settings, read from the environment (no server needed)."""

import pytest

from kv.container import ConfigError, Settings


def test_redis_settings_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "KV_BACKEND": "Redis",
            "KV_REDIS_URL": "rediss://:secret@redis.example:6380/2",
            "KV_REDIS_PREFIX": "app1:",
            "KV_REDIS_CLUSTER": "true",
            "KV_BACKEND_TIMEOUT": "0.25",
            "KV_WORKERS": "4",
        }
    )
    assert settings.backend == "redis"
    assert settings.redis_url == "rediss://:secret@redis.example:6380/2"
    assert settings.redis_prefix == "app1:"
    assert settings.redis_cluster is True
    assert settings.backend_timeout == 0.25
    assert settings.workers == 4  # several workers share one Redis


def test_redis_defaults() -> None:
    settings = Settings.from_env({"KV_BACKEND": "redis"})
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.redis_prefix == "kv:"
    assert settings.redis_cluster is False


def test_an_unknown_backend_names_redis_among_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="redis"):
        Settings.from_env({"KV_BACKEND": "redis-cluster"})
