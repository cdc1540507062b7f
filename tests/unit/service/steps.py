"""Orders and payments brought to a state through the use cases themselves, against fakes."""

from __future__ import annotations

from tests.unit.fakes import World
from tillpoint.domain.ids import new_id
from tillpoint.domain.money import Money
from tillpoint.domain.order import ChangeContext
from tillpoint.domain.payment import CaptureMethod, Payment, PaymentMethod
from tillpoint.service.orders import CreateOrder, create_order
from tillpoint.service.payments import CreatePayment, confirm_payment, create_payment

API = ChangeContext(source="api", actor="test")
EUR = "EUR"


def eur(minor: int) -> Money:
    return Money(minor, EUR)


async def initiated(w: World, *, manual: bool = False, minor: int = 1_000) -> Payment:
    """A registered order with an INITIATED payment for its amount."""
    order_id = new_id("ord")
    await create_order(CreateOrder(order_id, "buyer-1", eur(minor)), API, deps=w.deps)
    return await create_payment(
        CreatePayment(
            order_id=order_id,
            amount=eur(minor),
            capture_method=CaptureMethod.MANUAL if manual else CaptureMethod.AUTOMATIC,
            payment_method=PaymentMethod(token="tok_visa", brand="visa", last4="4242"),
        ),
        API,
        deps=w.deps,
    )


async def confirmed(w: World, *, manual: bool = False, minor: int = 1_000) -> Payment:
    """Confirmed with the provider's usual answer: AUTHORIZED (manual) or CAPTURED."""
    payment = await initiated(w, manual=manual, minor=minor)
    return await confirm_payment(payment.id, None, API, deps=w.deps)
