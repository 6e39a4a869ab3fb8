"""Helpers shared by the integration and end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from consumer.adapters.statements import statement_options
from contracts import BatchCompleted, BatchRejected, Event, OperationResult, parse_event


def reachable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        try:
            sock.connect((host, port))
        except OSError:
            return False
        return True


def observer_engine(database_url: str, **options: Any) -> AsyncEngine:
    """An engine for a test's own look-ups, keeping prepared statements as the service would
    on the same URL: through PgBouncer (`make pgbouncer-test`) a statement cached on one server
    connection is missing on the next."""
    return create_async_engine(
        database_url, connect_args=statement_options(database_url), **options
    )


async def run_admin_sql(server_url: str, *statements: str) -> None:
    engine = create_async_engine(
        make_url(server_url).set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


@dataclass
class EventLog:
    """Every event of a namespace's results exchange, with routing keys, as they arrive."""

    received: list[tuple[str, Event]] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def _add(self, routing_key: str, event: Event) -> None:
        async with self._changed:
            self.received.append((routing_key, event))
            self._changed.notify_all()

    async def wait_for(
        self, predicate: Callable[[list[tuple[str, Event]]], bool], timeout: float = 20.0
    ) -> list[tuple[str, Event]]:
        async def until() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self.received))

        try:
            await asyncio.wait_for(until(), timeout)
        except TimeoutError:
            keys = [key for key, _ in self.received]
            raise AssertionError(f"timed out after {timeout}s; events so far: {keys}") from None
        return self.received

    async def completion(self, batch_id: object, timeout: float = 20.0) -> BatchCompleted:
        def found(events: list[tuple[str, Event]]) -> bool:
            return any(isinstance(e, BatchCompleted) and e.batch_id == batch_id for _, e in events)

        await self.wait_for(found, timeout)
        return next(
            e for _, e in self.received if isinstance(e, BatchCompleted) and e.batch_id == batch_id
        )

    async def rejection(self, timeout: float = 20.0) -> tuple[str, BatchRejected]:
        await self.wait_for(lambda ev: any(isinstance(e, BatchRejected) for _, e in ev), timeout)
        return next((k, e) for k, e in self.received if isinstance(e, BatchRejected))

    def operations(self, batch_id: object) -> list[tuple[str, OperationResult]]:
        return [
            (k, e)
            for k, e in self.received
            if isinstance(e, OperationResult) and e.batch_id == batch_id
        ]

    def routing_keys(self) -> list[str]:
        return [key for key, _ in self.received]


@contextlib.asynccontextmanager
async def listen(amqp_url: str, exchange: str, pattern: str = "#") -> AsyncIterator[EventLog]:
    """Record events from `exchange` (bound before the block runs, so none are missed)."""
    log = EventLog()
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key=pattern)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                await log._add(message.routing_key or "", parse_event(message.body))

        await queue.consume(on_message)
        yield log
    finally:
        await connection.close()
