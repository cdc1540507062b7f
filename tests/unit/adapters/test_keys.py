"""API keys stand for a stable principal: its id, whatever the key's value or position."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tillpoint.adapters.keys import KeyStore
from tillpoint.config import ApiKey, ConfigurationRefused

OLD = "checkout-old-value-0123456789"
NEW = "checkout-new-value-9876543210"


def key(**fields: str) -> ApiKey:
    return ApiKey.model_validate(fields)


def test_a_rotated_value_stands_for_the_same_principal() -> None:
    before = KeyStore([key(id="checkout", key=OLD, role="service")])
    during = KeyStore(
        [key(id="checkout", key=OLD, role="service"), key(id="checkout", key=NEW, role="service")]
    )
    after = KeyStore([key(id="checkout", key=NEW, role="service")])

    first = before.authenticate(OLD)
    assert first is not None
    assert first.id == "key:checkout"
    assert during.authenticate(OLD) == during.authenticate(NEW) == first
    assert after.authenticate(NEW) == first
    assert after.authenticate(OLD) is None


def test_reordering_keys_without_ids_keeps_their_principals() -> None:
    a = key(key="first-value-0123456789", role="admin")
    b = key(key="second-value-0123456789", role="service")

    one, two = KeyStore([a, b]), KeyStore([b, a])

    assert one.authenticate("first-value-0123456789") == two.authenticate("first-value-0123456789")
    assert one.authenticate("second-value-0123456789") == two.authenticate(
        "second-value-0123456789"
    )


def test_one_id_for_two_different_callers_is_refused() -> None:
    with pytest.raises(ConfigurationRefused, match="checkout"):
        KeyStore(
            [key(id="checkout", key=OLD, role="service"), key(id="checkout", key=NEW, role="admin")]
        )


@pytest.mark.parametrize("bad", ["", "has space", "x" * 65, "-leading", "é"])
def test_an_id_is_a_short_plain_name(bad: str) -> None:
    with pytest.raises(ValidationError):
        key(id=bad, key=OLD, role="service")
