"""Which database errors mean "the database is unreachable" rather than "this is wrong"."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import exc as sa_exc

from tillpoint.service.ports import StorageUnavailable

# SQLSTATE classes of a lost or refused connection: 08 (connection exception), 57P0x (the
# server shut down or an administrator terminated the backend), 53300 (too many connections).
_TRANSIENT_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")


def is_unavailable(error: BaseException) -> bool:
    if isinstance(error, StorageUnavailable):
        return True
    if isinstance(error, sa_exc.TimeoutError):  # no connection from the pool in time
        return True
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated:
            return True
        orig = error.orig
        state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        if isinstance(state, str) and state.startswith(_TRANSIENT_SQLSTATES):
            return True
        if isinstance(error, sa_exc.InterfaceError):
            return True
        cause = getattr(orig, "__cause__", None)
        return isinstance(cause, OSError | ConnectionError)
    return isinstance(error, ConnectionError | OSError)


def translate(error: BaseException) -> BaseException:
    """The error to raise instead: `StorageUnavailable` for an unreachable database."""
    if isinstance(error, StorageUnavailable) or not is_unavailable(error):
        return error
    return StorageUnavailable(f"database unavailable: {type(error).__name__}")


@asynccontextmanager
async def unavailable_as_storage_error() -> AsyncIterator[None]:
    try:
        yield
    except Exception as exc:
        translated = translate(exc)
        if translated is exc:
            raise
        raise translated from exc
