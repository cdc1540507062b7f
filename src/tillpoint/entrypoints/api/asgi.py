"""`uvicorn tillpoint.entrypoints.api.asgi:app` — settings come from the environment.

Logging is configured here too: with `serve --workers N` (N > 1) uvicorn imports this module in
fresh processes that never ran the CLI, and their logs must still be JSON and redacted.
"""

from tillpoint.bootstrap import configure_logging
from tillpoint.config import Settings
from tillpoint.entrypoints.api.app import create_app

_settings = Settings()
configure_logging(_settings)
app = create_app(_settings)
