"""batchops throughput and latency against the raw database limit and a naive peer, in one
run of interleaved rounds.

    python -m bench [--rounds 3] [--no-peer]
                    [--batches 100] [--ops-per-batch 50] [--connections 4] [--single-runs 20]
                    [--consumers 1] [--command consume|serve] [--prefetch N] [--pool-size N]
                    [--env BATCHOPS_X=V ...] [--operation-events sink|unbound] [--py-spy DIR]
                    [--database batchops_bench_…] [--timeout 300] [--quick]

On the servers of BATCHOPS_DATABASE_URL and BATCHOPS_AMQP_URL (local only), the run:

1. creates the database `--database` (by default a new `batchops_bench_<random>`), migrates
   and seeds it with enough orders that every operation of the run changes an order nobody
   else touched;
2. runs `--rounds` rounds, each of three phases on that database: raw, batchops, peer in odd
   rounds and peer, batchops, raw in even ones, so that the machine's drift over the run
   favours none of them:
   - raw baseline: asyncpg alone doing each operation's statements (SELECT … FOR UPDATE,
     UPDATE, INSERT of the result row, one commit each) on 1 and on `--connections`
     connections;
   - batchops: `--consumers` `batchops consume` (or `serve`) processes on a namespace of their
     own, started for the phase; `--single-runs` batches of `--ops-per-batch` order updates
     published one at a time (latency, publish → completion event), then `--batches` batches
     at once (throughput from the first publish to the last completion event, and latency
     under load);
   - peer: the same with as many processes of the naive peer (bench/peers/naive.py:
     FastStream and the SQLAlchemy ORM, a session and transaction per operation, events
     published directly) on a namespace of its own (`--no-peer` leaves it out);
   the database's work of each phase is read from the server's counters around it;
3. prints one JSON line. At the top, medians over the rounds: ops_per_s, raw_ops_per_s (each
   round's best raw figure), ratio, the raw figures, latency_single_ms / latency_under_load_ms
   (p50/p95/p99 of every round's batches together), raw_50_sequential_ms (the raw time of one
   batch's operations back to back), latency_ratio, peak_rss_mb (VmHWM of the services, the
   highest of the rounds), peer_ratio (batchops ÷ peer ops/s); `ratios_from` says how the
   ratios are made: paired, the median of each round's own ratio. Then `targets` (each target
   and whether this run met it), cpu (the services' share of a core under load and their CPU
   ms per operation next to the raw client's; how busy the machine was before, during and
   after the run: other processes move every figure), db_per_operation and
   db_per_operation_raw (transactions and rows inserted, updated, deleted per operation),
   `peer` (its figures), `rounds` (every round's own figures, in the order run), the settings,
   the versions and the commit measured (`+modified` when product code differed from it).

For example, against the local servers:

    export BATCHOPS_DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1/postgres
    export BATCHOPS_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/
    .venv/bin/python -m bench                  # one `batchops consume`, prefetch 8
    .venv/bin/python -m bench --consumers 4    # four competing processes

The peer needs the `bench` extra (`pip install -e '.[bench]'`). The services get only the
settings the flags name (other inherited BATCHOPS_* variables and any .env file are ignored),
so the printed settings are the whole story; the peer gets the same ones. Everything the run
creates (processes, database, queues, exchanges) is removed at the end, also on failure, Ctrl-C
or SIGTERM. `--database` must start with `batchops_bench` (it is dropped). Progress goes to
stderr, the JSON line to stdout; a failed run keeps the services' logs and says where.

`--operation-events sink` (default) routes operation events to a queue that drops them, as if
a subscriber listened; `unbound` leaves them unroutable (the relay logs each one).
`--py-spy DIR` samples the batchops services during every load phase; summarise the files with
`python -m bench.profile DIR/*.txt`. `python -m bench.statements` counts the rows and SQL
statements per operation of the raw baseline, batchops and the peer; `python -m bench.history`
times history look-ups.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import uuid

from bench.environment import BenchSetupError
from bench.options import Options
from bench.run import run

FULL = {"batches": 100, "ops_per_batch": 50, "connections": 4, "single_runs": 20, "raw_ops": 3000}
QUICK = {"batches": 4, "ops_per_batch": 10, "connections": 2, "single_runs": 3, "raw_ops": 100}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.startswith("BATCHOPS_"):
        raise argparse.ArgumentTypeError("expected BATCHOPS_NAME=VALUE")
    return name, value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_sizes(parser)
    _add_service(parser)
    _add_run(parser)
    return parser


def _add_sizes(parser: argparse.ArgumentParser) -> None:
    sizes = parser.add_argument_group("sizes (defaults: full run; --quick: tiny)")
    sizes.add_argument("--batches", type=_positive, help="batches published at once (100)")
    sizes.add_argument("--ops-per-batch", type=_positive, help="operations per batch (50)")
    sizes.add_argument("--connections", type=_positive, help="raw baseline connections (4)")
    sizes.add_argument("--single-runs", type=_positive, help="batches timed one at a time (20)")
    sizes.add_argument("--raw-ops", type=_positive, help="raw operations per phase (3000)")
    sizes.add_argument(
        "--quick",
        action="store_true",
        help="4 x 10, 2 connections, 3 single runs, 100 raw ops: a smoke run of seconds",
    )
    sizes.add_argument(
        "--rounds", type=_positive, default=3, help="rounds of interleaved phases (3)"
    )


def _add_service(parser: argparse.ArgumentParser) -> None:
    service = parser.add_argument_group("service")
    service.add_argument(
        "--consumers", type=_positive, default=1, help="competing service processes (1)"
    )
    service.add_argument(
        "--command", choices=["consume", "serve"], default="consume", help="what they run"
    )
    service.add_argument("--prefetch", type=_positive, help="BATCHOPS_PREFETCH")
    service.add_argument("--pool-size", type=_positive, help="BATCHOPS_DB_POOL_SIZE")
    service.add_argument(
        "--env",
        type=_setting,
        action="append",
        default=[],
        metavar="BATCHOPS_NAME=VALUE",
        help="any other service setting (repeatable)",
    )
    service.add_argument(
        "--operation-events",
        choices=["sink", "unbound"],
        default="sink",
        help="operation events routed to a dropping queue (sink) or to nobody",
    )
    service.add_argument(
        "--no-peer", dest="peer", action="store_false", help="leave the naive peer out"
    )


def _add_run(parser: argparse.ArgumentParser) -> None:
    run_group = parser.add_argument_group("run")
    run_group.add_argument(
        "--database",
        help="created for the run and dropped at its end (default: a new batchops_bench_…)",
    )
    run_group.add_argument("--timeout", type=float, default=300.0, help="bound of every wait (s)")
    run_group.add_argument("--py-spy", dest="py_spy", metavar="DIR", help="profile the load")
    run_group.add_argument(
        "--history",
        type=int,
        default=0,
        metavar="N",
        help="finished batches stored before the run (cost per operation vs history size)",
    )


def parse_options(argv: list[str] | None = None) -> Options:
    parser = _parser()
    args = parser.parse_args(argv)

    defaults = QUICK if args.quick else FULL
    sized = {name: getattr(args, name) or default for name, default in defaults.items()}
    if sized["raw_ops"] < sized["ops_per_batch"]:
        parser.error("--raw-ops must be at least --ops-per-batch (raw_50_sequential_ms needs it)")
    env = dict(args.env)
    if args.prefetch is not None:
        env["BATCHOPS_PREFETCH"] = str(args.prefetch)
    if args.pool_size is not None:
        env["BATCHOPS_DB_POOL_SIZE"] = str(args.pool_size)
    return Options(
        batches=sized["batches"],
        ops_per_batch=sized["ops_per_batch"],
        connections=sized["connections"],
        single_runs=sized["single_runs"],
        raw_ops=sized["raw_ops"],
        rounds=args.rounds,
        peer=args.peer,
        consumers=args.consumers,
        command=args.command,
        service_env=env,
        operation_sink=args.operation_events == "sink",
        # A name of its own by default: two runs at once must not drop each other's database.
        database=args.database or f"batchops_bench_{uuid.uuid4().hex[:10]}",
        timeout=args.timeout,
        py_spy=args.py_spy,
        history=args.history,
    )


async def _main(options: Options) -> dict[str, object]:
    # SIGTERM cancels the run like Ctrl-C does, so that its clean-up still happens.
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run(options)


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    try:
        result = asyncio.run(_main(options))
    except BenchSetupError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted; everything it created was removed", file=sys.stderr)
        return 130
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
