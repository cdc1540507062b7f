"""`GET /api/v1/admin/disputes` and the payment's `disputed_amount`, with disputes recorded the
way reconciliation records them (`service.disputes.record_dispute`) on mock payments; the
Stripe webhooks that open them are tested in tests/webhooks/test_stripe_events.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.api.conftest import Api, assert_problem
from tests.conftest import ADMIN_KEY, SERVICE_KEY
from tests.events.contract import violations
from tillpoint.service.disputes import record_dispute

DUE = datetime(2026, 12, 24, 23, 59, 59, tzinfo=UTC)


async def disputed(api: Api, status: str, minor: int = 2_500, **ids: str) -> dict[str, Any]:
    """A captured 100.00 USD mock payment with one dispute, as its provider reported it."""
    payment = await api.confirmed()
    await record_dispute(
        "mock",
        payment["provider_payment_id"],
        reference=ids.get("reference", f"du_{payment['payment_id']}"),
        amount_minor=minor,
        reason="product_not_received",
        status=status,
        evidence_due_by=DUE,
        deps=api.container.deps,
        source="reconciliation",
    )
    return payment


async def listed(api: Api, **params: Any) -> dict[str, Any]:
    got = await api.get("/api/v1/admin/disputes", key=ADMIN_KEY, **params)
    assert got.status_code == 200, got.text
    body: dict[str, Any] = got.json()
    return body


class TestDisputesList:
    async def test_a_dispute_is_listed_and_shown_on_its_payment(self, api: Api) -> None:
        payment = await disputed(api, "needs_response")
        page = await listed(api, payment_id=payment["payment_id"])
        assert page["next_cursor"] is None
        (dispute,) = page["data"]
        assert dispute == {
            "dispute_id": dispute["dispute_id"],
            "payment_id": payment["payment_id"],
            "provider": "mock",
            "provider_dispute_id": f"du_{payment['payment_id']}",
            "amount": "25.00",
            "currency": "USD",
            "reason": "product_not_received",
            "status": "needs_response",
            "evidence_due_by": "2026-12-24T23:59:59Z",
            "created_at": dispute["created_at"],
            "updated_at": dispute["updated_at"],
            "closed_at": None,
        }
        assert dispute["dispute_id"].startswith("dsp_")
        state = await api.payment_state(payment["payment_id"])
        assert (state["status"], state["disputed_amount"]) == ("CAPTURED", "25.00")
        keys = [key for key, _, _ in await api.outbox(payment["payment_id"])]
        assert keys == ["payment.succeeded", "payment.disputed"]
        for key, _, body in await api.outbox(payment["payment_id"]):
            assert violations(key, body) == [], body

    async def test_a_payment_without_disputes_shows_zero(self, api: Api) -> None:
        payment = await api.confirmed()
        assert payment["disputed_amount"] == "0.00"

    async def test_filters_by_status_and_pages(self, api: Api) -> None:
        lost = await disputed(api, "lost")
        open_one = await disputed(api, "under_review")
        mine = [p["payment_id"] for p in (lost, open_one)]
        page = await listed(api, status="lost", limit=100)
        assert lost["payment_id"] in [d["payment_id"] for d in page["data"]]
        assert {d["status"] for d in page["data"]} == {"lost"}
        seen: list[str] = []
        cursor = None
        while True:  # other tests' disputes share the database: walk every page
            params: dict[str, Any] = {"limit": 1}
            if cursor:
                params["cursor"] = cursor
            page = await listed(api, **params)
            assert len(page["data"]) <= 1
            seen += [d["dispute_id"] for d in page["data"] if d["payment_id"] in mine]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == 2
        assert seen == sorted(seen, reverse=True)  # newest first
        state = await api.payment_state(lost["payment_id"])
        assert state["disputed_amount"] == "25.00"
        refund = await api.post(
            f"/api/v1/payments/{lost['payment_id']}/refund", {"amount": "75.01"}, key=ADMIN_KEY
        )
        assert_problem(refund, 409, "amount_exceeds_refundable")

    async def test_only_an_admin_may_list_and_a_bad_status_is_422(self, api: Api) -> None:
        assert_problem(await api.get("/api/v1/admin/disputes", key=SERVICE_KEY), 403, "forbidden")
        assert_problem(
            await api.get("/api/v1/admin/disputes", key=ADMIN_KEY, status="LOST"),
            422,
            "validation_error",
        )
