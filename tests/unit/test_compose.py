"""compose.yaml, read as data: each profile runs kv on its backend, wired and health-checked.

No Docker engine is needed: these tests read the file, check that the files it mounts are in
the repository, and let docker-compose validate it when it is installed (`make test` installs
it; `make compose-check` runs the same validation).
"""

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"

PROFILES = ("memory", "tarantool", "redis")
# Every service each profile starts: kv, and the backend server it waits for.
PROFILE_SERVICES = {
    "memory": {"kv-memory"},
    "tarantool": {"kv-tarantool", "tarantool"},
    "redis": {"kv-redis", "redis"},
}
KV_SERVICE = {"memory": "kv-memory", "tarantool": "kv-tarantool", "redis": "kv-redis"}
BACKEND_SERVICE = {"tarantool": "tarantool", "redis": "redis"}
# What points each kv service at its backend (CONTRACT.md, Configuration).
KV_ENVIRONMENT = {
    "memory": {"KV_BACKEND": "memory"},
    "tarantool": {"KV_BACKEND": "tarantool", "KV_TARANTOOL_URL": "kv:kv@tarantool:3301"},
    "redis": {"KV_BACKEND": "redis", "KV_REDIS_URL": "redis://redis:6379/0"},
}
# Files of this repository that compose mounts into the backend containers, and where they
# come from: the backend branches write them (CONTRACT.md, Running).
MOUNTED_FILES = {
    "deploy/tarantool/init.lua": "the Tarantool backend work (the instance file)",
    "deploy/redis/redis.conf": "the Redis backend work (the durable configuration)",
}

Service = dict[str, Any]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), "compose.yaml must be a mapping"
    return loaded


def services_of(compose: dict[str, Any], profile: str) -> dict[str, Service]:
    """The services `docker compose --profile <profile> up` starts (no profiles: always)."""
    services: dict[str, Service] = compose["services"]
    return {
        name: service
        for name, service in services.items()
        if "profiles" not in service or profile in service["profiles"]
    }


def environment(service: Service) -> dict[str, str]:
    raw = service.get("environment", {})
    pairs = dict(item.split("=", 1) for item in raw) if isinstance(raw, list) else raw
    return {str(name): str(value) for name, value in pairs.items()}


def mounts(service: Service) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of each volume entry, short or long syntax."""
    found = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            found.append((entry["source"], entry["target"], bool(entry.get("read_only"))))
        else:
            source, target, *mode = entry.split(":")
            found.append((source, target, "ro" in (mode[0].split(",") if mode else [])))
    return found


def is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def test_uses_the_compose_specification_without_the_obsolete_version_key(
    compose: dict[str, Any],
) -> None:
    assert "version" not in compose


@pytest.mark.parametrize("profile", PROFILES)
def test_each_profile_starts_kv_and_its_backend_only(compose: dict[str, Any], profile: str) -> None:
    assert set(services_of(compose, profile)) == PROFILE_SERVICES[profile]


@pytest.mark.parametrize("profile", PROFILES)
def test_kv_is_built_here_and_configured_for_the_profile_backend(
    compose: dict[str, Any], profile: str
) -> None:
    kv = compose["services"][KV_SERVICE[profile]]
    assert kv["build"] in (".", {"context": "."})
    env = environment(kv)
    assert env.items() >= KV_ENVIRONMENT[profile].items()
    assert kv["ports"] == ["8000:8000"]


@pytest.mark.parametrize("profile", ["tarantool", "redis"])
def test_kv_waits_for_a_healthy_backend(compose: dict[str, Any], profile: str) -> None:
    kv = compose["services"][KV_SERVICE[profile]]
    assert kv["depends_on"] == {BACKEND_SERVICE[profile]: {"condition": "service_healthy"}}


def test_kv_on_memory_waits_for_nothing(compose: dict[str, Any]) -> None:
    assert "depends_on" not in compose["services"]["kv-memory"]


@pytest.mark.parametrize("name", sorted(set().union(*PROFILE_SERVICES.values())))
def test_every_service_is_health_checked_and_restarted(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    check = service["healthcheck"]
    assert not check.get("disable", False)
    assert check["test"][0] in ("CMD", "CMD-SHELL")
    assert len(check["test"]) > 1
    assert service["restart"] == "unless-stopped"


@pytest.mark.parametrize("profile", PROFILES)
def test_kv_healthcheck_probes_ready_without_curl(compose: dict[str, Any], profile: str) -> None:
    command = " ".join(compose["services"][KV_SERVICE[profile]]["healthcheck"]["test"][1:])
    assert "/ready" in command
    assert "curl" not in command  # the python slim image has none


def test_tarantool_runs_the_instance_file_on_its_volume(compose: dict[str, Any]) -> None:
    tarantool = compose["services"]["tarantool"]
    assert re.fullmatch(r"tarantool/tarantool:2\.11\.\d+", tarantool["image"])
    env = environment(tarantool)
    assert env["KV_TARANTOOL_LISTEN"] == "3301"
    by_source = {source: (target, ro) for source, target, ro in mounts(tarantool)}
    instance_file, read_only = by_source["./deploy/tarantool/init.lua"]
    assert read_only
    assert [*tarantool["entrypoint"], *tarantool["command"]] == ["tarantool", instance_file]
    data = [target for source, target, _ in mounts(tarantool) if not is_bind(source)]
    assert data == [env["KV_TARANTOOL_WORK_DIR"]]
    assert tarantool["user"] not in ("root", "0")


def test_kv_logs_in_to_tarantool_as_the_user_init_lua_creates(compose: dict[str, Any]) -> None:
    env = environment(compose["services"]["tarantool"])
    url = urlsplit(
        "tarantool://" + environment(compose["services"]["kv-tarantool"])["KV_TARANTOOL_URL"]
    )
    assert (url.username, url.password) == (env["KV_TARANTOOL_USER"], env["KV_TARANTOOL_PASSWORD"])
    assert (url.hostname, str(url.port)) == ("tarantool", env["KV_TARANTOOL_LISTEN"])
    assert env["KV_TARANTOOL_SPACE"] == "kv"  # kv's default KV_TARANTOOL_SPACE


def test_tarantool_healthcheck_waits_for_kv_space(compose: dict[str, Any]) -> None:
    command = " ".join(compose["services"]["tarantool"]["healthcheck"]["test"][1:])
    assert "KV_TARANTOOL_SPACE" in command
    assert "ping" in command


def test_redis_runs_the_shipped_configuration_on_its_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert re.fullmatch(r"redis:7\.\d+\.\d+", redis["image"])
    by_source = {source: (target, ro) for source, target, ro in mounts(redis)}
    config_file, read_only = by_source["./deploy/redis/redis.conf"]
    assert read_only
    assert redis["command"][:2] == ["redis-server", config_file]
    data = [target for source, target, _ in mounts(redis) if not is_bind(source)]
    assert data == ["/data"]
    options = redis["command"][2:]
    assert options[options.index("--dir") + 1] == "/data"
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"][1:])


def test_kv_reaches_redis_by_its_service_name(compose: dict[str, Any]) -> None:
    url = urlsplit(environment(compose["services"]["kv-redis"])["KV_REDIS_URL"])
    assert (url.hostname, url.port) == ("redis", 6379)


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    used = {
        source
        for service in compose["services"].values()
        for source, _, _ in mounts(service)
        if not is_bind(source)
    }
    assert used == set(compose.get("volumes") or {})


def test_only_the_deploy_files_are_bind_mounted(compose: dict[str, Any]) -> None:
    bound = {
        source.removeprefix("./")
        for service in compose["services"].values()
        for source, _, _ in mounts(service)
        if is_bind(source)
    }
    assert bound == set(MOUNTED_FILES)


@pytest.mark.parametrize("path", sorted(MOUNTED_FILES))
def test_mounted_files_exist_in_the_repository(path: str) -> None:
    # Deliberately a failure, not a skip: compose would mount an empty directory instead.
    assert (ROOT / path).is_file(), (
        f"compose.yaml mounts {path}, which is missing: it comes from {MOUNTED_FILES[path]}; "
        "merge that branch before this one is complete"
    )


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
@pytest.mark.parametrize("profile", PROFILES)
def test_docker_compose_validates_the_profile(profile: str) -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), "--profile", profile, "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
