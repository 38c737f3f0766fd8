"""The live backends: every test here that takes `backend` runs once per server below.

Each name resolves, through `backend_settings`, to the session fixture `<name>_server`.
"""

import pytest

BACKENDS = ["tarantool", "redis", "redis_cluster"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name
