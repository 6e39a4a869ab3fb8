"""The phases of a benchmark round: the raw baseline, batchops end to end, and the naive peer
end to end on the same kind of batches; each measured with the database's work it caused."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sqlalchemy import URL

from bench.counters import DbCounters, DbWork
from bench.e2e import Driver, LoadRun, drive, order_batch
from bench.environment import BenchSetupError, OrderIds, checkpoint, render
from bench.measure import SystemCpu
from bench.options import Options, raw_operations, service_env, service_operations
from bench.profile import PySpy
from bench.raw import RawFigures, run_raw
from bench.service import ServiceProcess, start_services

ROOT = Path(__file__).resolve().parent.parent
Service = Literal["batchops", "peer"]
PEER_MODULE = "bench.peers.naive"


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def require_peer() -> None:
    """The peer's dependencies are an extra of their own: say how to get them."""
    if importlib.util.find_spec("faststream") is None:
        raise BenchSetupError(
            "the naive peer needs FastStream: .venv/bin/pip install -e '.[bench]' "
            "(or run without the peer: --no-peer)"
        )


@dataclass(frozen=True, slots=True)
class RawPhase:
    figures: RawFigures
    machine_percent: float  # share of all cores busy during the phase
    db: DbWork


@dataclass(slots=True)
class ServicePhase:
    """What one end-to-end phase (batchops or the peer) measured, filled in as it goes."""

    single_ms: list[float] = field(default_factory=list)
    load: LoadRun | None = None
    cpu_seconds: float = 0.0  # the processes' CPU time during the load
    machine_percent: float = 0.0
    rss_mb: list[float] = field(default_factory=list)
    db: DbWork = field(default_factory=DbWork)
    broker_version: str = ""


@dataclass(slots=True)
class Bench:
    """What every phase of the run shares; `running` holds the processes up now, which the
    run's clean-up stops if a phase fails."""

    options: Options
    url: URL
    amqp_url: str
    namespaces: dict[Service, str]
    log_dir: Path
    orders: OrderIds = field(default_factory=OrderIds)
    running: list[ServiceProcess] = field(default_factory=list)


def _label(bench: Bench, number: int, phase: str) -> str:
    return f"round {number}/{bench.options.rounds} {phase}"


async def raw_phase(bench: Bench, number: int) -> RawPhase:
    """Round `number`'s raw baseline."""
    o = bench.options
    label = _label(bench, number, "raw")
    progress(
        f"{label}: raw baseline: {o.raw_ops} operations at 1 and at {o.connections} connections"
    )
    before = await DbCounters.read(bench.url)
    since = SystemCpu.now()
    figures = await asyncio.wait_for(
        run_raw(
            render(bench.url.set(drivername="postgresql")),
            bench.orders,
            operations=o.raw_ops,
            connections=o.connections,
            chunk=o.ops_per_batch,
            before_phase=lambda: checkpoint(bench.url),
        ),
        o.timeout,
    )
    machine_percent = SystemCpu.now().busy_percent_since(since)
    after = await DbCounters.read(bench.url)
    return RawPhase(figures, machine_percent, after.since(before, raw_operations(o)))


async def service_phase(bench: Bench, service: Service, number: int) -> ServicePhase:
    """Round `number`'s phase of `service`: start its processes, run the scenario through the
    broker, stop them; then read what the database did (their connections closed, so their
    counts are in)."""
    o = bench.options
    label = _label(bench, number, service)
    namespace = bench.namespaces[service]
    env = service_env(o, render(bench.url), bench.amqp_url, namespace)
    argv = None
    if service == "peer":
        # The peer runs from this checkout (the bench package is not installed).
        env["PYTHONPATH"] = str(ROOT)
        argv = [sys.executable, "-m", PEER_MODULE]
    await checkpoint(bench.url)
    before = await DbCounters.read(bench.url)
    what = f"`batchops {o.command}`" if service == "batchops" else PEER_MODULE
    progress(f"{label}: starting {o.consumers} x {what} (namespace {namespace})")
    processes = await start_services(
        o.consumers,
        o.command,
        env,
        bench.log_dir,
        o.timeout,
        argv=argv,
        label=f"round{number}-{service}",
    )
    bench.running.extend(processes)
    phase = ServicePhase()
    profile = o.py_spy is not None and service == "batchops"
    phase.broker_version = await drive(
        bench.amqp_url,
        namespace,
        lambda driver: _scenario(driver, bench, processes, phase, label, profile=profile),
        timeout=o.timeout,
        operation_sink=o.operation_sink,
    )
    phase.rss_mb = [p.peak_rss_mb() for p in processes]  # VmHWM dies with the process
    for process in processes:
        await process.stop(o.timeout)
        bench.running.remove(process)
    after = await DbCounters.read(bench.url)
    phase.db = after.since(before, service_operations(o))
    return phase


async def _scenario(
    driver: Driver,
    bench: Bench,
    processes: list[ServiceProcess],
    out: ServicePhase,
    label: str,
    *,
    profile: bool,
) -> None:
    o, orders, size = bench.options, bench.orders, bench.options.ops_per_batch
    progress(f"{label}: warm-up: {o.consumers} batch(es)")
    warm_up = [order_batch(orders.take(size), f"{label} warm-up") for _ in range(o.consumers)]
    await asyncio.gather(*map(driver.one, warm_up))
    progress(f"{label}: single-batch latency: {o.single_runs} x {size} operations, one at a time")
    for run in range(o.single_runs):
        out.single_ms.append(await driver.one(order_batch(orders.take(size), f"{label} {run}")))
    requests = [order_batch(orders.take(size), f"{label} load {n}") for n in range(o.batches)]
    progress(f"{label}: throughput: {o.batches} x {size} operations published at once")
    profiler = None
    if profile and o.py_spy is not None:
        profiler = PySpy([p.pid for p in processes], Path(o.py_spy))
        await asyncio.sleep(1.0)  # let py-spy attach before the load starts
    cpu_before = sum(p.cpu_seconds() for p in processes)
    system_before = SystemCpu.now()
    try:
        out.load = await driver.load(requests)
        out.cpu_seconds = sum(p.cpu_seconds() for p in processes) - cpu_before
        out.machine_percent = SystemCpu.now().busy_percent_since(system_before)
    finally:
        if profiler is not None:
            await profiler.stop()
            progress(f"profiles: {', '.join(map(str, profiler.outputs))}")
