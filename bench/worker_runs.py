"""What the worker does, measured from the outside: its drain of a stored webhook backlog, its
relay of an outbox backlog to RabbitMQ, and the saga (order.stock-confirmed in,
payment.succeeded out)."""

from __future__ import annotations

import asyncio
import time

from bench import broker, scenarios
from bench.context import EXCHANGE, OUTBOX_BACKLOG, Bench
from bench.load import drive
from bench.procs import MemorySampler, Server
from bench.stats import Result


async def webhook_processed(bench: Bench, worker: Server) -> None:
    """The worker's drain rate over the stored backlog, from the rows' own timestamps."""
    bench.log("scenario: webhook processing by the worker (drain of the ingested backlog)")
    total = int(await bench.sql("SELECT count(*) FROM webhook_events"))  # type: ignore[call-overload]
    last_done = -1
    stalled_since = time.monotonic()
    # Generous: the drain ends when everything is processed or progress stalls for 20 s.
    deadline = time.monotonic() + max(180.0, bench.config.seconds * 30)
    with MemorySampler([worker]) as memory:
        while time.monotonic() < deadline:
            done = int(
                await bench.sql(  # type: ignore[call-overload]
                    "SELECT count(*) FROM webhook_events WHERE processed_at IS NOT NULL"
                )
            )
            if done >= total:
                break
            if done != last_done:
                last_done, stalled_since = done, time.monotonic()
            elif time.monotonic() - stalled_since > 20:
                break
            await asyncio.sleep(0.5)
    span = await bench.sql(
        "SELECT extract(epoch FROM max(processed_at) - min(processed_at))"
        " FROM webhook_events WHERE processed_at IS NOT NULL"
    )
    done = int(
        await bench.sql(  # type: ignore[call-overload]
            "SELECT count(*) FROM webhook_events WHERE processed_at IS NOT NULL"
        )
    )
    if done == 0:
        bench.skip("webhook processed", "the worker processed no stored webhook in 20 s")
        return
    result = Result("webhook processed", None, ops=done, unit="webhooks/s")
    result.seconds = float(span or 0) or 1e-9  # type: ignore[arg-type]
    # Errors are events the worker gave up on or is retrying, not ones still queued.
    result.errors = int(
        await bench.sql(  # type: ignore[call-overload]
            "SELECT count(*) FROM webhook_events WHERE status IN ('FAILED', 'DEAD')"
        )
    )
    result.rss_mb = memory.peak_per_process
    result.note = f"{done} of {total} stored webhooks, rate from processed_at"
    if done < total:
        result.note += f"; {total - done} still queued when the drain stopped"
    bench.add(result)


async def relay(bench: Bench, worker: Server) -> None:
    """The worker starts with a backlog of outbox rows (from the scenarios above) and a
    `bench.` queue bound to everything; the rate is between the first and last arrival."""
    if not bench.config.broker_url:
        bench.skip("relay", "RabbitMQ not reachable")
        worker.start()
        return
    backlog = int(
        await bench.sql(  # type: ignore[call-overload]
            "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        )
    )
    bench.log(f"scenario: relay of an outbox backlog of {backlog} rows to RabbitMQ")
    async with broker.Tap(
        bench.config.broker_url, EXCHANGE, f"bench.relay.{bench.run_id}", ["#"]
    ) as tap:
        worker.start()
        with MemorySampler([worker]) as memory:
            first_seen = await scenarios.wait_for(lambda: _true(bool(tap.arrivals)), 30)
            if first_seen:
                stalled = time.monotonic()
                seen = 0
                while len(tap.arrivals) < backlog and time.monotonic() - stalled < 15:
                    if len(tap.arrivals) != seen:
                        seen, stalled = len(tap.arrivals), time.monotonic()
                    await asyncio.sleep(0.2)
    if not tap.arrivals:
        bench.skip("relay", "the worker relayed nothing to RabbitMQ in 30 s (relay not built yet?)")
        return
    arrivals = [a[0] for a in tap.arrivals]
    result = Result("relay", None, ops=len(arrivals) - 1, unit="msg/s")
    result.seconds = max(arrivals) - min(arrivals) or 1e-9
    result.errors = max(0, backlog - len(arrivals))
    result.rss_mb = memory.peak_per_process
    result.note = f"{len(arrivals)} of {backlog} backlog rows received"
    bench.add(result)


async def saga(bench: Bench, worker: Server) -> None:
    if not bench.config.broker_url:
        for c in bench.steps():
            bench.skip("saga", "RabbitMQ not reachable", c)
        return
    await scenarios.wait_for(
        lambda: bench.count_is_zero(OUTBOX_BACKLOG),
        60,
    )
    bench.log("scenario: saga (order.stock-confirmed in → payment.succeeded out)")
    async with broker.Tap(
        bench.config.broker_url,
        EXCHANGE,
        f"bench.saga.{bench.run_id}",
        ["payment.succeeded", "payment.failed"],
    ) as tap:
        probe = broker.saga_op(tap, f"{bench.run_id}probe", timeout=30)
        try:
            await probe(0)
        except Exception as exc:
            reason = (
                "no payment.succeeded within 30 s of an order.stock-confirmed"
                f" (consumer or relay not built yet?): {type(exc).__name__} {exc}"
            )
            for c in bench.steps():
                bench.skip("saga", reason.strip(), c)
            return
        for c in bench.steps():
            op = broker.saga_op(tap, f"{bench.run_id}s{c}", timeout=15)
            result = Result("saga", c, unit="sagas/s")
            with MemorySampler([worker]) as memory:
                await drive(op, concurrency=c, seconds=bench.config.seconds, result=result)
            result.rss_mb = memory.peak_per_process
            bench.add(result)


async def _true(value: bool) -> bool:
    return value
