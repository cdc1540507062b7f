"""The provider call audit, as an operator reads it: every outbound call of one payment."""

from __future__ import annotations

from tillpoint.domain.errors import NotFound
from tillpoint.service.context import Deps
from tillpoint.service.ports import ProviderCall


async def list_provider_calls(payment_id: str, *, deps: Deps) -> list[ProviderCall]:
    """Every call attempt made to the payment's provider for it, oldest first (404 for a
    payment we do not know)."""
    async with deps.uow() as uow:
        if await uow.payments.get(payment_id) is None:
            raise NotFound(f"payment {payment_id} not found")
    return await deps.calls.for_payment(payment_id)
