"""A request that lost a race to a parallel one is answered 409 `concurrent_update`, which is
retryable and never stored under its Idempotency-Key (issue 10 item 7)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Api, assert_problem
from tests.conftest import new_key
from tillpoint.domain.errors import ConcurrentUpdate
from tillpoint.service import payments


async def test_a_concurrent_update_is_409_and_the_retry_with_the_same_key_runs(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = await api.confirmed(capture_method="manual")
    real = payments.capture_payment
    raced = {"once": False}

    async def lose_the_race_once(*args: Any, **kwargs: Any) -> Any:
        if not raced["once"]:
            raced["once"] = True
            raise ConcurrentUpdate(f"payment {held['payment_id']} changed concurrently; retry")
        return await real(*args, **kwargs)

    monkeypatch.setattr(payments, "capture_payment", lose_the_race_once)
    key, path = new_key(), f"/api/v1/payments/{held['payment_id']}/capture"
    assert_problem(await api.post(path, idem=key), 409, "concurrent_update")
    retried = await api.post(path, idem=key)
    assert retried.status_code == 200, retried.text
    assert "idempotent-replayed" not in retried.headers
    assert retried.json()["status"] == "CAPTURED"
