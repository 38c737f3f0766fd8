"""Slow and idle clients against a real `kv serve`: each is cut off after its deadline, and
while it dawdles, other clients are served.

The deadlines are set short here (1-2 s) to keep the suite fast; the assertions give the
server generous slack past each deadline (a loaded 2-core machine fires timers late), and
check it never cuts a client off before its deadline (a timer cannot fire early).
"""

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.servers.kv import Server, start_kv, stop_kv

KEEP_ALIVE = 1.0
HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
MAX_HEADER_BYTES = 8192
SLACK = 8.0  # seconds past a deadline before the test calls it missed

LIMITS = {
    "KV_KEEP_ALIVE_SECONDS": str(KEEP_ALIVE),
    "KV_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
    "KV_BODY_TIMEOUT": str(BODY_TIMEOUT),
    "KV_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
    "KV_MAX_BODY_BYTES": str(16 * 1024 * 1024),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_kv(tmp_path_factory.mktemp("limits"), {"KV_BACKEND": "memory", **LIMITS})
    yield server
    if server.process.poll() is None:
        stop_kv(server)


def connect(server: Server, *, receive_buffer: int | None = None) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.socket()
    if receive_buffer is not None:
        # Before connecting: the TCP window is negotiated from it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(10)
    sock.connect((host, int(port)))
    sock.settimeout(HEADER_TIMEOUT + BODY_TIMEOUT + SLACK)
    return sock


def read_until_closed(sock: socket.socket, within: float = 60.0) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed it
    (monotonic). Fails if the server keeps it open past the socket's timeout, or is still
    sending `within` seconds from now."""
    received = b""
    deadline = time.monotonic() + within
    while True:
        if time.monotonic() > deadline:
            pytest.fail(f"the server was still sending after {within} s ({len(received)} bytes)")
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        except TimeoutError:
            pytest.fail(f"the server kept the connection open; received {received[:300]!r}")
        if not chunk:
            return received, time.monotonic()
        received += chunk


def served_meanwhile(server: Server, until: float) -> int:
    """Requests another client gets answered (all must be) until `until` (monotonic)."""
    answered = 0
    with httpx.Client(base_url=server.url, timeout=10) as other:
        while True:  # at least once, however late this starts
            key = f"meanwhile-{time.monotonic_ns()}"
            assert other.post("/kv", json={"key": key, "value": answered}).status_code == 200
            assert other.get(f"/kv/{key}").json()["value"] == answered
            answered += 1
            if time.monotonic() >= until:
                return answered


def status_and_problem(response: bytes) -> tuple[int, dict[str, object]]:
    """The status and problem+json body of an answer the protocol wrote, which must also carry
    a request id and close the connection."""
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    headers = head_fields(head)
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    assert 0 < len(headers["x-request-id"]) <= 128
    problem: dict[str, object] = orjson.loads(body)
    assert problem["status"] == status
    return status, problem


def request_id(response: bytes) -> str:
    return head_fields(response.partition(b"\r\n\r\n")[0])["x-request-id"]


def head_fields(head: bytes) -> dict[str, str]:
    """A response head's fields, names lowercased."""
    fields = {}
    for line in head.decode().split("\r\n")[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return fields


def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(
    server: Server,
) -> None:
    sock = connect(server)
    # Times are taken before the event that starts the server's timer: it cannot fire
    # sooner than its deadline after them.
    asked = time.monotonic()
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: kv\r\n\r\n")
    response, closed = read_until_closed(sock)
    # One whole answer (its head and body may come in separate reads), then the close.
    assert response.startswith(b"HTTP/1.1 200 ") and response.endswith(b'{"status":"ok"}')
    assert response.count(b"HTTP/1.1") == 1
    assert KEEP_ALIVE * 0.9 <= closed - asked <= KEEP_ALIVE + SLACK


def test_a_connection_that_never_sends_a_request_is_closed_after_the_header_timeout(
    server: Server,
) -> None:
    opened = time.monotonic()
    sock = connect(server)
    assert served_meanwhile(server, opened + HEADER_TIMEOUT * 0.5) > 0
    received, closed = read_until_closed(sock)
    assert received == b""
    assert HEADER_TIMEOUT * 0.9 <= closed - opened <= HEADER_TIMEOUT + SLACK


def test_a_head_sent_slowly_gets_408_and_other_clients_are_served_meanwhile(
    server: Server,
) -> None:
    started = time.monotonic()
    sock = connect(server)
    sock.sendall(b"PUT /kv/slow HTTP/1.1\r\nHost: kv\r\n")
    # A byte now and then keeps resetting uvicorn's own keep-alive timer; not this deadline.
    answered = 0
    for header in (b"X-A: 1\r\n", b"X-B: 2\r\n", b"X-C: 3\r\n"):
        answered += served_meanwhile(server, time.monotonic() + HEADER_TIMEOUT / 4)
        if time.monotonic() - started > HEADER_TIMEOUT * 0.6:
            break  # a slow machine: leave the deadline to come, do not write past it
        try:
            sock.sendall(header)
        except (BrokenPipeError, ConnectionResetError):
            break
    assert answered > 0
    response, closed = read_until_closed(sock)
    status, problem = status_and_problem(response)
    assert status == 408 and "headers did not arrive" in str(problem["detail"])
    assert HEADER_TIMEOUT * 0.9 <= closed - started <= HEADER_TIMEOUT + SLACK


def test_a_head_sent_slowly_after_a_response_gets_408_counted_from_that_response(
    server: Server,
) -> None:
    sock = connect(server)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: kv\r\n\r\n")
    first = b""
    while not first.endswith(b'{"status":"ok"}'):
        first += sock.recv(65536)
    answered = time.monotonic()  # the deadline runs from the response, not the next byte
    sock.sendall(b"PUT /kv/slow HTTP/1.1\r\n")
    for header in (b"X-A: 1\r\n", b"X-B: 2\r\n", b"X-C: 3\r\n"):
        time.sleep(KEEP_ALIVE * 0.5)  # each byte resets uvicorn's keep-alive timer
        if time.monotonic() - answered > HEADER_TIMEOUT * 0.6:
            break
        sock.sendall(header)
    response, closed = read_until_closed(sock)
    status, problem = status_and_problem(response)
    assert status == 408 and "headers did not arrive" in str(problem["detail"])
    assert HEADER_TIMEOUT * 0.9 <= closed - answered <= HEADER_TIMEOUT + SLACK


def test_a_body_never_finished_gets_408_and_other_clients_are_served_meanwhile(
    server: Server,
) -> None:
    sock = connect(server)
    started = time.monotonic()
    sock.sendall(b'POST /kv HTTP/1.1\r\nHost: kv\r\nContent-Length: 100\r\n\r\n{"key": "late')
    assert served_meanwhile(server, started + BODY_TIMEOUT * 0.5) > 0
    if time.monotonic() - started < BODY_TIMEOUT * 0.6:
        sock.sendall(b'", "va')  # more of it, still not all
    response, closed = read_until_closed(sock)
    status, problem = status_and_problem(response)
    assert status == 408 and "body did not arrive" in str(problem["detail"])
    assert BODY_TIMEOUT * 0.9 <= closed - started <= BODY_TIMEOUT + SLACK
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/kv/late").status_code == 404  # nothing half-written


def test_a_head_over_the_size_limit_gets_431_at_once(server: Server) -> None:
    sock = connect(server)
    sock.sendall(
        b"GET /health HTTP/1.1\r\nHost: kv\r\nX-Request-ID: mine-2\r\nX-Big: "
        + b"a" * MAX_HEADER_BYTES
    )
    response, _ = read_until_closed(sock)
    status, _ = status_and_problem(response)
    assert (status, request_id(response)) == (431, "mine-2")
    # Under the limit is fine.
    with httpx.Client(base_url=server.url, timeout=10) as client:
        big = {"x-big": "a" * (MAX_HEADER_BYTES // 2)}
        assert client.get("/health", headers=big).status_code == 200


def test_a_client_that_stops_reading_is_disconnected_and_others_are_served(
    server: Server,
) -> None:
    value = "x" * (8 * 1024 * 1024)  # more than the kernel buffers between the two ends
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post("/kv", json={"key": "large", "value": value}).status_code == 200
    sock = connect(server, receive_buffer=4096)
    requests = 4
    sock.sendall(b"GET /kv/large HTTP/1.1\r\nHost: kv\r\n\r\n" * requests)
    started = time.monotonic()
    assert served_meanwhile(server, started + BODY_TIMEOUT * 0.75) > 0
    time.sleep(BODY_TIMEOUT)  # now read: what is left in the buffers, then the end
    received, _ = read_until_closed(sock, within=SLACK)
    assert len(received) < requests * len(value), "the server waited for the reader"
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/health").status_code == 200
    assert "Traceback" not in server.log.read_text()


def test_a_client_reading_slowly_is_cut_off_after_the_send_deadline(server: Server) -> None:
    """A client that takes ~640 bytes a second holds its connection as long as the response
    lasts unless kv cuts it off; fast clients take 8 MiB whole meanwhile."""
    value = "y" * (8 * 1024 * 1024)
    key = f"slowly-{time.monotonic_ns()}"
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post("/kv", json={"key": key, "value": value}).status_code == 200
    sock = connect(server, receive_buffer=4096)
    sock.sendall(b"GET /kv/%b HTTP/1.1\r\nHost: kv\r\n\r\n" % key.encode())
    slowly_until = time.monotonic() + 2 * BODY_TIMEOUT
    received = 0
    with httpx.Client(base_url=server.url, timeout=30) as fast:
        while time.monotonic() < slowly_until:
            try:
                chunk = sock.recv(64)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                break
            received += len(chunk)
            if received <= 64 * 3:  # while it dawdles, a fast client is served whole
                assert len(fast.get(f"/kv/{key}").json()["value"]) == len(value)
            time.sleep(0.1)
    # Then read quickly: what kv had sent before it cut the connection off, then the end.
    received += len(read_until_closed(sock, within=SLACK)[0])
    assert received < len(value), f"kv waited for the slow reader ({received} bytes)"
    assert "Traceback" not in server.log.read_text()


def test_over_the_concurrency_limit_is_a_503_problem_until_idle_connections_are_closed(
    tmp_path: Path,
) -> None:
    limit = 4
    server = start_kv(
        tmp_path, {"KV_BACKEND": "memory", "KV_LIMIT_CONCURRENCY": str(limit), **LIMITS}
    )
    try:
        # Silent connections, as a slowloris would open them: they fill the limit...
        idle = [connect(server) for _ in range(limit)]
        opened = time.monotonic()
        with httpx.Client(base_url=server.url, timeout=10) as client:
            refused = client.get("/kv/a")
            assert refused.status_code == 503
            assert refused.headers["retry-after"].isdigit()
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.json()["status"] == 503
            assert refused.headers["x-request-id"]
            mine = client.get("/kv/a", headers={"x-request-id": "mine-503"})
            assert mine.status_code == 503 and mine.headers["x-request-id"] == "mine-503"
            # ...but only until the header timeout closes them: then clients are served.
            deadline = opened + HEADER_TIMEOUT + SLACK
            while (status := client.get("/kv/a").status_code) == 503:
                assert time.monotonic() < deadline, "idle connections still hold the limit"
                time.sleep(0.2)
            assert status == 404
        for sock in idle:
            assert read_until_closed(sock)[0] == b""
    finally:
        stop_kv(server)
    assert "over KV_LIMIT_CONCURRENCY=4: refused" in server.log.read_text()


MALFORMED = {
    # A header name with a space: no usable id was parsed before it.
    "bad header name": (b"GET /kv/x HTTP/1.1\r\nHost: kv\r\nBad Header: 1\r\n\r\n", 400, None),
    # A bad Content-Length: the id sent before it is echoed.
    "bad content-length": (
        b"PUT /kv/x HTTP/1.1\r\nHost: kv\r\nX-Request-ID: mine-1\r\nContent-Length: 1x\r\n\r\n",
        400,
        "mine-1",
    ),
    # Methods the parser does not know (RFC 9110 15.6.2); methods are case-sensitive.
    "unknown method": (b"FOO /kv/x HTTP/1.1\r\nHost: kv\r\n\r\n", 501, None),
    "lowercase method": (b"get /kv/x HTTP/1.1\r\nHost: kv\r\n\r\n", 501, None),
    # A request target uvicorn cannot read (the authority form of a CONNECT).
    "connect": (
        b"CONNECT kv:443 HTTP/1.1\r\nHost: kv:443\r\nX-Request-ID: mine-3\r\n\r\n",
        400,
        "mine-3",
    ),
    # RFC 9112 3.2: an HTTP/1.1 request without Host, any request with two.
    "no host": (b"GET /health HTTP/1.1\r\nX-Request-ID: mine-4\r\n\r\n", 400, "mine-4"),
    "two hosts": (b"GET /health HTTP/1.1\r\nHost: kv\r\nHost: other\r\n\r\n", 400, None),
    "two hosts, HTTP/1.0": (b"GET /health HTTP/1.0\r\nHost: kv\r\nHost: kv\r\n\r\n", 400, None),
}


@pytest.mark.parametrize(
    ("request_bytes", "status", "given_id"), MALFORMED.values(), ids=MALFORMED.keys()
)
def test_the_protocol_answers_malformed_requests_with_a_problem_and_a_request_id(
    server: Server, request_bytes: bytes, status: int, given_id: str | None
) -> None:
    sock = connect(server)
    sock.sendall(request_bytes)
    response, _ = read_until_closed(sock)
    assert status_and_problem(response)[0] == status
    if given_id is not None:
        assert request_id(response) == given_id
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/health").status_code == 200  # the server goes on


def responses(received: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The status, fields and body of each response in `received` (Content-Length framed)."""
    answers = []
    while received:
        head, _, rest = received.partition(b"\r\n\r\n")
        fields = head_fields(head)
        length = int(fields["content-length"])
        answers.append((int(head.split(b" ")[1]), fields, rest[:length]))
        received = rest[length:]
    return answers


UPGRADES = {
    # What `curl --http2 -d ...` sends to an http:// URL.
    "h2c": b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
    "websocket": b"Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("upgrade", UPGRADES.values(), ids=UPGRADES.keys())
def test_a_request_asking_to_upgrade_is_served_as_http_1_1_with_its_body(
    server: Server, upgrade: bytes, chunked: bool
) -> None:
    key = f"upgrade-{time.monotonic_ns()}"
    body = orjson.dumps({"key": key, "value": {"sent": "with an upgrade"}})
    framed = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body) if chunked else body
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % len(body)
    sock = connect(server)
    # The upgrade request, and a request pipelined after it on the same connection.
    sock.sendall(
        b"POST /kv HTTP/1.1\r\nHost: kv\r\n%b%b\r\n\r\n%b" % (upgrade, framing, framed)
        + b"GET /kv/%b HTTP/1.1\r\nHost: kv\r\nConnection: close\r\n\r\n" % key.encode()
    )
    received, _ = read_until_closed(sock)
    answers = responses(received)
    assert [status for status, _, _ in answers] == [200, 200], received
    for _, _, answer in answers:
        assert orjson.loads(answer)["value"] == {"sent": "with an upgrade"}


def test_a_bodiless_request_asking_to_upgrade_is_served_and_so_is_the_next(
    server: Server,
) -> None:
    sock = connect(server)
    sock.sendall(
        b"GET /health HTTP/1.1\r\nHost: kv\r\n%b\r\n" % UPGRADES["websocket"]
        + b"GET /health HTTP/1.1\r\nHost: kv\r\nConnection: close\r\n\r\n"
    )
    received, _ = read_until_closed(sock)
    assert [status for status, _, _ in responses(received)] == [200, 200], received


def test_an_http_1_0_request_without_host_is_served(server: Server) -> None:
    sock = connect(server)
    sock.sendall(b"GET /health HTTP/1.0\r\n\r\n")
    received, _ = read_until_closed(sock)
    assert [status for status, _, _ in responses(received)] == [200]


def test_a_request_refused_after_pipelined_ones_is_answered_after_them(server: Server) -> None:
    key = f"pipelined-{time.monotonic_ns()}"
    body = orjson.dumps({"key": key, "value": 1})
    sock = connect(server)
    sock.sendall(
        b"POST /kv HTTP/1.1\r\nHost: kv\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
        + b"GET /health HTTP/1.1\r\nHost: kv\r\n\r\n"
        + b"GET /health HTTP/1.1\r\n\r\n"  # no Host: refused, and nothing after it is read
        + b"DELETE /kv/%b HTTP/1.1\r\nHost: kv\r\n\r\n" % key.encode()
    )
    received, _ = read_until_closed(sock)
    answers = responses(received)
    assert [status for status, _, _ in answers] == [200, 200, 400], received
    assert answers[2][1]["content-type"] == "application/problem+json"
    assert answers[2][1]["connection"] == "close"
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get(f"/kv/{key}").status_code == 200  # the DELETE was not read


def test_a_head_over_the_size_limit_gets_431_however_it_arrives(server: Server) -> None:
    # The whole head (four times the limit) in one write, so it arrives in one read.
    big = b"GET /health HTTP/1.1\r\nHost: kv\r\nX-Request-ID: mine-5\r\nX-Big: %b\r\n\r\n"
    sock = connect(server)
    sock.sendall(big % (b"a" * 4 * MAX_HEADER_BYTES))
    response, _ = read_until_closed(sock)
    assert (status_and_problem(response)[0], request_id(response)) == (431, "mine-5")
    # Behind a request with a body, in the same write: that one is answered first.
    key = f"before-a-big-head-{time.monotonic_ns()}"
    body = orjson.dumps({"key": key, "value": "x" * 1000})
    sock = connect(server)
    sock.sendall(
        b"POST /kv HTTP/1.1\r\nHost: kv\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
        + big % (b"a" * 2 * MAX_HEADER_BYTES)
    )
    received, _ = read_until_closed(sock)
    assert [status for status, _, _ in responses(received)] == [200, 431]
    # Many headers, each small, count too.
    many = b"".join(b"X-H%d: %b\r\n" % (i, b"v" * 100) for i in range(MAX_HEADER_BYTES // 100))
    sock = connect(server)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: kv\r\n%b\r\n" % many)
    assert status_and_problem(read_until_closed(sock)[0])[0] == 431


def test_a_client_that_half_closes_gets_the_answers_to_what_it_sent(
    tmp_path: Path, redis_server: Any
) -> None:
    """`shutdown(SHUT_WR)` after the requests: each is answered, then the connection closed.

    On Redis, whose calls the handler awaits, so the end of the stream arrives before the
    answer is written (on memory the answer is written first)."""
    url = redis_server.settings()["redis_url"]
    server = start_kv(tmp_path, {"KV_BACKEND": "redis", "KV_REDIS_URL": url, **LIMITS})
    try:
        key = f"half-closed-{time.monotonic_ns()}"
        created = orjson.dumps({"key": key, "value": 1})
        replaced = orjson.dumps({"value": 2})
        sock = connect(server)
        sock.sendall(
            b"POST /kv HTTP/1.1\r\nHost: kv\r\nContent-Length: %d\r\n\r\n%b"
            % (len(created), created)
            + b"PUT /kv/%b HTTP/1.1\r\nHost: kv\r\nContent-Length: %d\r\n\r\n%b"
            % (key.encode(), len(replaced), replaced)
        )
        sock.shutdown(socket.SHUT_WR)
        received, _ = read_until_closed(sock)
        answers = responses(received)
        assert [status for status, _, _ in answers] == [200, 200], received
        assert orjson.loads(answers[1][2])["revision"] == 2
        # A client that half-closes with nothing left to answer is closed at once.
        sock = connect(server)
        sock.shutdown(socket.SHUT_WR)
        assert read_until_closed(sock, within=KEEP_ALIVE / 2)[0] == b""
    finally:
        stop_kv(server)
