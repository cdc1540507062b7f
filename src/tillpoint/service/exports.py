"""Exports a finance team can open: the ledger of money movements of a window, as rows of
documented, typed columns, and a streaming CSV encoder for any such rows.

A money movement is one provider operation (authorize, sale, capture, void, refund) in any
status, so finance sees failed, pending and unknown operations next to the settled ones; a
refund recorded without an operation is a movement too. `settled_*` is what the movement did
to the money collected: + a succeeded sale or capture, - a succeeded refund, 0 otherwise, so the
column's sum is the window's net collected amount per currency. docs/exports.md is the reference.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from tillpoint.domain.errors import ValidationFailed
from tillpoint.domain.money import Money
from tillpoint.domain.payment.status import OperationKind, OperationStatus
from tillpoint.domain.timestamps import rfc3339
from tillpoint.service.ports import ExportWindow, Movement, MovementSource

ColumnType = Literal["string", "int64", "timestamp"]
Value = str | int | datetime | None
Record = tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: ColumnType
    nullable: bool = False


LEDGER_COLUMNS: Final[tuple[Column, ...]] = (
    Column("created_at", "timestamp"),
    Column("updated_at", "timestamp", nullable=True),
    Column("transaction_id", "string", nullable=True),
    Column("kind", "string"),
    Column("status", "string"),
    Column("payment_id", "string"),
    Column("order_id", "string"),
    Column("provider", "string"),
    Column("provider_payment_id", "string", nullable=True),
    Column("provider_reference", "string", nullable=True),
    Column("refund_id", "string", nullable=True),
    Column("currency", "string"),
    Column("amount", "string"),
    Column("amount_minor", "int64"),
    Column("settled_amount", "string"),
    Column("settled_minor", "int64"),
    Column("idempotency_key", "string", nullable=True),
    Column("error_code", "string", nullable=True),
    Column("reason", "string", nullable=True),
)
LEDGER_HEADER: Final = tuple(column.name for column in LEDGER_COLUMNS)

_COLLECTS: Final = frozenset({OperationKind.SALE, OperationKind.CAPTURE})


def settled_minor(kind: str, status: str, amount_minor: int) -> int:
    """What a movement did to the money collected, in minor units."""
    if status != OperationStatus.SUCCEEDED:
        return 0
    if kind in _COLLECTS:
        return amount_minor
    if kind == OperationKind.REFUND:
        return -amount_minor
    return 0


def ledger_record(movement: Movement) -> Record:
    """One movement as the values of `LEDGER_COLUMNS`, major units formatted from minor units
    with the currency's exponent (never through a float)."""
    settled = settled_minor(movement.kind, movement.status, movement.amount_minor)
    return (
        movement.created_at,
        movement.updated_at,
        movement.transaction_id,
        movement.kind,
        movement.status,
        movement.payment_id,
        movement.order_id,
        movement.provider,
        movement.provider_payment_id,
        movement.provider_reference,
        movement.refund_id,
        movement.currency,
        Money(movement.amount_minor, movement.currency).format(),
        movement.amount_minor,
        Money(settled, movement.currency).format(),
        settled,
        movement.idempotency_key,
        movement.error_code,
        movement.reason,
    )


def check_window(window: ExportWindow) -> ExportWindow:
    """A window is half-open, `[created_from, created_to)`, and must not be empty."""
    if window.created_from >= window.created_to:
        raise ValidationFailed("created_to", "created_to must be later than created_from")
    return window


async def ledger_records(window: ExportWindow, *, source: MovementSource) -> AsyncIterator[Record]:
    """Every money movement of the window, oldest first, as ledger records (streamed)."""
    async for movement in source.movements(check_window(window)):
        yield ledger_record(movement)


async def batches(records: AsyncIterable[Record], size: int) -> AsyncIterator[list[Record]]:
    """`records` in lists of up to `size` (a Parquet row group, a progress bar's step)."""
    batch: list[Record] = []
    async for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# -- CSV ---------------------------------------------------------------------------------------

# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection). Free
# text (a refund's reason) could: such a cell is written with a leading `'`, which spreadsheets
# show as text. A number (`-10.00`) is left alone.
_FORMULA: Final = re.compile(r"[=+\-@\t\r]")
_NUMBER: Final = re.compile(r"-?[0-9]+(\.[0-9]+)?")
CHUNK_BYTES: Final = 64 * 1024


def csv_cell(value: Value) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, int):
        return str(value)
    if _FORMULA.match(value) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


async def csv_chunks(
    header: Sequence[str], records: AsyncIterable[Record], *, chunk_bytes: int = CHUNK_BYTES
) -> AsyncIterator[bytes]:
    """RFC 4180 CSV (UTF-8, CRLF, quoted where needed) of any rows, in chunks of about
    `chunk_bytes`: the header first, then each record. No chunk is yielded before the first
    record was read (or the source turned out empty), so a source that fails at once fails
    before a caller that waits for the first chunk has sent any byte."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    async for record in records:
        writer.writerow([csv_cell(value) for value in record])
        if buffer.tell() >= chunk_bytes:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()
