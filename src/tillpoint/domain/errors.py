"""Domain errors. Each carries the stable machine `code` of API.md; HTTP status lives in
the entrypoints, which map codes to statuses in one place."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    code: str = "domain_error"
    title: str = "Domain rule violated"
    # False: the same request may well succeed later, so its answer is never stored under the
    # Idempotency-Key and a retry with that key runs again.
    stored: bool = True

    def __init__(self, detail: str, **context: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.context = context


class ValidationFailed(DomainError):
    """Input that can never be valid (bad amount, unknown currency)."""

    code = "validation_error"
    title = "Validation failed"
    stored = False

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail, field=field)
        self.field = field


class NotFound(DomainError):
    code = "not_found"
    title = "Not found"


class InvalidStateTransition(DomainError):
    code = "invalid_state_transition"
    title = "Invalid state transition"


class ConcurrentUpdate(DomainError):
    """The row changed under this request (another one won the race). Retryable: the answer
    is never stored under the Idempotency-Key, so the retry with the same key runs again."""

    code = "concurrent_update"
    title = "Changed concurrently"
    stored = False


class ActivePaymentExists(DomainError):
    code = "active_payment_exists"
    title = "An active payment exists for this order"


class OrderExists(DomainError):
    code = "order_exists"
    title = "Order already exists"


class OrderNotPayable(DomainError):
    code = "order_not_payable"
    title = "Order is not payable"


class AmountMismatch(DomainError):
    code = "amount_mismatch"
    title = "Amount does not match the order"


class AmountExceedsCapturable(DomainError):
    code = "amount_exceeds_capturable"
    title = "Amount exceeds what can be captured"


class AmountExceedsRefundable(DomainError):
    code = "amount_exceeds_refundable"
    title = "Amount exceeds what can be refunded"


class SnapshotMismatch(DomainError):
    code = "snapshot_mismatch"
    title = "Checkout snapshot does not match the order"


class SnapshotExpired(DomainError):
    code = "snapshot_expired"
    title = "Checkout snapshot expired"


class ProviderMismatch(DomainError):
    code = "provider_mismatch"
    title = "Operation not available for this provider"


class RawCardDataRejected(DomainError):
    code = "raw_card_data_rejected"
    title = "Raw card data is never accepted"


class PaymentDeclined(DomainError):
    """The provider declined; `code` is the failure code (`card_declined`, …)."""

    title = "Payment declined"

    def __init__(self, code: str, detail: str, payment: Any) -> None:
        super().__init__(detail)
        self.code = code
        self.payment = payment


class ProviderFailure(DomainError):
    """The provider could not be reached or failed; the outcome is recorded, never guessed."""

    code = "provider_error"
    title = "Payment provider error"

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        # Unavailable: nothing reached the provider, so the retry with the same key sends it.
        self.stored = code != "provider_unavailable"
