"""The unit /kv HTTP suite, re-run through the app on every live backend of conftest.BACKENDS.

The tests are written against the `client`, `settings` and `unique` fixtures only; here
`backend` is each live backend instead of memory.
"""

from tests.unit.test_http_api import *  # noqa: F403
