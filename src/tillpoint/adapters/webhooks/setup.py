"""Webhook secrets and verifiers from settings; a provider with an empty secret is refused.

The mock's secret may be generated: with the embedded database and none configured it is
created on first start (`whsec_` + base64 of 24 random bytes) and kept in
`<state_dir>/mock-webhook-secret`; with PostgreSQL it must be configured.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from tillpoint.adapters.webhooks.standard import StandardWebhooksVerifier
from tillpoint.adapters.webhooks.stripe import StripeVerifier
from tillpoint.config import ConfigurationRefused, Settings
from tillpoint.service.ports import WebhookVerifier


class WebhookSecretRefused(ConfigurationRefused):
    pass


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def mock_webhook_secret(settings: Settings) -> str:
    if settings.mock_webhook_secret is not None:
        secret = settings.mock_webhook_secret.get_secret_value().strip()
        if not secret:
            raise WebhookSecretRefused("TILLPOINT_MOCK_WEBHOOK_SECRET is set but empty")
        return secret
    if not settings.embedded:
        raise WebhookSecretRefused(
            "TILLPOINT_MOCK_WEBHOOK_SECRET is not set: set it before running against PostgreSQL"
        )
    path = Path(settings.state_dir) / "mock-webhook-secret"
    if not path.exists():
        # Written aside, then linked into place: a concurrent first start never reads a
        # half-written file, and the first process to link wins.
        path.parent.mkdir(parents=True, exist_ok=True)
        aside = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(new_secret())
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
        finally:
            aside.unlink()
    secret = path.read_text().strip()
    if not secret:
        raise WebhookSecretRefused(f"{path} is empty")
    return secret


def webhook_verifiers(settings: Settings, mock_secret: str) -> dict[str, WebhookVerifier]:
    """`mock` always; `stripe` only when at least one of its signing secrets is configured
    (`TILLPOINT_STRIPE_WEBHOOK_SECRETS`, comma-separated for a rotation, and/or
    `TILLPOINT_STRIPE_WEBHOOK_SECRET`); a signature made with any of them is accepted."""
    try:
        verifiers: dict[str, WebhookVerifier] = {
            "mock": StandardWebhooksVerifier("mock", mock_secret)
        }
    except Exception as exc:
        raise WebhookSecretRefused(f"the mock webhook secret is unusable: {exc}") from None
    single = settings.stripe_webhook_secret
    if single is not None and not single.get_secret_value().strip():
        raise WebhookSecretRefused("TILLPOINT_STRIPE_WEBHOOK_SECRET is set but empty")
    stripe_secrets = tuple(secret.strip() for secret in settings.stripe_signing_secrets)
    if stripe_secrets:
        verifiers["stripe"] = StripeVerifier(*stripe_secrets)
    return verifiers
