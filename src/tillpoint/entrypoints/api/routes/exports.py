"""Exports a finance team opens: streamed CSV files (docs/exports.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from tillpoint.entrypoints.api.dependencies import Admin, ContainerDep
from tillpoint.entrypoints.api.openapi import answers
from tillpoint.entrypoints.api.schemas import LedgerExportQuery
from tillpoint.service import exports
from tillpoint.service.ports import ExportWindow

router = APIRouter(prefix="/api/v1/admin/exports", tags=["admin"])

# Starlette adds `; charset=utf-8` to a text/* media type: the answer is `text/csv; charset=utf-8`.
CSV_MEDIA_TYPE = "text/csv"


class CsvResponse(StreamingResponse):
    media_type = CSV_MEDIA_TYPE


async def csv_response(chunks: AsyncIterator[bytes], filename: str) -> CsvResponse:
    """A streamed CSV download of any row source's chunks. The first chunk is read before the
    answer starts, so a source that fails at once (the database is down) answers with a problem
    document instead of a cut-off 200."""
    first = await anext(chunks)

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for chunk in chunks:
            yield chunk

    return CsvResponse(
        body(),
        media_type=CSV_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


@router.get(
    "/ledger.csv",
    summary="Every money movement of a window, as a streamed CSV file (admin)",
    response_class=CsvResponse,
    responses={
        200: {
            "description": "the CSV file (UTF-8); its header and columns are in docs/exports.md",
            "content": {CSV_MEDIA_TYPE: {"schema": {"type": "string"}}},
            "headers": {
                "Content-Disposition": {
                    "description": 'attachment; filename="ledger_<from>_<to>.csv"',
                    "required": True,
                    "schema": {"type": "string", "pattern": "^attachment; filename="},
                }
            },
        },
        **answers(401, 403, 422, 503),
    },
)
async def ledger_csv(
    query: Annotated[LedgerExportQuery, Query()], principal: Admin, container: ContainerDep
) -> CsvResponse:
    window = ExportWindow(query.created_from, query.created_to, query.provider)
    records = exports.ledger_records(window, source=container.movements)
    name = f"ledger_{_stamp(window.created_from)}_{_stamp(window.created_to)}.csv"
    return await csv_response(exports.csv_chunks(exports.LEDGER_HEADER, records), name)
