"""`python -m bench --quick` runs end to end against the test services and prints its figures.

Only the shape is checked: timings on a shared machine are no test's business.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yarl
from sqlalchemy import make_url

if TYPE_CHECKING:
    from tests.conftest import ServiceUrls

ROOT = Path(__file__).resolve().parents[2]
LOCAL = {"127.0.0.1", "localhost", "::1"}


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


@pytest.mark.timeout(180)
def test_quick_benchmark_prints_positive_figures(service_urls: ServiceUrls) -> None:
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
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    figures = json.loads(lines[0])

    for name in (
        "ops_per_s",
        "raw_ops_per_s",
        "ratio",
        "raw_ops_per_s_1",
        "raw_ops_per_s_n",
        "raw_50_sequential_ms",
        "latency_ratio",
        "peak_rss_mb",
    ):
        assert _positive(figures[name]), (name, figures[name])
    for name in ("latency_single_ms", "latency_under_load_ms"):
        assert set(figures[name]) == {"p50", "p95", "p99"}
        assert all(_positive(v) for v in figures[name].values()), (name, figures[name])
    assert figures["raw_ops_per_s"] == max(figures["raw_ops_per_s_1"], figures["raw_ops_per_s_n"])
    assert figures["settings"]["consumers"] == 1
    assert figures["settings"]["ops_per_batch"] == 10
    assert figures["versions"]["postgres"]
    assert "clean-up" in done.stderr
