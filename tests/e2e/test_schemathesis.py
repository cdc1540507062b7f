"""Schemathesis against a running `tillpoint serve`, on SQLite and on PostgreSQL.

The schema is the live document the server answers at `/openapi.json` (so it names the
providers that server has configured), and every generated request goes over HTTP to that
server with an admin key (the role that may call every operation). Each answer is validated
with Schemathesis's default checks (`validate_response` without `checks=`: every built-in check
its configuration enables, no 5xx and status code, content type, body and header conformance
among them); none is excluded. The configuration is `schemathesis.toml` next to this file,
loaded explicitly: it adds 422 to what `positive_data_acceptance` accepts, as it explains.

One server per database serves both passes (positive, then negative). Examples are
derandomized and bounded (a fixed number per operation and generation mode), so a run is
reproducible and short; every failing operation is reported at the end with an example.
`TILLPOINT_TEST_SCHEMATHESIS_EXAMPLES=100` runs a deeper pass with that many per operation.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.config import ChecksConfig, SchemathesisConfig
from schemathesis.schemas import BaseSchema

from tests.conftest import ADMIN_KEY, create_database, drop_database, need_service
from tests.support.server import Server, start_server
from tillpoint.adapters.db import migrate

pytestmark = [pytest.mark.schemathesis, pytest.mark.slow]

CONFIG = Path(__file__).with_name("schemathesis.toml")
# Per operation. TILLPOINT_TEST_SCHEMATHESIS_EXAMPLES=100 runs a deeper pass (minutes).
DEEP = int(os.environ.get("TILLPOINT_TEST_SCHEMATHESIS_EXAMPLES", "0"))
EXAMPLES = {GenerationMode.POSITIVE: DEEP or 5, GenerationMode.NEGATIVE: DEEP or 10}
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A real server on a database of its own (a fresh PostgreSQL database is dropped after)."""
    workdir = tmp_path_factory.mktemp(f"schemathesis-{request.param}")
    created = None
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{workdir / 'tillpoint.db'}"
    else:
        need_service("PostgreSQL", "127.0.0.1", 5432)
        url = created = create_database()
    try:
        migrate.upgrade(url)  # here, not by `tillpoint migrate`: this process has its imports
        current = start_server(url, workdir, rate_limits="{}")  # no 429 for a burst of tests
        try:
            yield current
        finally:
            current.kill()
    finally:
        if created is not None:
            drop_database(created.rsplit("/", 1)[-1])


@pytest.fixture(scope="module")
def schema(live: Server) -> BaseSchema:
    """The document the running server serves, not one built in this process."""
    config = SchemathesisConfig.from_path(CONFIG)
    accepted = config.projects.get_default().checks.positive_data_acceptance.expected_statuses
    # the defaults of this Schemathesis version and 422, nothing else
    defaults = ChecksConfig().positive_data_acceptance.expected_statuses
    assert sorted(accepted) == sorted([*defaults, "422"])
    return schemathesis.openapi.from_url(f"{live.base_url}/openapi.json", config=config, timeout=30)


def _failures(schema: BaseSchema, base_url: str, mode: GenerationMode) -> dict[str, list[str]]:
    failures: dict[str, list[str]] = {}
    counter = itertools.count()
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an invalid operation fails the test here

        @settings(
            max_examples=EXAMPLES[mode],
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            headers = dict(AUTH)
            if case.method == "POST" and (
                mode is GenerationMode.POSITIVE or not _has_idempotency_key(case)
            ):
                # A key of its own for every valid POST, as a client sends it: generated keys
                # repeat (`0`, `A`), and a key reused with another request is refused (422).
                # The creating POSTs take the key from the header or from the body, which the
                # document cannot state as "one of": those without either get one too.
                headers["Idempotency-Key"] = f"schemathesis-{mode.value}-{next(counter)}"
            response = None
            try:
                response = case.call(
                    base_url=base_url, session=session, headers=headers, timeout=30
                )
                case.validate_response(
                    response,
                    headers=headers,
                    transport_kwargs={"base_url": base_url, "session": session, "headers": headers},
                )
            except (Exception, BaseExceptionGroup) as exc:  # a check failed: keep it, go on
                status = response.status_code if response is not None else "no answer"
                text = response.text if response is not None else ""
                failures.setdefault(case.operation.label, []).append(
                    f"{status} {case.as_curl_command(headers=headers)}\n"
                    f"    -> {text[:300]}\n    {str(exc).splitlines()[0:8]}"
                )

        try:
            run()
        except Unsatisfiable:  # nothing to break: an operation without parameters or body
            assert mode is GenerationMode.NEGATIVE, operation.label
    session.close()
    return failures


def _has_idempotency_key(case: Any) -> bool:
    header = any(name.lower() == "idempotency-key" for name in case.headers or {})
    return header or (isinstance(case.body, dict) and "idempotency_key" in case.body)


@pytest.mark.parametrize("mode", list(EXAMPLES), ids=lambda m: m.value)
def test_the_live_api_conforms_to_its_openapi_document(
    live: Server, schema: BaseSchema, mode: GenerationMode
) -> None:
    assert schema.raw_schema["paths"], "the live document lists no operation"
    failures = _failures(schema, live.base_url, mode)
    report = "\n".join(
        f"{label}: {len(found)} failing example(s)\n  {found[0]}"
        for label, found in sorted(failures.items())
    )
    assert not failures, f"{len(failures)} operations fail:\n{report}"
