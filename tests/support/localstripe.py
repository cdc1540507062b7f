"""localstripe, the stateful fake Stripe server, for the tests: one process per test session.

The process is `tests/support/localstripe_server.py`: bound to 127.0.0.1 on a port the kernel
picks, started from scratch, with its pickle persistence switched off (nothing is read from or
written to /tmp, so parallel runs on a shared machine never see each other). It is stopped when
the session ends, failed or not (and by an `atexit` hook when a run is interrupted).

Fixtures (registered in tests/conftest.py):

* `localstripe` (session): the running server as a `LocalStripe`. When it cannot start the
  tests that need it skip with the reason — under `CI=true` they fail instead.
* `clean_localstripe` (function): the same server with its store wiped first
  (`DELETE /_config/data`). Registered webhooks survive a wipe (localstripe keeps them apart).

What localstripe does and does not do: ../shared/design/NOTES.md ("localstripe" sections).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe

from tillpoint.adapters.providers.stripe import HTTPClient

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
CI = os.environ.get("CI", "").lower() == "true"
# Any `sk_…` key passes localstripe's check; it is a test key of no account anywhere.
API_KEY = "sk_test_tillpoint_localstripe"
PUBLISHABLE_KEY = "pk_test_tillpoint_localstripe"
# A bound, not a wait: on a loaded shared machine the imports alone can take a while.
STARTUP_TIMEOUT = 60.0
_LISTENING = re.compile(rb"localstripe listening on 127\.0\.0\.1:(\d+)")


class LocalStripe:
    """A running localstripe: its URL and what tests do to it besides calling the API."""

    api_key = API_KEY
    publishable_key = PUBLISHABLE_KEY

    def __init__(self, url: str) -> None:
        self.url = url

    def _http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30)

    async def wipe(self) -> None:
        """Forget every object (customers, PaymentIntents, refunds, …)."""
        async with self._http() as http:
            (await http.delete("/_config/data")).raise_for_status()

    async def register_webhook(
        self, webhook_id: str, url: str, secret: str, events: list[str] | None = None
    ) -> None:
        """Deliver events (signed with `secret`, as Stripe does) to `url`."""
        body: dict[str, Any] = {"url": url, "secret": secret}
        if events is not None:
            body["events"] = events
        async with self._http() as http:
            (await http.post(f"/_config/webhooks/{webhook_id}", json=body)).raise_for_status()

    async def payment_method(self, card_number: str) -> str:
        """A PaymentMethod (`pm_…`) for a test card, created at localstripe with the SDK —
        the way a storefront's Stripe.js would, never through tillpoint."""
        http = HTTPClient(timeout=30)
        client = stripe.StripeClient(
            API_KEY, base_addresses={"api": self.url}, max_network_retries=0, http_client=http
        )
        try:
            pm = await client.v1.payment_methods.create_async(
                params={
                    "type": "card",
                    "card": {
                        "number": card_number,
                        "exp_month": 12,
                        "exp_year": 2030,
                        "cvc": "123",
                    },
                }
            )
        finally:
            await http.close_async()  # type: ignore[no-untyped-call]
        return str(pm.id)

    async def authenticate(self, pi_id: str, client_secret: str, *, success: bool = True) -> None:
        """Finish (or fail) a PaymentIntent's 3-D Secure step, as the customer would."""
        async with self._http() as http:
            response = await http.post(
                f"/v1/payment_intents/{pi_id}/_authenticate",
                data={
                    "client_secret": client_secret,
                    "success": "true" if success else "false",
                    "key": PUBLISHABLE_KEY,
                },
            )
            response.raise_for_status()

    async def get(self, path: str, **params: str) -> dict[str, Any]:
        """A raw API read (`/v1/…`), to check what reached localstripe."""
        async with self._http() as http:
            response = await http.get(
                path, params=params, headers={"Authorization": f"Bearer {API_KEY}"}
            )
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            return body

    async def payment_intent(self, pi_id: str) -> dict[str, Any]:
        return await self.get(f"/v1/payment_intents/{pi_id}")

    async def refunds(self, pi_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (
            await self.get("/v1/refunds", payment_intent=pi_id, limit="100")
        )["data"]
        return found


class LocalStripeProcess:
    """The server process; `stop()` ends its whole process group."""

    def __init__(self, workdir: Path) -> None:
        self.log = workdir / "localstripe.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, port: int = 0) -> LocalStripe:
        """Start the server on `port` (0: one the kernel picks). A test that stops its own
        process and starts it again passes the port it had, so its clients find it there."""
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        # A restart appends to the log: the earlier run's lines stay, its "listening" line is
        # skipped.
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.support.localstripe_server", "--port", str(port)],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        atexit.register(self.stop)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        url: str | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"localstripe exited with {self.proc.returncode}: {self.log_tail()}"
                )
            if url is None and (found := _LISTENING.search(self.log.read_bytes(), offset)):
                url = f"http://{HOST}:{int(found.group(1))}"
            if url is not None and _answers(url):
                return LocalStripe(url)
            time.sleep(0.1)
        raise RuntimeError(
            f"localstripe did not answer in {STARTUP_TIMEOUT:.0f} s: {self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self.proc = None


def _answers(url: str) -> bool:
    try:
        response = httpx.get(
            f"{url}/v1/payment_intents",
            params={"limit": "1"},
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=2,
        )
    except httpx.TransportError:
        return False
    return response.status_code == 200


@pytest.fixture(scope="session")
def localstripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStripe]:
    process = LocalStripeProcess(tmp_path_factory.mktemp("localstripe"))
    try:
        server = process.start()
    except Exception as exc:
        process.stop()
        reason = f"localstripe could not start: {exc}"
        if CI:
            pytest.fail(f"{reason}; under CI=true it must run")
        pytest.skip(reason)
    try:
        yield server
    finally:
        process.stop()


@pytest.fixture
async def clean_localstripe(localstripe: LocalStripe) -> LocalStripe:
    await localstripe.wipe()
    return localstripe
