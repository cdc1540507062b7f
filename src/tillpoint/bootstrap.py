"""The one place that builds adapters from settings and hands them to the rest."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from tillpoint.adapters.clock import SystemClock
from tillpoint.adapters.db.engine import make_engine
from tillpoint.adapters.db.idempotency import SqlIdempotencyStore
from tillpoint.adapters.db.uow import SqlUnitOfWorkFactory
from tillpoint.adapters.keys import KeyStore, load_keys
from tillpoint.adapters.providers import ProviderRegistry
from tillpoint.adapters.providers.mock import MockGateway
from tillpoint.adapters.telemetry import PrometheusTelemetry
from tillpoint.config import Settings
from tillpoint.service.context import Deps, ServiceConfig
from tillpoint.service.idempotency import Idempotency
from tillpoint.service.ports import Clock, PaymentProvider


@dataclass
class Container:
    settings: Settings
    engine: AsyncEngine
    deps: Deps
    keys: KeyStore
    idempotency: Idempotency
    mock: MockGateway
    telemetry: PrometheusTelemetry
    dev_keys_file: Path | None = None
    extras: dict[str, object] = field(default_factory=dict)

    async def aclose(self) -> None:
        await self.engine.dispose()


def service_config(settings: Settings) -> ServiceConfig:
    return ServiceConfig(
        failure_policy=settings.on_payment_failure,
        default_provider=settings.default_provider,
        snapshot_ttl=settings.snapshot_ttl,
        payment_ttl=settings.payment_ttl,
        provider_timeout=settings.provider_timeout.total_seconds(),
        recheck_schedule=settings.recheck_schedule,
        fault=settings.test_faults,
    )


def build(settings: Settings | None = None, *, clock: Clock | None = None) -> Container:
    settings = settings or Settings()
    clock = clock or SystemClock()
    engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
    telemetry = PrometheusTelemetry()
    mock = MockGateway(engine, delay_ms=settings.mock_delay_ms, clock=clock.now)
    providers: dict[str, PaymentProvider] = {"mock": mock}
    deps = Deps(
        uow=SqlUnitOfWorkFactory(engine),
        providers=ProviderRegistry(providers),
        clock=clock,
        telemetry=telemetry,
        config=service_config(settings),
    )
    keys, dev_keys_file = load_keys(settings)
    idempotency = Idempotency(
        store=SqlIdempotencyStore(engine),
        clock=clock,
        telemetry=telemetry,
        ttl=settings.idempotency_ttl,
        lock_timeout=settings.idempotency_lock_timeout,
    )
    return Container(
        settings=settings,
        engine=engine,
        deps=deps,
        keys=KeyStore(keys),
        idempotency=idempotency,
        mock=mock,
        telemetry=telemetry,
        dev_keys_file=dev_keys_file,
    )
