"""The unit /v1 HTTP suite, re-run through the app on every live backend (see test_http_api)."""

from tests.unit.test_http_v1 import *  # noqa: F403
