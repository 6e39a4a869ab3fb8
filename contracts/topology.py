"""Names of the exchanges and queues (docs/contract.md, Topology) and the routing keys of
every event."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_NAMESPACE = "batchops"
DEFAULT_DELIVERY_LIMIT = 5
UNKNOWN_OPERATION_TYPE = "unknown"


@dataclass(frozen=True, slots=True)
class Topology:
    """Every broker name for one namespace, so environments can share a broker."""

    namespace: str = DEFAULT_NAMESPACE
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT

    @property
    def requests_exchange(self) -> str:
        return f"{self.namespace}.requests"

    @property
    def requests_queue(self) -> str:
        return f"{self.namespace}.requests"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.namespace}.dlx"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.namespace}.dead"

    @property
    def dead_letter_reconcile_queue(self) -> str:
        """Second copy of every dead letter, for the consumer: a batch whose request the broker
        gave up on (delivery limit) is still brought to a terminal status."""
        return f"{self.namespace}.dead.reconcile"

    @property
    def results_exchange(self) -> str:
        return f"{self.namespace}.results"

    def dead_letter_queue_arguments(self) -> dict[str, Any]:
        """Arguments of `{ns}.dead` and `{ns}.dead.reconcile`: quorum queues, replicated like
        the work queue, so that losing the node that declared them loses nothing."""
        return {"x-queue-type": "quorum"}

    def requests_queue_arguments(self) -> dict[str, Any]:
        """Arguments of the work queue; consumer and publisher must declare it identically."""
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-exchange": self.dead_letter_exchange,
            # A dead letter is kept by the work queue until the dead-letter queues confirm it,
            # so a broker node failure cannot drop it; RabbitMQ needs reject-publish for that.
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }


_OPERATION_PREFIX = "operation."


def operation_routing_key(operation_type: str, outcome: str) -> str:
    """`operation.<type>.<succeeded|failed|skipped>`."""
    return f"{_OPERATION_PREFIX}{operation_type}.{outcome}"


def is_operation_routing_key(routing_key: str) -> bool:
    """Whether an event published under `routing_key` is an operation event (every other
    event, a reply_to copy included, is a batch's completion or rejection)."""
    return routing_key.startswith(_OPERATION_PREFIX)


def dryrun_routing_key(operation_type: str, status: str) -> str:
    """`dryrun.<type>.<status>`: the completion of a dry run, its only event."""
    return f"dryrun.{operation_type}.{status}"


def batch_routing_key(operation_type: str, status: str) -> str:
    """`batch.<type>.<completed|partial|failed|rejected|cancelled>`."""
    return f"batch.{operation_type}.{status}"
