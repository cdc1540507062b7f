"""Rate limits through the HTTP API (in-process, each app with its own in-memory count).

Over its limit a caller gets 429 `rate_limited` with `Retry-After` and the `RateLimit-*`
headers, before the idempotency layer: a refused request is never stored, so its retry with the
same `Idempotency-Key` runs normally once the window admits it. The limits are counted per
principal and class (a role, `webhooks`, `anonymous`); unauthenticated attempts per address.
Windows are an hour long, so no test depends on how fast the machine is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
import pytest
from pydantic import ValidationError

from tests.api.conftest import assert_problem
from tests.conftest import ADMIN_KEY, CUSTOMER_KEY, SERVICE_KEY, headers, new_key, settings_for
from tests.support.asgi import asgi_client
from tests.support.clock import MovableClock
from tests.support.flows import new_order_id
from tillpoint.bootstrap import build
from tillpoint.config import Settings

Limited = Callable[[dict[str, str]], AbstractAsyncContextManager[httpx.AsyncClient]]
MISSING = "/api/v1/orders/ord-missing"


@pytest.fixture
def limited(database_url: str, clock: MovableClock) -> Limited:
    """A client of an app with these limits; each app counts from zero (a new window)."""

    @asynccontextmanager
    async def make(rules: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
        container = build(settings_for(database_url, rate_limits=rules), clock=clock)
        try:
            async with asgi_client(container) as http:
                yield http
        finally:
            await container.aclose()

    return make


def assert_rate_limited(response: httpx.Response, limit: int) -> None:
    assert_problem(response, 429, "rate_limited")
    assert 1 <= int(response.headers["retry-after"]) <= 3600
    assert response.headers["ratelimit-limit"] == str(limit)
    assert response.headers["ratelimit-remaining"] == "0"
    assert int(response.headers["ratelimit-reset"]) >= 1


async def test_over_the_limit_is_429_with_retry_after(limited: Limited) -> None:
    async with limited({"default": "3/hour"}) as http:
        answers = [await http.get(MISSING, headers=headers(SERVICE_KEY)) for _ in range(4)]

    assert [r.status_code for r in answers] == [404, 404, 404, 429]
    assert [r.headers["ratelimit-remaining"] for r in answers[:3]] == ["2", "1", "0"]
    assert all(r.headers["ratelimit-limit"] == "3" for r in answers)
    assert "retry-after" not in answers[0].headers
    assert_rate_limited(answers[3], 3)
    async with limited({}) as http:
        metrics = (await http.get("/metrics")).text
    assert 'rate_limited_requests_total{rate_class="service"}' in metrics


async def test_each_principal_is_counted_on_its_own(limited: Limited) -> None:
    async with limited({"default": "2/hour"}) as http:
        for _ in range(2):
            await http.get(MISSING, headers=headers(SERVICE_KEY))
        refused = await http.get(MISSING, headers=headers(SERVICE_KEY))
        other = await http.get(MISSING, headers=headers(ADMIN_KEY))

    assert_rate_limited(refused, 2)
    assert other.status_code == 404
    assert other.headers["ratelimit-remaining"] == "1"


async def test_a_role_with_limits_of_its_own_does_not_take_the_default(
    limited: Limited,
) -> None:
    async with limited({"default": "100/hour", "customer": "2/hour"}) as http:
        customer = [await http.get(MISSING, headers=headers(CUSTOMER_KEY)) for _ in range(3)]
        service = await http.get(MISSING, headers=headers(SERVICE_KEY))

    assert [r.status_code for r in customer] == [404, 404, 429]
    assert_rate_limited(customer[2], 2)
    assert service.status_code == 404
    assert service.headers["ratelimit-limit"] == "100"


async def test_an_empty_limit_exempts_a_class_from_the_default(limited: Limited) -> None:
    async with limited({"default": "1/hour", "admin": ""}) as http:
        admin = [await http.get(MISSING, headers=headers(ADMIN_KEY)) for _ in range(3)]

    assert [r.status_code for r in admin] == [404, 404, 404]
    assert "ratelimit-limit" not in admin[0].headers


async def test_failed_authentication_is_limited_per_address(limited: Limited) -> None:
    async with limited({"anonymous": "3/hour"}) as http:
        guesses = [
            await http.get(MISSING, headers=headers(f"guess-{n}-0123456789abcdef"))
            for n in range(3)
        ]
        refused = await http.get(MISSING)  # no token at all: the same address's count
        valid = await http.get(MISSING, headers=headers(SERVICE_KEY))

    assert [r.status_code for r in guesses] == [401, 401, 401]
    assert_rate_limited(refused, 3)
    assert valid.status_code == 404  # a valid key is not held back by its address's failures
    assert "ratelimit-limit" not in valid.headers  # no limit configured for it


async def test_webhooks_are_limited_per_sending_address(limited: Limited) -> None:
    async with limited({"webhooks": "2/hour"}) as http:
        answers = [
            await http.post("/api/v1/webhooks/mock", content=b"{}", headers={"webhook-id": "x"})
            for _ in range(3)
        ]

    assert [r.status_code for r in answers] == [401, 401, 429]  # unsigned, then over the limit
    assert_rate_limited(answers[2], 2)


async def test_health_and_metrics_are_never_limited(limited: Limited) -> None:
    async with limited({"default": "1/hour", "anonymous": "1/hour"}) as http:
        answers = [await http.get(path) for path in ["/healthz", "/metrics"] * 3]

    assert [r.status_code for r in answers] == [200] * 6


async def test_a_refused_request_is_not_stored_and_its_retry_runs(limited: Limited) -> None:
    order_id = new_order_id()
    body = {"order_id": order_id, "buyer_id": "buyer-1", "amount": "10.00", "currency": "USD"}
    key = new_key()
    rules = {"default": "2/hour"}
    async with limited(rules) as http:
        for _ in range(2):
            await http.get(MISSING, headers=headers(SERVICE_KEY))
        refused = await http.post("/api/v1/orders", json=body, headers=headers(SERVICE_KEY, key))
        assert_rate_limited(refused, 2)
        missing = await http.get(f"/api/v1/orders/{order_id}", headers=headers(ADMIN_KEY))
        assert missing.status_code == 404  # nothing was done

    async with limited(rules) as http:  # a new window: the retry with the same key runs
        retried = await http.post("/api/v1/orders", json=body, headers=headers(SERVICE_KEY, key))
        replayed = await http.post("/api/v1/orders", json=body, headers=headers(SERVICE_KEY, key))

    assert retried.status_code == 201, retried.text
    assert "idempotent-replayed" not in retried.headers
    assert replayed.status_code == 201
    assert replayed.headers["idempotent-replayed"] == "true"
    assert replayed.content == retried.content


async def test_every_authenticated_operation_documents_429(limited: Limited) -> None:
    async with limited({}) as http:
        document = (await http.get("/openapi.json")).json()

    operations = [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if "401" in operation.get("responses", {})
    ]
    assert len(operations) > 10
    for path, method, operation in operations:
        limited_answer = operation["responses"].get("429")
        assert limited_answer is not None, (method, path)
        assert limited_answer["headers"]["Retry-After"]["required"] is True


@pytest.mark.parametrize(
    ("rules", "says"),
    [
        ({"default": "lots"}, "is not a rate limit such as 50/second"),
        ({"default": "10 per fortnight"}, "is not a rate limit"),
        ({"vip": "10/second"}, "rate_limits.vip"),
    ],
)
def test_unusable_limits_are_refused_with_a_clear_error(
    rules: dict[str, str], says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    monkeypatch.setenv("TILLPOINT_RATE_LIMITS", json.dumps(rules))
    with pytest.raises(ValidationError, match=says):
        Settings(_env_file=None)


def test_the_defaults_limit_every_class(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TILLPOINT_RATE_LIMITS", raising=False)
    settings = Settings(_env_file=None)

    assert set(settings.rate_limits) == {"default", "customer", "webhooks", "anonymous"}
    assert settings.redis_url == ""
