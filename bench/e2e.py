"""batchops end to end: batches published with the publisher library, timed until their
completion events arrive on `{ns}.results` (`batch.#`)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aio_pika

from contracts import BatchCompleted, BatchRejected, BatchRequest, BatchStatus, Topology
from publisher import BatchPublisher, EventSubscription

Arrival = tuple[float, BatchCompleted | BatchRejected]


class BenchFailure(Exception):
    """A batch did not complete as the bench expects (every operation succeeding)."""


def order_batch(order_ids: list[int], label: str) -> BatchRequest:
    """An order_update batch that succeeds: the admin accepts pending orders and sets notes,
    the same change as the raw baseline's."""
    return BatchRequest.model_validate(
        {
            "batch_id": str(uuid.uuid4()),
            "operation_type": "order_update",
            "actor_id": 1,
            "operations": [
                {
                    "method": "PATCH",
                    "resource_id": order_id,
                    "data": {"status": "accepted", "notes": f"bench {label} order {order_id}"},
                }
                for order_id in order_ids
            ],
        }
    )


class Completions:
    """Completion events matched to the batches that wait for them, stamped on arrival."""

    def __init__(self) -> None:
        self._waiting: dict[uuid.UUID, asyncio.Future[Arrival]] = {}

    def expect(self, batch_id: uuid.UUID) -> asyncio.Future[Arrival]:
        """Register before publishing: the event may arrive before `publish` returns."""
        future: asyncio.Future[Arrival] = asyncio.get_running_loop().create_future()
        self._waiting[batch_id] = future
        return future

    async def collect(self, events: EventSubscription) -> None:
        async for event in events:
            arrived = time.perf_counter()
            if not isinstance(event, BatchCompleted | BatchRejected) or event.batch_id is None:
                continue
            future = self._waiting.pop(event.batch_id, None)
            if future is not None and not future.done():
                future.set_result((arrived, event))


def _check(event: BatchCompleted | BatchRejected) -> None:
    if isinstance(event, BatchRejected):
        raise BenchFailure(f"batch {event.batch_id} rejected: {event.errors}")
    if event.status is not BatchStatus.COMPLETED:
        errors = {r.error.code for r in event.results if r.error is not None}
        raise BenchFailure(f"batch {event.batch_id} finished {event.status}: {errors}")


@dataclass(frozen=True, slots=True)
class LoadRun:
    seconds: float
    latencies_ms: list[float]


@dataclass(frozen=True, slots=True)
class Sent:
    """A batch published (perf_counter seconds), its completion still to come."""

    published: float
    completion: asyncio.Future[Arrival]
    timeout: float

    async def arrival(self) -> float:
        """When its completion event arrived (perf_counter seconds); checked like `load`'s."""
        arrived, event = await asyncio.wait_for(self.completion, self.timeout)
        _check(event)
        return arrived


class Driver:
    """Publishes batches and waits for their completions, every wait bounded by `timeout`."""

    def __init__(self, publisher: BatchPublisher, completions: Completions, timeout: float):
        self._publisher = publisher
        self._completions = completions
        self._timeout = timeout

    async def one(self, request: BatchRequest) -> float:
        """Publish one batch alone; its publish → completion latency in ms."""
        future = self._completions.expect(request.batch_id)
        began = time.perf_counter()
        await self._publisher.publish(request)
        arrived, event = await asyncio.wait_for(future, self._timeout)
        _check(event)
        return (arrived - began) * 1000

    async def send(self, requests: list[BatchRequest]) -> list[Sent]:
        """Publish every batch at once and return once the broker confirmed them all; each
        one's completion is awaited later (`Sent.latency_ms`)."""
        futures = [self._completions.expect(r.batch_id) for r in requests]

        async def publish(request: BatchRequest) -> float:
            began = time.perf_counter()
            await self._publisher.publish(request)
            return began

        times = await asyncio.wait_for(asyncio.gather(*map(publish, requests)), self._timeout)
        return [Sent(t, f, self._timeout) for t, f in zip(times, futures, strict=True)]

    async def load(self, requests: list[BatchRequest]) -> LoadRun:
        """Publish every batch at once; time from the first publish to the last completion."""
        futures = [self._completions.expect(r.batch_id) for r in requests]
        published: dict[uuid.UUID, float] = {}

        async def send(request: BatchRequest) -> None:
            published[request.batch_id] = time.perf_counter()
            await self._publisher.publish(request)

        began = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*map(send, requests)), self._timeout)
        arrivals = await asyncio.wait_for(asyncio.gather(*futures), self._timeout)
        for _, event in arrivals:
            _check(event)
        latencies = [
            (arrived - published[r.batch_id]) * 1000
            for r, (arrived, _) in zip(requests, arrivals, strict=True)
        ]
        return LoadRun(max(a for a, _ in arrivals) - began, latencies)


async def _bind_operation_sink(connection: aio_pika.abc.AbstractConnection, ns: str) -> None:
    """Give operation events somewhere to go, as a subscriber would, without paying for one:
    a queue that holds nothing (max-length 0) routes and then drops them."""
    channel = await connection.channel()
    sink = await channel.declare_queue(
        exclusive=True, auto_delete=True, arguments={"x-max-length": 0}
    )
    await sink.bind(Topology(ns).results_exchange, routing_key="operation.#")


async def drive(
    amqp_url: str,
    namespace: str,
    scenario: Callable[[Driver], Awaitable[None]],
    *,
    timeout: float,
    operation_sink: bool,
) -> str:
    """Run `scenario` with a publisher subscribed to every completion of `namespace`; returns
    the broker's version."""
    completions = Completions()
    async with BatchPublisher(amqp_url, namespace=namespace) as publisher:
        sink_connection = await aio_pika.connect(amqp_url, timeout=10)
        try:
            transport = sink_connection.transport
            version = transport.connection.server_properties.get("version") if transport else None
            if operation_sink:
                await _bind_operation_sink(sink_connection, namespace)
            async with publisher.subscribe("batch.#") as events:
                collector = asyncio.create_task(completions.collect(events), name="completions")
                try:
                    await scenario(Driver(publisher, completions, timeout))
                finally:
                    collector.cancel()
                    await asyncio.gather(collector, return_exceptions=True)
        finally:
            await sink_connection.close()
    return version.decode() if isinstance(version, bytes) else str(version)
