"""Small measuring helpers: percentiles, and process/system figures read from /proc (Linux)."""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from pathlib import Path

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    """p50/p95/p99 (linear interpolation between closest ranks) of `samples_ms`, rounded."""
    if not samples_ms:
        raise ValueError("no samples")
    if len(samples_ms) == 1:
        only = round(samples_ms[0], 1)
        return {"p50": only, "p95": only, "p99": only}
    cuts = statistics.quantiles(samples_ms, n=100, method="inclusive")
    return {"p50": round(cuts[49], 1), "p95": round(cuts[94], 1), "p99": round(cuts[98], 1)}


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(f"{field} missing from /proc/{pid}/status")


def peak_rss_mb(pid: int) -> float:
    """The process's high-water mark of resident memory (VmHWM), in MiB."""
    return round(_status_kib(pid, "VmHWM") / 1024, 1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    # The command name (field 2) may hold spaces; the fields we need follow its closing ')'.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _TICKS_PER_SECOND


@dataclass(frozen=True, slots=True)
class SystemCpu:
    """A snapshot of /proc/stat's aggregate line: busy and total ticks over all cores."""

    busy: int
    total: int

    @classmethod
    def now(cls) -> SystemCpu:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        total = sum(values[:8])  # guest time is already counted in user
        return cls(total - idle, total)

    def busy_percent_since(self, earlier: SystemCpu) -> float:
        """Share of all cores busy between `earlier` and this snapshot (100 = every core)."""
        total = self.total - earlier.total
        return round(100 * (self.busy - earlier.busy) / total, 1) if total else 0.0
