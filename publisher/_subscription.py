"""A typed, async-iterable view of the results exchange for some routing patterns."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Self

from aio_pika.abc import AbstractChannel, AbstractQueue
from pydantic import ValidationError

from contracts import Event, parse_event

log = logging.getLogger(__name__)


class EventSubscription:
    """Events matching any of `patterns` (e.g. `batch.#`, `operation.*.failed`), from the
    moment of entry, each once.

    The queue is private and removed on exit; malformed bodies are logged and dropped.
    """

    def __init__(self, channel: AbstractChannel, exchange: str, patterns: Sequence[str]) -> None:
        if not patterns:
            raise ValueError("subscribe to at least one routing pattern")
        self._channel = channel
        self._exchange = exchange
        self._patterns = tuple(patterns)
        self._queue: AbstractQueue | None = None

    async def __aenter__(self) -> Self:
        queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        for pattern in self._patterns:  # one queue: an event matching two arrives once
            await queue.bind(self._exchange, routing_key=pattern)
        self._queue = queue
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._queue is not None and not self._channel.is_closed:
            await self._queue.delete(if_unused=False, if_empty=False)
        self._queue = None

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        if self._queue is None:
            raise RuntimeError("use `async with publisher.subscribe(...) as events:` first")
        async with self._queue.iterator() as messages:
            async for message in messages:
                async with message.process():
                    try:
                        event = parse_event(message.body)
                    except ValidationError:
                        log.warning("malformed event dropped (routing key %s)", message.routing_key)
                        continue
                yield event
