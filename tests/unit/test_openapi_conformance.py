"""schemathesis against the served OpenAPI document, through ASGI (no network).

Every documented operation is called with generated requests (valid and invalid ones); each
answer must not be a 5xx, must have a documented status and documented headers, and must
match the documented schema.

The document is loaded from the app at import (schemathesis builds one test per operation
from it); the requests go to `conformance_app`, an app on the `settings` fixture, so a suite
that overrides `backend` re-runs these checks on a live server. To do that with fewer
examples, build a schema with `served_schema(..., examples=LIVE_EXAMPLES)` in that suite
and decorate a test calling `check(case, conformance_app)` with its `parametrize()`.
"""

import asyncio
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema
from starlette.applications import Starlette

from kv.container import Settings
from kv.entrypoints.http import create_app

MEMORY_EXAMPLES = 60
LIVE_EXAMPLES = 15  # per operation and phase: a live server answers more slowly

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    response_headers_conformance,
]

TOKEN = "conformance-token"


async def fetch(app: Starlette, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://kv.test") as client:
        return await client.get(path)


def served_schema(settings: Settings, *, examples: int = MEMORY_EXAMPLES) -> OpenApiSchema:
    """The document an app on `settings` serves at /openapi.json, loaded by schemathesis.

    Fetched through ASGI without running the app's lifespan (`from_asgi` would start one at
    import and leave it running until some test's teardown).
    """
    response = asyncio.run(fetch(create_app(settings), "/openapi.json"))
    assert response.status_code == 200, response.text
    schema = schemathesis.openapi.from_dict(response.json())
    schema.config.generation.update(max_examples=examples)
    return schema


def check(case: Any, app: Starlette, *, token: str | None = None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    case.call_and_validate(app=app, headers=headers, checks=CHECKS)


@pytest.fixture
def conformance_app(settings: Settings) -> Starlette:
    """The app the generated requests go to; schemathesis runs its lifespan."""
    return create_app(settings.replace(enable_reset=True))


@pytest.fixture
def protected_app(settings: Settings) -> Starlette:
    return create_app(settings.replace(enable_reset=True, auth_token=TOKEN))


# One app serves every generated request of a test, like a real server serves many clients.
SETTINGS = hypothesis_settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# A watch that succeeds streams until the client leaves, which a generated request never
# does: /watch has tests of its own (tests/unit/test_watch_http.py).
OPEN = served_schema(Settings(enable_reset=True)).exclude(path="/watch")
PROTECTED = served_schema(Settings(enable_reset=True, auth_token=TOKEN)).exclude(path="/watch")


@OPEN.parametrize()
@SETTINGS
def test_every_operation_answers_as_documented(case: Any, conformance_app: Starlette) -> None:
    check(case, conformance_app)


@PROTECTED.parametrize()
@SETTINGS
def test_with_a_token_too(case: Any, protected_app: Starlette) -> None:
    check(case, protected_app, token=TOKEN)
