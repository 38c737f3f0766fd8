"""The parts of redis-py that kv drives directly, and the check that they are there.

Packing uses hiredis's public `pack_command`. Pipelining (pipeline.py) has no public
equivalent that is cheap enough: redis-py's own `Pipeline` packs through its general encoder
and reads each reply under a timer of its own, the CPU kv's pipeliner exists to save (see the
README's Performance section). So it takes a connection from the pool and talks on it itself,
through these members, public in name but documented only as redis-py's own building blocks:

- `ConnectionPool.get_connection()` without arguments (its arguments are deprecated since 5.3);
- `ConnectionPool.release(connection)`;
- `Connection.send_packed_command(command, check_health=False)`;
- `Connection.read_response()` with no argument: on a pool without a socket timeout it waits
  without a timer (redis-py 8.1 marks `read_response(timeout=math.inf)` for a change of
  meaning in its next major version; kv does not use it);
- `redis.maint_notifications.MaintNotificationsConfig`, to turn maintenance notifications off
  (while they are on, the pool skips the check that replaces connections a restarted server
  closed).

pyproject.toml pins redis-py to the minor version these were tested with; `check_redis_py`
runs when the adapter opens and names what is missing, rather than failing later on a request.
"""

import importlib
import inspect
from typing import Any

import redis
from redis.asyncio.connection import AbstractConnection, ConnectionPool

TESTED = "8.1"

# (owner, member, parameters it must take by these names)
HOOKS: tuple[tuple[type, str, tuple[str, ...]], ...] = (
    (ConnectionPool, "get_connection", ()),
    (ConnectionPool, "release", ("connection",)),
    (AbstractConnection, "send_packed_command", ("command", "check_health")),
    (AbstractConnection, "read_response", ()),
)


class RedisPyMismatch(RuntimeError):
    """The installed redis-py lacks a member kv's Redis adapter drives directly."""


def check_redis_py(hooks: tuple[tuple[type, str, tuple[str, ...]], ...] = HOOKS) -> None:
    """Raise RedisPyMismatch naming every hooked member that is missing or changed shape."""
    problems: list[str] = []
    for owner, name, parameters in hooks:
        member = getattr(owner, name, None)
        if not callable(member):
            problems.append(f"{owner.__name__}.{name} is missing")
            continue
        signature = inspect.signature(member)
        for parameter in parameters:
            if parameter not in signature.parameters:
                problems.append(f"{owner.__name__}.{name} takes no `{parameter}`")
        required = [
            p.name
            for p in list(signature.parameters.values())[1:]  # after self
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if required and not parameters:
            problems.append(f"{owner.__name__}.{name} now requires {', '.join(required)}")
    try:
        maint_notifications_off()
    except (ImportError, AttributeError):
        problems.append("redis.maint_notifications.MaintNotificationsConfig is missing")
    if problems:
        raise RedisPyMismatch(
            f"the installed redis-py {redis.__version__} does not have what kv's Redis adapter "
            f"uses directly ({'; '.join(problems)}); kv is tested with redis-py {TESTED}.x, "
            "as pinned in pyproject.toml: install that version"
        )


def maint_notifications_off() -> Any:
    """redis-py's setting that turns maintenance notifications off."""
    module = importlib.import_module("redis.maint_notifications")
    return module.MaintNotificationsConfig(enabled=False)
