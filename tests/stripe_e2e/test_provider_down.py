"""Stripe unreachable, and Stripe's answer lost: what the resilient call layer, the service and
the janitor do about it, through our HTTP API, on SQLite and on PostgreSQL.

The breaker test stops and restarts a localstripe process of its own (never the session's, which
other tests share), on the same port: while it is down the port is held bound but not listening,
so every connection is refused ("not reached") and nobody else can take the port meanwhile.

Recovery: the breaker's reset is an hour, so it cannot half-open by itself while the test looks
at the open circuit, however slow the machine. To let it recover, the breaker's clock (purgatory's
`time.time`, and the one `Resilient.available` reads) is moved an hour ahead: the same container,
the same breaker, takes the real half-open path — a probe call that succeeds closes it.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import httpx
import purgatory.domain.model
import pytest
import sqlalchemy as sa

from tests.conformance.harness import LosingTransport, adapter_of
from tests.conftest import ADMIN_KEY, headers, new_key, settings_for
from tests.stripe_e2e.support import confirm
from tests.support import flows
from tests.support.asgi import asgi_client
from tests.support.clock import MovableClock
from tests.support.localstripe import CI, LocalStripe, LocalStripeProcess
from tillpoint.adapters.db import tables as t
from tillpoint.adapters.providers import resilient
from tillpoint.adapters.providers.stripe import METADATA_PAYMENT, StripeGateway
from tillpoint.bootstrap import Container, build
from tillpoint.service.janitor import resolve_open_operations

THRESHOLD = 3
# A token localstripe knows from its start (Stripe's test PaymentMethod), so a payment made
# before a restart can still be confirmed after it: the restarted store is empty.
TOKEN = {"type": "card", "token": "pm_card_visa", "brand": "visa", "last4": "4242"}
GAUGE = re.compile(r'^provider_circuit_state\{provider="stripe"\} (\S+)$', re.MULTILINE)


class OwnLocalStripe:
    """A localstripe process of this module's own, to stop and start again on its port."""

    def __init__(self, workdir: Path) -> None:
        self.process = LocalStripeProcess(workdir)
        try:
            self.server = self.process.start()
        except BaseException:
            self.process.stop()
            raise
        self.port = urlsplit(self.server.url).port or 0

    @contextmanager
    def stopped(self) -> Iterator[None]:
        """localstripe is down for the block: its port refuses connections (bound, not
        listening, so nobody else takes it); then it starts again on the same port."""
        self.process.stop()
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            holder.bind(("127.0.0.1", self.port))
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
            yield
        finally:
            # Back up whatever happened in the block (the next test needs it). localstripe
            # binds with SO_REUSEADDR too, and may: nothing listens on the port.
            try:
                self.server = self.process.start(port=self.port)
            finally:
                holder.close()
        assert urlsplit(self.server.url).port == self.port


@pytest.fixture(scope="module")
def own_localstripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnLocalStripe]:
    try:
        own = OwnLocalStripe(tmp_path_factory.mktemp("own-localstripe"))
    except Exception as exc:
        if CI:
            pytest.fail(f"localstripe could not start: {exc}; under CI=true it must run")
        pytest.skip(f"localstripe could not start: {exc}")
    try:
        yield own
    finally:
        own.process.stop()


def stripe_settings(localstripe: LocalStripe, **overrides: Any) -> dict[str, Any]:
    return {
        "stripe_api_key": localstripe.api_key,
        "stripe_api_base": localstripe.url,
        **overrides,
    }


@pytest.fixture
async def down_container(
    database_url: str, clock: MovableClock, own_localstripe: OwnLocalStripe
) -> AsyncIterator[Container]:
    current = build(
        settings_for(
            database_url,
            **stripe_settings(
                own_localstripe.server,
                provider_breaker_threshold=THRESHOLD,
                provider_retries=1,
                provider_retry_backoff="10ms",
                provider_retry_backoff_max="10ms",
                provider_breaker_reset="1h",
            ),
        ),
        clock=clock,
    )
    try:
        yield current
    finally:
        await current.aclose()


class _Shifted:
    """The `time` module, with `time()` an hour ahead."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def time(self) -> float:
        return time.time() + self.seconds


def move_breaker_clock(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    shifted = _Shifted(seconds)
    modules: list[ModuleType] = [purgatory.domain.model, resilient]
    for module in modules:
        assert module.time is time, f"{module.__name__} reads no `time` module"
        monkeypatch.setattr(module, "time", shifted)


async def audit(container: Container, payment_id: str) -> list[tuple[str, str]]:
    a = t.provider_call_audit
    async with container.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(a.c.operation, a.c.outcome)
            .where(a.c.payment_id == payment_id)
            .order_by(a.c.created_at, a.c.id)
        )
        return [(r.operation, r.outcome) for r in rows]


async def operations(container: Container, payment_id: str) -> list[tuple[str, str]]:
    o = t.payment_transactions
    async with container.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(o.c.kind, o.c.status)
            .where(o.c.payment_id == payment_id)
            .order_by(o.c.created_at)
        )
        return [(r.kind, r.status) for r in rows]


async def gauge(http: httpx.AsyncClient) -> float:
    response = await http.get("/metrics")
    assert response.status_code == 200
    found = GAUGE.search(response.text)
    assert found, 'no provider_circuit_state{provider="stripe"} on /metrics'
    return float(found.group(1))


async def intents_of(localstripe: LocalStripe, payment_id: str) -> list[dict[str, Any]]:
    listed = await localstripe.get("/v1/payment_intents", limit="100")
    return [
        pi
        for pi in listed["data"]
        if (pi.get("metadata") or {}).get(METADATA_PAYMENT) == payment_id
    ]


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "provider_unavailable"
    assert response.headers.get("Idempotent-Replayed") is None  # never stored, so never replayed


async def test_the_breaker_opens_fails_fast_and_the_same_request_succeeds_after_recovery(
    down_container: Container,
    own_localstripe: OwnLocalStripe,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    container = down_container
    provider = container.deps.providers["stripe"]
    async with asgi_client(container) as http:
        order_id = await flows.create_order(http, "25.00", "USD")
        payment_id = (
            await flows.create_payment(
                http, order_id, "25.00", currency="USD", provider="stripe", payment_method=TOKEN
            )
        )["payment_id"]
        key = new_key()  # one request, sent again and again by a client that retries

        with own_localstripe.stopped():
            first = await confirm(http, payment_id, key)
            # Each confirm is an attempt and its retry (TILLPOINT_PROVIDER_RETRIES=1): two
            # failures of the three the breaker waits for.
            assert_unavailable(first)
            assert await audit(container, payment_id) == [("authorize", "unavailable")] * 2
            assert provider.available()
            assert await gauge(http) == 0

            second = await confirm(http, payment_id, key)
            # The third failure opens the circuit: the retry is refused without being sent.
            assert_unavailable(second)
            assert await audit(container, payment_id) == [
                ("authorize", "unavailable"),
                ("authorize", "unavailable"),
                ("authorize", "unavailable"),
                ("authorize", "circuit_open"),
            ]
            assert not provider.available()
            ops_before = await operations(container, payment_id)

            fast = await confirm(http, payment_id, key)

            assert_unavailable(fast)
            assert "circuit is open" in fast.json()["detail"]
            # Refused before anything was written: no call, no operation, the payment unmoved.
            assert len(await audit(container, payment_id)) == 4
            assert await operations(container, payment_id) == ops_before
            assert ops_before == [("SALE", "FAILED")] * 2, ops_before
            assert not [op for op in ops_before if op[1] == "PENDING"]
            state = await flows.payment(http, payment_id)
            assert state["status"] == "INITIATED", state
            assert await gauge(http) == 2

        # localstripe is back, but the circuit stays open until its reset has passed.
        assert not provider.available()
        assert_unavailable(await confirm(http, payment_id, key))
        assert len(await audit(container, payment_id)) == 4

        move_breaker_clock(monkeypatch, 3600)
        assert provider.available()

        again = await confirm(http, payment_id, key)

        assert again.status_code == 200, again.text
        assert again.json()["status"] == "CAPTURED"
        assert again.json()["captured_amount"] == "25.00"
        assert await gauge(http) == 0
        calls = await audit(container, payment_id)
        assert calls[4:] == [("authorize", "CAPTURED")], calls
        ops = await operations(container, payment_id)
        assert ops == [("SALE", "FAILED"), ("SALE", "FAILED"), ("SALE", "SUCCEEDED")], ops
        (pi,) = await intents_of(own_localstripe.server, payment_id)
        assert pi["id"] == again.json()["provider_payment_id"]
        assert (pi["status"], pi["amount"]) == ("succeeded", 2500)
        # The answer is the request's now: the same key replays it.
        replay = await confirm(http, payment_id, key)
        assert replay.status_code == 200
        assert replay.headers.get("Idempotent-Replayed") == "true"
        listed = await http.get(
            f"/api/v1/admin/payments/{payment_id}/provider-calls", headers=headers(ADMIN_KEY)
        )
        assert [c["outcome"] for c in listed.json()["data"]] == [o for _, o in calls]


@pytest.fixture
async def container(
    database_url: str, clock: MovableClock, clean_localstripe: LocalStripe
) -> AsyncIterator[Container]:
    current = build(settings_for(database_url, **stripe_settings(clean_localstripe)), clock=clock)
    try:
        yield current
    finally:
        await current.aclose()


async def test_a_confirm_whose_answer_was_lost_is_resolved_by_the_janitor(
    container: Container, clean_localstripe: LocalStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """localstripe creates the PaymentIntent but its answer never comes back (a read timeout
    at the transport): the outcome is unknown; the janitor finds the PaymentIntent by the
    idempotency key in its metadata (`get_transaction`) and records the capture."""
    gateway = adapter_of(container, "stripe")
    assert isinstance(gateway, StripeGateway)
    client: httpx.AsyncClient = gateway._http._client_async
    async with asgi_client(container) as http:
        order_id = await flows.create_order(http, "30.00", "USD")
        payment_id = (
            await flows.create_payment(
                http, order_id, "30.00", currency="USD", provider="stripe", payment_method=TOKEN
            )
        )["payment_id"]
        transport = LosingTransport(client._transport, "/v1/payment_intents")
        monkeypatch.setattr(client, "_transport", transport)
        try:
            lost = await confirm(http, payment_id)
        finally:
            monkeypatch.setattr(client, "_transport", transport.inner)
        assert transport.lost == ["/v1/payment_intents"]

        assert lost.status_code == 200, lost.text
        assert lost.json()["status"] == "PROCESSING", lost.json()
        assert await operations(container, payment_id) == [("SALE", "UNKNOWN")]
        assert await audit(container, payment_id) == [("authorize", "timeout")]

        checked = await resolve_open_operations(deps=container.deps, everything=True)

        assert checked >= 1  # ours, and any open operation other tests left in the database
        state = await flows.payment(http, payment_id)
        assert (state["status"], state["captured_amount"]) == ("CAPTURED", "30.00"), state
        assert await operations(container, payment_id) == [("SALE", "SUCCEEDED")]
        calls = await audit(container, payment_id)
        assert calls == [("authorize", "timeout"), ("get_transaction", "CAPTURED")], calls
        (pi,) = await intents_of(clean_localstripe, payment_id)
        assert state["provider_payment_id"] == pi["id"]
        assert (pi["status"], pi["amount"]) == ("succeeded", 3000)
