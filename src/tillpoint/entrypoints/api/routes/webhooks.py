"""Inbound provider webhooks (no token: the signature authenticates) and their admin views.

The body is read as raw bytes and handed to the verifier untouched: parsing and re-serializing
before verification is how signatures break.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from tillpoint.bootstrap import Container
from tillpoint.domain.timestamps import rfc3339
from tillpoint.entrypoints.api.dependencies import Admin, ContainerDep, limit_webhooks
from tillpoint.entrypoints.api.idempotent import Attempt, idempotent
from tillpoint.entrypoints.api.models import WebhookEventOut, WebhookEventPage, WebhookReceived
from tillpoint.entrypoints.api.openapi import IDEMPOTENT, answers, ok
from tillpoint.entrypoints.api.problems import problem
from tillpoint.entrypoints.api.schemas import NoFieldsIn
from tillpoint.service import webhooks
from tillpoint.service.ports import InvalidSignature, MalformedEvent, StoredWebhook, WebhookStatus
from tillpoint.service.webhooks import WebhookInbox

router = APIRouter(tags=["webhooks"])


def _inbox(container: Container) -> WebhookInbox:
    assert container.webhooks is not None, "the webhook inbox is not wired"
    return container.webhooks


def webhook_json(event: StoredWebhook) -> dict[str, Any]:
    return {
        "webhook_event_id": event.id,
        "provider": event.provider,
        "provider_event_id": event.provider_event_id,
        "event_type": event.event_type,
        "signature_valid": event.signature_valid,
        "status": event.status.value,
        "attempt_count": event.attempt_count,
        "last_error": event.last_error,
        "received_at": rfc3339(event.received_at),
        "processed_at": rfc3339(event.processed_at) if event.processed_at else None,
        "next_attempt_at": rfc3339(event.next_attempt_at) if event.next_attempt_at else None,
    }


@router.post(
    "/api/v1/webhooks/{provider}",
    summary="Receive a provider webhook (signature required; processed asynchronously)",
    response_model=None,
    responses={**ok(WebhookReceived), **answers(400, 401, 404, 413, 422, 503)},
    dependencies=[Depends(limit_webhooks)],
)
async def receive(provider: str, request: Request, container: ContainerDep) -> Any:
    body = await request.body()
    try:
        duplicate = await webhooks.receive_webhook(
            provider, body, request.headers, deps=container.deps, inbox=_inbox(container)
        )
    except InvalidSignature:
        return problem(
            "invalid_signature",
            "the webhook signature is missing or invalid, or its timestamp is outside ±5 minutes",
        )
    except MalformedEvent as exc:
        # Only an event without a usable id or type gets here: anything identifiable is stored.
        return problem("malformed_json", f"signed, but not a webhook event: {exc}")
    return {"received": True, "duplicate": duplicate}


@router.get(
    "/api/v1/admin/webhooks/events",
    summary="Stored webhook events, newest first",
    responses={**ok(WebhookEventPage), **answers(401, 403, 404, 422)},
)
async def list_events(
    principal: Admin,
    container: ContainerDep,
    provider: str | None = None,
    status: WebhookStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> dict[str, Any]:
    found, next_cursor = await webhooks.list_webhook_events(
        provider,
        status.value if status else None,
        limit,
        cursor,
        deps=container.deps,
        inbox=_inbox(container),
    )
    return {"data": [webhook_json(e) for e in found], "next_cursor": next_cursor}


@router.post(
    "/api/v1/admin/webhooks/events/{webhook_event_id}/replay",
    status_code=202,
    summary="Queue a stored webhook event again (PENDING, due now)",
    responses={**ok(WebhookEventOut, 202), **answers(400, 401, 403, 404, 409, 422, 503)},
    openapi_extra=IDEMPOTENT,
)
async def replay(
    webhook_event_id: str,
    request: Request,
    principal: Admin,
    container: ContainerDep,
    body: NoFieldsIn | None = None,
) -> Response:
    async def action(_: Attempt) -> tuple[int, Any]:
        event = await webhooks.replay_webhook(
            webhook_event_id, deps=container.deps, inbox=_inbox(container)
        )
        return 202, webhook_json(event)

    return await idempotent(request, principal, container, action)
