"""The message contract itself: docs/asyncapi.yaml names a JSON Schema for every message, and
the consumed schemas accept what the ordering services send and refuse what the consumers
refuse. (The schemas of published messages are checked on every message the event tests see,
in the Tap of conftest.py, and on every outbox row in tests/api/test_contract.py.)"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.events.contract import CONSUMED, PUBLISHED, SCHEMAS, validator, violations
from tests.events.test_consumers import encode, stock_confirmed

ASYNCAPI = SCHEMAS.parent / "asyncapi.yaml"


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


class TestAsyncApi:
    def test_every_message_has_a_schema_and_every_schema_a_message(self) -> None:
        doc = yaml.safe_load(ASYNCAPI.read_text())
        assert doc["asyncapi"].startswith("3.")
        files = {r for r in refs(doc) if not r.startswith("#")}
        assert files == {f"schemas/{p.name}" for p in SCHEMAS.glob("*.json")}
        for ref in (r for r in refs(doc) if r.startswith("#/")):
            node: Any = doc
            for part in ref[2:].split("/"):
                node = node[part]
        addresses = {channel["address"] for channel in doc["channels"].values()}
        assert addresses == PUBLISHED | CONSUMED

    @pytest.mark.parametrize("path", sorted(SCHEMAS.glob("*.json")), ids=lambda p: p.stem)
    def test_schemas_are_valid_json_schema(self, path: Any) -> None:
        assert validator(path.stem).schema["$id"] == path.name


class TestConsumed:
    def test_what_the_ordering_service_sends_is_valid(self) -> None:
        for order_id in (1042, "ord-1042"):
            body = json.loads(encode(stock_confirmed(order_id, "4242")))
            assert violations("order.stock-confirmed", body) == []
        created = {
            "event_id": "evt-9f2c",
            "order_id": "ord-1042",
            "buyer_id": "buyer-1",
            "amount": "12.50",
            "currency": "EUR",
            "autopay": True,
            "payment_method": {"type": "card", "token": "pm_card_visa"},
        }
        assert violations("order.created.v1", created) == []

    @pytest.mark.parametrize(
        "change",
        [
            {"paymentMethod": {"type": "CREDIT_CARD", "cardNumber": "4242424242424242"}},
            {"paymentMethod": {"type": "CREDIT_CARD", "cvv": "123"}},
            {"paymentMethod": {"type": "CREDIT_CARD", "cardHolderName": "A" * 129}},
            {"paymentMethod": {"type": "CREDIT_CARD", "expirationYear": 2101}},
            {"currency": "eur"},
            {"orderId": True},
            {"totalAmount": "49,99"},
        ],
    )
    def test_what_the_consumer_refuses_is_invalid(self, change: dict[str, Any]) -> None:
        body = {**json.loads(encode(stock_confirmed(1042, "4242"))), **change}
        assert violations("order.stock-confirmed", body)

    def test_a_required_field_is_required(self) -> None:
        body = json.loads(encode(stock_confirmed(1042, "4242")))
        del body["buyerId"]
        assert violations("order.stock-confirmed", body)


class TestFoodiesDialect:
    SUCCEEDED = {
        "eventId": "evt_01JD9Q3V9K0P2R4T6V8X0Z2B4D",
        "orderId": 12345,
        "paymentId": 1,
        "transactionId": "txn_abc123",
        "amount": "49.99",
        "currency": "USD",
        "processedAt": "2024-01-15T10:30:01Z",
    }
    FAILED = {
        "eventId": "evt_01JD9Q4A1B3C5D7E9F1G3H5J7K",
        "orderId": 12345,
        "failureReason": "Card declined",
        "failureCode": "CARD_DECLINED",
        "occurredAt": "2024-01-15T10:30:01Z",
    }

    def test_seed_004_shapes_are_valid(self) -> None:
        assert violations("payment.succeeded", self.SUCCEEDED) == []
        assert violations("payment.failed", self.FAILED) == []
        assert violations("payment.failed", {**self.FAILED, "orderId": "ord-7"}) == []

    @pytest.mark.parametrize(
        "change",
        [
            {"orderId": "12345"},  # numeric order ids are JSON numbers in this dialect
            {"paymentId": "pay_01JD9Q3V4X6Y2Z8A0B1C3D5E7F"},
            {"amount": 49.99},
            {"sequence": 1},  # kotlinx.serialization refuses unknown keys
        ],
    )
    def test_what_seed_004_cannot_read_is_invalid(self, change: dict[str, Any]) -> None:
        assert violations("payment.succeeded", {**self.SUCCEEDED, **change})
