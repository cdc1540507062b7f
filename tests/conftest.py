"""Shared fixtures. Every API test runs on SQLite and on PostgreSQL.

The suite is safe to run on a shared machine, next to other runs of itself:

* PostgreSQL: by default each session creates its own database, `tillpoint_test_<random>`,
  through the server's `postgres` maintenance database at 127.0.0.1:5432, and drops it
  (`DROP DATABASE … WITH (FORCE)`) when the session ends, failed or not (an `atexit` hook
  covers an interrupted run; SIGTERM is turned into an interrupt). It never drops a database it
  did not create. An explicit `TILLPOINT_TEST_DATABASE_URL` is wiped and kept; it is accepted
  only when its database name starts with `tillpoint_test` or `tp_` (see `wipeable`).
* Ports: every server, proxy and "nothing listens here" port is picked at runtime
  (`free_port`, `closed_port`, or a bind to port 0); no test names a port of its own.
* RabbitMQ: exchanges and queues carry a random suffix and are deleted in teardown
  (tests/events/conftest.py).

When PostgreSQL or RabbitMQ is unreachable their tests skip with the reason — except under
`CI=true`, where they fail.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import re
import secrets
import signal
import socket
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy.engine import URL, make_url

from tests.support.asgi import asgi_client
from tests.support.clock import MovableClock
from tests.support.localstripe import clean_localstripe, localstripe  # noqa: F401  (fixtures)
from tillpoint.adapters.db import migrate
from tillpoint.bootstrap import Container, build
from tillpoint.config import ApiKey, Settings

CI = os.environ.get("CI", "").lower() == "true"
DATABASE_URL_VARIABLE = "TILLPOINT_TEST_DATABASE_URL"
# The server on which the suite creates its own databases (through `postgres`, trust auth).
PG_SERVER_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
CREATED_PREFIX = "tillpoint_test_"
# A database the suite may wipe: only these names. `test`, `postgres`, `tillpoint`, … never.
WIPEABLE = re.compile(r"^(tillpoint_test|tp_)[a-z0-9_]*$")
ADMIN_KEY = "test-admin-key-0123456789"
SERVICE_KEY = "test-service-key-0123456789"
CUSTOMER_KEY = "test-customer-key-0123456789"
CUSTOMER_SUBJECT = "buyer-1"
# Standard Webhooks secret of the mock gateway (required with PostgreSQL, as in production).
MOCK_WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
API_KEYS = [
    {"key": ADMIN_KEY, "role": "admin"},
    {"key": SERVICE_KEY, "role": "service"},
    {"key": CUSTOMER_KEY, "role": "customer", "subject": CUSTOMER_SUBJECT},
]

T = TypeVar("T")


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def need_service(name: str, host: str, port: int) -> None:
    """Skip (or, under CI=true, fail) when a service a test needs is not running."""
    if reachable(host, port):
        return
    reason = f"{name} is not reachable at {host}:{port}"
    if CI:
        pytest.fail(f"{reason}; under CI=true it must run")
    pytest.skip(reason)


# --- ports ---------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now, chosen by the kernel (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def closed_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port that refuses connections for as long as the block runs: it is bound (so nobody
    else can take it) but never listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        yield sock.getsockname()[1]


# --- PostgreSQL databases ------------------------------------------------------------------


class UnsafeTestDatabase(pytest.UsageError):  # type: ignore[misc]  # final in the stubs only
    """TILLPOINT_TEST_DATABASE_URL names a database the suite must not wipe."""


def wipeable(url: str) -> str:
    """`url` if its database may be wiped by the suite; raises `UnsafeTestDatabase` otherwise.

    The rule: a PostgreSQL URL whose database name starts with `tillpoint_test` or `tp_`
    (lower-case letters, digits and `_`). The suite drops and recreates its `public` schema.
    """
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise UnsafeTestDatabase(f"{DATABASE_URL_VARIABLE}={url!r} is not a URL: {exc}") from exc
    name = parsed.database or ""
    if not parsed.drivername.startswith("postgresql") or not WIPEABLE.match(name):
        raise UnsafeTestDatabase(
            f"refusing {DATABASE_URL_VARIABLE}={parsed.render_as_string(hide_password=True)}: "
            f"the suite wipes that database, so its name must start with 'tillpoint_test' or "
            f"'tp_' (got {name!r}). Unset the variable to let the suite create and drop its own."
        )
    return url


def _run(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion in a thread of its own: callable from sync code and from
    inside a running event loop alike, and it leaves the caller's event loop alone."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(make())
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="tillpoint-test-db")
    try:
        thread.start()
        thread.join()
    except RuntimeError:  # no new threads at interpreter shutdown (atexit, Python >= 3.12)
        target()
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


def _asyncpg_args(url: URL) -> dict[str, Any]:
    return {
        "host": url.host or "127.0.0.1",
        "port": url.port or 5432,
        "user": url.username or "postgres",
        "password": url.password,
        "database": url.database,
        "timeout": 10,
    }


# Databases this process created and has not dropped yet: the only ones it ever drops.
_created: set[str] = set()
_created_lock = threading.Lock()


def create_database(template: str | None = None) -> str:
    """Create a new `tillpoint_test_<random>` database, empty or a copy of `template` (a
    database this process created, that nobody is connected to); returns its URL."""
    import asyncpg

    server = make_url(PG_SERVER_URL)
    name = f"{CREATED_PREFIX}{secrets.token_hex(6)}"
    if template is not None:
        with _created_lock:
            if template not in _created:
                raise ValueError(f"{template!r} was not created by this test run")
    copy = f' TEMPLATE "{template}"' if template is not None else ""

    async def create() -> None:
        conn = await asyncpg.connect(**_asyncpg_args(server))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"{copy}')
            with _created_lock:
                _created.add(name)
            await conn.execute(
                f'COMMENT ON DATABASE "{name}" IS \'tillpoint test suite, pid {os.getpid()} '
                f"on {socket.gethostname()}; dropped when that run ends'"
            )
        finally:
            await conn.close()

    _run(create)
    return server.set(database=name).render_as_string(hide_password=False)


def drop_database(name: str) -> None:
    """Drop a database this process created (and only such a database)."""
    import asyncpg

    with _created_lock:
        if name not in _created:
            raise ValueError(f"{name!r} was not created by this test run; not dropping it")

    async def drop() -> None:
        conn = await asyncpg.connect(**_asyncpg_args(make_url(PG_SERVER_URL)))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    _run(drop)
    with _created_lock:
        _created.discard(name)


def drop_created_databases() -> list[str]:
    """Drop every database this process created; returns the names dropped."""
    dropped = []
    for name in sorted(_created):
        try:
            drop_database(name)
            dropped.append(name)
        except Exception as exc:  # report, keep going: the others must go too
            print(f"tillpoint tests: could not drop database {name}: {exc}")
    return dropped


atexit.register(drop_created_databases)  # an interrupted run leaves nothing behind either

_session_url: str | None = None
_session_lock = threading.Lock()


def postgres_url() -> str:
    """The session's PostgreSQL database (skips or, under CI=true, fails without a server).

    `TILLPOINT_TEST_DATABASE_URL` when set (checked by `wipeable`); otherwise a database
    created for this session on first use and dropped at its end."""
    global _session_url
    explicit = os.environ.get(DATABASE_URL_VARIABLE)
    url = make_url(explicit or PG_SERVER_URL)
    need_service("PostgreSQL", url.host or "127.0.0.1", url.port or 5432)
    if explicit:
        return wipeable(explicit)
    with _session_lock:
        if _session_url is None:
            try:
                _session_url = create_database()
            except Exception as exc:
                reason = f"could not create a test database on {PG_SERVER_URL}: {exc!r}"
                if CI:
                    pytest.fail(f"{reason}; under CI=true PostgreSQL is mandatory")
                pytest.skip(reason)
        return _session_url


def pytest_configure(config: pytest.Config) -> None:
    explicit = os.environ.get(DATABASE_URL_VARIABLE)
    if explicit:
        wipeable(explicit)  # refuse before any test runs
    # `kill <pid>` / `timeout` end the run like Ctrl-C does: teardown and the drop still run.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, signal.default_int_handler)


@pytest.hookimpl(trylast=True)  # after the fixtures' teardown closed their connections
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    try:
        scan_for_leaks(session)
    finally:
        drop_created_databases()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """What each test wrote to its output (the log lines of the app it ran in process, among
    them) joins what the end-of-run leak scan saw. Line by line: a log line is one record, and
    digits ending one line and a timestamp starting the next are no card number. The teardown
    report carries the output of all three phases."""
    from tests.security.scan import note

    if report.when != "teardown":
        return
    for title, text in report.sections:
        if title.startswith("Captured"):
            for line in text.splitlines():
                note(f"{report.nodeid} ({title.lower()})", line)


def scan_for_leaks(session: pytest.Session) -> None:
    """The last check of every run: nothing the suite left behind or saw holds a card number, a
    CVC, one of its API keys, a JWT, a webhook secret, a Stripe key or a client secret (a client
    secret only in the `client_secret` field of an API answer; see `tests/security/scan.py`).

    Scans every column of every table of the session's PostgreSQL database and of each SQLite
    database the tests made, the log of every server process the tests started, and what the
    tests saw as they ran: every answer of the in-process API, the broker messages of the
    events suite, each test's captured output. A finding fails the run (exit status 1) and is
    printed with where it was found."""
    from tests.security.scan import (
        SEEN,
        not_order_ids,
        scan_databases,
        scan_files,
        sqlite_urls,
    )

    factory = getattr(session.config, "_tmp_path_factory", None)
    basetemp = factory.getbasetemp() if factory is not None else None
    urls = [url for url in [os.environ.get(DATABASE_URL_VARIABLE) or _session_url] if url]
    if basetemp is not None:
        urls += sqlite_urls(basetemp)
    found, order_ids = _run(lambda: scan_databases(urls))
    logs = sorted(basetemp.rglob("*.log")) if basetemp is not None else []
    found += scan_files(logs)
    found = not_order_ids([*found, *SEEN], order_ids)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if found:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        lines = "\n".join(found[:50])
        message = f"leaks found in what the test suite left behind or saw:\n{lines}"
    else:
        message = (
            f"leak scan (card numbers, CVCs, API keys, JWTs, webhook secrets, Stripe keys, "
            f"client secrets): nothing found in {len(urls)} database(s), {len(logs)} server "
            f"log(s), and the responses, broker messages and test output the tests saw"
        )
    if reporter is not None:
        reporter.write_line(message, red=bool(found))


def reset_database(url: str) -> None:
    """A clean schema at the newest migration (blocking: run it in a thread)."""
    if url.startswith("postgresql"):
        import sqlalchemy as sa

        wipeable(url)  # the last line of defence: never wipe a database not meant for it

        async def drop() -> None:
            from sqlalchemy.ext.asyncio import create_async_engine

            engine = create_async_engine(url)
            async with engine.begin() as conn:
                await conn.execute(sa.text("DROP SCHEMA public CASCADE"))
                await conn.execute(sa.text("CREATE SCHEMA public"))
            await engine.dispose()

        asyncio.run(drop())
    migrate.upgrade(url)


def settings_for(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": url,
        "api_keys": [ApiKey.model_validate(k) for k in API_KEYS],
        "broker_url": "",
        # Long enough that a loaded shared machine never times out a mock call by accident;
        # the mock's timeout card hangs, so each of its tests waits this long.
        "provider_timeout": timedelta(seconds=3),
        "log_level": "WARNING",
        "log_format": "console",
        "mock_webhook_secret": MOCK_WEBHOOK_SECRET,
        # Off: the suites send bursts under one key; tests/api/test_rate_limits.py sets its own.
        "rate_limits": {},
        "state_dir": str(Path(url.split("///")[-1]).parent / ".tillpoint")
        if url.startswith("sqlite")
        else ".tillpoint-test",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(
    scope="session",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
async def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'tillpoint.db'}"
    else:
        url = postgres_url()
    await asyncio.to_thread(reset_database, url)
    return url


@pytest.fixture(scope="session")
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
async def container(database_url: str, clock: MovableClock) -> AsyncIterator[Container]:
    current = build(settings_for(database_url), clock=clock)
    try:
        yield current
    finally:
        await current.aclose()


@pytest.fixture
async def client(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(container) as http:
        yield http


def headers(key: str, idempotency_key: str | None = None) -> dict[str, str]:
    result = {"Authorization": f"Bearer {key}"}
    if idempotency_key is not None:
        result["Idempotency-Key"] = idempotency_key
    return result


def new_key() -> str:
    """A fresh Idempotency-Key. Its hex groups are joined by a letter that is no hex digit, so
    no run of digits in it is ever long enough for the leak scan to read as a card number."""
    return "idem-" + "g".join(secrets.token_hex(2) for _ in range(4))


@pytest.fixture
def service() -> dict[str, str]:
    return headers(SERVICE_KEY)


@pytest.fixture
def admin() -> dict[str, str]:
    return headers(ADMIN_KEY)
