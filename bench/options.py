"""What one benchmark run is asked to do, and the environment its services get."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Options:
    """Sizes, service settings and targets of one run (see `python -m bench --help`)."""

    batches: int
    ops_per_batch: int
    connections: int
    single_runs: int
    raw_ops: int
    consumers: int = 1
    command: str = "consume"
    service_env: dict[str, str] = field(default_factory=dict)
    operation_sink: bool = True
    database: str = "batchops_bench"
    timeout: float = 300.0
    py_spy: str | None = None
    history: int = 0


def order_count(o: Options) -> int:
    """Orders to seed so that every operation of the run gets one of its own."""
    # Mirrors run_raw: a warm-up batch per connection, the 1-connection phase, the N phase.
    raw = (
        o.connections * o.ops_per_batch
        + o.raw_ops
        + math.ceil(o.raw_ops / o.connections) * o.connections
    )
    service = (o.consumers + o.single_runs + o.batches) * o.ops_per_batch
    return raw + service + 10


def service_env(o: Options, database_url: str, amqp_url: str, namespace: str) -> dict[str, str]:
    """The services' whole configuration: inherited BATCHOPS_* variables are dropped so that
    the printed settings are all there is."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("BATCHOPS_")}
    return {
        **inherited,
        "BATCHOPS_DATABASE_URL": database_url,
        "BATCHOPS_AMQP_URL": amqp_url,
        "BATCHOPS_NAMESPACE": namespace,
        "BATCHOPS_LOG_FORMAT": "json",
        # `serve` also runs the HTTP API: on a free loopback port, never on every interface.
        "BATCHOPS_HTTP_HOST": "127.0.0.1",
        "BATCHOPS_HTTP_PORT": "0",
        **o.service_env,
    }
