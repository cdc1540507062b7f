"""Schemathesis against the live OpenAPI document, on SQLite and PostgreSQL: no 5xx, and every
answer conforms to what the document declares (status code, content type, body, headers).

Generated requests are sent in-process to the ASGI app of the `client` fixture with an admin
key (the role that may call every operation). Examples are derandomized and bounded, so a run
is reproducible and short; every failing operation is reported at the end with an example.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import ADMIN_KEY
from tillpoint.entrypoints.api.app import create_app

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# Per operation. TILLPOINT_TEST_SCHEMATHESIS_EXAMPLES=100 runs a deeper pass (minutes).
DEEP = int(os.environ.get("TILLPOINT_TEST_SCHEMATHESIS_EXAMPLES", "0"))
EXAMPLES = {GenerationMode.POSITIVE: DEEP or 8, GenerationMode.NEGATIVE: DEEP or 15}
BASE_URL = "http://tillpoint.test"
SCHEMA = schemathesis.openapi.from_dict(create_app().openapi())


@pytest.fixture
async def loop() -> asyncio.AbstractEventLoop:
    """The loop the `client` fixture lives on; the sync Hypothesis body runs requests on it."""
    return asyncio.get_running_loop()


async def send(client: httpx.AsyncClient, kwargs: dict[str, Any]) -> httpx.Response:
    data = kwargs.pop("data", None)
    if isinstance(data, (bytes, str)):
        kwargs["content"] = data
    elif data is not None:
        kwargs["data"] = data
    kwargs.pop("cookies", None)  # the document declares none
    kwargs.pop("verify", None)
    kwargs.pop("timeout", None)
    kwargs.pop("allow_redirects", None)
    return await client.request(**kwargs)


def _check(
    client: httpx.AsyncClient,
    loop: asyncio.AbstractEventLoop,
    mode: GenerationMode,
) -> dict[str, list[str]]:
    failures: dict[str, list[str]] = {}
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    for result in SCHEMA.get_all_operations():
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
            kwargs = case.as_transport_kwargs(base_url=BASE_URL, headers=auth)
            response = loop.run_until_complete(send(client, dict(kwargs)))
            try:
                case.validate_response(response, checks=CHECKS, headers=kwargs.get("headers"))
            except (Exception, BaseExceptionGroup) as exc:  # a check failed: keep it, go on
                failures.setdefault(case.operation.label, []).append(
                    f"{response.status_code} {case.as_curl_command(headers=auth)}\n"
                    f"    -> {response.text[:300]}\n    {str(exc).splitlines()[0:6]}"
                )

        try:
            run()
        except Unsatisfiable:  # nothing to break: an operation without parameters or body
            assert mode is GenerationMode.NEGATIVE, operation.label
    return failures


@pytest.mark.schemathesis
@pytest.mark.parametrize("mode", list(EXAMPLES), ids=lambda m: m.value)
def test_the_api_conforms_to_its_openapi_document(
    client: httpx.AsyncClient, loop: asyncio.AbstractEventLoop, mode: GenerationMode
) -> None:
    failures = _check(client, loop, mode)
    report = "\n".join(
        f"{label}: {len(found)} failing example(s)\n  {found[0]}"
        for label, found in sorted(failures.items())
    )
    assert not failures, f"{len(failures)} operations fail:\n{report}"
