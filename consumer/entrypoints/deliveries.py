"""What the consumer reads of a broker delivery: the intake's Delivery, whether it is a dead
letter the broker gave up on, and whether its channel is still open."""

from __future__ import annotations

from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import ChannelInvalidStateError

from consumer.service_layer.intake import Delivery


def to_delivery(
    message: AbstractIncomingMessage, *, dead_lettered: bool = False, give_up: bool = False
) -> Delivery:
    headers = message.headers or {}
    count = headers.get("x-delivery-count", 0)
    traceparent = headers.get("traceparent")
    return Delivery(
        body=message.body,
        user_id=message.user_id,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        content_type=message.content_type,
        published_at=message.timestamp,
        delivery_count=count if isinstance(count, int) else 0,
        traceparent=traceparent if isinstance(traceparent, str) else None,
        dead_lettered=dead_lettered,
        give_up=give_up,
    )


def gave_up_on(message: AbstractIncomingMessage, requests_queue: str) -> bool:
    """True for a dead letter that the broker dropped after the delivery limit (not one we
    rejected ourselves as invalid, nor the copy of a request the service gave up on after it
    waited in the database: that one's batch was finished before the copy was published, and
    only the broker adds x-death)."""
    headers = message.headers or {}
    return (
        headers.get("x-first-death-reason") == "delivery_limit"
        and headers.get("x-first-death-queue") == requests_queue
        and "x-death" in headers
    )


def channel_open(message: AbstractIncomingMessage) -> bool:
    """False once the channel the message came on closed: a robust connection's new channel
    knows nothing of its delivery tag, and the broker has handed the message back already."""
    try:
        message.channel  # noqa: B018 - the property raises once the channel closed
    except ChannelInvalidStateError:
        return False
    return True
