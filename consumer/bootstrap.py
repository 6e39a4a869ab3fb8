"""The one composition root: settings in, a wired service out. No I/O before `start`."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
from aio_pika.abc import AbstractRobustConnection
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.adapters.database import create_engine
from consumer.adapters.db_faults import classify
from consumer.adapters.event_publisher import EventPublisher
from consumer.adapters.pg import ConnectionPool
from consumer.adapters.serial import SerialGate
from consumer.adapters.unit_of_work import SqlUnitOfWork
from consumer.adapters.waiting_room import SqlWaitingRoom
from consumer.config import Settings
from consumer.entrypoints.queue_watch import QueueWatch
from consumer.entrypoints.rabbit import RequestConsumer
from consumer.entrypoints.relay import OutboxRelay
from consumer.entrypoints.webhooks import WebhookWorker
from consumer.observability import ProcessTelemetry
from consumer.service_layer.availability import DatabaseAvailability
from consumer.service_layer.events import EventFactory
from consumer.service_layer.executor import BatchExecutor
from consumer.service_layer.handlers import HANDLERS, OperationHandler
from consumer.service_layer.intake import IntakePolicy
from consumer.service_layer.job_control import JobControl
from consumer.service_layer.registry import load_custom_handlers
from consumer.service_layer.retry import RetryPolicy, Transactions, instrument_retries
from consumer.service_layer.telemetry import OutboxListener
from consumer.service_layer.unit_of_work import AbstractUnitOfWork
from publisher import connect_robust

if TYPE_CHECKING:
    from consumer.entrypoints.http.embedded import EmbeddedServer

log = structlog.get_logger(__name__)


class ListenError(Exception):
    """The HTTP port cannot be listened on (in use, not allowed, an unknown host)."""


def listen(host: str, port: int) -> socket.socket:
    """The HTTP API's socket, bound here rather than by uvicorn, so that a port in use is one
    clear error instead of uvicorn's log lines and exit."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ListenError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (another process has the "
            "port? set BATCHOPS_HTTP_PORT, or BATCHOPS_METRICS_PORT for `consume`)"
        ) from exc
    sock.set_inheritable(True)
    return sock


@dataclass
class Service:
    """What one process runs: consumer + outbox relay (`consume`), the HTTP API (`http`), or
    both; `run()` until `stop()`, then shut down gracefully."""

    settings: Settings
    engine: AsyncEngine
    pool: ConnectionPool
    availability: DatabaseAvailability
    executor: BatchExecutor
    job_control: JobControl
    relay: OutboxRelay
    consumer: RequestConsumer
    webhooks: WebhookWorker | None = None
    queue_watch: QueueWatch | None = None
    consume: bool = True
    http: bool = False
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    _connection: AbstractRobustConnection | None = None
    _http_server: EmbeddedServer | None = None
    _http_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.consume and self.settings.grants is None:
            log.warning(
                "publisher_grants_not_configured",
                detail="every broker user may publish batches for any actor; "
                "set BATCHOPS_PUBLISHER_GRANTS to limit them",
            )
        if self.consume:
            self._connection = await connect_robust(
                self.settings.amqp_url, client_properties={"connection_name": "batchops"}
            )
            confirms = await self._connection.channel(publisher_confirms=True)
            self.relay.publisher.attach(confirms)
            await self.consumer.start(
                await self._connection.channel(), await self._connection.channel(), confirms
            )
        if self.http:
            await self._start_http(self.settings.http_port)
        elif self.consume and self.settings.metrics_port is not None:
            await self._start_http(self.settings.metrics_port, probes_only=True)
        self.started.set()

    async def _start_http(self, port: int, *, probes_only: bool = False) -> None:
        # Imported here: FastAPI, uvicorn and the API's dependencies are a sixth of a process's
        # memory, which `consume` without BATCHOPS_METRICS_PORT does not need.
        from consumer.entrypoints.http.embedded import api_context, serve  # noqa: PLC0415

        readiness = {"consumer": lambda: self.consumer.is_consuming} if self.consume else {}
        context = api_context(
            self.settings, self.engine, self.job_control, self.queue_watch, readiness
        )
        sock = listen(self.settings.http_host, port)
        self._http_server, self._http_task = await serve(context, sock, probes_only=probes_only)
        log.info("http_listening", host=self.settings.http_host, port=port)

    async def run(self) -> None:
        """Start, relay, consume and serve until `stop()`; then shut down gracefully."""
        try:
            await self.start()
        except BaseException:
            await self.close()  # a start cut short (e.g. a work queue to migrate) leaks nothing
            raise
        # The relay outlives the consumer: events of the operation finished during shutdown
        # must still be published before the process exits.
        relay_stopping = asyncio.Event()
        background = (
            [
                asyncio.create_task(self.relay.run(relay_stopping), name="outbox-relay"),
                asyncio.create_task(
                    self.consumer.watch(
                        self.settings.watchdog_interval_seconds, self.settings.stall_seconds
                    ),
                    name="consumer-watchdog",
                ),
                asyncio.create_task(self.consumer.follow_database(), name="database-follower"),
                asyncio.create_task(self.consumer.run_waiting_room(), name="waiting-room"),
            ]
            if self.consume
            else []
        )
        if self.consume and self.webhooks is not None:
            background.append(
                asyncio.create_task(self.webhooks.run(relay_stopping), name="webhook-worker")
            )
        if self.queue_watch is not None:
            background.append(
                asyncio.create_task(self.queue_watch.run(relay_stopping), name="queue-watch")
            )
        try:
            await self.stopping.wait()
        finally:
            self.stopping.set()
            if self.consume:
                # Batches waiting out a database outage give up their wait and are left for
                # redelivery; the rest finish the operation in hand.
                self.availability.close()
                await self.consumer.stop(self.settings.shutdown_timeout_seconds)
            relay_stopping.set()
            await asyncio.gather(*background)
            if self._http_server is not None and self._http_task is not None:
                self._http_server.should_exit = True
                await self._http_task
            await self.close()

    def stop(self) -> None:
        self.stopping.set()

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
        # Batches that outlived the shutdown timeout still hold connections; do not wait on them.
        await self.pool.close(timeout=2.0)
        await self.engine.dispose()


def bootstrap(
    settings: Settings,
    *,
    uow_factory: Callable[[], AbstractUnitOfWork] | None = None,
    handlers: Mapping[str, OperationHandler] | None = None,
    custom_handlers: Mapping[str, OperationHandler] | None = None,
    consume: bool = True,
    http: bool = False,
) -> Service:
    engine, pool = _database(settings)
    telemetry = ProcessTelemetry()
    availability = DatabaseAvailability(pool.probe, telemetry=telemetry)
    instrument_retries(classify, telemetry)
    transactions = Transactions(
        uow_factory or (lambda: SqlUnitOfWork(pool)),
        classify,
        availability,
        RetryPolicy(
            settings.db_retry_seconds, settings.retry_base_seconds, settings.retry_max_seconds
        ),
    )
    relay = _relay(settings, pool, availability)
    webhooks = _webhooks(settings, engine)

    on_outbox = _waking(relay, webhooks)
    executor = _executor(settings, transactions, handlers, custom_handlers, on_outbox, telemetry)
    job_control = JobControl(
        transactions,
        EventFactory(settings.topology, telemetry),
        on_outbox=on_outbox,
        telemetry=telemetry,
    )
    gate = SerialGate(pool, transactions) if settings.serialize_batches else None
    return Service(
        settings=settings,
        engine=engine,
        pool=pool,
        availability=availability,
        executor=executor,
        job_control=job_control,
        relay=relay,
        webhooks=webhooks,
        consumer=_consumer(settings, executor, availability, gate, pool, transactions),
        queue_watch=QueueWatch(settings.amqp_url, settings.topology, settings.broker_poll_seconds),
        consume=consume,
        http=http,
    )


def _waking(relay: OutboxRelay, webhooks: WebhookWorker) -> OutboxListener:
    """What a commit that wrote events calls: the relay publishes them, and a batch's last
    event (an urgent wake-up) makes its webhook, if any, due now too."""

    def on_outbox(*, urgent: bool = False) -> None:
        relay.wake(urgent=urgent)
        if urgent:
            webhooks.wake()

    return on_outbox


def _relay(
    settings: Settings, pool: ConnectionPool, availability: DatabaseAvailability
) -> OutboxRelay:
    return OutboxRelay(
        pool,
        availability,
        EventPublisher(),
        exchange=settings.topology.results_exchange,
        batch_size=settings.relay_batch_size,
        poll_seconds=settings.relay_poll_seconds,
    )


def _webhooks(settings: Settings, engine: AsyncEngine) -> WebhookWorker:
    return WebhookWorker(
        engine,
        timeout_seconds=settings.webhook_timeout_seconds,
        retry_seconds=settings.webhook_retry_seconds,
        concurrency=settings.webhook_concurrency,
        allow_private=settings.webhook_allow_private,
    )


def _consumer(
    settings: Settings,
    executor: BatchExecutor,
    availability: DatabaseAvailability,
    gate: SerialGate | None,
    pool: ConnectionPool,
    transactions: Transactions,
) -> RequestConsumer:
    return RequestConsumer(
        executor,
        settings.topology,
        settings.prefetch,
        availability,
        gate=gate,
        fair_share=settings.fair_share_limit,
        window=settings.delivery_window,
        waiting_room=SqlWaitingRoom(
            pool,
            transactions,
            settings.namespace,
            lease_seconds=settings.fair_lease_seconds,
        ),
        delivery_limit=settings.delivery_limit,
        lease_seconds=settings.fair_lease_seconds,
    )


def _database(settings: Settings) -> tuple[AsyncEngine, ConnectionPool]:
    """The HTTP API goes through SQLAlchemy's engine; batches, the relay and the serial gate
    through the pool of plain asyncpg connections that their hot path needs."""
    engine = create_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=0,
        command_timeout=settings.db_command_timeout_seconds,
        connect_timeout=settings.db_connect_timeout_seconds,
    )
    pool = ConnectionPool(
        settings.database_url,
        # An atomic batch holds a second connection for a moment (to record the operation in
        # hand): one spare beyond the batches in flight and the relay's means they can never
        # all wait.
        size=max(settings.db_pool_size, settings.prefetch + 2),
        command_timeout=settings.db_command_timeout_seconds,
        connect_timeout=settings.db_connect_timeout_seconds,
    )
    return engine, pool


def _executor(
    settings: Settings,
    transactions: Transactions,
    handlers: Mapping[str, OperationHandler] | None,
    custom_handlers: Mapping[str, OperationHandler] | None,
    on_outbox: OutboxListener,
    telemetry: ProcessTelemetry,
) -> BatchExecutor:
    handlers = HANDLERS if handlers is None else handlers
    custom_handlers = load_custom_handlers() if custom_handlers is None else custom_handlers
    policy = IntakePolicy(
        max_body_bytes=settings.max_body_bytes,
        max_operations=settings.max_operations,
        allowed_publishers=frozenset(settings.allowed_publishers),
        # `custom` is always accepted here; its handler name is checked on its own.
        operation_types=frozenset(handlers) | {"custom"},
        custom_handlers=frozenset(custom_handlers),
        grants=settings.grants,
    )
    return BatchExecutor(
        transactions,
        handlers,
        custom_handlers,
        policy,
        EventFactory(settings.topology, telemetry),
        delivery_limit=settings.delivery_limit,
        on_outbox=on_outbox,
        telemetry=telemetry,
    )
