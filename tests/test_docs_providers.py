"""docs/providers.md's capability matrix and Stripe's currency table say what the adapters
declare: a change to either side without the other fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tillpoint.adapters.providers.mock import MockGateway
from tillpoint.adapters.providers.stripe import CAPABILITIES, MAXIMUM_CHARGE, MINIMUM_CHARGE
from tillpoint.domain.money import Money
from tillpoint.service.ports import Capabilities

DOC = Path(__file__).resolve().parents[1] / "docs" / "providers.md"
FLAGS = (
    "manual_capture",
    "partial_capture",
    "multiple_partial_refunds",
    "async_outcomes",
    "three_d_secure",
    "cancel_after_authorization",
    "lists_payments",
)
DECLARED: dict[str, Capabilities] = {"mock": MockGateway.capabilities, "stripe": CAPABILITIES}


def matrix() -> dict[str, dict[str, bool]]:
    """{capability: {provider: yes/no}} as the doc's table has it."""
    rows: dict[str, dict[str, bool]] = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].strip("`") in FLAGS:
            assert {cells[2], cells[3]} <= {"yes", "no"}, line
            rows[cells[0].strip("`")] = {"mock": cells[2] == "yes", "stripe": cells[3] == "yes"}
    return rows


@pytest.mark.parametrize("provider", sorted(DECLARED))
def test_the_matrix_says_what_each_adapter_declares(provider: str) -> None:
    documented = matrix()
    assert sorted(documented) == sorted(FLAGS)
    for flag in FLAGS:
        assert documented[flag][provider] is getattr(DECLARED[provider], flag), flag


def test_the_stripe_currency_table_is_the_adapters() -> None:
    text = DOC.read_text()
    documented = dict(re.findall(r"\| `([A-Z]{3})` \| ([0-9.]+) ", text))
    expected = {c: Money(m, c).format() for c, m in MINIMUM_CHARGE.items()}
    assert documented == expected
    limits = CAPABILITIES.currencies
    assert set(limits) == set(MINIMUM_CHARGE)
    assert all(lim.maximum == MAXIMUM_CHARGE for lim in limits.values())
