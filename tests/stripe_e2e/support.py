"""What the Stripe end-to-end tests share: tillpoint served over real HTTP in process (so
localstripe can deliver its webhooks to it), bounded polling, and the Stripe payment steps.

`served` runs the app of a container under uvicorn on a free loopback port (a socket it binds
to port 0 itself), in the test's own event loop: the test keeps the container (its engine, its
providers, the webhook processor) in hand while localstripe reaches the server over TCP.
uvicorn's logging config is left alone (`log_config=None`), so nothing global changes for the
tests that run after.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import uvicorn

from tests.conftest import CUSTOMER_SUBJECT, SERVICE_KEY, headers, new_key
from tests.support import flows
from tests.support.asgi import scan_response
from tests.support.localstripe import LocalStripe
from tillpoint.bootstrap import Container
from tillpoint.entrypoints.api.app import create_app

HOST = "127.0.0.1"
# A bound on waiting for something that happens in the background (a webhook delivery), never
# an assertion on how long it took.
DEADLINE = 30.0
WEBHOOK_PATH = "/api/v1/webhooks/stripe"
VISA = "4242424242424242"
DECLINED = "4000000000000341"
THREE_D_SECURE = "4000002500003155"

T = TypeVar("T")


@dataclass(frozen=True)
class Served:
    port: int
    http: httpx.AsyncClient

    @property
    def webhook_url(self) -> str:
        return f"http://{HOST}:{self.port}{WEBHOOK_PATH}"


@asynccontextmanager
async def served(container: Container, *, run_workers: bool = False) -> AsyncIterator[Served]:
    """The API over `container`, listening on a free loopback port until the block ends."""
    app = create_app(container=container, run_workers=run_workers)
    # Our own socket, bound to a port the kernel picks: no race for the port with anyone.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((HOST, 0))
    port: int = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", log_level="warning", log_config=None)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(DEADLINE):
            while not server.started:
                if task.done():
                    task.result()  # its error, if it failed
                    raise AssertionError("uvicorn stopped before it started")
                await asyncio.sleep(0.05)
    except BaseException:
        server.should_exit = True
        await asyncio.gather(task, return_exceptions=True)
        sock.close()
        raise
    try:
        async with httpx.AsyncClient(
            base_url=f"http://{HOST}:{port}",
            timeout=DEADLINE,
            event_hooks={"response": [scan_response]},
        ) as http:
            yield Served(port, http)
    finally:
        server.should_exit = True
        await task
        sock.close()


async def until(check: Callable[[], Awaitable[T | None]], what: str) -> T:
    """Poll `check` until it returns something truthy, for at most `DEADLINE` seconds."""
    try:
        async with asyncio.timeout(DEADLINE):
            while True:
                if value := await check():
                    return value
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"gave up after {DEADLINE:.0f} s: {what}") from None


def webhook_id() -> str:
    return f"tillpoint-test-{secrets.token_hex(6)}"


@asynccontextmanager
async def webhook_to(
    localstripe: LocalStripe, url: str, secret: str, events: list[str] | None = None
) -> AsyncIterator[str]:
    """localstripe delivers its events to `url` while the block runs. Registrations outlive a
    wipe and cannot be deleted, so at the end this one is narrowed to no event at all: a
    later server on the same port never receives deliveries meant for this test."""
    registration = webhook_id()
    await localstripe.register_webhook(registration, url, secret, events)
    try:
        yield registration
    finally:
        await localstripe.register_webhook(registration, url, secret, events=[])


async def card(localstripe: LocalStripe, number: str) -> dict[str, Any]:
    """A PaymentMethod made at localstripe, as Stripe.js would: tillpoint sees the `pm_…` id."""
    token = await localstripe.payment_method(number)
    return {"type": "card", "token": token, "brand": "visa", "last4": number[-4:]}


async def stripe_payment(
    http: httpx.AsyncClient,
    localstripe: LocalStripe,
    number: str = VISA,
    amount: str = "100.00",
    *,
    buyer_id: str = CUSTOMER_SUBJECT,
    manual: bool = False,
) -> str:
    """A new order and its (unconfirmed) Stripe payment in USD; returns the payment id."""
    order_id = await flows.create_order(http, amount, "USD", buyer_id=buyer_id)
    created = await flows.create_payment(
        http,
        order_id,
        amount,
        currency="USD",
        provider="stripe",
        capture_method="manual" if manual else "automatic",
        payment_method=await card(localstripe, number),
    )
    payment_id: str = created["payment_id"]
    return payment_id


async def confirm(
    http: httpx.AsyncClient, payment_id: str, key: str | None = None
) -> httpx.Response:
    return await http.post(
        f"/api/v1/payments/{payment_id}/confirm", headers=headers(SERVICE_KEY, key or new_key())
    )
