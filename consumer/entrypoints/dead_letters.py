"""`batchops dead-letters list|replay`: inspect `{ns}.dead` and send requests back for another try.

Listing takes messages with basic.get *without* acking them and then hands them back by closing
the channel, so nothing is lost and each goes back to its old position (a quorum queue would put
a nacked one at its back, behind newer dead letters). Replaying
republishes each request to `{ns}.requests` with its body and properties, waits for the broker's
confirm, and only then acks it off the dead queue: a crash in between leaves a copy in both
queues, which is harmless because the consumer de-duplicates by batch_id.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
)
from aiormq.exceptions import AMQPError, ChannelNotFoundEntity

from consumer.entrypoints.exits import CommandFailed
from contracts import UNKNOWN_OPERATION_TYPE, Topology
from publisher import PublishError, broker_nodes, connect, declare_topology, publish_confirmed

# Headers RabbitMQ adds while delivering and dead-lettering. A replay drops them: a stale
# x-delivery-count would make the consumer count the old deliveries against the new attempt.
_BROKER_HEADERS = ("x-death", "x-delivery-count", "x-first-death-", "x-last-death-")
REPLAYS_HEADER = "x-batchops-replays"
HAND_BACK_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """What an operator wants to know about one dead-lettered request."""

    position: int
    routing_key: str
    message_id: str | None
    user_id: str | None
    reason: str
    size: int
    dead_since: datetime | None
    replays: int
    body: dict[str, Any] | None  # None: the body is not a JSON object

    @classmethod
    def of(cls, position: int, message: AbstractIncomingMessage) -> DeadLetter:
        headers = message.headers or {}
        deaths = headers.get("x-death")
        # x-death lists the most recent death first.
        last_death = deaths[0] if isinstance(deaths, list) and deaths else {}
        died = last_death.get("time") if isinstance(last_death, dict) else None
        replays = headers.get(REPLAYS_HEADER, 0)
        return cls(
            position=position,
            routing_key=message.routing_key or "",
            message_id=message.message_id,
            user_id=message.user_id,
            reason=str(headers.get("x-first-death-reason", "unknown")),
            size=len(message.body),
            dead_since=died if isinstance(died, datetime) else None,
            replays=replays if isinstance(replays, int) else 0,
            body=_json_object(message.body),
        )

    @property
    def batch_id(self) -> str | None:
        """The body's batch_id; the message_id is only a guess (some clients invent one)."""
        found = (self.body or {}).get("batch_id")
        return str(found) if found is not None else None

    @property
    def operation_type(self) -> str:
        found = (self.body or {}).get("operation_type")
        return found if isinstance(found, str) and found else UNKNOWN_OPERATION_TYPE

    def matches(self, batch_id: UUID | None) -> bool:
        if batch_id is None:
            return True
        return any(
            _same_uuid(candidate, batch_id) for candidate in (self.batch_id, self.message_id)
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "batch_id": self.batch_id,
            "operation_type": self.operation_type,
            "routing_key": self.routing_key,
            "message_id": self.message_id,
            "user_id": self.user_id,
            "reason": self.reason,
            "size": self.size,
            "dead_since": self.dead_since.isoformat() if self.dead_since else None,
            "replays": self.replays,
            "body": self.body,
        }


def _same_uuid(text: str | None, expected: UUID) -> bool:
    try:
        return text is not None and UUID(text) == expected
    except ValueError:
        return False


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


async def _dead_queue(channel: AbstractChannel, topology: Topology) -> tuple[AbstractQueue, int]:
    """The dead-letter queue (never created here) and how many messages it holds now."""
    try:
        queue = await channel.declare_queue(topology.dead_letter_queue, passive=True)
    except ChannelNotFoundEntity as exc:
        raise CommandFailed(
            f"there is no queue {topology.dead_letter_queue!r} on the broker: nothing ever ran in "
            f"namespace {topology.namespace!r} (is BATCHOPS_NAMESPACE right?)"
        ) from exc
    result = queue.declaration_result
    return queue, int(result.message_count or 0)


async def peek(amqp_url: str, topology: Topology, limit: int) -> tuple[int, list[DeadLetter]]:
    """How many dead letters there are, and the first `limit` of them, leaving all in place."""
    connection = await connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue, total = await _dead_queue(channel, topology)
        held: list[AbstractIncomingMessage] = []
        while len(held) < min(limit, total):
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            held.append(message)
        await channel.close()  # hands every message back, unacknowledged, to its old place
        await _handed_back(connection, topology, total)
    return total, [DeadLetter.of(position, m) for position, m in enumerate(held, start=1)]


def replay_message(message: AbstractIncomingMessage) -> aio_pika.Message:
    """The request as its producer published it: same body, ids, user and reply address."""
    headers = {
        key: value
        for key, value in (message.headers or {}).items()
        if not key.startswith(_BROKER_HEADERS)
    }
    replays = headers.get(REPLAYS_HEADER, 0)
    headers[REPLAYS_HEADER] = (replays if isinstance(replays, int) else 0) + 1
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=message.priority,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        user_id=message.user_id,
        app_id=message.app_id,
    )


@dataclass(frozen=True, slots=True)
class ReplayReport:
    replayed: list[DeadLetter]
    left: int  # still in the dead queue afterwards (including the ones that did not match)


async def replay(
    amqp_url: str,
    topology: Topology,
    *,
    limit: int | None,
    batch_id: UUID | None,
    on_replayed: Callable[[DeadLetter], None] = lambda _: None,
) -> ReplayReport:
    """Republish dead letters (up to `limit`, only `batch_id`'s if given) to the requests exchange.

    Raises CommandFailed when the broker does not take one; it and the rest stay dead.
    """
    connection = await connect(amqp_url)
    async with connection:
        # Two channels: if the broker closes the publishing one (say, over a user_id it will
        # not let us forge), the messages taken on the other can still be handed back.
        taking = await connection.channel()
        publishing = await connection.channel(publisher_confirms=True)
        await declare_topology(publishing, topology)
        requests = await publishing.get_exchange(topology.requests_exchange)
        queue, total = await _dead_queue(taking, topology)
        replayed: list[DeadLetter] = []
        try:
            # At most `total` gets: a replayed request the consumer dead-letters again goes to
            # the back of the queue, behind everything counted here, and is not taken twice.
            for position in range(1, total + 1):
                if limit is not None and len(replayed) >= limit:
                    break
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                letter = DeadLetter.of(position, message)
                if not letter.matches(batch_id):
                    continue  # left unacknowledged: handed back in place below
                await _republish(requests, message, letter, amqp_url, done=len(replayed))
                await message.ack()
                replayed.append(letter)
                on_replayed(letter)
        finally:
            # Closing the channel hands back what was taken and not replayed, each to its old
            # place (a nack would put it at the back of a quorum queue).
            if not taking.is_closed:
                await taking.close()
        left = await _handed_back(connection, topology, total - len(replayed))
    return ReplayReport(replayed, left)


async def _handed_back(connection: AbstractConnection, topology: Topology, expected: int) -> int:
    """The dead-letter queue's depth once the messages a closed channel handed back are in it
    again (at least `expected`), or after HAND_BACK_SECONDS: the broker puts them back after it
    confirmed the close (a quorum queue through its log), and the next command must find them
    in place."""
    channel = await connection.channel()
    deadline = time.monotonic() + HAND_BACK_SECONDS
    try:
        while True:
            _, depth = await _dead_queue(channel, topology)
            if depth >= expected or time.monotonic() > deadline:
                return depth
            await asyncio.sleep(0.05)
    finally:
        await channel.close()


async def _republish(
    requests: aio_pika.abc.AbstractExchange,
    message: AbstractIncomingMessage,
    letter: DeadLetter,
    amqp_url: str,
    *,
    done: int,
) -> None:
    routing_key = letter.routing_key or letter.operation_type
    try:
        await publish_confirmed(requests, replay_message(message), routing_key)
    except (PublishError, AMQPError, TimeoutError) as exc:
        hint = ""
        own_user = broker_nodes(amqp_url)[0].user or "guest"
        if letter.user_id and letter.user_id != own_user:
            hint = (
                f"; it was published by broker user {letter.user_id!r}: replay as that user, or "
                "as a user with RabbitMQ's `impersonator` tag"
            )
        raise CommandFailed(
            f"replayed {done}, then dead letter #{letter.position} (batch {letter.batch_id}) "
            f"could not be replayed and stays in the dead-letter queue: "
            f"{exc or type(exc).__name__}{hint}"
        ) from exc
