"""`GET /api/v1/admin/exports/ledger.csv`: the money movements of a window, as a CSV file that a
CSV reader opens with the documented header, holding exactly the rows the database holds for
that window (docs/exports.md), on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncGenerator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import sqlalchemy as sa

from tests.api.conftest import Api, assert_problem
from tests.conftest import ADMIN_KEY, CUSTOMER_KEY, SERVICE_KEY, headers
from tillpoint.adapters.db import tables as t
from tillpoint.domain.money import Money
from tillpoint.domain.timestamps import rfc3339
from tillpoint.service.exports import LEDGER_COLUMNS, LEDGER_HEADER
from tillpoint.service.ports import ExportWindow, Movement

EXPORTS_DOC = Path(__file__).resolve().parents[2] / "docs" / "exports.md"

PATH = "/api/v1/admin/exports/ledger.csv"
# The header as docs/exports.md documents it.
HEADER = [
    "created_at",
    "updated_at",
    "transaction_id",
    "kind",
    "status",
    "payment_id",
    "order_id",
    "provider",
    "provider_payment_id",
    "provider_reference",
    "refund_id",
    "currency",
    "amount",
    "amount_minor",
    "settled_amount",
    "settled_minor",
    "idempotency_key",
    "error_code",
    "reason",
]


def now(api: Api) -> datetime:
    return api.container.deps.clock.now()


async def export(api: Api, start: datetime, end: datetime, **params: str) -> httpx.Response:
    response = await api.get(
        PATH, key=ADMIN_KEY, created_from=rfc3339(start), created_to=rfc3339(end), **params
    )
    assert response.status_code == 200, response.text
    return response


def parse(response: httpx.Response) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(response.content.decode("utf-8"), newline=""))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


async def stored(api: Api, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """The window's operations and lone refunds, read straight from the tables."""
    txn, p, r = t.payment_transactions, t.payments, t.refunds
    async with api.container.engine.connect() as conn:
        operations = await conn.execute(
            sa.select(txn, p.c.order_id, p.c.provider)
            .join(p, p.c.payment_id == txn.c.payment_id)
            .where(txn.c.created_at >= start, txn.c.created_at < end)
        )
        found = [dict(row._mapping) for row in operations]
        lone = await conn.execute(
            sa.select(r).where(
                r.c.created_at >= start,
                r.c.created_at < end,
                r.c.refund_id.not_in(
                    sa.select(txn.c.refund_id).where(txn.c.refund_id.is_not(None))
                ),
            )
        )
        assert lone.all() == []  # every refund of this code has its operation
    return found


def identity(row: dict[str, Any]) -> tuple[str, str, str, str, int, str, str, str]:
    return (
        str(row["transaction_id"]),
        str(row["payment_id"]),
        str(row["order_id"]),
        str(row["kind"]),
        int(row["amount_minor"]),
        str(row["currency"]),
        str(row["status"]),
        str(row["provider"]),
    )


async def _refund(api: Api, payment_id: str, amount: str, reason: str) -> dict[str, Any]:
    response = await api.post(
        f"/api/v1/payments/{payment_id}/refund",
        {"amount": amount, "reason": reason},
        key=ADMIN_KEY,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


class TestLedgerExport:
    async def test_the_file_holds_exactly_the_movements_of_the_window(self, api: Api) -> None:
        before = await api.confirmed("7.00")
        start = now(api)
        sale = await api.confirmed("100.00")
        refund = await _refund(api, sale["payment_id"], "30.00", "dented")
        manual = await api.confirmed("5000", "JPY", capture_method="manual")
        captured = await api.post(
            f"/api/v1/payments/{manual['payment_id']}/capture", {"amount": "4000"}
        )
        assert captured.status_code == 200, captured.text
        kwd = await api.confirmed("1.250", "KWD")
        voided = await api.confirmed("20.00", capture_method="manual")
        void = await api.post(f"/api/v1/payments/{voided['payment_id']}/void", {})
        assert void.status_code == 200, void.text
        declined_order = await api.order("9.00")
        declined = await api.payment(
            declined_order, "9.00", method={"token": "pm_card_chargeDeclined"}
        )
        assert (await api.confirm(declined["payment_id"])).status_code == 402
        end = now(api)
        after = await api.confirmed("8.00")

        response = await export(api, start, end)
        assert response.headers["content-type"] == "text/csv; charset=utf-8"
        assert response.headers["cache-control"] == "no-store"
        disposition = response.headers["content-disposition"]
        assert disposition.startswith('attachment; filename="ledger_')
        assert disposition.endswith('.csv"')
        header, rows = parse(response)
        assert header == HEADER
        expected = await stored(api, start, end)
        assert sorted(identity(row) for row in rows) == sorted(identity(row) for row in expected)
        assert len(rows) == len(expected)
        ours = {row["payment_id"] for row in rows}
        assert {
            sale["payment_id"],
            manual["payment_id"],
            kwd["payment_id"],
            voided["payment_id"],
            declined["payment_id"],
        } <= ours
        assert before["payment_id"] not in ours
        assert after["payment_id"] not in ours
        # Oldest first, and every amount is its minor units at the currency's exponent.
        assert [row["created_at"] for row in rows] == sorted(row["created_at"] for row in rows)
        for row in rows:
            minor = int(row["amount_minor"])
            assert row["amount"] == Money(minor, row["currency"]).format()
            assert (
                row["settled_amount"] == Money(int(row["settled_minor"]), row["currency"]).format()
            )

        def of(payment_id: str, kind: str) -> dict[str, str]:
            (found,) = [r for r in rows if r["payment_id"] == payment_id and r["kind"] == kind]
            return found

        back = of(sale["payment_id"], "REFUND")
        assert (back["refund_id"], back["reason"], back["status"]) == (
            refund["refund_id"],
            "dented",
            "SUCCEEDED",
        )
        assert (back["amount"], back["settled_amount"], back["settled_minor"]) == (
            "30.00",
            "-30.00",
            "-3000",
        )
        assert back["provider_reference"] == refund["provider_refund_id"]
        assert back["provider_payment_id"] == sale["provider_payment_id"]
        assert back["order_id"] == sale["order_id"]
        assert of(manual["payment_id"], "AUTHORIZE")["settled_minor"] == "0"
        jpy = of(manual["payment_id"], "CAPTURE")
        assert (jpy["amount"], jpy["amount_minor"], jpy["settled_amount"]) == (
            "4000",
            "4000",
            "4000",
        )
        assert of(kwd["payment_id"], "SALE")["amount"] == "1.250"
        assert of(voided["payment_id"], "VOID")["settled_amount"] == "0.00"
        failed = [r for r in rows if r["payment_id"] == declined["payment_id"]]
        assert [(r["status"], r["settled_minor"]) for r in failed] == [("FAILED", "0")]
        assert failed[0]["error_code"] == "card_declined"

    async def test_the_provider_filter_keeps_that_providers_movements(self, api: Api) -> None:
        start = now(api)
        paid = await api.confirmed("12.00")
        end = now(api)
        _, mock = parse(await export(api, start, end, provider="mock"))
        assert paid["payment_id"] in {row["payment_id"] for row in mock}
        assert {row["provider"] for row in mock} == {"mock"}
        header, other = parse(await export(api, start, end, provider="stripe"))
        assert header == HEADER
        assert other == []

    async def test_an_empty_window_is_the_header_alone(self, api: Api) -> None:
        start = now(api) + timedelta(days=3650)
        response = await export(api, start, start + timedelta(seconds=1))
        assert response.content == (",".join(HEADER) + "\r\n").encode()

    async def test_a_formula_in_free_text_is_written_as_text(self, api: Api) -> None:
        start = now(api)
        paid = await api.confirmed("10.00")
        await _refund(api, paid["payment_id"], "1.00", '=HYPERLINK("http://x")')
        _, rows = parse(await export(api, start, now(api)))
        (row,) = [
            r for r in rows if r["kind"] == "REFUND" and r["payment_id"] == paid["payment_id"]
        ]
        assert row["reason"] == '\'=HYPERLINK("http://x")'
        assert row["settled_amount"] == "-1.00"

    async def test_payments_commit_while_an_export_streams(self, api: Api) -> None:
        """The export's read holds no write lock (SQLite's writers `BEGIN IMMEDIATE`; a reader
        that did too would stop every payment for as long as a file streams)."""
        start = now(api)
        first = await api.confirmed("5.00")
        await api.confirmed("6.00")
        end = now(api)
        streamed = cast(
            AsyncGenerator[Movement, None],
            api.container.movements.movements(ExportWindow(start, end)),
        )
        try:
            head = await anext(streamed)
            during = await api.confirmed("7.00")  # commits while the read is open
            rest = [m async for m in streamed]
        finally:
            await streamed.aclose()
        assert head.payment_id == first["payment_id"]
        assert during["status"] == "CAPTURED"
        assert during["payment_id"] not in {m.payment_id for m in rest}


class TestLedgerExportRefusals:
    @pytest.mark.parametrize(
        "params",
        [
            {},
            {"created_from": "2026-11-01T00:00:00Z"},
            {"created_to": "2026-11-01T00:00:00Z"},
            {"created_from": "yesterday", "created_to": "2026-11-01T00:00:00Z"},
            {"created_from": "1700000000", "created_to": "1800000000"},
            {"created_from": "2026-11-01", "created_to": "2026-12-01"},  # no time, no zone
            {"created_from": "2026-13-01T00:00:00Z", "created_to": "2026-12-01T00:00:00Z"},
            {"created_from": "99999-01-01T00:00:00Z", "created_to": "2026-12-01T00:00:00Z"},
            {"created_from": "2026-12-01T00:00:00Z", "created_to": "2026-12-01T00:00:00Z"},
            {"created_from": "2026-12-02T00:00:00Z", "created_to": "2026-12-01T00:00:00Z"},
            {
                "created_from": "2026-11-01T00:00:00Z",
                "created_to": "2026-12-01T00:00:00Z",
                "provider": "",
            },
            {
                "created_from": "2026-11-01T00:00:00Z",
                "created_to": "2026-12-01T00:00:00Z",
                "provider": "x" * 33,
            },
            {
                "created_from": "2026-11-01T00:00:00Z",
                "created_to": "2026-12-01T00:00:00Z",
                "provider": "mo\x00ck",
            },
            {"created_from": "9" * 5000, "created_to": "2026-12-01T00:00:00Z"},
        ],
    )
    async def test_a_bad_window_is_422(self, api: Api, params: dict[str, str]) -> None:
        response = await api.client.get(PATH, params=params, headers=headers(ADMIN_KEY))
        problem = assert_problem(response, 422, "validation_error")
        assert problem["errors"]

    @pytest.mark.parametrize(
        ("key", "status", "code"),
        [(SERVICE_KEY, 403, "forbidden"), (CUSTOMER_KEY, 404, "not_found")],  # API.md's roles
    )
    async def test_only_an_admin_exports(self, api: Api, key: str, status: int, code: str) -> None:
        params = {"created_from": "2026-11-01T00:00:00Z", "created_to": "2026-12-01T00:00:00Z"}
        response = await api.client.get(PATH, params=params, headers=headers(key))
        assert_problem(response, status, code)

    async def test_no_token_is_401(self, api: Api) -> None:
        response = await api.client.get(PATH)
        assert_problem(response, 401, "unauthenticated")


class TestDocumentation:
    def test_the_header_is_the_documented_one(self) -> None:
        text = EXPORTS_DOC.read_text()
        (block,) = re.findall(r"```csv\n(.+)\n```", text)
        assert block.split(",") == HEADER == list(LEDGER_HEADER)

    def test_every_column_has_its_row_with_its_parquet_type(self) -> None:
        rows = dict(re.findall(r"^\| `([a-z_]+)` \| ([^|]+) \|", EXPORTS_DOC.read_text(), re.M))
        names = {"string": "string", "int64": "int64", "timestamp": "timestamp (µs, UTC)"}
        for column in LEDGER_COLUMNS:
            documented = names[column.type] + (", nullable" if column.nullable else "")
            assert rows.get(column.name, "").strip() == documented, column.name
