"""One benchmark run: set up, rounds of interleaved phases, figures; always clean up."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

from bench.environment import (
    bench_url,
    create_database,
    delete_namespace,
    drop_database,
    new_namespace,
    require_local,
)
from bench.measure import SystemCpu
from bench.options import Options, order_count
from bench.phases import Bench, Service, progress, raw_phase, require_peer, service_phase
from bench.report import Machine, Round, report
from consumer.config import Settings

PHASES = ("raw", "batchops", "peer")


def phase_order(number: int, peer: bool) -> list[str]:
    """Round `number`'s phases: raw, batchops, peer in odd rounds, the reverse in even ones,
    so that a drift of the machine over the run favours no phase (ABC CBA ABC …)."""
    phases = [p for p in PHASES if peer or p != "peer"]
    return phases if number % 2 else phases[::-1]


async def run(o: Options) -> dict[str, object]:
    settings = Settings()
    require_local(settings.database_url, settings.amqp_url)
    if o.peer:
        require_peer()
    services: tuple[Service, ...] = ("batchops", "peer") if o.peer else ("batchops",)
    bench = Bench(
        options=o,
        url=bench_url(settings.database_url, o.database),
        amqp_url=settings.amqp_url,
        namespaces={service: new_namespace() for service in services},
        log_dir=Path(tempfile.mkdtemp(prefix="batchops-bench-")),
    )
    failed = False
    try:
        return await _measure(bench)
    except Exception:
        failed = True
        raise
    finally:
        await _clean_up(bench, failed=failed)


async def _clean_up(bench: Bench, *, failed: bool) -> None:
    for process in bench.running:
        if failed:
            progress(f"service {process.pid} log tail:\n{process.log_tail()}")
        await process.stop(timeout=10)
    namespaces = ", ".join(bench.namespaces.values())
    progress(f"clean-up: namespaces {namespaces}, database {bench.url.database}")
    for error in await asyncio.gather(
        *(delete_namespace(bench.amqp_url, ns) for ns in bench.namespaces.values()),
        drop_database(bench.url),
        return_exceptions=True,
    ):
        if error is not None:
            progress(f"clean-up failed: {error!r}")
    if failed:
        progress(f"service logs kept in {bench.log_dir}")
    else:
        shutil.rmtree(bench.log_dir, ignore_errors=True)


async def _measure(bench: Bench) -> dict[str, object]:
    o = bench.options
    # What else keeps the cores busy (other processes on a shared machine) moves every figure:
    # sample it before the run starts.
    quiet_since = SystemCpu.now()
    await asyncio.sleep(2.0)
    background_percent = SystemCpu.now().busy_percent_since(quiet_since)
    loadavg = os.getloadavg()[0]
    progress(f"database {o.database}: create, migrate, seed {order_count(o)} orders")
    postgres = await asyncio.wait_for(
        create_database(bench.url, order_count(o), o.history), o.timeout
    )
    rounds = [await _round(bench, number) for number in range(1, o.rounds + 1)]
    machine = Machine(
        percent_before_run=background_percent,
        loadavg_before_run=round(loadavg, 2),
        loadavg_after_run=round(os.getloadavg()[0], 2),
        postgres=postgres,
        rabbitmq=rounds[0].batchops.broker_version,
    )
    return report(o, rounds, machine)


async def _round(bench: Bench, number: int) -> Round:
    order = phase_order(number, bench.options.peer)
    progress(f"round {number}/{bench.options.rounds}: {', '.join(order)}")
    raw = batchops = peer = None
    for phase in order:
        if phase == "raw":
            raw = await raw_phase(bench, number)
        elif phase == "batchops":
            batchops = await service_phase(bench, "batchops", number)
        else:
            peer = await service_phase(bench, "peer", number)
    assert raw is not None  # noqa: S101 - every round runs the raw baseline
    assert batchops is not None  # noqa: S101 - and batchops
    return Round(order, raw, batchops, peer)
