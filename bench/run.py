"""One benchmark run: set up, raw baseline, batchops end to end, figures; always clean up."""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import URL

from bench.e2e import Driver, LoadRun, drive, order_batch
from bench.environment import (
    DbCounters,
    OrderIds,
    bench_url,
    checkpoint,
    code_version,
    create_database,
    delete_namespace,
    drop_database,
    new_namespace,
    render,
    require_local,
)
from bench.measure import SystemCpu, percentiles
from bench.options import Options, order_count, service_env
from bench.profile import PySpy
from bench.raw import run_raw
from bench.service import ServiceProcess, start_services
from consumer.config import Settings


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


@dataclass
class _ServicePhase:
    """What the end-to-end scenario measured, filled in as it goes."""

    single_ms: list[float] = field(default_factory=list)
    load: LoadRun | None = None
    service_cpu_percent: float = 0.0
    system_cpu_percent: float = 0.0
    operations: int = 0


async def _scenario(
    driver: Driver, o: Options, orders: OrderIds, services: list[ServiceProcess], out: _ServicePhase
) -> None:
    size = o.ops_per_batch
    progress(f"warm-up: {o.consumers} batch(es)")
    warm_up = [order_batch(orders.take(size), "warm-up") for _ in range(o.consumers)]
    await asyncio.gather(*map(driver.one, warm_up))
    progress(f"single-batch latency: {o.single_runs} x {size} operations, one at a time")
    for run in range(o.single_runs):
        out.single_ms.append(await driver.one(order_batch(orders.take(size), f"single {run}")))
    requests = [order_batch(orders.take(size), f"load {n}") for n in range(o.batches)]
    out.operations = (o.consumers + o.single_runs + o.batches) * size
    progress(f"throughput: {o.batches} x {size} operations published at once")
    profiler = PySpy([s.pid for s in services], Path(o.py_spy)) if o.py_spy else None
    if profiler is not None:
        await asyncio.sleep(1.0)  # let py-spy attach before the load starts
    cpu_before = sum(s.cpu_seconds() for s in services)
    system_before = SystemCpu.now()
    try:
        out.load = await driver.load(requests)
        cpu_used = sum(s.cpu_seconds() for s in services) - cpu_before
        out.service_cpu_percent = round(100 * cpu_used / out.load.seconds, 1)
        out.system_cpu_percent = SystemCpu.now().busy_percent_since(system_before)
    finally:
        if profiler is not None:
            await profiler.stop()
            progress(f"profiles: {', '.join(map(str, profiler.outputs))}")


async def run(o: Options) -> dict[str, object]:
    settings = Settings()
    require_local(settings.database_url, settings.amqp_url)
    url = bench_url(settings.database_url, o.database)
    namespace = new_namespace()
    log_dir = Path(tempfile.mkdtemp(prefix="batchops-bench-"))
    services: list[ServiceProcess] = []
    failed = False
    try:
        return await _measure(o, url, settings.amqp_url, namespace, log_dir, services)
    except Exception:
        failed = True
        raise
    finally:
        for service in services:
            if failed:
                progress(f"service {service.pid} log tail:\n{service.log_tail()}")
            await service.stop(timeout=10)
        progress(f"clean-up: namespace {namespace}, database {o.database}")
        for error in await asyncio.gather(
            delete_namespace(settings.amqp_url, namespace),
            drop_database(url),
            return_exceptions=True,
        ):
            if error is not None:
                progress(f"clean-up failed: {error!r}")
        if failed:
            progress(f"service logs kept in {log_dir}")
        else:
            shutil.rmtree(log_dir, ignore_errors=True)


async def _measure(
    o: Options,
    url: URL,
    amqp_url: str,
    namespace: str,
    log_dir: Path,
    services: list[ServiceProcess],
) -> dict[str, object]:
    """The phases in order; `services` collects the processes started, for the clean-up."""
    orders = OrderIds()
    phase = _ServicePhase()
    # What else keeps the cores busy (other processes on a shared machine) moves every figure:
    # sample it before the run starts.
    quiet_since = SystemCpu.now()
    await asyncio.sleep(2.0)
    background_percent = SystemCpu.now().busy_percent_since(quiet_since)
    loadavg = os.getloadavg()[0]
    progress(f"database {o.database}: create, migrate, seed {order_count(o)} orders")
    postgres = await asyncio.wait_for(create_database(url, order_count(o), o.history), o.timeout)
    progress(f"raw baseline: {o.raw_ops} operations at 1 and at {o.connections} connections")
    raw_since = SystemCpu.now()
    raw = await asyncio.wait_for(
        run_raw(
            render(url.set(drivername="postgresql")),
            orders,
            operations=o.raw_ops,
            connections=o.connections,
            chunk=o.ops_per_batch,
            before_phase=lambda: checkpoint(url),
        ),
        o.timeout,
    )
    raw_system_percent = SystemCpu.now().busy_percent_since(raw_since)
    await checkpoint(url)
    counters_before = await DbCounters.read(url)
    env = service_env(o, render(url), amqp_url, namespace)
    progress(f"starting {o.consumers} x `batchops {o.command}` (namespace {namespace})")
    services.extend(await start_services(o.consumers, o.command, env, log_dir, o.timeout))
    rabbitmq = await drive(
        amqp_url,
        namespace,
        lambda driver: _scenario(driver, o, orders, services, phase),
        timeout=o.timeout,
        operation_sink=o.operation_sink,
    )
    rss = [s.peak_rss_mb() for s in services]  # before stopping: VmHWM dies with the process
    for service in services:
        await service.stop(o.timeout)
    counters_after = await DbCounters.read(url)

    assert phase.load is not None  # noqa: S101 - set by the scenario, which did not raise
    ops_per_s = o.batches * o.ops_per_batch / phase.load.seconds
    raw_best = max(raw.ops_per_s_1, raw.ops_per_s_n)
    single = percentiles(phase.single_ms)
    return {
        "ops_per_s": round(ops_per_s, 1),
        "raw_ops_per_s": raw_best,
        "ratio": round(ops_per_s / raw_best, 3),
        "raw_ops_per_s_1": raw.ops_per_s_1,
        "raw_ops_per_s_n": raw.ops_per_s_n,
        "latency_single_ms": single,
        "latency_under_load_ms": percentiles(phase.load.latencies_ms),
        "raw_50_sequential_ms": raw.sequential_ms,
        "latency_ratio": round(single["p50"] / raw.sequential_ms, 3),
        "peak_rss_mb": max(rss),
        "rss_mb_per_process": rss,
        "load_seconds": round(phase.load.seconds, 2),
        "cpu": {  # percent: 100 = one core busy; machine_*: share of all cores busy
            "service_percent_under_load": phase.service_cpu_percent,
            "service_ms_per_op": round(
                10 * phase.service_cpu_percent * phase.load.seconds / (o.batches * o.ops_per_batch),
                3,
            ),
            "raw_client_ms_per_op": raw.client_cpu_ms_per_op,
            "machine_percent_under_load": phase.system_cpu_percent,
            "machine_percent_during_raw": raw_system_percent,
            "machine_percent_before_run": background_percent,
            "loadavg_1m_before_run": round(loadavg, 2),
        },
        "db_per_operation": counters_after.per_operation(counters_before, phase.operations),
        "settings": {
            "batches": o.batches,
            "ops_per_batch": o.ops_per_batch,
            "connections": o.connections,
            "single_runs": o.single_runs,
            "raw_ops": o.raw_ops,
            "consumers": o.consumers,
            "stored_batches_before": o.history,
            "command": o.command,
            "prefetch": int(
                o.service_env.get("BATCHOPS_PREFETCH", Settings.model_fields["prefetch"].default)
            ),
            "service_env": o.service_env,
            "operation_events": "sink" if o.operation_sink else "unbound",
            "profiled": o.py_spy is not None,
        },
        "versions": {
            "python": platform.python_version(),
            "postgres": postgres,
            "rabbitmq": rabbitmq,
            "cpus": os.cpu_count(),
            "code": code_version(),
        },
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
