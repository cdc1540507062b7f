"""TEST ONLY fault injection (`TILLPOINT_TEST_FAULTS`), never set in production.

A fault is `<action>_<point>` or `<action>_<point>@<operation>`: `crash_…` raises, `kill_…`
SIGKILLs this process, as a crash or an OOM kill would, so the crash-recovery tests can prove
that a retry after a restart has exactly one provider effect. Points: `before_provider_call`
(the operation is committed, the provider not yet asked), `after_provider_call` (the provider
acted, nothing of its answer is committed) and `after_commit` (everything is committed, the
response is not yet stored under the Idempotency-Key). Operations are the route names
(`create_order`, `create_payment`, `confirm`, `mock_complete`, `capture`, `void`, `refund`).
"""

from __future__ import annotations

import os
import signal

import structlog

log = structlog.get_logger("tillpoint.faults")


class FaultInjected(Exception):
    """Raised only when a test asks for it."""


def inject(faults: frozenset[str], point: str, operation: str) -> None:
    if not faults:
        return
    for action in ("kill", "crash"):
        fault = f"{action}_{point}"
        if fault in faults or f"{fault}@{operation}" in faults:
            log.warning("fault.injected", fault=fault, operation=operation)
            if action == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise FaultInjected(f"{point}@{operation}")
