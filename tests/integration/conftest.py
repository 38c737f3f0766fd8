"""The integration suites run the service over HTTP on every live backend listed here."""

import pytest

# One entry per backend with a server fixture (`<backend>_server`, see tests/servers/).
BACKENDS = ["tarantool"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name
