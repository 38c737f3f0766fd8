"""Real Redis servers for the tests (a pytest plugin, registered in tests/conftest.py).

`redis_server` and `redis_cluster_server` are started once per session and shared (tests use
unique keys); a test that stops, kills or pauses a server asks for its own,
`disposable_redis_server` or `disposable_redis_cluster_server`. Every server runs the shipped
`deploy/redis/redis.conf` on a free loopback port with its files in a temporary directory, and
is stopped by its own pid. A missing redis-server fails the tests: `make test` installs it.
"""

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from tests.servers import ServerProcess
from tests.servers import free_port as any_free_port

REDIS_CONF = Path(__file__).resolve().parents[2] / "deploy" / "redis" / "redis.conf"
START_TIMEOUT = 15.0
CLUSTER_BUS_OFFSET = 10000  # a cluster node also listens on port + 10000


def executable(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed; `make test` installs it (Debian packages redis-server "
            "and redis-tools), or run: sudo apt-get install redis-server redis-tools",
            pytrace=False,
        )
    return path


def free_port(*, cluster: bool = False) -> int:
    """A TCP port free on 127.0.0.1 now (and its cluster bus port, for a cluster node)."""
    for _ in range(100):
        port = any_free_port()
        if not cluster:
            return port
        if port + CLUSTER_BUS_OFFSET < 65536 and _port_is_free(port + CLUSTER_BUS_OFFSET):
            return port
    raise RuntimeError("found no free port pair for a Redis Cluster node")


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def command(port: int, *args: str, timeout: float = 1.0) -> bytes:
    """Send one command on a fresh connection; the raw first reply line ('' when none)."""
    request = b"*%d\r\n" % len(args) + b"".join(
        b"$%d\r\n%b\r\n" % (len(arg.encode()), arg.encode()) for arg in args
    )
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
            connection.sendall(request)
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = connection.recv(65536)
                if not chunk:
                    break
                reply += chunk
            return reply
    except OSError:
        return b""


class RedisProcess(ServerProcess):
    """One redis-server on 127.0.0.1:`port`, keeping its files in `directory`."""

    stop_seconds = 15.0

    def __init__(self, directory: Path, *, cluster: bool = False) -> None:
        self.directory = directory
        self.cluster = cluster
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / "redis.log"
        directory.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        """Start on a new free port the first time, on the same port and files after that."""
        assert self.process is None, "already running"
        if self.port:
            self._spawn()
            self.wait_ready()
            return
        # A free port can be taken by someone else before Redis binds it: try another.
        for _ in range(5):
            self.port = free_port(cluster=self.cluster)
            self.log.unlink(missing_ok=True)
            self._spawn()
            try:
                self.wait_ready()
            except RuntimeError:
                if self.process is not None or "Address already in use" not in self.log_tail():
                    raise
                continue
            return
        raise RuntimeError(f"redis-server found no free port; log:\n{self.log_tail()}")

    def _spawn(self) -> None:
        args = [executable("redis-server"), str(REDIS_CONF)]
        args += ["--port", str(self.port), "--dir", str(self.directory)]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Until PING answers PONG (not LOADING): the dataset is loaded and commands run."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"redis-server exited; log:\n{self.log_tail()}")
            if command(self.port, "PING").startswith(b"+PONG"):
                return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer within {timeout} s:\n{self.log_tail()}")


class RedisServer:
    """A standalone Redis, what `backend_settings` points the service at for "redis"."""

    def __init__(self, directory: Path) -> None:
        self.node = RedisProcess(directory)

    @property
    def port(self) -> int:
        return self.node.port

    def settings(self) -> dict[str, Any]:
        return {"backend": "redis", "redis_url": f"redis://127.0.0.1:{self.port}/0"}

    def client(self) -> "redis.Redis":
        """A synchronous client for looking at the server's own state (close it after use)."""
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=5)

    def start(self) -> None:
        self.node.start()

    def stop(self) -> None:
        self.node.stop()

    def kill(self) -> None:
        self.node.kill()

    def pause(self) -> None:
        self.node.pause()

    def resume(self) -> None:
        self.node.resume()


class RedisClusterServer:
    """Three masters, no replicas, all 16384 slots covered ("redis_cluster" in the tests)."""

    def __init__(self, directory: Path, *, size: int = 3) -> None:
        self.nodes = [RedisProcess(directory / f"node{i}", cluster=True) for i in range(size)]

    def settings(self) -> dict[str, Any]:
        return {
            "backend": "redis",
            "redis_url": f"redis://127.0.0.1:{self.nodes[0].port}",
            "redis_cluster": True,
        }

    def create(self) -> None:
        """Start the nodes and join them into a cluster."""
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        options = ["--cluster-replicas", "0", "--cluster-yes"]
        subprocess.run(
            [executable("redis-cli"), "--cluster", "create", *addresses, *options],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.wait_ok()

    def wait_ok(self, timeout: float = START_TIMEOUT) -> None:
        """Until every node reports cluster_state:ok."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._cluster_state(node) == "ok" for node in self.nodes):
                return
            time.sleep(0.05)
        raise RuntimeError(f"the Redis Cluster did not reach cluster_state:ok in {timeout} s")

    @staticmethod
    def _cluster_state(node: RedisProcess) -> str:
        with (
            contextlib.suppress(redis.RedisError),
            redis.Redis(port=node.port, socket_timeout=1, decode_responses=True) as client,
        ):
            return str(client.cluster("INFO").get("cluster_state"))
        return "unreachable"

    def node_of(self, key: str) -> RedisProcess:
        """The master that owns the Redis key `key` (prefix included)."""
        slot = key_slot(key.encode())
        for node in self.nodes:  # ask the first node that answers
            try:
                with redis.Redis(port=node.port, socket_timeout=5) as client:
                    ranges = client.cluster("SLOTS")
            except redis.RedisError:
                continue
            for start, end, (_, owner, *_), *_ in ranges:
                if start <= slot <= end:
                    return next(n for n in self.nodes if n.port == owner)
        raise LookupError(f"no node answered for slot {slot}")

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        self.wait_ok()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()


def _serve(server: RedisServer) -> Iterator[RedisServer]:
    try:
        server.start()
    except RuntimeError as exc:
        server.stop()
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


def _serve_cluster(cluster: RedisClusterServer) -> Iterator[RedisClusterServer]:
    try:
        cluster.create()
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        cluster.stop()
        pytest.fail(f"could not start a Redis Cluster: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from _serve(RedisServer(tmp_path_factory.mktemp("redis")))


@pytest.fixture(scope="session")
def redis_cluster_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RedisClusterServer]:
    yield from _serve_cluster(RedisClusterServer(tmp_path_factory.mktemp("redis-cluster")))


@pytest.fixture
def disposable_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, free to stop, kill or pause."""
    yield from _serve(RedisServer(tmp_path / "redis"))


@pytest.fixture
def disposable_redis_cluster_server(tmp_path: Path) -> Iterator[RedisClusterServer]:
    """A Redis Cluster of this test's own, free to stop or kill nodes of."""
    yield from _serve_cluster(RedisClusterServer(tmp_path / "redis-cluster"))
