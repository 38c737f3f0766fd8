"""The Redis adapter packs its pipelined commands itself (with hiredis): the bytes must be
redis-py's, whatever encoding the URL sets."""

import asyncio

import pytest
import redis

from kv.adapters.redis.pipeline import Command, Pipeliner


def pipeliner(url: str) -> Pipeliner:
    return Pipeliner(redis.asyncio.Redis.from_url(url), scripts={}, timeout=1.0)


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_commands_are_packed_as_redis_py_packs_them(encoding: str) -> None:
    url = f"redis://127.0.0.1:1/0?encoding={encoding}"
    connection = redis.asyncio.Connection(encoding=encoding)
    text = "é" if encoding == "latin-1" else "é/🙂"
    commands: list[Command] = [
        ("GET", "kv:k"),
        ("EVALSHA", "0" * 40, 4, "kv:index/", "kv:expiry/", "kv:expiring/", f"kv:{text}", "1", ""),
        ("EVALSHA", "0" * 40, 0, "(kv:a", b"(kv:\xff", "100", "1", "tag"),  # bytes as they are
        ("SET", "kv:k", "1:" + "y" * 70_000),  # a large value
        ("SCRIPT", "LOAD", "return 1"),
    ]
    ours = b"".join(pipeliner(url).pack(command) for command in commands)
    assert ours == b"".join(connection.pack_commands(commands))


def test_a_command_that_cannot_be_encoded_fails_its_caller_only() -> None:
    async def send() -> None:
        pipeline = pipeliner("redis://127.0.0.1:1/0")
        with pytest.raises(UnicodeEncodeError):
            pipeline.send("k", ("GET", "kv:\ud800"), write=False)
        assert not pipeline._queue  # nothing was queued

    asyncio.run(send())
