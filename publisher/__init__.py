"""Client library for services that submit batches to batchops (depends on aio-pika only)."""

from publisher._broker import declare_topology, publish_confirmed
from publisher._client import DEFAULT_AMQP_URL, BatchPublisher, Completion, broker_user
from publisher._cluster import broker_nodes, connect, connect_robust
from publisher._exceptions import (
    BatchopsError,
    CompletionTimeout,
    NackedError,
    NotConfirmedError,
    PublishError,
    TopologyMismatchError,
    UnroutableError,
)
from publisher._subscription import EventSubscription

__all__ = [
    "DEFAULT_AMQP_URL",
    "BatchPublisher",
    "BatchopsError",
    "Completion",
    "CompletionTimeout",
    "EventSubscription",
    "NackedError",
    "NotConfirmedError",
    "PublishError",
    "TopologyMismatchError",
    "UnroutableError",
    "broker_nodes",
    "broker_user",
    "connect",
    "connect_robust",
    "declare_topology",
    "publish_confirmed",
]
