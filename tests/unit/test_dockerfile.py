"""The Dockerfile and .dockerignore, read statically (no Docker engine needed to run these)."""

import json
import re
import shlex
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[2]


class Instruction(NamedTuple):
    name: str  # upper case: FROM, RUN, COPY...
    args: str  # continuation lines joined


class Stage(NamedTuple):
    image: str  # with build arguments substituted
    alias: str | None
    instructions: list[Instruction]


def parse(text: str) -> tuple[list[Instruction], list[Stage]]:
    """Global instructions (before the first FROM) and the build stages."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    globals_: list[Instruction] = []
    stages: list[Stage] = []
    defaults: dict[str, str] = {}
    for line in logical:
        name, _, args = line.partition(" ")
        instruction = Instruction(name.upper(), args.strip())
        if instruction.name == "FROM":
            image, *rest = instruction.args.split()
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: defaults[m[1] or m[2]], image)
            alias = rest[1] if len(rest) == 2 and rest[0].upper() == "AS" else None
            stages.append(Stage(image, alias, []))
        elif stages:
            stages[-1].instructions.append(instruction)
        else:
            globals_.append(instruction)
            if instruction.name == "ARG" and "=" in instruction.args:
                key, _, value = instruction.args.partition("=")
                defaults[key] = value
    return globals_, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse((ROOT / "Dockerfile").read_text(encoding="utf-8"))[1]


@pytest.fixture(scope="module")
def runtime(stages: list[Stage]) -> Stage:
    return stages[-1]


def commands(stage: Stage, name: str) -> list[str]:
    return [i.args for i in stage.instructions if i.name == name]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not the exec (JSON) form: {args}"
    return [str(item) for item in value]


def test_is_multi_stage_on_python_311_slim(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    for stage in stages:
        assert stage.image.startswith("python:3.11-slim"), stage.image


def test_dependencies_come_from_the_lock_with_hashes(stages: list[Stage]) -> None:
    build = stages[0]
    installs = [shlex.split(run) for run in commands(build, "RUN") if "pip install" in run]
    from_lock = [words for words in installs if "requirements.lock" in words]
    assert from_lock, "no `pip install -r requirements.lock` in the build stage"
    assert "--require-hashes" in from_lock[0]
    assert from_lock[0][from_lock[0].index("requirements.lock") - 1] == "-r"
    package = [words for words in installs if words[-1] == "."]
    assert package, "the package itself is not installed in the build stage"
    assert "--no-deps" in package[0]


def test_runtime_gets_the_venv_and_installs_nothing(stages: list[Stage], runtime: Stage) -> None:
    build = stages[0]
    copies = commands(runtime, "COPY")
    assert any(copy.startswith(f"--from={build.alias}") for copy in copies), copies
    assert not any("pip" in run for run in commands(runtime, "RUN"))


def test_runs_as_a_non_root_user(runtime: Stage) -> None:
    users = commands(runtime, "USER")
    assert users, "no USER in the runtime stage: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")


def test_healthcheck_probes_ready_without_curl(runtime: Stage) -> None:
    (healthcheck,) = commands(runtime, "HEALTHCHECK")
    options, _, command = healthcheck.partition("CMD ")
    probe = " ".join(exec_form(command))
    assert "/ready" in probe
    assert "urllib" in probe
    assert "curl" not in probe
    assert "--timeout=" in options


def test_serves_kv_on_all_interfaces_port_8000(runtime: Stage) -> None:
    entrypoint = [exec_form(args) for args in commands(runtime, "ENTRYPOINT")]
    cmd = [exec_form(args) for args in commands(runtime, "CMD")]
    assert [*(entrypoint[-1] if entrypoint else []), *cmd[-1]] == [
        "kv",
        "serve",
        "--host",
        "0.0.0.0",
    ]
    assert "8000" in commands(runtime, "EXPOSE")


def test_dockerignore_admits_what_the_build_copies_and_nothing_else(
    stages: list[Stage],
) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "an allowlist: everything is excluded, then re-included"
    admitted = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = {
        source.rstrip("/")
        for stage in stages
        for copy in commands(stage, "COPY")
        if not copy.startswith("--from=")
        for source in copy.split()[:-1]
    }
    assert admitted == copied
    assert not admitted & {".venv", ".git", "tests", ".pytest_cache", ".mypy_cache"}
    assert "**/*.egg-info" in patterns  # left in src/ by the editable install
