"""BatchPublisher: publish batch requests with confirms and await their completion."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from pydantic import ValidationError

from contracts import (
    DEFAULT_DELIVERY_LIMIT,
    DEFAULT_NAMESPACE,
    REQUEST_TYPE,
    BatchCompleted,
    BatchRejected,
    BatchRequest,
    Topology,
    parse_event,
)
from publisher._broker import declare_topology, publish_confirmed
from publisher._cluster import broker_nodes, connect_robust
from publisher._exceptions import BatchopsError, CompletionTimeout, NotConfirmedError
from publisher._subscription import EventSubscription

log = logging.getLogger(__name__)

DEFAULT_AMQP_URL = "amqp://guest:guest@localhost:5672/"
Completion = BatchCompleted | BatchRejected


def _trace_headers() -> dict[str, Any] | None:
    """The active span's `traceparent`, when the application uses OpenTelemetry."""
    try:
        from opentelemetry import propagate  # noqa: PLC0415 - optional dependency
    except ImportError:
        return None
    carrier: dict[str, Any] = {}
    propagate.inject(carrier)
    return carrier or None


def broker_user(amqp_url: str) -> str:
    """The broker user an AMQP URL connects as (RabbitMQ's default, guest, when it names
    none): the `user_id` RabbitMQ lets a publisher put on its messages. Every node of a
    cluster shares its users: for a list of nodes, the first URL's is the one."""
    return broker_nodes(amqp_url)[0].user or "guest"


class BatchPublisher:
    """Publishes batch requests to `{namespace}.requests` (docs/contract.md, "Batch request").

    Use as `async with BatchPublisher(url) as publisher:`; the topology is declared on entry.
    `url` may list the nodes of a cluster, comma-separated: the publisher connects to the first
    that accepts and moves on to the next whenever its connection is lost. A malformed URL
    raises ValueError.
    """

    def __init__(
        self,
        amqp_url: str = DEFAULT_AMQP_URL,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        confirm_timeout: float = 30.0,
    ) -> None:
        self._url = amqp_url
        self._topology = Topology(namespace, delivery_limit)
        # RabbitMQ refuses a user_id other than the connection's own user, so state it exactly.
        self._user_id = broker_user(amqp_url)
        self._confirm_timeout = confirm_timeout
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._requests: AbstractExchange | None = None
        self._reply_queue: AbstractQueue | None = None
        self._reply_lock = asyncio.Lock()
        self._waiting: dict[str, asyncio.Future[Completion]] = {}

    @property
    def is_open(self) -> bool:
        """True while connected to the broker (a robust connection reconnects by itself)."""
        return self._connection is not None and not self._connection.is_closed

    @property
    def topology(self) -> Topology:
        return self._topology

    async def __aenter__(self) -> Self:
        self._connection = await connect_robust(self._url)
        try:
            self._channel = await self._connection.channel(publisher_confirms=True)
            await declare_topology(self._channel, self._topology)
            self._requests = await self._channel.get_exchange(self._topology.requests_exchange)
        except BaseException:
            # `async with` runs no __aexit__ for a failed __aenter__: close what was opened.
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()
        if self._connection is not None:
            await self._connection.close()
        self._connection = self._channel = self._requests = self._reply_queue = None

    async def publish(
        self,
        request: BatchRequest,
        *,
        correlation_id: str | None = None,
        reply_to: str | None = None,
    ) -> None:
        """Publish `request` persistently and wait for the broker's confirm.

        While the connection is being re-established (to the next node of a cluster) it waits
        for it, within the confirm timeout. Raises UnroutableError when no queue takes it,
        NackedError when the broker refuses it, NotConfirmedError when no confirm came (the
        connection was lost, or not back in time): publish it again, the batch_id makes that
        safe.
        """
        await self._wait_until_reconnected(request)
        message = aio_pika.Message(
            request.model_dump_json().encode(),
            headers=_trace_headers(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=str(request.batch_id),
            user_id=self._user_id,
            correlation_id=correlation_id,
            reply_to=reply_to,
            type=REQUEST_TYPE,
            timestamp=datetime.now(UTC),
        )
        await publish_confirmed(
            self._exchange(),
            message,
            request.operation_type.value,
            timeout=self._confirm_timeout,
        )

    async def publish_and_wait(
        self, request: BatchRequest, timeout: float = 60.0, *, correlation_id: str | None = None
    ) -> Completion:
        """Publish `request` and return its completion (or rejection) event.

        Raises CompletionTimeout after `timeout` seconds, and what `publish` raises.
        """
        reply_queue = await self._ensure_reply_queue()
        correlation_id = correlation_id or str(uuid.uuid4())
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = future
        future.add_done_callback(lambda _: self._waiting.pop(correlation_id, None))
        try:
            await self.publish(request, correlation_id=correlation_id, reply_to=reply_queue.name)
            try:
                return await asyncio.wait_for(future, timeout)
            except TimeoutError as exc:
                raise CompletionTimeout(request.batch_id, timeout) from exc
        finally:
            future.cancel()

    def subscribe(self, pattern: str = "#", *more: str) -> EventSubscription:
        """Events on the results exchange matching `pattern` or any of `more`, as typed
        models; an event that matches several arrives once.

        Enter it before publishing so that no event is missed.
        """
        if self._channel is None:
            raise BatchopsError("the publisher is not open: use `async with BatchPublisher(...)`")
        return EventSubscription(self._channel, self._topology.results_exchange, (pattern, *more))

    async def _wait_until_reconnected(self, request: BatchRequest) -> None:
        channel = self._channel
        if not isinstance(channel, AbstractRobustChannel) or not channel.is_closed:
            return
        try:
            await asyncio.wait_for(channel.ready(), self._confirm_timeout)
        except TimeoutError as exc:
            exchange = self._topology.requests_exchange
            raise NotConfirmedError(exchange, request.operation_type.value, exc) from exc

    def _exchange(self) -> AbstractExchange:
        if self._requests is None:
            raise BatchopsError("the publisher is not open: use `async with BatchPublisher(...)`")
        return self._requests

    async def _ensure_reply_queue(self) -> AbstractQueue:
        async with self._reply_lock:
            if self._reply_queue is None:
                if self._channel is None:
                    raise BatchopsError("the publisher is not open")
                queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
                await queue.consume(self._on_reply, no_ack=True)
                self._reply_queue = queue
            return self._reply_queue

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._waiting.get(message.correlation_id or "")
        if future is None:
            log.info("reply with unknown correlation id %r dropped", message.correlation_id)
            return
        try:
            event = parse_event(message.body)
        except ValidationError as exc:
            if not future.done():
                future.set_exception(BatchopsError(f"malformed completion event: {exc}"))
            return
        if isinstance(event, BatchCompleted | BatchRejected) and not future.done():
            future.set_result(event)
