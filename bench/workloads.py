"""The benchmark's HTTP workloads, described once for wrk (a Lua script) and for the paced
client (bench/paced.py: raw HTTP/1.1 requests, one after another)."""

import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

VALUE = '{"n":12345,"s":"some text"}'
HOT_KEYS = 100  # "90/10 read/write" spreads over hot0 .. hot99, created before the runs


@dataclass(frozen=True)
class Workload:
    name: str
    path: str  # the URL wrk is given (its script may send others)
    lua: str | None  # wrk's script; None: GET of `path`
    # The same requests, for the paced client (only the workloads measured at a fixed rate).
    requests: Callable[[], Iterator[bytes]] | None = None


def _request(method: str, path: str, body: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\n"
    if method in ("PUT", "POST"):
        head += f"Content-Length: {len(body.encode())}\r\n"
    return (head + "\r\n" + body).encode()


def _same(request: bytes) -> Callable[[], Iterator[bytes]]:
    return lambda: itertools.repeat(request)


def _new_keys() -> Iterator[bytes]:
    prefix = f"paced-{random.randrange(10**9)}"
    for counter in itertools.count(1):
        yield _request("POST", "/kv", f'{{"key":"{prefix}-{counter}","value":{VALUE}}}')


def _read_write() -> Iterator[bytes]:
    for counter in itertools.count(1):
        path = f"/kv/hot{counter % HOT_KEYS}"
        if counter % 10 == 0:
            yield _request("PUT", path, f'{{"value":{VALUE}}}')
        else:
            yield _request("GET", path)


SATURATION = (
    Workload("GET existing", "/kv/bench", None, _same(_request("GET", "/kv/bench"))),
    Workload("GET missing", "/kv/missing-key", None, _same(_request("GET", "/kv/missing-key"))),
    Workload(
        "PUT overwrite",
        "/kv/bench",
        f"""
wrk.method = "PUT"
wrk.body = '{{"value": {VALUE}}}'
""",
        _same(_request("PUT", "/kv/bench", f'{{"value": {VALUE}}}')),
    ),
    Workload(
        "POST new keys",
        "/kv",
        f"""
counter = 0
prefix = tostring(os.time()) .. tostring(math.random(1, 1000000000))
request = function()
  counter = counter + 1
  local body = '{{"key":"new-' .. prefix .. '-' .. counter .. '","value":{VALUE}}}'
  return wrk.format("POST", "/kv", nil, body)
end
""",
        _new_keys,
    ),
    Workload(
        "90/10 read/write",
        "/kv/hot0",
        f"""
counter = 0
request = function()
  counter = counter + 1
  local path = "/kv/hot" .. (counter % {HOT_KEYS})
  if counter % 10 == 0 then
    return wrk.format("PUT", path, nil, '{{"value":{VALUE}}}')
  end
  return wrk.format("GET", path)
end
""",
        _read_write,
    ),
)
BY_NAME = {workload.name: workload for workload in SATURATION}
# Measured at a fixed rate too: the three that the targets name.
FIXED_RATE = ("GET existing", "PUT overwrite", "POST new keys")
