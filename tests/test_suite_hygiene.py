"""The suite is safe to run on a shared machine: its own databases, free ports, no fixed names.

These tests prove the rules of tests/conftest.py where they can be proved."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests import conftest
from tests.conftest import (
    CREATED_PREFIX,
    UnsafeTestDatabase,
    closed_port,
    create_database,
    drop_database,
    free_port,
    postgres_url,
    wipeable,
)

TESTS = Path(__file__).parent
ROOT = TESTS.parent


def database_names() -> set[str]:
    import asyncpg

    async def names() -> set[str]:
        conn = await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres", timeout=10)
        try:
            return {r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")}
        finally:
            await conn.close()

    return conftest._run(names)


@pytest.mark.parametrize(
    "name",
    ["test", "postgres", "template1", "tillpoint", "payments", "my_tp_db", "TP_X", "tp", ""],
)
def test_an_explicit_url_naming_a_database_not_meant_for_tests_is_refused(name: str) -> None:
    with pytest.raises(UnsafeTestDatabase, match="must start with 'tillpoint_test' or 'tp_'"):
        wipeable(f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}")


def test_an_explicit_url_must_be_postgresql() -> None:
    with pytest.raises(UnsafeTestDatabase):
        wipeable("sqlite+aiosqlite:///tillpoint_test.db")


@pytest.mark.parametrize("name", ["tillpoint_test", "tillpoint_test_1a2b", "tp_cards", "tp_ops"])
def test_an_explicit_url_naming_a_test_database_is_accepted(name: str) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    assert wipeable(url) == url


def test_the_suite_refuses_to_start_on_the_test_database() -> None:
    """The whole run stops before the first test: nothing is wiped, nothing is skipped."""
    env = {
        **os.environ,
        "TILLPOINT_TEST_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit/domain"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, output
    assert "refusing TILLPOINT_TEST_DATABASE_URL" in output
    assert "'test'" in output
    assert "passed" not in output


@pytest.mark.postgres
def test_the_default_database_is_created_for_the_session_and_is_not_a_shared_one() -> None:
    url = make_url(postgres_url())
    name = url.database or ""
    if os.environ.get("TILLPOINT_TEST_DATABASE_URL"):
        assert name.startswith(("tillpoint_test", "tp_"))  # explicit: checked by `wipeable`
    else:
        assert re.fullmatch(rf"{CREATED_PREFIX}[0-9a-f]{{12}}", name), name
        assert name in conftest._created  # this run made it, so this run drops it
    assert name not in {"test", "postgres"}
    assert name in database_names()


@pytest.mark.postgres
def test_a_created_database_is_new_and_dropped_by_its_creator_only() -> None:
    postgres_url()  # skips without PostgreSQL
    before = database_names()
    url = create_database()
    name = make_url(url).database or ""
    try:
        assert name not in before
        assert name.startswith(CREATED_PREFIX)
        assert name in database_names()
        wipeable(url)  # a created database is one the suite may wipe
    finally:
        drop_database(name)
    assert name not in database_names()
    with pytest.raises(ValueError, match="not created by this test run"):
        drop_database("tp_cards")  # someone else's: never dropped


def test_free_ports_are_bindable_and_differ() -> None:
    ports = {free_port() for _ in range(5)}
    assert len(ports) > 1
    for port in ports:
        assert 1024 <= port <= 65535
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))
            sock.listen()


def test_a_closed_port_refuses_connections() -> None:
    with closed_port() as port, pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


# The services' own well-known ports are the only numbers a test may name.
SERVICE_PORTS = {5432, 5672}
PORT_PATTERNS = [
    re.compile(r"(?:127\.0\.0\.1|localhost|0\.0\.0\.0|\]):(\d{2,5})\b"),
    re.compile(r"(?i)\bport\w*\b\s*(?::\s*int\s*)?=\s*(\d{2,5})\b"),
    re.compile(r"""["']--port["']\s*,\s*["']?(\d{2,5})"""),
    re.compile(r"TcpProxy\(\s*(\d{2,5})"),
    re.compile(r"start_server\([^()]*?,\s*(\d{4,5})\s*[,)]"),
]


def hard_coded_ports(text: str) -> list[str]:
    found = []
    for pattern in PORT_PATTERNS:
        for match in pattern.finditer(text):
            if int(match.group(1)) not in SERVICE_PORTS:
                found.append(match.group(0))
    return found


def test_the_port_scan_finds_what_it_looks_for() -> None:
    loopback = "127.0.0.1"  # written apart, so no line of this file names a fixed port itself
    samples = [
        f'BASE = "http://{loopback}:8301"',
        "PORT = 8301",
        'proc = run(["serve", "--port", "8201"])',
        "proxy = TcpProxy(8402, delay=0.1)",
        "start_server(url, 8202, workdir)",
        "amqp://guest:guest@" + "localhost" + ":8403/",
    ]
    assert all(hard_coded_ports(sample) for sample in samples)
    assert not hard_coded_ports('PG = "postgresql://postgres@127.0.0.1:5432/x"; port = free_port()')


def test_no_test_module_hard_codes_a_port() -> None:
    offenders = {
        str(path.relative_to(ROOT)): found
        for path in sorted(TESTS.rglob("*.py"))
        if path != Path(__file__) and (found := hard_coded_ports(path.read_text()))
    }
    assert not offenders, f"use free_port()/closed_port()/TcpProxy() instead: {offenders}"
