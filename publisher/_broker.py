"""The two broker primitives shared by producers and the consumer's relay."""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractMessage
from aio_pika.exceptions import ChannelInvalidStateError
from aiormq.exceptions import AMQPError, ChannelPreconditionFailed, DeliveryError
from pamqp.commands import Basic

from contracts import Topology
from publisher._exceptions import (
    NackedError,
    NotConfirmedError,
    TopologyMismatchError,
    UnroutableError,
)


async def declare_topology(channel: AbstractChannel, topology: Topology) -> None:
    """Declare every exchange and queue (docs/contract.md, "Topology"); safe to repeat.

    Raises TopologyMismatchError when a queue exists with other arguments.
    """
    requests = await channel.declare_exchange(
        topology.requests_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    await channel.declare_exchange(
        topology.results_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    dead_letters = await channel.declare_exchange(
        topology.dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    for name in (topology.dead_letter_queue, topology.dead_letter_reconcile_queue):
        try:
            dead = await channel.declare_queue(
                name, durable=True, arguments=topology.dead_letter_queue_arguments()
            )
        except ChannelPreconditionFailed as exc:
            # A classic queue, as versions before the quorum dead-letter queues declared it.
            raise TopologyMismatchError(name, topology.delivery_limit, dead_letters=True) from exc
        await dead.bind(dead_letters, routing_key="")
    try:
        work = await channel.declare_queue(
            topology.requests_queue, durable=True, arguments=topology.requests_queue_arguments()
        )
    except ChannelPreconditionFailed as exc:
        raise TopologyMismatchError(topology.requests_queue, topology.delivery_limit) from exc
    await work.bind(requests, routing_key="#")


async def publish_confirmed(
    exchange: AbstractExchange,
    message: AbstractMessage,
    routing_key: str,
    *,
    mandatory: bool = True,
    timeout: float | None = 30.0,
) -> None:
    """Publish and wait for the broker's confirm.

    Raises UnroutableError when a `mandatory` message is returned, NackedError on a nack,
    NotConfirmedError when no confirm arrives within `timeout` or the connection is lost
    first. The channel must have publisher confirms on.
    """
    try:
        confirmation = await exchange.publish(
            message, routing_key, mandatory=mandatory, timeout=timeout
        )
    except DeliveryError as exc:
        raise NackedError(exchange.name, routing_key) from exc
    except (TimeoutError, AMQPError, ChannelInvalidStateError, ConnectionError) as exc:
        raise NotConfirmedError(exchange.name, routing_key, exc) from exc
    if not isinstance(confirmation, Basic.Ack):
        raise UnroutableError(exchange.name, routing_key)
