"""Repositories: explicit Core statements mapped to domain objects, one module per aggregate
(`orders`, `payments`, `operations`, `refunds`, `snapshots`, `reconciliations`). Few round trips:
a payment's save is one UPDATE plus one multi-row INSERT per table it touches.

Hot statements are built once at import with bind parameters: building and coercing a statement
on every call cost more CPU than executing it (see docs/performance.md)."""
