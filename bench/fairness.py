"""Fair share under a flood: how long another actor's few batches take while one actor's flood
waits, and what fair share costs in throughput.

    python -m bench.fairness [--flood 1000] [--few 20] [--ops 5] [--rounds 5] [--prefetch 8]
                             [--window N]
                             [--database batchops_bench_…] [--timeout 600]

On the servers of BATCHOPS_DATABASE_URL and BATCHOPS_AMQP_URL (local only), each round runs
three phases, each on one fresh `batchops consume` (prefetch `--prefetch`), in the order
alone, fair, off (the reverse in even rounds, so that the machine's drift favours none):

- alone: actor B (staff) publishes `--few` batches at once on the idle service;
- fair: actor A (admin) publishes `--flood` batches at once, then (once the broker confirmed
  them) B publishes `--few`; fair share at its default share (half the prefetch) and, unless
  `--window` is given, its default window (256, or twice the prefetch if more: the rest of
  the flood waits in the database);
- off: the same with BATCHOPS_FAIR_SHARE=0.

Each batch has `--ops` order updates, each on an order no other operation touches. Latency is
publish → completion event; throughput is every operation of the phase over the time from the
first publish to the last completion. Prints one JSON line: medians over the rounds of B's
median latency per phase, the same latency ended by the batch's `completed_at` in the database
instead of its completion event (events leave through the outbox relay, which under a flood
runs behind the batches by a pass or more) and by its `started_at` (how long it waited for
the queue, the intake and a free slot), the paired ratios (fair ÷ alone for
B's latency, both ways; 1 − fair ÷ off for the throughput drop), the peak RSS of each phase's
service (VmHWM, the largest over the rounds), the targets, and every round's figures. Progress
goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import select

from bench.e2e import Driver, drive, order_batch
from bench.environment import (
    OrderIds,
    bench_url,
    checkpoint,
    create_database,
    delete_namespace,
    drop_database,
    new_namespace,
    render,
    require_local,
)
from bench.options import Options, service_env
from bench.phases import progress
from bench.service import start_services
from consumer.adapters.database import create_engine
from consumer.adapters.tables import batch_operations
from consumer.config import Settings
from contracts import BatchRequest

FLOODER, OTHER = 1, 2  # admin and staff: both may accept any pending order
PHASES = ("alone", "fair", "off")
LATENCY_TARGET = 3.0  # B under a flood within 3x of B alone
DROP_TARGET = 10.0  # fair share costs at most 10 % of the throughput


@dataclass(frozen=True, slots=True)
class Sizes:
    flood: int
    few: int
    ops: int
    rounds: int
    prefetch: int
    window: int | None
    database: str
    timeout: float


@dataclass(frozen=True, slots=True)
class Phase:
    other_median_ms: float
    other_ran_median_ms: float
    other_started_median_ms: float  # publish -> its first operation: queue, intake, a free slot
    ops_per_s: float
    seconds: float
    rss_mb: float


def _requests(
    orders: OrderIds, sizes: Sizes, actor: int, count: int, label: str
) -> list[BatchRequest]:
    return [
        order_batch(orders.take(sizes.ops), f"{label} {n}").model_copy(update={"actor_id": actor})
        for n in range(count)
    ]


async def _ran(db_url: str, requests: list[BatchRequest]) -> list[tuple[float, float]]:
    """Each batch's `started_at` and `completed_at` as the consumer recorded them (wall-clock
    seconds)."""
    table = batch_operations.c
    engine = create_engine(db_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(table.batch_id, table.started_at, table.completed_at).where(
                    table.batch_id.in_([r.batch_id for r in requests])
                )
            )
            ran = {batch_id: (start.timestamp(), end.timestamp()) for batch_id, start, end in rows}
    finally:
        await engine.dispose()
    return [ran[r.batch_id] for r in requests]


async def _scenario(
    driver: Driver, orders: OrderIds, sizes: Sizes, phase: str, db_url: str
) -> Phase:
    await driver.one(_requests(orders, sizes, OTHER, 1, f"{phase} warm-up")[0])
    flood = [] if phase == "alone" else _requests(orders, sizes, FLOODER, sizes.flood, phase)
    few = _requests(orders, sizes, OTHER, sizes.few, f"{phase} other")
    # perf_counter's offset from the wall clock the consumer stamps `completed_at` with.
    wall_offset = time.time() - time.perf_counter()
    flooded = await driver.send(flood)
    others = await driver.send(few)
    other_arrivals = [await sent.arrival() for sent in others]
    arrivals = other_arrivals + [await sent.arrival() for sent in flooded]
    first = min(s.published for s in flooded + others)
    seconds = max(arrivals) - first
    latencies = [(a - s.published) * 1000 for a, s in zip(other_arrivals, others, strict=True)]
    times = await _ran(db_url, few)
    started, ran = (
        [(at[i] - wall_offset - s.published) * 1000 for at, s in zip(times, others, strict=True)]
        for i in (0, 1)
    )
    return Phase(
        other_median_ms=round(statistics.median(latencies), 1),
        other_ran_median_ms=round(statistics.median(ran), 1),
        other_started_median_ms=round(statistics.median(started), 1),
        ops_per_s=round((len(flood) + len(few)) * sizes.ops / seconds, 1),
        seconds=round(seconds, 3),
        rss_mb=0.0,
    )


async def _phase(
    sizes: Sizes, phase: str, db_url: str, amqp_url: str, ns: str, orders: OrderIds, logs: Path
) -> Phase:
    env = {"BATCHOPS_PREFETCH": str(sizes.prefetch)}
    if sizes.window is not None:
        env["BATCHOPS_FAIR_WINDOW"] = str(sizes.window)
    if phase == "off":
        env["BATCHOPS_FAIR_SHARE"] = "0"
    options = Options(0, sizes.ops, 1, 0, 0, service_env=env)
    (service,) = await start_services(
        1, "consume", service_env(options, db_url, amqp_url, ns), logs, sizes.timeout, label=ns
    )
    try:
        result: list[Phase] = []

        async def scenario(driver: Driver) -> None:
            result.append(await _scenario(driver, orders, sizes, phase, db_url))

        await drive(amqp_url, ns, scenario, timeout=sizes.timeout, operation_sink=True)
        rss_mb = service.peak_rss_mb()  # VmHWM dies with the process
    finally:
        await service.stop(sizes.timeout)
    return Phase(**{**asdict(result[0]), "rss_mb": rss_mb})


def _paired(rounds: list[dict[str, Phase]]) -> dict[str, float]:
    latency = [r["fair"].other_median_ms / r["alone"].other_median_ms for r in rounds]
    ran = [r["fair"].other_ran_median_ms / r["alone"].other_ran_median_ms for r in rounds]
    drop = [100 * (1 - r["fair"].ops_per_s / r["off"].ops_per_s) for r in rounds]
    return {
        "other_latency_ratio": round(statistics.median(latency), 2),
        "other_ran_latency_ratio": round(statistics.median(ran), 2),
        "throughput_drop_percent": round(statistics.median(drop), 1),
    }


def report(
    sizes: Sizes, rounds: list[dict[str, Phase]], loadavg: tuple[float, float]
) -> dict[str, object]:
    paired = _paired(rounds)
    return {
        "other_median_ms": {
            p: round(statistics.median(r[p].other_median_ms for r in rounds), 1) for p in PHASES
        },
        "other_ran_median_ms": {
            p: round(statistics.median(r[p].other_ran_median_ms for r in rounds), 1) for p in PHASES
        },
        "other_started_median_ms": {
            p: round(statistics.median(r[p].other_started_median_ms for r in rounds), 1)
            for p in PHASES
        },
        "ops_per_s": {
            p: round(statistics.median(r[p].ops_per_s for r in rounds), 1) for p in ("fair", "off")
        },
        **paired,
        "peak_rss_mb": {p: max(r[p].rss_mb for r in rounds) for p in PHASES},
        "targets": {
            "other_latency_within_3x_of_alone": paired["other_latency_ratio"] <= LATENCY_TARGET,
            "throughput_drop_at_most_10_percent": paired["throughput_drop_percent"] <= DROP_TARGET,
        },
        "rounds": [
            {"order": list(_order(n)), **{p: asdict(r[p]) for p in PHASES}}
            for n, r in enumerate(rounds, start=1)
        ],
        "settings": {k: v for k, v in asdict(sizes).items() if k != "timeout"},
        "loadavg_1m": {"before": round(loadavg[0], 2), "after": round(loadavg[1], 2)},
        "finished_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _order(number: int) -> tuple[str, ...]:
    return PHASES if number % 2 else PHASES[::-1]


async def run(sizes: Sizes) -> dict[str, object]:
    settings = Settings()
    require_local(settings.database_url, settings.amqp_url)
    url = bench_url(settings.database_url, sizes.database)
    namespaces = {p: new_namespace() for p in PHASES}
    logs = Path(tempfile.mkdtemp(prefix="batchops-fairness-"))
    orders = OrderIds()
    per_round = sizes.few * 3 + 2 * sizes.flood + 3
    loadavg = os.getloadavg()[0]
    try:
        progress(f"database {sizes.database}: create, migrate, seed")
        await create_database(url, sizes.rounds * per_round * sizes.ops + 10)
        rounds: list[dict[str, Phase]] = []
        for number in range(1, sizes.rounds + 1):
            phases: dict[str, Phase] = {}
            for phase in _order(number):
                progress(f"round {number}/{sizes.rounds}: {phase}")
                await checkpoint(url)
                phases[phase] = await asyncio.wait_for(
                    _phase(
                        sizes,
                        phase,
                        render(url),
                        settings.amqp_url,
                        namespaces[phase],
                        orders,
                        logs,
                    ),
                    sizes.timeout,
                )
                progress(f"round {number}/{sizes.rounds}: {phase}: {asdict(phases[phase])}")
            rounds.append(phases)
        return report(sizes, rounds, (loadavg, os.getloadavg()[0]))
    finally:
        for ns in namespaces.values():
            await delete_namespace(settings.amqp_url, ns)
        await drop_database(url)
        shutil.rmtree(logs, ignore_errors=True)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse(argv: list[str] | None = None) -> Sizes:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fairness",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--flood", type=_positive, default=1000, help="actor A's batches")
    parser.add_argument("--few", type=_positive, default=20, help="actor B's batches")
    parser.add_argument("--ops", type=_positive, default=5, help="operations per batch")
    parser.add_argument("--rounds", type=_positive, default=5, help="rounds of the three phases")
    parser.add_argument("--prefetch", type=_positive, default=8, help="BATCHOPS_PREFETCH")
    parser.add_argument(
        "--window", type=_positive, help="BATCHOPS_FAIR_WINDOW (default: the service's)"
    )
    parser.add_argument("--database", help="created and dropped (default batchops_bench_fair_…)")
    parser.add_argument("--timeout", type=float, default=600.0, help="bound of each phase (s)")
    args = parser.parse_args(argv)
    return Sizes(
        flood=args.flood,
        few=args.few,
        ops=args.ops,
        rounds=args.rounds,
        prefetch=args.prefetch,
        window=args.window,
        database=args.database or f"batchops_bench_fair_{uuid.uuid4().hex[:10]}",
        timeout=args.timeout,
    )


async def _main(sizes: Sizes) -> dict[str, object]:
    # SIGTERM cancels the run like Ctrl-C does, so that its clean-up still happens.
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run(sizes)


def main(argv: list[str] | None = None) -> int:
    try:
        print(json.dumps(asyncio.run(_main(parse(argv)))))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench.fairness: interrupted; everything it created was removed", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
