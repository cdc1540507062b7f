"""The ledger's rows and the CSV encoder, without a database."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta

import pytest

from tillpoint.domain.errors import ValidationFailed
from tillpoint.service import exports
from tillpoint.service.ports import ExportWindow, Movement

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def movement(**changes: object) -> Movement:
    values: dict[str, object] = {
        "transaction_id": "txn_1",
        "kind": "REFUND",
        "status": "SUCCEEDED",
        "amount_minor": 1250,
        "currency": "KWD",
        "payment_id": "pay_1",
        "order_id": "ord-1",
        "provider": "mock",
        "provider_payment_id": "mock_pi_1",
        "provider_reference": "re_mock_1",
        "idempotency_key": "pay_1:refund:1",
        "refund_id": "re_1",
        "reason": "broken",
        "error_code": None,
        "created_at": T0,
        "updated_at": T0 + timedelta(seconds=1),
    }
    values.update(changes)
    return Movement(**values)  # type: ignore[arg-type]


async def rows(records: Iterable[exports.Record]) -> AsyncIterator[exports.Record]:
    for record in records:
        yield record


class TestSettled:
    @pytest.mark.parametrize(
        ("kind", "status", "settled"),
        [
            ("SALE", "SUCCEEDED", 500),
            ("CAPTURE", "SUCCEEDED", 500),
            ("REFUND", "SUCCEEDED", -500),
            ("AUTHORIZE", "SUCCEEDED", 0),
            ("VOID", "SUCCEEDED", 0),
            ("SALE", "FAILED", 0),
            ("CAPTURE", "PENDING", 0),
            ("REFUND", "UNKNOWN", 0),
        ],
    )
    def test_only_succeeded_sales_captures_and_refunds_settle(
        self, kind: str, status: str, settled: int
    ) -> None:
        assert exports.settled_minor(kind, status, 500) == settled


class TestLedgerRecord:
    def test_amounts_are_formatted_from_minor_units_at_the_currencys_exponent(self) -> None:
        record = dict(zip(exports.LEDGER_HEADER, exports.ledger_record(movement()), strict=True))
        assert (record["amount"], record["amount_minor"]) == ("1.250", 1250)
        assert (record["settled_amount"], record["settled_minor"]) == ("-1.250", -1250)
        assert record["created_at"] == T0

    def test_an_empty_window_is_refused(self) -> None:
        with pytest.raises(ValidationFailed):
            exports.check_window(ExportWindow(T0, T0))


class TestCsv:
    @pytest.mark.parametrize(
        ("value", "cell"),
        [
            (None, ""),
            (-1250, "-1250"),
            ("-12.50", "-12.50"),
            ("=1+1", "'=1+1"),
            ("+cmd", "'+cmd"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ('dented, "badly"', 'dented, "badly"'),
            (T0 + timedelta(milliseconds=125), "2026-11-01T00:00:00.125Z"),
        ],
    )
    def test_a_cell(self, value: exports.Value, cell: str) -> None:
        assert exports.csv_cell(value) == cell

    async def test_chunks_join_into_one_rfc_4180_file(self) -> None:
        many = [exports.ledger_record(movement(transaction_id=f"txn_{i}")) for i in range(500)]
        chunks = [
            c async for c in exports.csv_chunks(exports.LEDGER_HEADER, rows(many), chunk_bytes=4096)
        ]
        assert len(chunks) > 5
        assert all(len(chunk) < 4096 + 1024 for chunk in chunks)
        text = b"".join(chunks).decode()
        parsed = list(csv.reader(io.StringIO(text, newline="")))
        assert parsed[0] == list(exports.LEDGER_HEADER)
        assert [row[2] for row in parsed[1:]] == [f"txn_{i}" for i in range(500)]
        assert text.count("\r\n") == 501

    async def test_no_rows_is_the_header_alone(self) -> None:
        chunks = [c async for c in exports.csv_chunks(("a", "b"), rows([]))]
        assert chunks == [b"a,b\r\n"]
