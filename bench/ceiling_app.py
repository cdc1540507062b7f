"""Ceiling endpoints served by uvicorn with the service's own settings (2 workers, no access
log): what the framework alone costs, and what the create transaction costs through raw asyncpg.
Run by `python -m bench`, never by the service."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from pydantic import BaseModel

from bench.sql import INSERT_EVENT, INSERT_KEY, INSERT_OUTBOX, INSERT_PAYMENT


class PingIn(BaseModel):
    order_id: str


plain_app = FastAPI()


@plain_app.post("/ping")
async def ping(body: PingIn) -> dict[str, Any]:
    return {"ok": True, "order_id": body.order_id}


@asynccontextmanager
async def _pool(app: FastAPI) -> AsyncIterator[None]:
    dsn = os.environ["BENCH_PG_DSN"]
    size = int(os.environ.get("BENCH_PG_POOL", "16"))
    app.state.pool = await asyncpg.create_pool(dsn, min_size=size, max_size=size)
    try:
        yield
    finally:
        await app.state.pool.close()


asyncpg_app = FastAPI(lifespan=_pool)


@asyncpg_app.post("/payments", status_code=201)
async def create(body: PingIn, request: Request) -> dict[str, Any]:
    suffix = secrets.token_hex(10)
    payment_id = f"pay_{suffix}"
    pool: asyncpg.Pool = request.app.state.pool
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(INSERT_KEY, "asyncpg POST /payments", f"k-{suffix}")
        await conn.execute(INSERT_PAYMENT, payment_id, body.order_id, f"rk-{suffix}")
        await conn.execute(INSERT_EVENT, f"evt_{suffix}", payment_id)
        await conn.execute(INSERT_OUTBOX, f"evo_{suffix}", payment_id)
    return {"payment_id": payment_id, "order_id": body.order_id, "status": "INITIATED"}
