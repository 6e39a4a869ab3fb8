"""The test's own view of the broker: every event as published, and queue depths. Both take
a URL listing one node or several (a cluster's), like the service."""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Self

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractQueue

from publisher import connect, connect_robust


@dataclass(frozen=True, slots=True)
class Received:
    routing_key: str
    message_id: str
    body: bytes


class EventRecorder:
    """A queue bound to the results exchange with `#` before anything is published; `drain()`
    takes every copy of every event that reached it, in arrival order.

    By default an exclusive queue on the node it connects to. On a cluster whose nodes the test
    stops, give it a `durable_queue` name: a quorum queue then keeps the events wherever they
    arrived, and the recorder reconnects to another node to read them."""

    def __init__(
        self, amqp_url: str, results_exchange: str, durable_queue: str | None = None
    ) -> None:
        self._url = amqp_url
        self._exchange = results_exchange
        self._durable_queue = durable_queue
        self._connection: AbstractConnection | None = None
        self._queue: AbstractQueue | None = None
        self.received: list[Received] = []

    async def __aenter__(self) -> Self:
        if self._durable_queue is None:
            self._connection = await connect(self._url)
            channel = await self._connection.channel()
            self._queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        else:
            self._connection = await connect_robust(self._url)
            channel = await self._connection.channel()
            self._queue = await channel.declare_queue(
                self._durable_queue, durable=True, arguments={"x-queue-type": "quorum"}
            )
        await self._queue.bind(self._exchange, routing_key="#")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._connection is not None:
            await self._connection.close()
        self._connection = self._queue = None

    async def drain(self) -> list[Received]:
        """Everything received so far (call once the outbox is empty: all is then confirmed)."""
        if self._queue is None:
            raise RuntimeError("use the recorder as `async with EventRecorder(...)`")
        while (message := await self._queue.get(no_ack=True, fail=False)) is not None:
            self.received.append(
                Received(message.routing_key or "", message.message_id or "", message.body)
            )
        return self.received


@dataclass(frozen=True, slots=True)
class Depth:
    ready: int
    consumers: int


class QueueProbe:
    """Queue state as the broker reports it to a passive declare, at once and exactly (for a
    quorum queue too). It does not tell unacknowledged messages: stop the consumers first,
    and whatever they had not acknowledged is counted as ready again."""

    def __init__(self, amqp_url: str) -> None:
        self._url = amqp_url

    async def depth(self, queue: str) -> Depth:
        connection = await connect(self._url)
        try:
            channel = await connection.channel()
            declared = await channel.declare_queue(queue, passive=True)
            result = declared.declaration_result
            return Depth(result.message_count or 0, result.consumer_count or 0)
        finally:
            await connection.close()

    async def take(self, queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
        """Remove and return every ready message of `queue`."""
        connection = await connect(self._url)
        taken = []
        try:
            channel = await connection.channel()
            declared = await channel.get_queue(queue)
            while (message := await declared.get(no_ack=True, fail=False)) is not None:
                taken.append(message)
        finally:
            await connection.close()
        return taken
