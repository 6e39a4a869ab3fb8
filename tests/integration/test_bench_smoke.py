"""`python -m bench --quick` runs end to end against the test services and prints what its
docstring promises: every round's figures, and medians and ratios that follow from them.

Timings on a shared machine are no test's business: only how the figures relate is checked."""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.conftest import ServiceUrls

ROOT = Path(__file__).resolve().parents[2]
# The bench runs only against local servers (it drops a database and floods a broker): against
# remote BATCHOPS_TEST_* servers it refuses, naming the host, and these tests fail with its
# message; deselect them there with -m "not bench_smoke".
pytestmark = pytest.mark.bench_smoke
# The naive peer needs the `bench` extra (FastStream); an environment without it (the floor
# versions' run) benchmarks without the peer.
PEER = importlib.util.find_spec("faststream") is not None
# `make floors` deselects the peer's test (-m "not peer") rather than skipping it.
needs_peer = pytest.mark.peer
# --quick: 4 batches of 10 at once, 3 single runs, 2 raw connections, 100 raw operations; one
# warm-up batch per consumer before the timed phases; 3 rounds.
QUICK = {"batches": 4, "ops_per_batch": 10, "connections": 2, "single_runs": 3, "raw_ops": 100}
ROUNDS = 3
LOAD_OPERATIONS = 4 * 10

# The JSON line's keys, as `bench/__main__.py` documents them.
KEYS = {
    "ops_per_s",
    "raw_ops_per_s",
    "ratio",
    "raw_ops_per_s_1",
    "raw_ops_per_s_n",
    "latency_single_ms",
    "latency_under_load_ms",
    "raw_50_sequential_ms",
    "latency_ratio",
    "peak_rss_mb",
    "rss_mb_per_process",
    "load_seconds",
    "peer_ratio",
    "ratios_from",
    "targets",
    "cpu",
    "db_per_operation",
    "db_per_operation_raw",
    "peer",
    "rounds",
    "settings",
    "versions",
    "finished_at",
}
CPU_KEYS = {
    "service_percent_under_load",
    "service_ms_per_op",
    "raw_client_ms_per_op",
    "machine_percent_under_load",
    "machine_percent_during_raw",
    "machine_percent_before_run",
    "loadavg_1m_before_run",
    "loadavg_1m_after_run",
}
DB_KEYS = {"transactions", "rows_inserted", "rows_updated", "rows_deleted"}
PERCENTILES = {"p50", "p95", "p99"}
ROUND_KEYS = {"order", "raw", "batchops", "peer", "ratio", "latency_ratio", "peer_ratio"}
RAW_KEYS = {
    "ops_per_s",
    "ops_per_s_1",
    "ops_per_s_n",
    "sequential_ms",
    "client_cpu_ms_per_op",
    "machine_percent",
}
SERVICE_KEYS = {
    "ops_per_s",
    "load_seconds",
    "latency_single_ms",
    "latency_under_load_ms",
    "service_percent_under_load",
    "service_ms_per_op",
    "machine_percent",
    "peak_rss_mb",
}
PEER_KEYS = {
    "ops_per_s",
    "load_seconds",
    "latency_single_ms",
    "latency_under_load_ms",
    "service_percent_under_load",
    "service_ms_per_op",
    "machine_percent_under_load",
    "peak_rss_mb",
    "db_per_operation",
    "implementation",
}


@pytest.fixture(scope="module")
def quick_run(service_urls: ServiceUrls) -> tuple[dict[str, Any], str]:
    """One `python -m bench --quick` on a database of its own: its figures and its stderr."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BATCHOPS_")},
        "BATCHOPS_DATABASE_URL": service_urls.database_server,
        "BATCHOPS_AMQP_URL": service_urls.amqp,
    }
    # A name of its own: a concurrent test run (or a real benchmark) keeps its database.
    database = f"batchops_bench_smoke_{uuid.uuid4().hex[:10]}"
    command = [sys.executable, "-m", "bench", "--quick", "--database", database, "--timeout", "60"]
    done = subprocess.run(
        command if PEER else [*command, "--no-peer"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    # The bench exits non-zero unless every batch it published completed with every operation
    # succeeding (bench/e2e.py): a 0 here says every operation of every phase was applied.
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    return json.loads(lines[0]), done.stderr


def median(values: list[float], digits: int) -> float:
    return round(statistics.median(values), digits)


def phases(figures: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [r[name] for r in figures["rounds"]]


@pytest.mark.timeout(180)
class TestQuickBenchmarkPrints:
    def test_every_documented_figure_and_nothing_else(self, quick_run):
        figures, _ = quick_run

        assert set(figures) == KEYS
        assert set(figures["cpu"]) == CPU_KEYS
        assert set(figures["db_per_operation"]) == DB_KEYS
        assert set(figures["db_per_operation_raw"]) == DB_KEYS
        for name in ("latency_single_ms", "latency_under_load_ms"):
            assert set(figures[name]) == PERCENTILES, name
        assert set(figures["targets"]) == {"ratio", "latency_ratio", "peak_rss_mb", "peer_ratio"}
        assert set(figures["versions"]) == {"python", "postgres", "rabbitmq", "cpus", "code"}
        assert figures["versions"]["postgres"]
        assert figures["versions"]["rabbitmq"]
        assert figures["ratios_from"].startswith("paired:")

    def test_every_round_with_its_phases(self, quick_run):
        figures, _ = quick_run

        assert len(figures["rounds"]) == ROUNDS
        for number, round_ in enumerate(figures["rounds"], 1):
            assert set(round_) == ROUND_KEYS, number
            assert set(round_["raw"]) == RAW_KEYS, number
            assert set(round_["batchops"]) == SERVICE_KEYS, number
            if PEER:
                assert set(round_["peer"]) == SERVICE_KEYS, number
            else:
                assert round_["peer"] is None
                assert round_["peer_ratio"] is None

    def test_the_settings_are_those_of_the_quick_run_on_one_consumer(self, quick_run):
        figures, _ = quick_run
        settings = figures["settings"]

        assert {name: settings[name] for name in QUICK} == QUICK
        assert settings["rounds"] == ROUNDS
        assert settings["peer"] is PEER
        assert settings["consumers"] == 1
        assert settings["command"] == "consume"
        assert settings["service_env"] == {}
        assert settings["operation_events"] == "sink"
        assert settings["profiled"] is False
        assert len(figures["rss_mb_per_process"]) == 1, "one service process measured"


@pytest.mark.timeout(180)
class TestTheRoundsInterleave:
    def test_phases_alternate_direction_from_round_to_round(self, quick_run):
        figures, _ = quick_run
        first = ["raw", "batchops", "peer"] if PEER else ["raw", "batchops"]

        assert [r["order"] for r in figures["rounds"]] == [first, first[::-1], first]

    def test_each_phase_ran_once_per_round_with_the_batches_it_was_asked_for(self, quick_run):
        _, stderr = quick_run
        services = ("batchops", "peer") if PEER else ("batchops",)

        for number in range(1, ROUNDS + 1):
            label = f"round {number}/{ROUNDS}"
            raw = f"{label} raw: raw baseline: 100 operations at 1 and at 2 connections"
            assert stderr.count(raw) == 1, raw
            for service in services:
                for line in (
                    "warm-up: 1 batch(es)",
                    "single-batch latency: 3 x 10 operations, one at a time",
                    "throughput: 4 x 10 operations published at once",
                ):
                    assert stderr.count(f"{label} {service}: {line}") == 1, (label, service, line)
        assert "clean-up" in stderr


@pytest.mark.timeout(180)
class TestTheFiguresFollowFromOneAnother:
    def test_each_rounds_throughput_is_the_load_operations_over_the_load_time(self, quick_run):
        figures, _ = quick_run
        services = ("batchops", "peer") if PEER else ("batchops",)

        for service in services:
            for phase in phases(figures, service):
                ops_per_s, seconds = phase["ops_per_s"], phase["load_seconds"]
                assert ops_per_s > 0
                assert seconds > 0
                # Printed rounded (0.1 op/s, 0.01 s); the operations they imply are the load's.
                implied = ops_per_s * seconds
                slack = (ops_per_s + 0.05) * 0.005 + 0.05 * seconds + 1e-9
                assert abs(implied - LOAD_OPERATIONS) <= slack, (service, ops_per_s, seconds)

    def test_each_rounds_ratios_are_computed_from_its_printed_figures(self, quick_run):
        figures, _ = quick_run

        for round_ in figures["rounds"]:
            raw, batchops, peer = round_["raw"], round_["batchops"], round_["peer"]
            assert raw["ops_per_s"] == max(raw["ops_per_s_1"], raw["ops_per_s_n"])
            assert raw["ops_per_s"] > 0
            assert raw["sequential_ms"] > 0
            assert round_["ratio"] == round(batchops["ops_per_s"] / raw["ops_per_s"], 3)
            assert round_["latency_ratio"] == round(
                batchops["latency_single_ms"]["p50"] / raw["sequential_ms"], 3
            )
            if peer is not None:
                assert round_["peer_ratio"] == round(batchops["ops_per_s"] / peer["ops_per_s"], 2)

    def test_the_headline_figures_are_medians_over_the_rounds(self, quick_run):
        figures, _ = quick_run
        raws, batchops = phases(figures, "raw"), phases(figures, "batchops")

        assert figures["ops_per_s"] == median([b["ops_per_s"] for b in batchops], 1)
        assert figures["load_seconds"] == median([b["load_seconds"] for b in batchops], 2)
        assert figures["raw_ops_per_s"] == median([r["ops_per_s"] for r in raws], 1)
        assert figures["raw_ops_per_s_1"] == median([r["ops_per_s_1"] for r in raws], 1)
        assert figures["raw_ops_per_s_n"] == median([r["ops_per_s_n"] for r in raws], 1)
        assert figures["raw_50_sequential_ms"] == median([r["sequential_ms"] for r in raws], 1)
        assert figures["cpu"]["raw_client_ms_per_op"] == median(
            [r["client_cpu_ms_per_op"] for r in raws], 3
        )
        assert figures["cpu"]["service_ms_per_op"] == median(
            [b["service_ms_per_op"] for b in batchops], 3
        )

    def test_the_ratios_are_medians_of_the_paired_ratios(self, quick_run):
        figures, _ = quick_run
        rounds = figures["rounds"]

        assert figures["ratio"] == median([r["ratio"] for r in rounds], 3)
        assert figures["latency_ratio"] == median([r["latency_ratio"] for r in rounds], 3)
        if PEER:
            assert figures["peer_ratio"] == median([r["peer_ratio"] for r in rounds], 2)
        else:
            assert figures["peer_ratio"] is None

    def test_peak_memory_is_the_highest_of_every_round(self, quick_run):
        figures, _ = quick_run
        highest = max(b["peak_rss_mb"] for b in phases(figures, "batchops"))

        assert figures["peak_rss_mb"] == highest == max(figures["rss_mb_per_process"])

    def test_each_target_is_judged_on_the_printed_figure(self, quick_run):
        figures, _ = quick_run

        for name, target in figures["targets"].items():
            value = figures[name]
            if value is None:
                assert target["met"] is None, name
            elif "at_least" in target:
                assert target["met"] is (value >= target["at_least"]), name
            else:
                assert target["met"] is (value <= target["at_most"]), name

    def test_latencies_are_ordered_percentiles(self, quick_run):
        figures, _ = quick_run
        measured = [figures, *phases(figures, "batchops")]
        if PEER:
            measured += [figures["peer"], *phases(figures, "peer")]

        for figures_ in measured:
            for name in ("latency_single_ms", "latency_under_load_ms"):
                p = figures_[name]
                assert 0 < p["p50"] <= p["p95"] <= p["p99"], (name, p)


@pytest.mark.timeout(180)
class TestTheDatabaseWorkPerOperation:
    def test_the_raw_baseline_writes_one_result_row_and_one_order_per_operation(self, quick_run):
        figures, _ = quick_run
        raw = figures["db_per_operation_raw"]

        # Per operation one result row and one order update, and a batch row per batch of 10;
        # read from the server's counters, so this also says the counting works.
        assert raw["rows_inserted"] == 1.1, raw
        assert raw["rows_updated"] == 1.0, raw
        assert raw["rows_deleted"] == 0.0, raw
        assert raw["transactions"] >= 1, raw

    def test_batchops_did_at_least_the_raw_baselines_work(self, quick_run):
        figures, _ = quick_run
        batchops, raw = figures["db_per_operation"], figures["db_per_operation_raw"]

        # A commit per operation (continue mode), its result row, its order, its batch's row.
        assert batchops["transactions"] >= 1, batchops
        assert batchops["rows_inserted"] >= raw["rows_inserted"], (batchops, raw)
        assert batchops["rows_updated"] >= raw["rows_updated"], (batchops, raw)

    @needs_peer
    def test_the_peer_did_the_same_job_once_per_operation(self, quick_run):
        figures, _ = quick_run
        peer = figures["peer"]

        assert set(peer) == PEER_KEYS
        assert "FastStream" in peer["implementation"]
        assert peer["ops_per_s"] == median([p["ops_per_s"] for p in phases(figures, "peer")], 1)
        # Per operation its result row, its order, and per batch of 10 the batch row, inserted
        # and closed: what it must write, each operation in a transaction of its own.
        assert peer["db_per_operation"]["rows_inserted"] == 1.1, peer
        assert peer["db_per_operation"]["rows_updated"] == 1.1, peer
        assert peer["db_per_operation"]["rows_deleted"] == 0.0, peer
        assert peer["db_per_operation"]["transactions"] >= 1, peer
