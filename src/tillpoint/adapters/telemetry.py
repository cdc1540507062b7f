"""Prometheus metrics (names from ARCHITECTURE.md) behind the service's `Telemetry` port."""

from __future__ import annotations

from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

REGISTRY: Final = CollectorRegistry(auto_describe=True)

COUNTERS: Final[dict[str, Counter]] = {
    "payment_create_total": Counter(
        "payment_create", "Payments created", ["status"], registry=REGISTRY
    ),
    "payment_confirm_total": Counter(
        "payment_confirm",
        "Payment confirmations by resulting status",
        ["status"],
        registry=REGISTRY,
    ),
    "payment_capture_total": Counter(
        "payment_capture", "Capture requests by resulting status", ["status"], registry=REGISTRY
    ),
    "payment_authorized_total": Counter(
        "payment_authorized", "Payments that reached AUTHORIZED", [], registry=REGISTRY
    ),
    "payment_webhook_total": Counter(
        "payment_webhook",
        "Inbound webhooks by provider and outcome",
        ["provider", "status"],
        registry=REGISTRY,
    ),
    "payment_idempotent_hit_total": Counter(
        "payment_idempotent_hit",
        "Requests answered from the idempotency store",
        [],
        registry=REGISTRY,
    ),
    "outbox_published_total": Counter(
        "outbox_published", "Outbox rows published to the broker", [], registry=REGISTRY
    ),
    "reconciliation_discrepancies_total": Counter(
        "reconciliation_discrepancies",
        "Discrepancies found by reconciliation runs, by kind and action (healed or flagged)",
        ["kind", "action"],
        registry=REGISTRY,
    ),
    "janitor_resolved_total": Counter(
        "janitor_resolved",
        "Open provider operations resolved by asking the provider",
        ["status"],
        registry=REGISTRY,
    ),
}
HISTOGRAMS: Final[dict[str, Histogram]] = {
    "payment_attempt_duration_seconds": Histogram(
        "payment_attempt_duration_seconds",
        "Duration of each provider call attempt (retries are attempts of their own)",
        ["provider", "operation", "outcome"],
        registry=REGISTRY,
    ),
    "outbox_lag_seconds": Histogram(
        "outbox_lag_seconds",
        "Time from commit to publish",
        [],
        registry=REGISTRY,
        buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300),
    ),
}
GAUGES: Final[dict[str, Gauge]] = {
    "outbox_backlog": Gauge(
        "outbox_backlog", "Unpublished outbox rows (counted up to 100000)", registry=REGISTRY
    ),
    "outbox_oldest_unpublished_age_seconds": Gauge(
        "outbox_oldest_unpublished_age_seconds",
        "Age of the oldest unpublished outbox row (0 when none waits)",
        registry=REGISTRY,
    ),
    "webhook_backlog": Gauge(
        "webhook_backlog", "Stored webhooks waiting to be processed", registry=REGISTRY
    ),
    "reconciliation_last_run_age_seconds": Gauge(
        "reconciliation_last_run_age_seconds",
        "Time since the last reconciliation run that finished (from the database on each scrape)",
        registry=REGISTRY,
    ),
    "provider_circuit_state": Gauge(
        "provider_circuit_state",
        "A provider's circuit breaker: 0 closed, 1 half-open, 2 open (calls fail fast)",
        ["provider"],
        registry=REGISTRY,
    ),
}


class PrometheusTelemetry:
    def count(self, name: str, **labels: str) -> None:
        counter = COUNTERS[name]
        (counter.labels(**labels) if labels else counter).inc()

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        histogram = HISTOGRAMS[name]
        (histogram.labels(**labels) if labels else histogram).observe(seconds)

    def gauge(self, name: str, value: float, **labels: str) -> None:
        """The `Telemetry` port's gauge; labels only for a labelled gauge (the circuit state),
        set by the adapters that own one."""
        gauge = GAUGES[name]
        (gauge.labels(**labels) if labels else gauge).set(value)

    def exposition(self) -> tuple[bytes, str]:
        """Every metric in the Prometheus text format, and its content type (`GET /metrics`)."""
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST

    def serve(self, port: int, host: str) -> None:
        """Expose the metrics on their own HTTP port, from a daemon thread (the worker)."""
        start_http_server(port, addr=host, registry=REGISTRY)
