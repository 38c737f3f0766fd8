"""The Redis adapter writes its pipelined commands itself: the bytes must be redis-py's."""

import redis

from kv.adapters import redis as adapter


def test_commands_are_packed_as_redis_py_packs_them() -> None:
    connection = redis.asyncio.Connection()
    commands: list[adapter.Command] = [
        ("GET", "kv:k"),
        ("SET", "kv:é/🙂", "1:" + '"x"' * 3000, "NX"),  # a value beyond the cut-off
        ("EVALSHA", "0" * 40, 1, "kv:k", "v" * 6001, ""),
        ("SET", "kv:k", "1:" + "y" * 6000, "NX"),  # at the cut-off
        ("SCRIPT", "LOAD", "return 1"),
    ]
    ours = b"".join(b"".join(adapter._pack(command, "utf-8", "strict")) for command in commands)
    assert ours == b"".join(connection.pack_commands(commands))
