"""Connections to one RabbitMQ node or to any node of a cluster.

An AMQP URL may list the nodes of a cluster, comma-separated (each a whole URL:
`amqp://u:p@rabbit-0:5672/,amqp://u:p@rabbit-1:5672/`). The first connection goes to the first
node that accepts it, in the order given; a robust connection that loses its node then tries
the next one, and so on round the list, on every reconnect.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aio_pika
import yarl
from aio_pika.abc import AbstractConnection, AbstractRobustConnection, UnderlayConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aio_pika.robust_connection import RobustConnection

from publisher._close_answer import answer_every_channel_close

_SCHEMES = frozenset({"amqp", "amqps"})


def broker_nodes(amqp_url: str) -> list[yarl.URL]:
    """The node URLs of `amqp_url` (one, or several separated by commas), in order.

    Raises ValueError when an entry is empty or not an `amqp://` / `amqps://` URL with a host.
    A comma inside a password must be written `%2C`.
    """
    nodes = []
    for entry in amqp_url.split(","):
        text = entry.strip()
        url = yarl.URL(text)
        if not text or url.scheme not in _SCHEMES or not url.host:
            raise ValueError(
                f"{text!r} is not an amqp:// or amqps:// URL with a host (several nodes are "
                "separated by commas, each a whole URL)"
            )
        nodes.append(url)
    return nodes


class _NodeRotatingConnection(RobustConnection):
    """A robust connection that moves on to the next node before every reconnect.

    aio-pika's robust connection reconnects to the one URL it was given. It has no hook for
    "about to connect", but before each connection attempt (the first and every reconnect) it
    clears `transport` and then connects to `self.url`; clearing `transport` is therefore where
    the next node is chosen. `close()` clears it too, which only moves the cursor of a
    connection that is going away.
    """

    def __init__(self, nodes: Sequence[yarl.URL], first: int, **kwargs: Any) -> None:
        self._cursor: int | None = None  # None while the base class initialises
        self._current_transport: UnderlayConnection | None = None
        super().__init__(nodes[first], **kwargs)
        self._nodes = tuple(nodes)
        self._cursor = first

    @property
    def transport(self) -> UnderlayConnection | None:
        return self._current_transport

    @transport.setter
    def transport(self, value: UnderlayConnection | None) -> None:
        if value is None and self._cursor is not None:
            if self.connection_attempt:  # the first attempt goes to the node chosen in __init__
                self._cursor = (self._cursor + 1) % len(self._nodes)
            self.url = self._nodes[self._cursor]
        self._current_transport = value


async def connect_robust(amqp_url: str, **kwargs: Any) -> AbstractRobustConnection:
    """A robust connection to the first node of `amqp_url` that accepts one, in order.

    When the connection is lost it reconnects by itself, to the next node each time (round the
    list), and restores its channels, queues and consumers. `kwargs` go to aio-pika's robust
    connection (e.g. `client_properties`, `timeout`). Raises ValueError for a malformed URL,
    and the last node's connection error when none accepts.
    """
    nodes = broker_nodes(amqp_url)
    answer_every_channel_close()
    timeout = kwargs.pop("timeout", None)
    failure: BaseException | None = None
    for first in range(len(nodes)):
        connection = _NodeRotatingConnection(nodes, first, **kwargs)
        try:
            await connection.connect(timeout=timeout)
        except CONNECTION_EXCEPTIONS as exc:
            await connection.close()
            failure = exc
            continue
        return connection
    assert failure is not None  # noqa: S101 - at least one node was tried
    raise failure


async def connect(amqp_url: str, **kwargs: Any) -> AbstractConnection:
    """A plain (not reconnecting) connection to the first node of `amqp_url` that accepts
    one, in order; for short-lived work such as one command.

    Raises ValueError for a malformed URL, and the last node's connection error when none
    accepts.
    """
    failure: BaseException | None = None
    answer_every_channel_close()
    for node in broker_nodes(amqp_url):
        try:
            connection: AbstractConnection = await aio_pika.connect(node, **kwargs)
        except CONNECTION_EXCEPTIONS as exc:
            failure = exc
            continue
        return connection
    assert failure is not None  # noqa: S101 - at least one node was tried
    raise failure
