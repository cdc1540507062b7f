"""Every command of the runbooks (docs/runbooks/*.md) runs.

Each fenced `sh` block of each page is run with `bash -euo pipefail -c` against a stage of its
own: a new PostgreSQL database, a `tillpoint serve` and a `tillpoint worker` (with its metrics
port) on RabbitMQ under an exchange and queues named for this module, and the data the pages
look at, made through the API first: a captured payment disputed in the mock's dashboard, an
asynchronous payment settled by its webhook, a webhook for a payment nobody knows (`DEAD`
after its one attempt), a sale at the mock that tillpoint does not know, a reconciliation run
that heals the dispute and flags that sale, and then a payment whose provider call timed out
(still open). The environment is the one the runbooks' README describes; the ids the pages
ask the reader to set come from that data. A block must exit 0.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import textwrap
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import (
    ADMIN_KEY,
    CI,
    SERVICE_KEY,
    create_database,
    drop_database,
    free_port,
    headers,
    need_service,
    new_key,
    settings_for,
)
from tests.support.server import HOST, ROOT, TILLPOINT, Server, migrate, server_env, start_server
from tests.webhooks.support import mock_event, sign_mock
from tillpoint.adapters.providers.mock import MockGateway
from tillpoint.adapters.providers.resilient import Resilient
from tillpoint.bootstrap import build
from tillpoint.domain.money import Money
from tillpoint.domain.payment import PaymentMethod
from tillpoint.service.ports import AuthorizeRequest

RUNBOOKS = ROOT / "docs" / "runbooks"
# The stuck operation's page first: its diagnosis sees the timed-out operation still open, its
# fix settles it (the other pages' reconciliation runs would settle it before).
FIRST = ["README.md", "stuck-operation.md"]
PAGES = [*FIRST, *sorted(p.name for p in RUNBOOKS.glob("*.md") if p.name not in FIRST)]
TOPICS = [
    "webhook-outage.md",
    "reconciliation-mismatch.md",
    "broker-outage.md",
    "stuck-operation.md",
    "dispute.md",
]
TOOLS = ["bash", "curl", "jq", "psql", "rabbitmqctl", "rabbitmq-diagnostics"]
LOGGERS = "webhook|reconciliation|outbox|consumers?|broker|janitor|worker|startup"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEADLINE = 90.0
T = TypeVar("T")

# A fenced block, possibly indented under a list item: ```sh … ``` at the same indentation.
FENCE = re.compile(r"^(?P<indent>[ ]*)```sh\n(?P<body>.*?)^(?P=indent)```[ ]*$", re.M | re.S)


def blocks(page: str) -> list[str]:
    text = (RUNBOOKS / page).read_text()
    return [textwrap.dedent(m["body"]) for m in FENCE.finditer(text)]


COMMANDS = [(page, n, block) for page in PAGES for n, block in enumerate(blocks(page), 1)]


def run_async(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """A coroutine run to its end on a loop of its own (a fixture here is not async)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, make()).result()


def wait_for(what: str, check: Callable[[], T | None]) -> T:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        found = check()
        if found is not None:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    metrics_url: str
    log: Path

    def kill(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
                return


def start_worker(database_url: str, workdir: Path, **settings: str) -> Worker:
    port = free_port(HOST)
    env = server_env(
        database_url, workdir / ".tillpoint", worker_metrics_port=str(port), **settings
    )
    log = workdir / f"worker-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [TILLPOINT, "worker"],
            env=env,
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = Worker(proc, f"http://{HOST}:{port}/", log)

    def answers() -> bool | None:
        if proc.poll() is not None:
            raise AssertionError(f"the worker exited: {log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(worker.metrics_url, timeout=2).status_code == 200 or None
        return None

    try:
        wait_for("the worker's metrics port", answers)
    except BaseException:
        worker.kill()
        raise
    return worker


class Api:
    """The stage's HTTP steps; each asserts the status a well-formed request gets."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=60)

    def post(self, path: str, key: str, body: Any = None, status: int = 200) -> Any:
        response = self.http.post(path, json=body, headers=headers(key, new_key()))
        assert response.status_code == status, response.text
        return response.json()

    def get(self, path: str) -> Any:
        response = self.http.get(path, headers=headers(ADMIN_KEY))
        assert response.status_code == 200, response.text
        return response.json()

    def payment(self, token: str) -> dict[str, Any]:
        """A new order and its payment with the mock's test card `token`, confirmed."""
        order_id = f"rb-{secrets.token_hex(6)}"
        order = {"order_id": order_id, "buyer_id": "b", "amount": "20.00", "currency": "EUR"}
        self.post("/api/v1/orders", SERVICE_KEY, order, 201)
        body = {**order, "payment_method": {"type": "card", "token": token}}
        del body["buyer_id"]
        created = self.post("/api/v1/payments", SERVICE_KEY, body, 201)
        confirmed: dict[str, Any] = self.post(
            f"/api/v1/payments/{created['payment_id']}/confirm", SERVICE_KEY
        )
        return confirmed


async def sale_elsewhere(database_url: str) -> str:
    """A sale on the mock's account that tillpoint never made (reconciliation flags it)."""
    container = build(settings_for(database_url))
    try:
        resilient = container.deps.providers["mock"]
        assert isinstance(resilient, Resilient)
        mock = resilient.inner
        assert isinstance(mock, MockGateway)
        request = AuthorizeRequest(
            payment_id="",
            order_id="elsewhere",
            amount=Money(4_200, "EUR"),
            capture=True,
            payment_method=PaymentMethod(token="pm_card_visa"),
        )
        outcome = await mock.authorize(request, idempotency_key=f"elsewhere:{new_key()}")
        assert outcome.provider_payment_id is not None
        return outcome.provider_payment_id
    finally:
        await container.aclose()


async def delete_broker_names(queues: list[str], exchanges: list[str]) -> None:
    connection = await aio_pika.connect_robust(AMQP_URL)
    try:
        channel = await connection.channel()
        for queue in queues:
            with contextlib.suppress(Exception):
                await channel.queue_delete(queue)
        for exchange in exchanges:
            with contextlib.suppress(Exception):
                await channel.exchange_delete(exchange)
    finally:
        await connection.close()


@dataclass
class Stage:
    env: dict[str, str]
    per_page: dict[str, dict[str, str]]
    server: Server
    worker: Worker


def stage_data(
    api: Api, database_url: str, since: datetime
) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """The data the runbooks look at; returns (the common ids, the per-page ids)."""
    disputed = api.payment("pm_card_visa")
    assert disputed["status"] == "CAPTURED", disputed
    api.post(
        f"/api/v1/mock/dashboard/{disputed['provider_payment_id']}/dispute",
        ADMIN_KEY,
        {"amount": "5.00", "webhook": "never"},  # a lost webhook: reconciliation finds it
    )
    settled = api.payment("pm_card_async")
    assert settled["status"] == "PROCESSING", settled
    # A webhook for a provider payment nobody here knows: DEAD after its one attempt.
    body, signed = sign_mock(mock_event("payment.captured", f"mock_pi_{secrets.token_hex(12)}"))
    response = api.http.post("/api/v1/webhooks/mock", content=body, headers=signed)
    assert response.status_code == 200, response.text
    foreign = run_async(lambda: sale_elsewhere(database_url))

    events = "/api/v1/admin/webhooks/events"
    dead = wait_for(
        "the DEAD webhook",
        lambda: next(iter(api.get(f"{events}?status=DEAD")["data"]), None),
    )
    wait_for(
        "the async payment's webhook to be processed",
        lambda: (
            api.get(f"/api/v1/payments/{settled['payment_id']}")["status"] == "CAPTURED" or None
        ),
    )
    window = {
        "provider": "mock",
        "created_from": since.isoformat(),
        "created_to": (datetime.now(UTC) + timedelta(seconds=1)).isoformat(),
    }
    run_id = api.post("/api/v1/payments/reconcile", ADMIN_KEY, window, 202)["run_id"]

    def finished() -> dict[str, Any] | None:
        run: dict[str, Any] = api.get(f"/api/v1/admin/reconciliation/runs/{run_id}")
        return None if run["status"] == "RUNNING" else run

    run = wait_for("the reconciliation run", finished)
    assert run["status"] == "FINISHED", run
    found = api.get(f"/api/v1/admin/reconciliation/runs/{run_id}/discrepancies")["data"]
    kinds = {(d["kind"], d["action"], d["provider_payment_id"]) for d in found}
    assert ("dispute_opened", "healed", disputed["provider_payment_id"]) in kinds, found
    assert ("missing_locally", "flagged", foreign) in kinds, found
    [flagged] = [d for d in found if d["action"] == "flagged"]
    # After the run, so that it is still open when the stuck operation's page looks at it.
    timed_out = api.payment("pm_card_timeout")
    assert timed_out["status"] == "PROCESSING", timed_out
    [dispute] = api.get(f"/api/v1/admin/disputes?payment_id={disputed['payment_id']}")["data"]
    assert dispute["status"] == "needs_response", dispute

    common = {
        "PAYMENT_ID": disputed["payment_id"],
        "ORDER_ID": disputed["order_id"],
        "WEBHOOK_EVENT_ID": dead["webhook_event_id"],
        "RUN_ID": run_id,
        "DISCREPANCY_ID": flagged["discrepancy_id"],
        "SINCE": since.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    stuck = {"PAYMENT_ID": timed_out["payment_id"], "ORDER_ID": timed_out["order_id"]}
    return common, {"stuck-operation.md": stuck}


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        reason = f"the runbooks' commands need {', '.join(missing)} on PATH"
        if CI:
            pytest.fail(f"{reason} (CI=true)")
        pytest.skip(reason)
    need_service("PostgreSQL", "127.0.0.1", 5432)
    need_service("RabbitMQ", "127.0.0.1", 5672)
    workdir = tmp_path_factory.mktemp("runbooks")
    url = create_database()
    name = make_url(url).database
    assert name is not None
    tag = f"runbooks-{secrets.token_hex(4)}"
    exchange = f"{tag}.events"
    consumed = [f"{tag}.payment.stock-confirmed", f"{tag}.payment.order-created"]
    settings = {
        "broker_url": AMQP_URL,
        "events_exchange": exchange,
        "stock_confirmed_queue": consumed[0],
        "order_created_queue": consumed[1],
        "provider_timeout": "1s",
        "webhook_max_attempts": "1",
    }
    server: Server | None = None
    worker: Worker | None = None
    try:
        migrate(url, workdir)
        since = datetime.now(UTC) - timedelta(seconds=1)
        server = start_server(
            url,
            workdir,
            broker_url=settings["broker_url"],
            events_exchange=settings["events_exchange"],
            stock_confirmed_queue=settings["stock_confirmed_queue"],
            order_created_queue=settings["order_created_queue"],
            provider_timeout=settings["provider_timeout"],
            webhook_max_attempts=settings["webhook_max_attempts"],
        )
        worker = start_worker(url, workdir, **settings)
        api = Api(server.base_url)
        try:
            common, per_page = stage_data(api, url, since)
        finally:
            api.http.close()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TILLPOINT_")}
        env.update(
            {
                "TILLPOINT_URL": server.base_url,
                "ADMIN_KEY": ADMIN_KEY,
                "DATABASE_URL": url.replace("postgresql+asyncpg://", "postgresql://", 1),
                "WORKER_METRICS_URL": worker.metrics_url,
                "EVENTS_EXCHANGE": exchange,
                "PAGER": "cat",
                "PSQLRC": os.devnull,
                **common,
            }
        )
        yield Stage(env, per_page, server, worker)
    finally:
        if worker is not None:
            worker.kill()
        if server is not None:
            server.kill()
        queues = [*consumed, *(f"{q}.dlq" for q in consumed), f"{exchange}.unrouted"]
        run_async(lambda: delete_broker_names(queues, [exchange, f"{exchange}.unrouted"]))
        drop_database(name)


def test_there_is_a_runbook_for_each_topic_with_its_four_parts() -> None:
    for page in TOPICS:
        text = (RUNBOOKS / page).read_text()
        headings = re.findall(r"^## (.+)$", text, re.M)
        assert headings == ["Symptoms", "Diagnose", "Fix", "Confirm"], (page, headings)
        assert len(blocks(page)) >= 3, f"{page} has fewer than three commands"
        index = (RUNBOOKS / "README.md").read_text()
        assert f"]({page})" in index, f"the index does not link {page}"


def test_every_metric_and_log_event_a_runbook_names_exists() -> None:
    """Each metric (`…_total`, `…_seconds`, a backlog or state gauge) and each log event (a
    backquoted `noun.verb` of the processes' loggers, or any `log `noun.verb``) a runbook names
    is a string in the code."""
    source = "\n".join(p.read_text() for p in (ROOT / "src").rglob("*.py"))
    for page in PAGES:
        text = (RUNBOOKS / page).read_text()
        metrics = set(re.findall(r"\b([a-z]+(?:_[a-z]+)+_(?:total|seconds|backlog|state))\b", text))
        events = set(re.findall(rf"`((?:{LOGGERS})\.[a-z_]+)`", text))
        events |= set(re.findall(r"log `([a-z_]+\.[a-z_]+)`", text))
        assert metrics or page == "README.md", page
        for name in metrics:
            assert f'"{name}"' in source, f"{page}: metric {name} is not in src"
        for name in sorted(events):
            assert f'"{name}"' in source, f"{page}: log event {name} is not in src"


@pytest.mark.parametrize(
    ("page", "number", "command"),
    COMMANDS,
    ids=[f"{page}#{number}" for page, number, _ in COMMANDS],
)
def test_the_command_runs(stage: Stage, page: str, number: int, command: str) -> None:
    env = {**stage.env, **stage.per_page.get(page, {})}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, (
        f"{page} block {number} exited {done.returncode}:\n{command}\n"
        f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    )
