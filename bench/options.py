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
    # Rounds of interleaved phases (raw baseline, batchops, the naive peer), medians reported.
    rounds: int = 3
    peer: bool = True


def raw_operations(o: Options) -> int:
    """Operations of one raw phase (mirrors run_raw): a warm-up batch per connection, the
    1-connection phase, the N-connection phase."""
    return (
        o.connections * o.ops_per_batch
        + o.raw_ops
        + math.ceil(o.raw_ops / o.connections) * o.connections
    )


def service_operations(o: Options) -> int:
    """Operations of one batchops (or peer) phase: a warm-up batch per process, the single
    batches, the load."""
    return (o.consumers + o.single_runs + o.batches) * o.ops_per_batch


def order_count(o: Options) -> int:
    """Orders to seed so that every operation of the run gets one of its own."""
    services = 2 if o.peer else 1
    return o.rounds * (raw_operations(o) + services * service_operations(o)) + 10


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
