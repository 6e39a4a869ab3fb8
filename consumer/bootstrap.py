"""The one composition root: settings in, a wired service out. No I/O before `start`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import aio_pika
import structlog
from aio_pika.abc import AbstractRobustConnection
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.adapters.database import create_engine, session_factory
from consumer.adapters.relay import OutboxRelay
from consumer.adapters.unit_of_work import SqlUnitOfWork
from consumer.config import Settings
from consumer.entrypoints.rabbit import RequestConsumer
from consumer.service_layer.events import EventFactory
from consumer.service_layer.executor import BatchExecutor
from consumer.service_layer.handlers import HANDLERS, OperationHandler
from consumer.service_layer.intake import IntakePolicy
from consumer.service_layer.registry import load_custom_handlers
from consumer.service_layer.retry import RetryPolicy
from consumer.service_layer.unit_of_work import AbstractUnitOfWork

log = structlog.get_logger(__name__)


@dataclass
class Service:
    """Consumer and relay sharing one broker connection; `run()` until `stop()`."""

    settings: Settings
    engine: AsyncEngine
    executor: BatchExecutor
    relay: OutboxRelay
    consumer: RequestConsumer
    consume: bool = True
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    _connection: AbstractRobustConnection | None = None

    async def start(self) -> None:
        self._connection = await aio_pika.connect_robust(
            self.settings.amqp_url, client_properties={"connection_name": "batchops"}
        )
        self.relay.attach(await self._connection.channel(publisher_confirms=True))
        if self.consume:
            await self.consumer.start(await self._connection.channel())
        self.started.set()

    async def run(self) -> None:
        """Start, relay and consume until `stop()`; then shut down gracefully."""
        await self.start()
        relay = asyncio.create_task(self.relay.run(self.stopping), name="outbox-relay")
        try:
            await self.stopping.wait()
        finally:
            await self.consumer.stop(self.settings.shutdown_timeout_seconds)
            self.stopping.set()
            await relay
            await self.close()

    def stop(self) -> None:
        self.stopping.set()

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
        await self.engine.dispose()


def bootstrap(
    settings: Settings,
    *,
    uow_factory: Callable[[], AbstractUnitOfWork] | None = None,
    handlers: Mapping[str, OperationHandler] | None = None,
    custom_handlers: Mapping[str, OperationHandler] | None = None,
    consume: bool = True,
) -> Service:
    engine = create_engine(settings.database_url, pool_size=settings.db_pool_size)
    if uow_factory is None:
        sessions = session_factory(engine)

        def uow_factory() -> AbstractUnitOfWork:
            return SqlUnitOfWork(sessions)

    handlers = HANDLERS if handlers is None else handlers
    if custom_handlers is None:
        custom_handlers = load_custom_handlers()
    topology = settings.topology
    relay = OutboxRelay(
        engine,
        batch_size=settings.relay_batch_size,
        poll_seconds=settings.relay_poll_seconds,
    )
    executor = BatchExecutor(
        uow_factory,
        handlers,
        custom_handlers,
        IntakePolicy(
            max_body_bytes=settings.max_body_bytes,
            max_operations=settings.max_operations,
            allowed_publishers=frozenset(settings.allowed_publishers),
            # `custom` is always accepted here; its handler name is checked on its own.
            operation_types=frozenset(handlers) | {"custom"},
            custom_handlers=frozenset(custom_handlers),
        ),
        EventFactory(topology),
        delivery_limit=settings.delivery_limit,
        retry=RetryPolicy(
            settings.retry_attempts, settings.retry_base_seconds, settings.retry_max_seconds
        ),
        on_outbox=relay.wake,
    )
    return Service(
        settings=settings,
        engine=engine,
        executor=executor,
        relay=relay,
        consumer=RequestConsumer(executor, topology, settings.prefetch),
        consume=consume,
    )
