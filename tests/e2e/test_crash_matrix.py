"""Every mutating operation, killed at every point where a crash can leave work half done.

For each operation and crash point a server is started with the fault
`kill_<point>@<operation>` (the test-only launcher `tests/e2e/fault_server.py`: the real app
with faulty adapters) and SIGKILLs itself in the middle of that one request. The client
then retries with the same Idempotency-Key against a healthy process, and the test checks:

- the provider acted exactly once (the mock gateway's own ledger),
- payment, order, ledger rows and outbox agree with each other and with the provider,
- the retry answers what the request answers when nothing crashes (a control run), and a
  replay of the retry is byte-identical.

Crash points: `before_provider_call` (operation committed, provider not asked),
`after_provider_call` (provider acted, nothing of its answer committed) and `after_commit`
(everything committed, the answer not yet stored under the key).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import ADMIN_KEY, SERVICE_KEY, headers, new_key
from tests.e2e.conftest import scalar
from tests.e2e.test_crash_recovery import retry_until_not_in_use
from tests.support.flows import confirm, create_order, create_payment, payment_body
from tests.support.server import Server, start_server

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

PROVIDER_POINTS = ("before_provider_call", "after_provider_call", "after_commit")


@dataclass(frozen=True)
class Request:
    path: str
    body: Any
    key: str = SERVICE_KEY


@dataclass(frozen=True)
class Effect:
    """What exactly one run of the operation leaves behind, counted per payment."""

    provider_operation: str | None  # mock ledger `operation`, None: no provider call
    transaction_kind: str | None  # payment_transactions.kind
    routing_key: str | None  # the outbox message it publishes
    refunds: int = 0


# A case prepares the state the operation needs (through the healthy server) and returns the
# request to crash, plus the payment and order it concerns.
Prepare = Callable[[httpx.AsyncClient], Awaitable[tuple[Request, str | None, str]]]


@dataclass(frozen=True)
class Case:
    name: str  # the route name the fault is scoped to
    label: str
    prepare: Prepare
    effect: Effect
    points: tuple[str, ...] = PROVIDER_POINTS


async def _order_only(http: httpx.AsyncClient) -> tuple[Request, str | None, str]:
    order_id = f"ord-{new_key()}"
    body = {"order_id": order_id, "buyer_id": "buyer-1", "amount": "100.00", "currency": "EUR"}
    return Request("/api/v1/orders", body), None, order_id


async def _new_payment(http: httpx.AsyncClient) -> tuple[Request, str | None, str]:
    order_id = await create_order(http)
    return Request("/api/v1/payments", payment_body(order_id)), None, order_id


def _confirming(capture_method: str, token: str = "pm_card_visa") -> Prepare:
    async def prepare(http: httpx.AsyncClient) -> tuple[Request, str | None, str]:
        order_id = await create_order(http)
        payment = await create_payment(
            http, order_id, capture_method=capture_method, payment_method={"token": token}
        )
        pid = payment["payment_id"]
        return Request(f"/api/v1/payments/{pid}/confirm", None), pid, order_id

    return prepare


def _authorized(path: str, body: Any) -> Prepare:
    async def prepare(http: httpx.AsyncClient) -> tuple[Request, str | None, str]:
        order_id = await create_order(http)
        pid = (await create_payment(http, order_id, capture_method="manual"))["payment_id"]
        await confirm(http, pid, "AUTHORIZED")
        return Request(f"/api/v1/payments/{pid}/{path}", body), pid, order_id

    return prepare


def _captured(body: Any) -> Prepare:
    async def prepare(http: httpx.AsyncClient) -> tuple[Request, str | None, str]:
        order_id = await create_order(http)
        pid = (await create_payment(http, order_id))["payment_id"]
        await confirm(http, pid, "CAPTURED")
        return Request(f"/api/v1/payments/{pid}/refund", body, ADMIN_KEY), pid, order_id

    return prepare


async def _needs_action(http: httpx.AsyncClient) -> tuple[Request, str | None, str]:
    order_id = await create_order(http)
    payment = await create_payment(http, order_id, payment_method={"token": "pm_card_threeDSecure"})
    pid = payment["payment_id"]
    await confirm(http, pid, "REQUIRES_ACTION")
    return Request(f"/api/v1/payments/{pid}/mock/complete", {"result": "SUCCESS"}), pid, order_id


SALE = Effect("authorize", "SALE", "payment.succeeded")
CASES = [
    Case(
        "create_order",
        "order create",
        _order_only,
        Effect(None, None, None),
        ("after_commit",),
    ),
    Case(
        "create_payment",
        "payment create",
        _new_payment,
        Effect(None, None, None),
        ("after_commit",),
    ),
    Case("confirm", "confirm sale", _confirming("automatic"), SALE),
    Case(
        "confirm",
        "confirm authorization",
        _confirming("manual"),
        Effect("authorize", "AUTHORIZE", "payment.authorized"),
    ),
    Case(
        "capture",
        "capture full",
        _authorized("capture", None),
        Effect("capture", "CAPTURE", "payment.succeeded"),
    ),
    Case(
        "capture",
        "capture partial",
        _authorized("capture", {"amount": "40.00"}),
        Effect("capture", "CAPTURE", "payment.succeeded"),
    ),
    Case(
        "void",
        "void",
        _authorized("void", {"reason": "customer changed their mind"}),
        Effect("void", "VOID", "payment.canceled"),
    ),
    Case(
        "refund",
        "refund full",
        _captured(None),
        Effect("refund", "REFUND", "payment.refunded", refunds=1),
    ),
    Case(
        "refund",
        "refund partial",
        _captured({"amount": "30.00", "reason": "one item returned"}),
        Effect("refund", "REFUND", "payment.refunded", refunds=1),
    ),
    Case("mock_complete", "mock complete", _needs_action, SALE),
]
MATRIX = [
    pytest.param(case, point, id=f"{case.label.replace(' ', '-')}@{point}")
    for case in CASES
    for point in case.points
]

# Fields of an answer that do not depend on ids or clocks: what "the same answer" means.
STABLE = (
    "status",
    "amount",
    "currency",
    "capture_method",
    "authorized_amount",
    "captured_amount",
    "refunded_amount",
    "failure_code",
    "reason",
    "buyer_id",
)


def stable(response: httpx.Response) -> tuple[int, dict[str, Any]]:
    body = response.json()
    return response.status_code, {k: body[k] for k in STABLE if k in body}


async def send(http: httpx.AsyncClient, request: Request, key: str) -> httpx.Response:
    return await http.post(request.path, json=request.body, headers=headers(request.key, key))


@pytest.fixture(scope="module")
def healthy(e2e_database_url: str, e2e_workdir: Path) -> Iterator[Server]:
    """The process that prepares each case and takes the retries (it never crashes)."""
    server = start_server(e2e_database_url, e2e_workdir, idempotency_lock_timeout="1s")
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def controls() -> dict[str, tuple[int, dict[str, Any]]]:
    """The answer of each case when nothing crashes, computed once per case."""
    return {}


@pytest.mark.parametrize(("case", "point"), MATRIX)
async def test_a_retry_after_a_crash_has_one_effect_and_the_same_answer(
    case: Case,
    point: str,
    healthy: Server,
    controls: dict[str, tuple[int, dict[str, Any]]],
    e2e_database_url: str,
    e2e_workdir: Path,
    db: AsyncEngine,
) -> None:
    async with httpx.AsyncClient(base_url=healthy.base_url, timeout=30) as http:
        if case.label not in controls:
            request, _, _ = await case.prepare(http)
            controls[case.label] = stable(await send(http, request, new_key()))
        request, payment_id, order_id = await case.prepare(http)

    key = new_key()
    doomed = start_server(
        e2e_database_url,
        e2e_workdir,
        faults=f"kill_{point}@{case.name}",
        idempotency_lock_timeout="1s",
    )
    try:
        async with httpx.AsyncClient(base_url=doomed.base_url, timeout=30) as http:
            with pytest.raises(httpx.TransportError):
                await send(http, request, key)
        assert doomed.wait_exit(timeout=30) == -signal.SIGKILL
    finally:
        doomed.kill()

    async with httpx.AsyncClient(base_url=healthy.base_url, timeout=30) as http:
        retried = await retry_until_not_in_use_body(http, request, key)
        assert stable(retried) == controls[case.label], retried.text
        replayed = await send(http, request, key)
        assert replayed.content == retried.content
        assert replayed.headers["idempotent-replayed"] == "true"
        if payment_id is None and request.path == "/api/v1/payments":
            payment_id = retried.json()["payment_id"]

    await assert_one_effect(db, case.effect, payment_id, order_id)


async def retry_until_not_in_use_body(
    http: httpx.AsyncClient, request: Request, key: str
) -> httpx.Response:
    """The dead request's key is `in_use` until its lock times out (1 s here)."""
    if request.body is None:
        return await retry_until_not_in_use(http, request.path, headers(request.key, key))
    for _ in range(100):
        response = await send(http, request, key)
        if response.status_code != 409 or response.json()["code"] != "idempotency_key_in_use":
            return response
        await asyncio.sleep(0.3)
    raise AssertionError("the key stayed in use")


async def assert_one_effect(
    db: AsyncEngine, effect: Effect, payment_id: str | None, order_id: str
) -> None:
    assert await scalar(db, "SELECT count(*) FROM orders WHERE order_id = :o", o=order_id) == 1
    if payment_id is None:
        return
    assert await scalar(db, "SELECT count(*) FROM payments WHERE order_id = :o", o=order_id) == 1
    counts: dict[str, int] = {}
    if effect.provider_operation is not None:
        counts["provider effects"] = await scalar(
            db,
            "SELECT count(*) FROM mock_gateway_ledger WHERE payment_id = :p AND operation = :op",
            p=payment_id,
            op=effect.provider_operation,
        )
    if effect.transaction_kind is not None:
        counts["ledger rows"] = await scalar(
            db,
            "SELECT count(*) FROM payment_transactions WHERE payment_id = :p AND kind = :k "
            "AND status = 'SUCCEEDED'",
            p=payment_id,
            k=effect.transaction_kind,
        )
    if effect.routing_key is not None:
        counts["published"] = await scalar(
            db,
            "SELECT count(*) FROM outbox WHERE aggregate_id = :p AND routing_key = :r",
            p=payment_id,
            r=effect.routing_key,
        )
    if effect.refunds:
        counts["refunds"] = await scalar(
            db, "SELECT count(*) FROM refunds WHERE payment_id = :p", p=payment_id
        )
    assert counts == dict.fromkeys(counts, 1), counts
    still_open = await scalar(
        db,
        "SELECT count(*) FROM payment_transactions WHERE payment_id = :p "
        "AND status IN ('PENDING', 'UNKNOWN')",
        p=payment_id,
    )
    assert still_open == 0
    await assert_agrees_with_provider(db, payment_id)


async def assert_agrees_with_provider(db: AsyncEngine, payment_id: str) -> None:
    """The payment's amounts are exactly what the mock gateway's ledger says moved."""

    async def provider_total(operation: str) -> int:
        total = await scalar(
            db,
            "SELECT coalesce(sum(amount_minor), 0) FROM mock_gateway_ledger "
            "WHERE payment_id = :p AND operation = :op AND status = :s",
            p=payment_id,
            op=operation,
            s={"capture": "CAPTURED", "refund": "REFUNDED"}[operation],
        )
        return int(total)

    captured = int(
        await scalar(db, "SELECT captured_minor FROM payments WHERE payment_id = :p", p=payment_id)
    )
    refunded = int(
        await scalar(db, "SELECT refunded_minor FROM payments WHERE payment_id = :p", p=payment_id)
    )
    sale = await scalar(
        db,
        "SELECT coalesce(sum(amount_minor), 0) FROM mock_gateway_ledger "
        "WHERE payment_id = :p AND operation = 'authorize' AND status = 'CAPTURED'",
        p=payment_id,
    )
    assert captured == int(sale) + await provider_total("capture")
    assert refunded == await provider_total("refund")
