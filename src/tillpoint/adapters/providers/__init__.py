"""Payment provider adapters. Their SDKs' types never leave this package."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from tillpoint.service.ports import PaymentProvider


class ProviderRegistry(Mapping[str, PaymentProvider]):
    def __init__(self, providers: Mapping[str, PaymentProvider]) -> None:
        self._providers = dict(providers)

    def __getitem__(self, name: str) -> PaymentProvider:
        return self._providers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._providers)

    def __len__(self) -> int:
        return len(self._providers)
