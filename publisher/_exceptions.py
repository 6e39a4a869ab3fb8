"""Errors raised by the publisher library.

BatchopsError
├── PublishError             the broker did not take the message
│   ├── UnroutableError      returned as unroutable (no queue bound: is the topology declared?)
│   ├── NackedError          negatively confirmed by the broker
│   └── NotConfirmedError    no confirm in time, or the connection was lost before it came
└── CompletionTimeout        no completion event arrived in time
"""

from __future__ import annotations


class BatchopsError(Exception):
    """Base class of every error this library raises."""


class PublishError(BatchopsError):
    pass


class UnroutableError(PublishError):
    def __init__(self, exchange: str, routing_key: str) -> None:
        super().__init__(
            f"message to exchange {exchange!r} with routing key {routing_key!r} was returned "
            "unroutable: no queue is bound for it"
        )
        self.exchange = exchange
        self.routing_key = routing_key


class NackedError(PublishError):
    def __init__(self, exchange: str, routing_key: str) -> None:
        super().__init__(f"the broker refused (nack) the message to {exchange!r} / {routing_key!r}")
        self.exchange = exchange
        self.routing_key = routing_key


class NotConfirmedError(PublishError):
    def __init__(self, exchange: str, routing_key: str, cause: BaseException) -> None:
        super().__init__(
            f"the broker did not confirm the message to {exchange!r} / {routing_key!r} "
            f"({type(cause).__name__}): it may or may not have been taken"
        )
        self.exchange = exchange
        self.routing_key = routing_key


class TopologyMismatchError(BatchopsError):
    def __init__(self, queue: str, delivery_limit: int, *, dead_letters: bool = False) -> None:
        if dead_letters:
            super().__init__(
                f"queue {queue!r} already exists with other arguments than this version's (a "
                "quorum queue): an earlier batchops declared it as a classic queue; run "
                "`batchops queues migrate` once"
            )
        else:
            super().__init__(
                f"queue {queue!r} already exists with other arguments than this version's "
                f"(quorum, x-delivery-limit={delivery_limit}, at-least-once dead-lettering): if "
                "an earlier batchops declared it, run `batchops queues migrate` once; otherwise "
                "give every publisher and consumer the same BATCHOPS_DELIVERY_LIMIT"
            )
        self.queue = queue
        self.delivery_limit = delivery_limit


class CompletionTimeout(BatchopsError, TimeoutError):
    def __init__(self, batch_id: object, timeout: float) -> None:
        super().__init__(f"no completion event for batch {batch_id} within {timeout:g}s")
        self.batch_id = batch_id
        self.timeout = timeout
