"""Where the real test servers are: URLs exported by servers/up.sh (and .ci/run).

Without the URL a server test is skipped, unless ``DCSTORE_REQUIRE_SERVERS=1``
(set by ``scripts/test.sh``): then it fails, so CI can never pass by skipping.
"""

from __future__ import annotations

import os

import pytest


def server_url(name: str) -> str:
    """The URL of the shared ``name`` server (``DCSTORE_TEST_<NAME>_URL``), or skip/fail."""
    var = f"DCSTORE_TEST_{name.upper()}_URL"
    url = os.environ.get(var)
    if url:
        return url
    message = f"{var} is not set: start the servers with servers/up.sh (make test does)"
    if os.environ.get("DCSTORE_REQUIRE_SERVERS") == "1":
        pytest.fail(message)
    pytest.skip(message)
