"""`batchops dead-letters list|replay|purge`: inspect `{ns}.dead`, send requests back for another
try, or throw them away (the console's dead-letter page uses the same functions).

Listing takes messages with basic.get *without* acking them and then hands them back by closing
the channel, so nothing is lost and each goes back to its old position (a quorum queue would put
a nacked one at its back, behind newer dead letters). Replaying
republishes each request to `{ns}.requests` with its body and properties, waits for the broker's
confirm, and only then acks it off the dead queue: a crash in between leaves a copy in both
queues, which is harmless because the consumer de-duplicates by batch_id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
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
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from consumer.adapters.console_queries import rejection_bodies
from consumer.adapters.queue_migration import copy_of, producer_headers
from consumer.entrypoints.exits import CommandFailed
from consumer.service_layer.intake import json_object
from contracts import UNKNOWN_OPERATION_TYPE, BatchRejected, Topology, rejection_event_id
from publisher import PublishError, broker_user, connect, declare_topology, publish_confirmed

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
    raw: bytes = b""
    headers: dict[str, Any] = field(default_factory=dict)

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
            body=json_object(message.body),
            raw=message.body,
            headers={key: _plain(value) for key, value in headers.items()},
        )

    @property
    def body_encoding(self) -> str:
        """How `body_text` shows the body: `json`, `text` (UTF-8) or `hex`."""
        if self.body is not None:
            return "json"
        try:
            self.raw.decode("utf-8")
        except UnicodeDecodeError:
            return "hex"
        return "text"

    @property
    def body_text(self) -> str:
        """The raw body as a person can read it: as text when it is UTF-8, else in hex."""
        if self.body_encoding == "hex":
            return self.raw.hex(" ")
        return self.raw.decode("utf-8")

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
            "headers": self.headers,
            # The body itself: the JSON object, else the bytes as text (UTF-8) or in hex.
            "body_encoding": self.body_encoding,
            "body": self.body if self.body is not None else self.body_text,
        }


def _plain(value: Any) -> Any:
    """A header value as JSON can hold it (x-death holds tables, timestamps and bytes)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, Decimal):
        return str(value)
    return value


def why(letter: DeadLetter, rejections: dict[UUID, bytes]) -> str:
    """Why the request is dead, in one line: the consumer's rejection (code and first reason,
    from its stored rejection event) or the broker's verdict."""
    if letter.reason == "delivery_limit":
        return "delivery_limit: it crashed the consumer on every delivery (poison)"
    stored = rejections.get(rejection_event_id(letter.raw, letter.message_id))
    if stored is None:
        return letter.reason  # the event is cleaned up, or the database was not asked
    try:
        event = BatchRejected.model_validate_json(stored)
    except ValidationError:
        return letter.reason
    first = event.errors[0].describe() if event.errors else ""
    more = f" (+{len(event.errors) - 1} more)" if len(event.errors) > 1 else ""
    return f"{event.code.value}: {first}{more}" if first else event.code.value


async def rejection_events(conn: AsyncConnection, letters: list[DeadLetter]) -> dict[UUID, bytes]:
    """The stored rejection events of these dead letters, for `why`."""
    return await rejection_bodies(
        conn, [rejection_event_id(letter.raw, letter.message_id) for letter in letters]
    )


def _same_uuid(text: str | None, expected: UUID) -> bool:
    try:
        return text is not None and UUID(text) == expected
    except ValueError:
        return False


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
    headers = producer_headers(message)
    replays = headers.get(REPLAYS_HEADER, 0)
    headers[REPLAYS_HEADER] = (replays if isinstance(replays, int) else 0) + 1
    return copy_of(message, headers)


@dataclass(frozen=True, slots=True)
class ReplayReport:
    replayed: list[DeadLetter]
    # Of the dead letters there were when the replay began, those still in the dead queue (the
    # ones that did not match, or past the limit). A replayed copy the consumer refused again
    # and that bounced back already is not one of them: it is counted in `returned`.
    left: int
    returned: int = 0


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
        left = total - len(replayed)
        now = await _handed_back(connection, topology, left)
    return ReplayReport(replayed, left, returned=max(0, now - left))


async def purge(amqp_url: str, topology: Topology) -> int:
    """Delete every dead letter; returns how many there were."""
    connection = await connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue, _ = await _dead_queue(channel, topology)
        result = await queue.purge()
    return int(result.message_count or 0)


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
        own_user = broker_user(amqp_url)
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
