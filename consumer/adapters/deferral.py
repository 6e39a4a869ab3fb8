"""Deferring a request (fair share): its exact copy goes to the back of the work queue, and only
once the broker confirmed the copy is the original acknowledged. The copy is a new message, so
no delivery attempt is spent; a crash between the two leaves both, and the batch_id absorbs the
second (docs/reliability.md)."""

from __future__ import annotations

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from consumer.adapters.queue_migration import copy_of, producer_headers
from contracts import Topology
from publisher import PublishError, publish_confirmed

log = structlog.get_logger(__name__)

# Times the request was deferred: visible to whoever reads the queue, and counted by the bench.
DEFERRED_HEADER = "x-batchops-deferred"
# Which deferral of which consumer the copy is: lets that consumer see a whole lap go by.
LAP_HEADER = "x-batchops-lap"
# RabbitMQ lets a connection put only its own user in `user_id`: the copy carries the
# producer's here, trusted only on a message whose user_id is the service's own broker user.
USER_HEADER = "x-batchops-user-id"
CONFIRM_SECONDS = 10.0


class Deferrals:
    def __init__(self, topology: Topology, own_user: str) -> None:
        self._queue = topology.requests_queue
        self._own_user = own_user
        self._channel: AbstractChannel | None = None

    def attach(self, channel: AbstractChannel) -> None:
        """The channel copies are published on; it must have publisher confirms on."""
        self._channel = channel

    @property
    def channel(self) -> AbstractChannel | None:
        """Also where the work queue's depth is read: an error there (say, the queue was
        deleted) closes this channel, never the one deliveries come on."""
        return self._channel

    def user_of(self, message: AbstractIncomingMessage) -> str | None:
        """The broker user that published the request (the copy's own is the service's)."""
        original = (message.headers or {}).get(USER_HEADER)
        if message.user_id == self._own_user and isinstance(original, str):
            return original
        return message.user_id

    @staticmethod
    def lap_of(message: AbstractIncomingMessage) -> str | None:
        lap = (message.headers or {}).get(LAP_HEADER)
        return lap if isinstance(lap, str) else None

    async def defer(self, message: AbstractIncomingMessage, lap: str) -> bool:
        """Publish the copy and wait for the broker's confirm; False when it was not confirmed
        (then the request runs now instead: the copy, if it got through, is a duplicate)."""
        if self._channel is None or self._channel.is_closed:
            return False
        headers = producer_headers(message)
        times = headers.get(DEFERRED_HEADER, 0)
        headers[DEFERRED_HEADER] = (times if isinstance(times, int) else 0) + 1
        headers[LAP_HEADER] = lap
        user = self.user_of(message)
        if user is not None:
            headers[USER_HEADER] = user
        copy = copy_of(message, headers)
        copy.user_id = self._own_user
        try:
            # The default exchange routes by queue name: the copy goes to this queue alone,
            # whatever the requests exchange's bindings.
            await publish_confirmed(
                self._channel.default_exchange, copy, self._queue, timeout=CONFIRM_SECONDS
            )
        except PublishError as exc:
            log.warning("deferral_not_confirmed", error=repr(exc))
            return False
        return True
