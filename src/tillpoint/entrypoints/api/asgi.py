"""`uvicorn tillpoint.entrypoints.api.asgi:app` — settings come from the environment."""

from tillpoint.entrypoints.api.app import create_app

app = create_app()
