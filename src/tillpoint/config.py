"""Settings: environment variables with the prefix `TILLPOINT_` (a `.env` file works too).

Every setting is documented in docs/configuration.md.
"""

from __future__ import annotations

import re
from datetime import timedelta
from functools import cached_property
from typing import Annotated, Literal

from limits import parse_many
from pydantic import BaseModel, BeforeValidator, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tillpoint.domain.order import FailurePolicy
from tillpoint.service.messages import EventDialect

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_MAX_HEADER_BYTES = 32 * 1024

# Requests per window for each class of caller: its role, `webhooks` (per sending address),
# `anonymous` (requests without a valid token, per address); others take `default`'s.
RateClass = Literal["default", "admin", "service", "customer", "webhooks", "anonymous"]
DEFAULT_RATE_LIMITS: dict[RateClass, str] = {
    "default": "100/second",
    "customer": "10/second",
    "webhooks": "200/second",
    "anonymous": "20/second",
}

_DURATION = re.compile(r"(?P<n>[0-9]+)(?P<unit>ms|s|m|h|d)")
_UNITS = {"ms": "milliseconds", "s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(value: object) -> timedelta:
    """`"24h"`, `"15m"`, `"90s"`, `"1d"`, or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    text = str(value).strip()
    if text.isdigit():
        return timedelta(seconds=int(text))
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as 90s, 15m, 24h or 1d")
    return timedelta(**{_UNITS[match["unit"]]: int(match["n"])})


def _durations(value: object) -> tuple[timedelta, ...]:
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    assert isinstance(value, list | tuple)
    return tuple(parse_duration(v) for v in value)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Durations = Annotated[tuple[timedelta, ...], NoDecode, BeforeValidator(_durations)]


class ConfigurationRefused(RuntimeError):
    """Settings the service will not start with (missing keys or secrets in production)."""


class ApiKey(BaseModel):
    # The principal the key stands for: idempotency keys and records are scoped by it, so a
    # key's value can be rotated (old and new value listed under one id) without losing them.
    id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    key: SecretStr = Field(min_length=16)
    role: Literal["admin", "service", "customer"]
    subject: str | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TILLPOINT_", env_file=".env", extra="ignore", frozen=True
    )

    database_url: str = "sqlite+aiosqlite:///./tillpoint.db"
    db_pool_size: int = Field(10, ge=1, le=100)
    broker_url: str = ""
    events_exchange: str = "payments.events"
    # "argument": declare the exchange with `alternate-exchange=<exchange>.unrouted`;
    # "policy": an operator's policy sets it (an exchange made before that argument existed).
    events_alternate_exchange: Literal["argument", "policy"] = "argument"
    stock_confirmed_queue: str = "payment.stock-confirmed"
    order_created_queue: str = "payment.order-created"
    consumer_prefetch: int = Field(16, ge=1, le=1000)
    outbox_batch_size: int = Field(100, ge=1, le=10_000)
    outbox_interval: Duration = timedelta(milliseconds=100)
    broker_publish_timeout: Duration = timedelta(seconds=5)
    # `/healthz/ready` reports the relay STALLED once the oldest unpublished row is this old.
    outbox_stall_after: Duration = timedelta(minutes=5)
    # The shape of published bodies: API.md's snake_case, or seed 004's ordering service.
    event_dialect: EventDialect = EventDialect.DEFAULT
    api_keys: list[ApiKey] = Field(default_factory=list)
    # OIDC bearer tokens (JWTs, e.g. from a Keycloak realm) next to the API keys; off while
    # `oidc_issuer` is empty. Documented in docs/auth.md.
    oidc_issuer: str = ""
    oidc_audience: str = ""
    oidc_jwks_url: str = ""  # empty: the `jwks_uri` of the issuer's discovery document
    # The issuer's role names -> ours, e.g. {"payments-admin":"admin","customer":"customer"}.
    oidc_role_map: dict[str, Literal["admin", "service", "customer"]] = Field(default_factory=dict)
    # Where roles are read; `*` matches any key (every client of `resource_access`).
    oidc_role_claims: Annotated[tuple[str, ...], NoDecode] = (
        "realm_access.roles",
        "resource_access.*.roles",
    )
    oidc_subject_claim: str = "sub"  # a customer's buyer_id
    oidc_leeway: Duration = timedelta(seconds=30)
    # An unknown `kid` refetches the JWKS at most once per this interval.
    oidc_jwks_refresh_min_interval: Duration = timedelta(seconds=30)
    state_dir: str = ".tillpoint"
    default_provider: str = "mock"
    on_payment_failure: FailurePolicy = FailurePolicy.KEEP_PENDING
    idempotency_ttl: Duration = timedelta(hours=24)
    idempotency_lock_timeout: Duration = timedelta(seconds=90)
    snapshot_ttl: Duration = timedelta(minutes=15)
    payment_ttl: Duration = timedelta(minutes=30)
    # Where this deployment runs: provider credentials must match it (a live Stripe key only
    # in production, a test key never there).
    environment: Literal["sandbox", "production"] = "sandbox"
    # Resilient provider calls (every adapter): a timeout per attempt; network errors and 5xx
    # retried with exponential backoff and jitter, re-sending the same provider idempotency
    # key; a circuit breaker per provider that fails calls fast while it is open.
    provider_timeout: Duration = timedelta(seconds=10)
    provider_retries: int = Field(2, ge=0, le=10)
    provider_retry_backoff: Duration = timedelta(milliseconds=200)
    provider_retry_backoff_max: Duration = timedelta(seconds=2)
    provider_breaker_threshold: int = Field(5, ge=1, le=1000)
    provider_breaker_reset: Duration = timedelta(seconds=30)
    recheck_schedule: Durations = (timedelta(minutes=5), timedelta(hours=1), timedelta(days=1))
    janitor_interval: Duration = timedelta(seconds=5)
    # Reconciliation against the providers (service/reconciliation.py, docs/operations.md).
    reconcile_interval: Duration = timedelta(hours=1)
    reconcile_window: Duration = timedelta(hours=48)
    reconcile_stale_after: Duration = timedelta(minutes=5)
    reconcile_stuck_after: Duration = timedelta(hours=24)
    mock_delay_ms: int = Field(0, ge=0, le=60_000)
    mock_webhook_secret: SecretStr | None = None
    mock_webhook_url: str = ""
    webhook_max_attempts: int = Field(10, ge=1, le=100)
    webhook_retry_base: Duration = timedelta(seconds=5)  # first retry; doubles, with jitter
    webhook_retry_max: Duration = timedelta(hours=1)
    # Test-only: "duplicate,reorder,late" make the mock's webhook simulator misbehave.
    mock_webhook_faults: Annotated[frozenset[str], NoDecode] = frozenset()
    stripe_api_key: SecretStr | None = None
    stripe_api_base: str = ""  # empty: Stripe's own API; a local fake (localstripe) in tests
    # `whsec_…` signing secrets, comma-separated: several are accepted during a rotation.
    stripe_webhook_secrets: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    stripe_webhook_secret: SecretStr | None = None  # one secret (API.md's first name for it)
    # `limits` notation ("50/second", "10/second;300/minute"); "" = no limit for that class.
    # The value replaces the defaults: `{}` turns rate limiting off.
    rate_limits: dict[RateClass, str] = Field(default_factory=lambda: dict(DEFAULT_RATE_LIMITS))
    # Where the counts live when several processes must share them; empty: in each process.
    redis_url: str = ""
    rate_limit_prefix: str = Field("tillpoint", pattern=r"^[A-Za-z0-9._:-]{1,64}$")
    # Requests beyond these limits are refused (413, 431) before they are read into memory.
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1024, le=1024**3)
    max_header_bytes: int = Field(DEFAULT_MAX_HEADER_BYTES, ge=4096, le=1024**2)
    # `tillpoint export … --out s3://bucket/key`: an S3-compatible endpoint (MinIO, …); empty:
    # AWS S3. Credentials and region come from boto3's own chain (AWS_* variables, profiles).
    export_s3_endpoint: str = ""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    run_workers_in_api: bool | None = None
    # `tillpoint worker` serves Prometheus metrics here when set (0 = off).
    worker_metrics_port: int = Field(0, ge=0, le=65535)
    worker_metrics_host: str = "127.0.0.1"

    @field_validator("mock_webhook_faults", mode="before")
    @classmethod
    def _faults(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("stripe_webhook_secrets", mode="before")
    @classmethod
    def _secrets(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("oidc_role_claims", mode="before")
    @classmethod
    def _role_claims(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("rate_limits")
    @classmethod
    def _rate_limits(cls, value: dict[RateClass, str]) -> dict[RateClass, str]:
        for name, text in value.items():
            if text.strip():
                try:
                    parse_many(text)
                except ValueError:
                    raise ValueError(
                        f"{name}: {text!r} is not a rate limit such as 50/second or "
                        "10/second;300/minute"
                    ) from None
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if value and not value.removeprefix("async+").startswith(("redis://", "rediss://")):
            raise ValueError("a Redis URL starts with redis:// or rediss://")
        return value

    @field_validator("export_s3_endpoint")
    @classmethod
    def _s3_endpoint(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("an S3 endpoint is a URL that starts with http:// or https://")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @property
    def stripe_signing_secrets(self) -> tuple[str, ...]:
        """Every Stripe signing secret configured, under either setting."""
        secrets = [s.get_secret_value() for s in self.stripe_webhook_secrets]
        if self.stripe_webhook_secret is not None:
            secrets.append(self.stripe_webhook_secret.get_secret_value())
        return tuple(dict.fromkeys(s for s in secrets if s.strip()))

    def credential_refusal(self) -> str | None:
        """Why the service must not start with these provider credentials, if it must not:
        a live key outside production, or a test key in production."""
        if self.stripe_api_key is None:
            return None
        key = self.stripe_api_key.get_secret_value()
        live = key.startswith(("sk_live_", "rk_live_"))
        if live and self.environment != "production":
            return (
                "TILLPOINT_STRIPE_API_KEY is a live key (sk_live_…) but TILLPOINT_ENVIRONMENT is "
                f"{self.environment!r}: set TILLPOINT_ENVIRONMENT=production or use a test key"
            )
        if not live and self.environment == "production":
            return (
                "TILLPOINT_STRIPE_API_KEY is not a live key but TILLPOINT_ENVIRONMENT is "
                "'production': use an sk_live_… key there"
            )
        return None

    def oidc_refusal(self) -> str | None:
        """Why the OIDC settings are unusable, if they are (an issuer without an audience or a
        role map would accept any token of the realm, or none)."""
        if not self.oidc_issuer:
            return None
        if not self.oidc_audience:
            return "TILLPOINT_OIDC_ISSUER is set but TILLPOINT_OIDC_AUDIENCE is empty"
        if not self.oidc_role_map:
            return "TILLPOINT_OIDC_ISSUER is set but TILLPOINT_OIDC_ROLE_MAP is empty"
        if not self.oidc_role_claims:
            return "TILLPOINT_OIDC_ISSUER is set but TILLPOINT_OIDC_ROLE_CLAIMS is empty"
        return None

    @cached_property
    def embedded(self) -> bool:
        """SQLite: the one-command setup (dev keys, workers inside `serve`)."""
        return self.database_url.startswith("sqlite")

    @property
    def workers_in_api(self) -> bool:
        if self.run_workers_in_api is not None:
            return self.run_workers_in_api
        return self.embedded and not self.broker_url
