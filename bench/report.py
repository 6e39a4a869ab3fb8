"""The JSON line of a benchmark run: every round's figures, their medians, and the ratios."""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from bench.counters import DbWork
from bench.environment import code_version
from bench.measure import percentiles
from bench.options import Options
from bench.phases import RawPhase, ServicePhase
from consumer.config import Settings

RATIOS_FROM = (
    "paired: the median over the rounds of each round's ratio of batchops' figure to the same "
    "round's raw baseline (ratio, latency_ratio) or peer (peer_ratio) figure"
)
# The targets for a default run (one `batchops consume`, settings as shipped).
TARGETS: tuple[tuple[str, str, float], ...] = (
    ("ratio", "at_least", 0.8),
    ("latency_ratio", "at_most", 1.3),
    ("peak_rss_mb", "at_most", 100.0),
    ("peer_ratio", "at_least", 8.0),
)


@dataclass(frozen=True, slots=True)
class Round:
    order: list[str]  # the phases in the order they ran
    raw: RawPhase
    batchops: ServicePhase
    peer: ServicePhase | None


@dataclass(frozen=True, slots=True)
class Machine:
    """How busy the machine was around the run, and what it runs."""

    percent_before_run: float
    loadavg_before_run: float
    loadavg_after_run: float
    postgres: str
    rabbitmq: str


def median(values: list[float], digits: int) -> float:
    return round(statistics.median(values), digits)


def raw_figures(phase: RawPhase) -> dict[str, Any]:
    raw = phase.figures
    return {
        "ops_per_s": max(raw.ops_per_s_1, raw.ops_per_s_n),
        "ops_per_s_1": raw.ops_per_s_1,
        "ops_per_s_n": raw.ops_per_s_n,
        "sequential_ms": raw.sequential_ms,
        "client_cpu_ms_per_op": raw.client_cpu_ms_per_op,
        "machine_percent": phase.machine_percent,
    }


def service_figures(phase: ServicePhase, load_operations: int) -> dict[str, Any]:
    if phase.load is None:
        raise ValueError("the phase has no load run")
    seconds = phase.load.seconds
    return {
        "ops_per_s": round(load_operations / seconds, 1),
        "load_seconds": round(seconds, 2),
        "latency_single_ms": percentiles(phase.single_ms),
        "latency_under_load_ms": percentiles(phase.load.latencies_ms),
        "service_percent_under_load": round(100 * phase.cpu_seconds / seconds, 1),
        "service_ms_per_op": round(1000 * phase.cpu_seconds / load_operations, 3),
        "machine_percent": phase.machine_percent,
        "peak_rss_mb": max(phase.rss_mb),
    }


def round_figures(r: Round, load_operations: int) -> dict[str, Any]:
    """One round's figures and its ratios, computed from the printed (rounded) figures."""
    raw = raw_figures(r.raw)
    batchops = service_figures(r.batchops, load_operations)
    peer = service_figures(r.peer, load_operations) if r.peer is not None else None
    return {
        "order": r.order,
        "raw": raw,
        "batchops": batchops,
        "peer": peer,
        "ratio": round(batchops["ops_per_s"] / raw["ops_per_s"], 3),
        "latency_ratio": round(batchops["latency_single_ms"]["p50"] / raw["sequential_ms"], 3),
        "peer_ratio": round(batchops["ops_per_s"] / peer["ops_per_s"], 2) if peer else None,
    }


def _summary(phases: list[ServicePhase], figures: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds; latency percentiles of every round's samples together."""
    return {
        "ops_per_s": median([f["ops_per_s"] for f in figures], 1),
        "load_seconds": median([f["load_seconds"] for f in figures], 2),
        "latency_single_ms": percentiles([ms for p in phases for ms in p.single_ms]),
        "latency_under_load_ms": percentiles(
            [ms for p in phases if p.load is not None for ms in p.load.latencies_ms]
        ),
        "service_percent_under_load": median([f["service_percent_under_load"] for f in figures], 1),
        "service_ms_per_op": median([f["service_ms_per_op"] for f in figures], 3),
        "machine_percent_under_load": median([f["machine_percent"] for f in figures], 1),
        "peak_rss_mb": max(f["peak_rss_mb"] for f in figures),
        "db_per_operation": sum((p.db for p in phases), DbWork()).per_operation(),
    }


def _peer(rounds: list[Round], figures: list[dict[str, Any]]) -> dict[str, Any] | None:
    phases = [r.peer for r in rounds if r.peer is not None]
    if not phases:
        return None
    summary = _summary(phases, [f["peer"] for f in figures])
    return {
        **summary,
        "implementation": (
            f"FastStream {metadata.version('faststream')} and the SQLAlchemy "
            f"{metadata.version('sqlalchemy')} ORM: a session and transaction per operation, "
            "events published directly"
        ),
    }


def targets(figures: dict[str, Any]) -> dict[str, Any]:
    """Each target with whether this run met it (null: not measured)."""
    met: dict[str, Any] = {}
    for name, bound, limit in TARGETS:
        value = figures[name]
        ok = None if value is None else value >= limit if bound == "at_least" else value <= limit
        met[name] = {bound: limit, "met": ok}
    return met


def report(o: Options, rounds: list[Round], machine: Machine) -> dict[str, Any]:
    """The run's JSON line: medians over the rounds at the top, every round's own figures in
    `rounds`, the keys of earlier single-round runs kept with the same meaning."""
    per_round = [round_figures(r, o.batches * o.ops_per_batch) for r in rounds]
    raws = [f["raw"] for f in per_round]
    batchops = _summary([r.batchops for r in rounds], [f["batchops"] for f in per_round])
    peer = _peer(rounds, per_round)
    figures: dict[str, Any] = {
        "ops_per_s": batchops["ops_per_s"],
        "raw_ops_per_s": median([f["ops_per_s"] for f in raws], 1),
        "ratio": median([f["ratio"] for f in per_round], 3),
        "raw_ops_per_s_1": median([f["ops_per_s_1"] for f in raws], 1),
        "raw_ops_per_s_n": median([f["ops_per_s_n"] for f in raws], 1),
        "latency_single_ms": batchops["latency_single_ms"],
        "latency_under_load_ms": batchops["latency_under_load_ms"],
        "raw_50_sequential_ms": median([f["sequential_ms"] for f in raws], 1),
        "latency_ratio": median([f["latency_ratio"] for f in per_round], 3),
        "peak_rss_mb": batchops["peak_rss_mb"],
        # Each process's high-water mark over the rounds (they are restarted every round).
        "rss_mb_per_process": [
            max(rss) for rss in zip(*(r.batchops.rss_mb for r in rounds), strict=True)
        ],
        "load_seconds": batchops["load_seconds"],
        "peer_ratio": median([f["peer_ratio"] for f in per_round], 2) if peer else None,
        "ratios_from": RATIOS_FROM,
    }
    figures["targets"] = targets(figures)
    return figures | {
        "cpu": _cpu(batchops, raws, machine),
        "db_per_operation": batchops["db_per_operation"],
        "db_per_operation_raw": sum((r.raw.db for r in rounds), DbWork()).per_operation(),
        "peer": peer,
        "rounds": per_round,
        "settings": _settings(o),
        "versions": {
            "python": platform.python_version(),
            "postgres": machine.postgres,
            "rabbitmq": machine.rabbitmq,
            "cpus": os.cpu_count(),
            "code": code_version(),
        },
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _cpu(batchops: dict[str, Any], raws: list[dict[str, Any]], machine: Machine) -> dict[str, Any]:
    """Percent: 100 = one core busy; machine_*: the share of all cores busy."""
    return {
        "service_percent_under_load": batchops["service_percent_under_load"],
        "service_ms_per_op": batchops["service_ms_per_op"],
        "raw_client_ms_per_op": median([f["client_cpu_ms_per_op"] for f in raws], 3),
        "machine_percent_under_load": batchops["machine_percent_under_load"],
        "machine_percent_during_raw": median([f["machine_percent"] for f in raws], 1),
        "machine_percent_before_run": machine.percent_before_run,
        "loadavg_1m_before_run": machine.loadavg_before_run,
        "loadavg_1m_after_run": machine.loadavg_after_run,
    }


def _settings(o: Options) -> dict[str, Any]:
    default_prefetch = Settings.model_fields["prefetch"].default
    return {
        "batches": o.batches,
        "ops_per_batch": o.ops_per_batch,
        "connections": o.connections,
        "single_runs": o.single_runs,
        "raw_ops": o.raw_ops,
        "rounds": o.rounds,
        "peer": o.peer,
        "consumers": o.consumers,
        "stored_batches_before": o.history,
        "command": o.command,
        "prefetch": int(o.service_env.get("BATCHOPS_PREFETCH", default_prefetch)),
        "service_env": o.service_env,
        "operation_events": "sink" if o.operation_sink else "unbound",
        "profiled": o.py_spy is not None,
    }
