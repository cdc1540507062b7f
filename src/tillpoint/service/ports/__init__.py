"""Ports: every boundary of the use cases, as Protocols that adapters satisfy without
inheriting. Open the module for the boundary you need:

- `storage`: the unit of work and its repositories (orders, payments, operations, refunds,
  snapshots, reconciliations, outbox, inbox, webhooks);
- `providers`: payment providers (the mock gateway, Stripe, …);
- `webhooks`: provider webhook verifiers and the inbox rows;
- `messaging`: the broker the outbox relay publishes to;
- `idempotency`: the Idempotency-Key store;
- `observe`: the clock and telemetry;
- `exports`: the money movements a finance export streams.
"""

from tillpoint.service.ports.exports import (
    ExportTargetFailed,
    ExportWindow,
    Movement,
    MovementSource,
)
from tillpoint.service.ports.idempotency import (
    Claim,
    ClaimOutcome,
    IdempotencyStore,
    StoredResponse,
)
from tillpoint.service.ports.messaging import (
    OutboxMessage,
    Publisher,
    PublishFailed,
)
from tillpoint.service.ports.observe import (
    Clock,
    Telemetry,
)
from tillpoint.service.ports.providers import (
    AuthorizeRequest,
    Capabilities,
    CircuitOpen,
    Limits,
    Lookup,
    MockControl,
    PaymentProvider,
    ProviderCall,
    ProviderCallLog,
    ProviderError,
    Providers,
    ProviderServerError,
    ProviderTimeout,
    ProviderUnavailable,
)
from tillpoint.service.ports.storage import (
    InboxEntry,
    InboxRepository,
    Ledger,
    OperationRepository,
    OrderRepository,
    OutboxRepository,
    PaymentFilter,
    PaymentRepository,
    ReconciliationRepository,
    RefundRepository,
    SnapshotRepository,
    StorageUnavailable,
    StoredEvent,
    UnitOfWork,
    UnitOfWorkFactory,
)
from tillpoint.service.ports.webhooks import (
    CLAIMABLE,
    MAX_EVENT_ID,
    MAX_EVENT_TYPE,
    MAX_FAILURE_CODE,
    MAX_FAILURE_MESSAGE,
    MAX_PROVIDER_ID,
    InvalidSignature,
    MalformedEvent,
    ParsedEvent,
    Signal,
    StoredWebhook,
    WebhookRepository,
    WebhookStatus,
    WebhookVerifier,
    event_identity,
)

__all__ = [
    "CLAIMABLE",
    "MAX_EVENT_ID",
    "MAX_EVENT_TYPE",
    "MAX_FAILURE_CODE",
    "MAX_FAILURE_MESSAGE",
    "MAX_PROVIDER_ID",
    "AuthorizeRequest",
    "Capabilities",
    "CircuitOpen",
    "Claim",
    "ClaimOutcome",
    "Clock",
    "ExportTargetFailed",
    "ExportWindow",
    "IdempotencyStore",
    "InboxEntry",
    "InboxRepository",
    "InvalidSignature",
    "Ledger",
    "Limits",
    "Lookup",
    "MalformedEvent",
    "MockControl",
    "Movement",
    "MovementSource",
    "OperationRepository",
    "OrderRepository",
    "OutboxMessage",
    "OutboxRepository",
    "ParsedEvent",
    "PaymentFilter",
    "PaymentProvider",
    "PaymentRepository",
    "ProviderCall",
    "ProviderCallLog",
    "ProviderError",
    "ProviderServerError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "Providers",
    "PublishFailed",
    "Publisher",
    "ReconciliationRepository",
    "RefundRepository",
    "Signal",
    "SnapshotRepository",
    "StorageUnavailable",
    "StoredEvent",
    "StoredResponse",
    "StoredWebhook",
    "Telemetry",
    "UnitOfWork",
    "UnitOfWorkFactory",
    "WebhookRepository",
    "WebhookStatus",
    "WebhookVerifier",
    "event_identity",
]
