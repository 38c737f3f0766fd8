"""/metrics: requests by route template, method and status; latencies; backend calls and
errors; the memory backend's size; multiprocess mode; KV_METRICS=false."""

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from kv.adapters.memory import MemoryRepository
from kv.container import Settings
from kv.domain.commands import Create, Delete, Get, Put
from kv.domain.errors import StorageUnavailable
from kv.domain.model import Key
from kv.domain.service import KVService
from kv.entrypoints.cli import METRICS_DIR_VARIABLE, main, shared_metrics_directory
from kv.entrypoints.http import create_app
from kv.metrics import Metrics, strip_convertors
from tests.conftest import open_client
from tests.unit.test_errors_and_auth import UnavailableRepository, client_on


def samples(text: str) -> dict[str, float]:
    """`name{labels}` -> value, for every sample line of an exposition."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def series(name: str, **labels: str) -> str:
    """A sample's name as prometheus-client writes it: labels sorted by name."""
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


async def scrape(client: httpx.AsyncClient) -> dict[str, float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


async def test_requests_are_counted_by_route_template_method_and_status() -> None:
    async for client in open_client(Settings()):
        await client.post("/kv", json={"key": "a/b", "value": 1})
        await client.post("/kv", json={"key": "a/b", "value": 1})
        await client.get("/kv/a/b")
        await client.get("/kv/a/b/")  # the same route
        await client.get("/kv/missing")
        await client.request("BREW", "/kv/a/b")  # unknown methods share one label
        await client.get("/no/such/route")
        got = await scrape(client)
    requests = "kv_http_requests_total"
    assert got[series(requests, route="/kv", method="POST", status="200")] == 1
    assert got[series(requests, route="/kv", method="POST", status="409")] == 1
    assert got[series(requests, route="/kv/{key}", method="GET", status="200")] == 2
    assert got[series(requests, route="/kv/{key}", method="GET", status="404")] == 1
    assert got[series(requests, route="/kv/{key}", method="other", status="405")] == 1
    assert got[series(requests, route="unmatched", method="GET", status="404")] == 1
    count = "kv_http_request_duration_seconds_count"
    assert got[series(count, route="/kv/{key}", method="GET")] == 3
    assert got[series(count, route="/kv", method="POST")] == 2
    # No key, no raw path ever becomes a label value.
    assert not any("a/b" in name or "missing" in name for name in got)


async def test_latency_histograms_have_buckets_and_sums() -> None:
    async for client in open_client(Settings()):
        await client.get("/health")
        got = await scrape(client)
        again = await scrape(client)  # a scrape publishes what is new, once
    labels = {"route": "/health", "method": "GET"}
    for scraped in (got, again):
        assert scraped[series("kv_http_request_duration_seconds_bucket", le="+Inf", **labels)] == 1
        assert scraped[series("kv_http_request_duration_seconds_count", **labels)] == 1
    assert got[series("kv_http_request_duration_seconds_sum", **labels)] > 0
    buckets = [
        (float(name.split('le="')[1].split('"')[0]), value)
        for name, value in got.items()
        if name.startswith("kv_http_request_duration_seconds_bucket") and "/health" in name
    ]
    counts = [value for _, value in sorted(buckets)]
    assert counts == sorted(counts) and counts[-1] == 1  # cumulative, ending at the count
    scrapes = series("kv_http_requests_total", route="/metrics", method="GET", status="200")
    assert scrapes not in got and again[scrapes] == 1  # a request is counted once answered


def timed_service(repository: MemoryRepository) -> tuple[KVService, Metrics]:
    """A service as the app builds it for a backend over the network: calls timed."""
    metrics = Metrics(backend="redis")
    return KVService(metrics.instrument(repository)), metrics


async def test_backend_calls_are_timed_by_backend_and_operation() -> None:
    service, metrics = timed_service(MemoryRepository())
    for key in ("a", "b", "c"):
        await service.create(Create(Key(key), "1"))
    await service.put(Put(Key("a"), "2"))
    await service.put(Put(Key("d"), "3", upsert=True))
    await service.delete(Delete(Key("b")))
    await service.get(Get(Key("a")))
    await service.clear()
    await service.ping()
    got = samples(metrics.render(None)[0].decode())
    calls = "kv_backend_call_duration_seconds_count"
    for operation, count in (
        ("create", 3), ("replace", 1), ("upsert", 1), ("delete", 1), ("get", 1), ("clear", 1),
        ("ping", 1),
    ):  # fmt: skip
        assert got[series(calls, backend="redis", operation=operation)] == count, operation
        assert got[series("kv_backend_errors_total", backend="redis", operation=operation)] == 0
    assert got[series("kv_backend_call_duration_seconds_sum", backend="redis", operation="get")] > 0


async def test_backend_errors_are_counted_by_operation() -> None:
    service, metrics = timed_service(UnavailableRepository())
    a = Key("a")
    for call in (service.get(Get(a)), service.create(Create(a, "1")), service.ping()):
        with pytest.raises(StorageUnavailable):
            await call
    got = samples(metrics.render(None)[0].decode())
    errors = "kv_backend_errors_total"
    for operation in ("get", "create", "ping"):
        assert got[series(errors, backend="redis", operation=operation)] == 1, operation
    assert got[series(errors, backend="redis", operation="delete")] == 0
    # A failed call is timed too.
    calls = "kv_backend_call_duration_seconds_count"
    assert got[series(calls, backend="redis", operation="get")] == 1


async def test_the_memory_backend_publishes_its_keys_and_no_call_timings() -> None:
    async for client in open_client(Settings()):
        for key in ("a", "b", "c"):
            await client.post("/kv", json={"key": key, "value": key})
        await client.delete("/kv/b")
        got = await scrape(client)
    assert got["kv_memory_keys"] == 2
    assert not [name for name in got if name.startswith("kv_backend_")]


async def test_a_backend_failure_is_counted_as_a_503_of_its_route() -> None:
    async for client in client_on(UnavailableRepository(), Settings()):
        await client.get("/kv/a")
        got = await scrape(client)
    requests = "kv_http_requests_total"
    assert got[series(requests, route="/kv/{key}", method="GET", status="503")] == 1


async def test_a_request_refused_before_routing_is_counted_on_its_route() -> None:
    async for client in open_client(Settings(auth_token="s3cret")):
        assert (await client.get("/kv/a")).status_code == 401
        got = await scrape(client)  # /metrics stays open, like /health
    assert got[series("kv_http_requests_total", route="/kv/{key}", method="GET", status="401")] == 1


async def test_every_series_is_named_kv_() -> None:
    async for client in open_client(Settings()):
        await client.get("/kv/a")
        text = (await client.get("/metrics")).text
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert names and all(name.startswith("kv_") for name in names), names


async def test_openmetrics_is_served_when_asked_for() -> None:
    async for client in open_client(Settings()):
        response = await client.get("/metrics", headers={"accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


async def test_metrics_off_means_no_endpoint_and_an_untouched_repository() -> None:
    for enabled in (False, True):
        app = create_app(Settings(metrics=enabled))
        async with LifespanManager(app) as manager:
            assert type(manager._state["service"].repository) is MemoryRepository
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://kv.test") as client:
                assert (await client.get("/metrics")).status_code == (200 if enabled else 404)
                paths = (await client.get("/openapi.json")).json()["paths"]
        assert ("/metrics" in paths) is enabled


@pytest.mark.parametrize(("raw", "expected"), [("false", False), ("0", False), ("true", True)])
def test_kv_metrics_is_read_from_the_environment(raw: str, expected: bool) -> None:
    assert Settings.from_env({"KV_METRICS": raw}).metrics is expected
    assert Settings().metrics is True


def test_the_children_cache_stays_small_whatever_methods_clients_send() -> None:
    metrics = Metrics(backend="memory")
    for index in range(100):
        metrics.observe_request("/kv/{key:anypath}", f"M{index}", 405, 0.001)
    metrics.observe_request("/kv/{key:anypath}", "GET", 200, 0.001)
    text = metrics.render(None)[0].decode()
    assert 'kv_http_requests_total{method="other",route="/kv/{key}",status="405"} 100.0' in text
    assert len(metrics.snapshot()["http"]) == 2


def test_route_templates_lose_their_convertors() -> None:
    assert strip_convertors("/kv/{key:anypath}") == "/kv/{key}"
    assert strip_convertors("/v1/{key:path}") == "/v1/{key}"
    assert strip_convertors("/a/{b}/{c:int}") == "/a/{b}/{c}"


def test_several_processes_add_up_in_multiprocess_mode(tmp_path: Path) -> None:
    """With KV_METRICS_DIR, each process writes its series to a file there and /metrics sums
    all of them: two processes, one request each, are counted twice."""
    code = (
        "import asyncio, os, sys\n"
        "from tests.conftest import open_client\n"
        "from kv.container import Settings\n"
        "async def main():\n"
        "    async for client in open_client(Settings.from_env(os.environ)):\n"
        "        await client.get('/health')\n"
        "        sys.stdout.write((await client.get('/metrics')).text)\n"
        "asyncio.run(main())\n"
    )
    environ = {**os.environ, METRICS_DIR_VARIABLE: str(tmp_path), "KV_LOG_LEVEL": "WARNING"}
    outputs = [
        subprocess.run(
            [sys.executable, "-c", code],
            env=environ,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        for _ in range(2)
    ]
    assert len(list(tmp_path.glob("*.json"))) == 2, "each process writes one file"
    health = 'kv_http_requests_total{method="GET",route="/health",status="200"}'
    assert re.search(re.escape(health) + r" 1\.0", outputs[0]), outputs[0]
    assert re.search(re.escape(health) + r" 2\.0", outputs[1]), outputs[1]
    assert "kv_memory_keys 0.0" in outputs[1]  # the in-process gauge is still published
    bucket = 'kv_http_request_duration_seconds_bucket{le="+Inf",method="GET",route="/health"}'
    assert re.search(re.escape(bucket) + r" 2\.0", outputs[1]), outputs[1]


def test_kv_serve_with_several_workers_gets_a_shared_metrics_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(METRICS_DIR_VARIABLE, raising=False)
    with shared_metrics_directory(True) as directory:
        assert directory is not None and os.path.isdir(directory)
        assert os.environ[METRICS_DIR_VARIABLE] == directory
    assert not os.path.exists(directory)
    assert METRICS_DIR_VARIABLE not in os.environ
    with shared_metrics_directory(False) as directory:
        assert directory is None and METRICS_DIR_VARIABLE not in os.environ
    monkeypatch.setenv(METRICS_DIR_VARIABLE, "/srv/metrics")
    with shared_metrics_directory(True) as directory:
        assert directory == "/srv/metrics"  # the user's own, left as it is


def test_kv_serve_refuses_a_shared_metrics_directory_that_does_not_exist(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(METRICS_DIR_VARIABLE, "/nonexistent/kv-metrics")
    assert main(["serve"]) == 2
    assert "KV_METRICS_DIR='/nonexistent/kv-metrics' is not a directory" in (
        capsys.readouterr().err
    )
