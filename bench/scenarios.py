"""The service's scenarios as operations for the load generator, plus the order pools they use
(created before the timed part)."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx

from bench.load import Op, OpError, expect

AMOUNT = "10.00"
CURRENCY = "EUR"
VISA = {"type": "card", "token": "pm_card_visa"}


def auth(key: str, idempotency_key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}"}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return headers


def fresh() -> str:
    return f"bench-{secrets.token_hex(10)}"


async def seed_pg_orders(dsn: str, prefix: str, count: int) -> list[str]:
    """Orders straight into the table: seeding is setup, not what is measured."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO orders (order_id, buyer_id, amount_minor, currency, status, version,"
            " created_at, updated_at) SELECT $1 || g, 'bench-buyer', 1000, 'EUR',"
            " 'PAYMENT_PENDING', 0, now(), now() FROM generate_series(1, $2::int) g",
            prefix,
            count,
        )
    finally:
        await conn.close()
    return [f"{prefix}{n}" for n in range(1, count + 1)]


def seed_sqlite_orders(db_path: Path, prefix: str, count: int) -> list[str]:
    """The same for the embedded database, through the service's own table definition so the
    timestamp format is the one it reads back."""
    import sqlalchemy as sa

    from tillpoint.adapters.db.tables import orders

    engine = sa.create_engine(f"sqlite:///{db_path}")
    now = datetime.now(UTC)
    ids = [f"{prefix}{n}" for n in range(1, count + 1)]
    rows = [
        {
            "order_id": order_id,
            "buyer_id": "bench-buyer",
            "amount_minor": 1000,
            "currency": CURRENCY,
            "status": "PAYMENT_PENDING",
            "version": 0,
            "created_at": now,
            "updated_at": now,
        }
        for order_id in ids
    ]
    with engine.begin() as conn:
        conn.execute(orders.insert(), rows)
    engine.dispose()
    return ids


def payment_body(order_id: str, **extra: object) -> dict[str, object]:
    return {
        "order_id": order_id,
        "amount": AMOUNT,
        "currency": CURRENCY,
        "payment_method": VISA,
        **extra,
    }


def create_op(service_key: str, orders: list[str]) -> Op:
    async def op(http: httpx.AsyncClient, i: int) -> None:
        response = await http.post(
            "/api/v1/payments", json=payment_body(orders[i]), headers=auth(service_key, fresh())
        )
        expect(response, 201)

    return op


def cycle_op(service_key: str, orders: list[str]) -> Op:
    async def op(http: httpx.AsyncClient, i: int) -> None:
        created = expect(
            await http.post(
                "/api/v1/payments",
                json=payment_body(orders[i]),
                headers=auth(service_key, fresh()),
            ),
            201,
        )
        confirmed = expect(
            await http.post(
                f"/api/v1/payments/{created['payment_id']}/confirm",
                json={},
                headers=auth(service_key, fresh()),
            ),
            200,
        )
        if confirmed["status"] != "CAPTURED":
            raise OpError(f"confirm left the payment {confirmed['status']}")

    return op


def journey_op(service_key: str, admin_key: str, run_id: str) -> Op:
    """order → quote → create (bound to the snapshot) → confirm → refund."""

    async def op(http: httpx.AsyncClient, i: int) -> None:
        order_id = f"jrn-{run_id}-{i}"
        expect(
            await http.post(
                "/api/v1/orders",
                json={
                    "order_id": order_id,
                    "buyer_id": "bench-buyer",
                    "amount": AMOUNT,
                    "currency": CURRENCY,
                },
                headers=auth(service_key, fresh()),
            ),
            201,
        )
        snapshot = expect(
            await http.post(
                "/api/v1/checkout/quote",
                json={
                    "order_id": order_id,
                    "items": [{"variant_id": "sku-1", "quantity": 2, "unit_amount": "5.00"}],
                },
                headers=auth(service_key, fresh()),
            ),
            201,
        )
        created = expect(
            await http.post(
                "/api/v1/payments",
                json=payment_body(order_id, snapshot_id=snapshot["snapshot_id"]),
                headers=auth(service_key, fresh()),
            ),
            201,
        )
        payment_id = created["payment_id"]
        expect(
            await http.post(
                f"/api/v1/payments/{payment_id}/confirm",
                json={},
                headers=auth(service_key, fresh()),
            ),
            200,
        )
        expect(
            await http.post(
                f"/api/v1/payments/{payment_id}/refund",
                json={"reason": "bench"},
                headers=auth(admin_key, fresh()),
            ),
            201,
        )

    return op


async def replay_setup(
    base_url: str, service_key: str, orders: list[str]
) -> list[tuple[str, dict[str, object]]]:
    """One stored outcome per order; the replay scenario then repeats those requests."""
    stored: list[tuple[str, dict[str, object]]] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        for order_id in orders:
            key, body = fresh(), payment_body(order_id)
            response = await http.post(
                "/api/v1/payments", json=body, headers=auth(service_key, key)
            )
            expect(response, 201)
            stored.append((key, body))
    return stored


def replay_op(service_key: str, stored: list[tuple[str, dict[str, object]]]) -> Op:
    async def op(http: httpx.AsyncClient, i: int) -> None:
        key, body = stored[i % len(stored)]
        response = await http.post("/api/v1/payments", json=body, headers=auth(service_key, key))
        expect(response, 201)
        if response.headers.get("idempotent-replayed") != "true":
            raise OpError("the response was not a replay")

    return op


# -- webhooks --------------------------------------------------------------------------------


def webhook_secret() -> str:
    import base64

    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def webhook_op(secret: str, provider_ids: list[str], run_id: str) -> Op:
    """Signed `payment.captured` webhooks, each with its own event id, spread over PROCESSING
    payments: the first per payment completes it, the rest are late duplicates of a passed
    state (stored, then recorded as no-ops by the worker)."""
    from standardwebhooks import Webhook

    signer = Webhook(secret)

    async def op(http: httpx.AsyncClient, i: int) -> None:
        event_id = f"evt_bench_{run_id}_{i}"
        now = datetime.now(UTC)
        body = json.dumps(
            {
                "id": event_id,
                "type": "payment.captured",
                "created": int(now.timestamp()),
                "data": {
                    "provider_payment_id": provider_ids[i % len(provider_ids)],
                    "amount": AMOUNT,
                    "currency": CURRENCY,
                },
            },
            separators=(",", ":"),
        )
        headers = {
            "webhook-id": event_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign(event_id, now, body),
            "content-type": "application/json",
        }
        response = await http.post("/api/v1/webhooks/mock", content=body, headers=headers)
        answer = expect(response, 200)
        if answer.get("received") is not True or answer.get("duplicate") is not False:
            raise OpError(f"unexpected webhook answer {answer}")

    return op


async def processing_payments(base_url: str, service_key: str, orders: list[str]) -> list[str]:
    """Payments left PROCESSING by the mock's asynchronous card, so webhooks have a target."""
    ids: list[str] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:

        async def one(order_id: str) -> None:
            body = payment_body(order_id, payment_method={"type": "card", "token": "pm_card_async"})
            created = expect(
                await http.post("/api/v1/payments", json=body, headers=auth(service_key, fresh())),
                201,
            )
            confirmed = expect(
                await http.post(
                    f"/api/v1/payments/{created['payment_id']}/confirm",
                    json={},
                    headers=auth(service_key, fresh()),
                ),
                200,
            )
            if confirmed.get("provider_payment_id"):
                ids.append(confirmed["provider_payment_id"])

        for start in range(0, len(orders), 16):
            await asyncio.gather(*(one(o) for o in orders[start : start + 16]))
    return ids


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.25
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(interval)
    return False
