"""`python -m bench.fairness` at a tiny size runs end to end against the test services and prints
what its docstring promises; only how the figures relate is checked, never their size."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from tests.integration.test_bench_smoke import ROOT

if TYPE_CHECKING:
    from tests.conftest import ServiceUrls

# Local servers only, as tests/integration/test_bench_smoke.py explains.
pytestmark = pytest.mark.bench_smoke
SIZES = {"flood": 20, "few": 2, "ops": 2, "rounds": 2, "prefetch": 8}
PHASES = ["alone", "fair", "off"]


@pytest.fixture(scope="module")
def tiny_run(service_urls: ServiceUrls) -> dict[str, Any]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BATCHOPS_")},
        "BATCHOPS_DATABASE_URL": service_urls.database_server,
        "BATCHOPS_AMQP_URL": service_urls.amqp,
    }
    database = f"batchops_bench_fair_smoke_{uuid.uuid4().hex[:10]}"
    sizes = [f"--{name}={value}" for name, value in SIZES.items()]
    done = subprocess.run(
        [sys.executable, "-m", "bench.fairness", *sizes, "--database", database, "--timeout", "60"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    # Non-zero unless every batch of every phase completed with every operation succeeding.
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    figures: dict[str, Any] = json.loads(lines[0])
    return figures


@pytest.mark.timeout(180)
class TestTinyFairnessBenchmarkPrints:
    def test_every_documented_figure(self, tiny_run):
        assert set(tiny_run) == {
            "other_median_ms",
            "other_ran_median_ms",
            "other_started_median_ms",
            "ops_per_s",
            "other_latency_ratio",
            "other_ran_latency_ratio",
            "throughput_drop_percent",
            "peak_rss_mb",
            "targets",
            "rounds",
            "settings",
            "loadavg_1m",
            "finished_at",
        }
        assert {k: tiny_run["settings"][k] for k in SIZES} == SIZES

    def test_phases_alternate_direction_from_round_to_round(self, tiny_run):
        assert [r["order"] for r in tiny_run["rounds"]] == [PHASES, PHASES[::-1]]

    def test_a_batch_started_then_ran_before_its_completion_event_arrived(self, tiny_run):
        for round_ in tiny_run["rounds"]:
            for phase in PHASES:
                figures = round_[phase]
                started, ran = figures["other_started_median_ms"], figures["other_ran_median_ms"]
                assert 0 < started < ran <= figures["other_median_ms"], phase

    def test_each_phase_reports_its_services_peak_memory(self, tiny_run):
        for phase in PHASES:
            peaks = [r[phase]["rss_mb"] for r in tiny_run["rounds"]]
            assert tiny_run["peak_rss_mb"][phase] == max(peaks), phase
            assert min(peaks) > 0, f"{phase}: {peaks} MB"

    def test_each_rounds_throughput_is_its_operations_over_its_time(self, tiny_run):
        for round_ in tiny_run["rounds"]:
            for phase, batches in (("fair", 22), ("off", 22), ("alone", 2)):
                figures = round_[phase]
                expected = batches * SIZES["ops"] / figures["seconds"]
                # Both figures are printed rounded: seconds to the millisecond (which moves a
                # short phase's rate by up to 0.0005 / seconds of itself), the rate to 0.1.
                rounding = expected * 0.0005 / figures["seconds"] + 0.05
                assert abs(figures["ops_per_s"] - expected) <= rounding * 1.001, phase

    def test_the_headline_figures_are_medians_and_paired_ratios_of_the_rounds(self, tiny_run):
        rounds = tiny_run["rounds"]
        for phase in PHASES:
            medians = statistics.median(r[phase]["other_median_ms"] for r in rounds)
            assert tiny_run["other_median_ms"][phase] == pytest.approx(medians, abs=0.051)
        latency = statistics.median(
            r["fair"]["other_median_ms"] / r["alone"]["other_median_ms"] for r in rounds
        )
        drop = statistics.median(
            100 * (1 - r["fair"]["ops_per_s"] / r["off"]["ops_per_s"]) for r in rounds
        )
        assert tiny_run["other_latency_ratio"] == pytest.approx(latency, abs=0.0051)
        ran = statistics.median(
            r["fair"]["other_ran_median_ms"] / r["alone"]["other_ran_median_ms"] for r in rounds
        )
        assert tiny_run["other_ran_latency_ratio"] == pytest.approx(ran, abs=0.0051)
        assert tiny_run["throughput_drop_percent"] == pytest.approx(drop, abs=0.051)

    def test_each_target_is_judged_on_the_printed_figure(self, tiny_run):
        targets = tiny_run["targets"]
        assert targets["other_latency_within_3x_of_alone"] is (
            tiny_run["other_latency_ratio"] <= 3.0
        )
        assert targets["throughput_drop_at_most_10_percent"] is (
            tiny_run["throughput_drop_percent"] <= 10.0
        )
