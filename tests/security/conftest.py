"""The security scans drive the API through the same client vocabulary as tests/api."""

from __future__ import annotations

from tests.api.conftest import api  # noqa: F401  (the `api` fixture, on SQLite and PostgreSQL)
