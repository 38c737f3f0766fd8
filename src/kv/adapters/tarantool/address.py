"""Where and as whom to connect to Tarantool (KV_TARANTOOL_URL), and the connection made."""

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import asynctnt

DEFAULT_PORT = 3301
# init.lua's KV_TARANTOOL_USER and KV_TARANTOOL_PASSWORD defaults: a URL without a user
# connects as this one, so kv's default URL fits init.lua's defaults.
DEFAULT_USER = "kv"
DEFAULT_PASSWORD = "kv"  # noqa: S105 (init.lua's documented default, not a secret)
GUEST = "guest"


@dataclass(frozen=True, slots=True)
class TarantoolAddress:
    """Where and as whom to connect: `[tarantool://][user[:password]@]host[:port]`.

    Without a user, init.lua's default user and password (`kv`, `kv`); `guest@host` connects
    without authenticating.
    """

    host: str
    port: int
    user: str = DEFAULT_USER
    password: str | None = DEFAULT_PASSWORD

    @classmethod
    def parse(cls, url: str) -> "TarantoolAddress":
        """Raise ValueError saying what is wrong with `url`."""
        text = url.strip()
        scheme, separator, rest = text.partition("://")
        if not separator:
            rest = text
        elif scheme.lower() != "tarantool":
            raise ValueError(f"the scheme must be tarantool:// or none, not {scheme}://")
        parts = urlsplit(f"//{rest}")
        if parts.path or parts.query or parts.fragment:
            raise ValueError("expected [tarantool://][user[:password]@]host:port and nothing after")
        if not parts.hostname:
            raise ValueError("the host is missing")
        try:
            port = DEFAULT_PORT if parts.port is None else parts.port
        except ValueError:
            port = 0
        if not 0 < port < 65536:
            raise ValueError("the port must be a number from 1 to 65535")
        password = unquote(parts.password) if parts.password is not None else None
        if not parts.username:
            return cls(parts.hostname, port, DEFAULT_USER, password or DEFAULT_PASSWORD)
        return cls(parts.hostname, port, unquote(parts.username), password)

    def connection(self, *, timeout: float, reconnect: float) -> asynctnt.Connection:
        """A connection (not yet open) whose every request has the deadline `timeout`."""
        guest = self.user == GUEST
        return asynctnt.Connection(
            host=self.host,
            port=self.port,
            username=None if guest else self.user,
            password=None if guest else self.password,
            # Requests name the space by id and functions by name: no schema to fetch at each
            # (re)connection, nor to refetch when the schema changes.
            fetch_schema=False,
            auto_refetch_schema=False,
            connect_timeout=timeout,
            request_timeout=timeout,
            reconnect_timeout=reconnect,
        )

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{self.port}"
