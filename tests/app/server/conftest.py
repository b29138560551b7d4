"""The caption protocol's server on the real model, shared by test_connection.py and test_connection_hardening.py
(files that need another server define their own `server` fixture, which takes precedence)."""

from __future__ import annotations

import pytest

from tests.server_clients import serving


@pytest.fixture
async def server(backend):
    """Room for ten sessions (the hardening test opens many at once); stats every 0.5 s."""
    async with serving(backend, max_sessions=10, stats_interval_s=0.5) as srv:
        yield srv
