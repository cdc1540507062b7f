"""Who is calling: the identity an authenticated API key stands for.

Adapters produce it (`adapters.keys.KeyStore.authenticate`); entrypoints authorize with its role
and scope idempotency keys and buyer data by it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    id: str  # stable, non-secret: scopes idempotency keys
    role: str
    subject: str | None = None
