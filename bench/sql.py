"""The `create payment` transaction as plain SQL, written against the real schema (created by
`tillpoint migrate`): insert idempotency key + payment + payment event + outbox row. pgbench and
the bare asyncpg endpoint run exactly these statements; the service does this much and more."""

from __future__ import annotations

PAYMENT_METHOD = '{"type":"card","token":"pm_card_visa"}'

INSERT_KEY = (
    "INSERT INTO idempotency_keys (scope, key, request_hash, status, locked_at, created_at,"
    " expires_at) VALUES ($1, $2, 'bench', 'IN_PROGRESS', now(), now(), now() + interval '1 day')"
)
INSERT_PAYMENT = (
    "INSERT INTO payments (payment_id, order_id, buyer_id, status, amount_minor, currency,"
    " capture_method, provider, payment_method, request_key, created_at, updated_at)"
    " VALUES ($1, $2, 'bench-buyer', 'INITIATED', 1000, 'EUR', 'automatic', 'mock',"
    f" '{PAYMENT_METHOD}'::json, $3, now(), now())"
)
INSERT_EVENT = (
    "INSERT INTO payment_events (event_id, payment_id, event_type, payload, created_at)"
    " VALUES ($1, $2, 'PAYMENT_INITIATED',"
    ' \'{"amount":"10.00","currency":"EUR","provider":"mock"}\'::json, now())'
)
INSERT_OUTBOX = (
    "INSERT INTO outbox (event_id, aggregate_id, routing_key, message_type, sequence, body,"
    " created_at) VALUES ($1, $2, 'payment.initiated', 'payment.initiated.v1', 1,"
    ' \'{"amount":"10.00","currency":"EUR"}\', now())'
)


def pgbench_script(order_prefix: str) -> str:
    """One pgbench transaction; order ids come from a sequence over pre-created orders (a payment
    needs an existing order, and one active payment per order)."""

    def sub(statement: str, *values: str) -> str:
        for number, value in reversed(list(enumerate(values, start=1))):
            statement = statement.replace(f"${number}", value)
        return statement

    n = ":n"
    order = f"'{order_prefix}' || {n}"
    payment = f"'pay_pgb_' || {n}"
    return "\n".join(
        [
            "SELECT nextval('bench_order_seq') AS n \\gset",
            "BEGIN;",
            sub(INSERT_KEY, "'pgbench POST /api/v1/payments'", f"'k-' || {n}") + ";",
            sub(INSERT_PAYMENT, payment, order, f"'rk-' || {n}") + ";",
            sub(INSERT_EVENT, f"'evt_pgb_' || {n}", payment) + ";",
            sub(INSERT_OUTBOX, f"'evo_pgb_' || {n}", payment) + ";",
            "END;",
            "",
        ]
    )
