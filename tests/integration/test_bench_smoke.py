"""`python -m bench --quick` runs end to end against the test services and prints what its
docstring promises: the figures of the run it was asked for, consistent with one another.

Timings on a shared machine are no test's business: only how the figures relate is checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yarl
from sqlalchemy import make_url

if TYPE_CHECKING:
    from tests.conftest import ServiceUrls

ROOT = Path(__file__).resolve().parents[2]
LOCAL = {"127.0.0.1", "localhost", "::1"}
# --quick: 4 batches of 10 at once, 3 single runs, 2 raw connections, 100 raw operations; one
# warm-up batch per consumer before the timed phases.
QUICK = {"batches": 4, "ops_per_batch": 10, "connections": 2, "single_runs": 3, "raw_ops": 100}
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
    "cpu",
    "db_per_operation",
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
}


@pytest.fixture(scope="module")
def quick_run(service_urls: ServiceUrls) -> tuple[dict[str, Any], str]:
    """One `python -m bench --quick` on a database of its own: its figures and its stderr."""
    if make_url(service_urls.database_server).host not in LOCAL or (
        yarl.URL(service_urls.amqp).host not in LOCAL
    ):
        pytest.skip("the benchmark runs only against local servers")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BATCHOPS_")},
        "BATCHOPS_DATABASE_URL": service_urls.database_server,
        "BATCHOPS_AMQP_URL": service_urls.amqp,
    }
    # A name of its own: a concurrent test run (or a real benchmark) keeps its database.
    database = f"batchops_bench_smoke_{uuid.uuid4().hex[:10]}"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--database", database, "--timeout", "60"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    # The bench exits non-zero unless every batch it published completed with every operation
    # succeeding (bench/e2e.py): a 0 here says all 80 operations were applied.
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    return json.loads(lines[0]), done.stderr


@pytest.mark.timeout(180)
class TestQuickBenchmark:
    def test_it_prints_every_documented_figure_and_nothing_else(self, quick_run):
        figures, _ = quick_run

        assert set(figures) == KEYS
        assert set(figures["cpu"]) == CPU_KEYS
        assert set(figures["db_per_operation"]) == {"transactions", "rows_inserted", "rows_updated"}
        for name in ("latency_single_ms", "latency_under_load_ms"):
            assert set(figures[name]) == {"p50", "p95", "p99"}, name
        assert set(figures["versions"]) == {"python", "postgres", "rabbitmq", "cpus", "code"}
        assert figures["versions"]["postgres"]
        assert figures["versions"]["rabbitmq"]

    def test_the_settings_are_those_of_the_quick_run_on_one_consumer(self, quick_run):
        figures, _ = quick_run

        assert {name: figures["settings"][name] for name in QUICK} == QUICK
        assert figures["settings"]["consumers"] == 1
        assert figures["settings"]["command"] == "consume"
        assert figures["settings"]["service_env"] == {}
        assert figures["settings"]["operation_events"] == "sink"
        assert figures["settings"]["profiled"] is False
        assert len(figures["rss_mb_per_process"]) == 1, "one service process measured"
        assert figures["peak_rss_mb"] == max(figures["rss_mb_per_process"])

    def test_it_ran_each_phase_with_the_batches_it_was_asked_for(self, quick_run):
        _, stderr = quick_run

        assert "warm-up: 1 batch(es)" in stderr
        assert "single-batch latency: 3 x 10 operations, one at a time" in stderr
        assert "throughput: 4 x 10 operations published at once" in stderr
        assert "raw baseline: 100 operations at 1 and at 2 connections" in stderr
        assert "clean-up" in stderr

    def test_throughput_is_the_load_operations_over_the_load_time(self, quick_run):
        figures, _ = quick_run
        ops_per_s, seconds = figures["ops_per_s"], figures["load_seconds"]
        assert ops_per_s > 0
        assert seconds > 0

        # Both are printed rounded (0.1 op/s, 0.01 s); the operations they imply are the load's.
        implied = ops_per_s * seconds
        slack = (ops_per_s + 0.05) * 0.005 + 0.05 * seconds + 1e-9
        assert abs(implied - LOAD_OPERATIONS) <= slack, (ops_per_s, seconds, implied)

    def test_the_ratios_are_computed_from_the_printed_figures(self, quick_run):
        figures, _ = quick_run

        assert figures["raw_ops_per_s"] == max(
            figures["raw_ops_per_s_1"], figures["raw_ops_per_s_n"]
        )
        assert figures["raw_ops_per_s"] > 0
        # ops_per_s is printed rounded to 0.1: the ratio may differ in its third decimal.
        assert figures["ratio"] == pytest.approx(
            figures["ops_per_s"] / figures["raw_ops_per_s"], abs=1e-3
        )
        single, raw_sequential = figures["latency_single_ms"], figures["raw_50_sequential_ms"]
        assert raw_sequential > 0
        assert figures["latency_ratio"] == round(single["p50"] / raw_sequential, 3)

    def test_latencies_are_ordered_percentiles(self, quick_run):
        figures, _ = quick_run

        for name in ("latency_single_ms", "latency_under_load_ms"):
            p = figures[name]
            assert 0 < p["p50"] <= p["p95"] <= p["p99"], (name, p)

    def test_every_operation_wrote_its_result_and_its_event_in_its_own_transaction(self, quick_run):
        figures, _ = quick_run
        per_operation = figures["db_per_operation"]

        # Per operation, at least: one commit (continue mode), a result row and an outbox row
        # inserted, the order updated. Read from the server's counters once the services exited.
        assert per_operation["transactions"] >= 1, per_operation
        assert per_operation["rows_inserted"] >= 2, per_operation
        assert per_operation["rows_updated"] >= 1, per_operation
