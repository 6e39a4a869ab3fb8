"""What a consumer's log must look like after a database fault: an outage is a
state, not a stream of errors. One warning line when it starts, one line when it ends (with its
duration), repeated errors rate-limited, never a traceback per delivery.

The event names the service logs are kept here, in one place, so that they can follow it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from tests.faults.processes import ConsumerProcess

OUTAGE_STARTED = "database_unreachable"  # warning: the database stopped answering
OUTAGE_ENDED = "database_reachable"  # it answers again; carries `outage_seconds`
TRACEBACK = "Traceback (most recent call last)"
# Bounds per process, whatever the load or the length of the fault: a traceback or a warning
# per delivery (hundreds here) breaks them, a handful of rate-limited lines does not.
MAX_TRACEBACKS = 5
MAX_WARNINGS = 100
NOISY_LEVELS = frozenset({"warning", "error", "critical"})


@dataclass
class LogSummary:
    """One process's log, counted."""

    lines: int = 0
    tracebacks: int = 0  # lines with a Python traceback (structlog's `exception` included)
    noisy: int = 0  # warning/error lines, and lines that are not JSON (stdlib logging)
    events: Counter[str] = field(default_factory=Counter)
    outage_seconds: list[object] = field(default_factory=list)

    @classmethod
    def of(cls, text: str) -> LogSummary:
        summary = cls()
        for line in text.splitlines():
            if not line.strip():
                continue
            summary.lines += 1
            summary.tracebacks += TRACEBACK in line
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if not isinstance(entry, dict):
                summary.noisy += 1
                continue
            event = str(entry.get("event"))
            summary.events[event] += 1
            summary.noisy += str(entry.get("level")) in NOISY_LEVELS
            if event == OUTAGE_ENDED:
                summary.outage_seconds.append(entry.get("outage_seconds"))
        return summary


def check_consumer_logs(
    processes: Sequence[ConsumerProcess],
    *,
    outages: int | None = None,
    at_most_outages: int | None = None,
) -> None:
    """Every process's log stays sane. `outages`: each process must have logged exactly that
    many outage starts and as many ends, each end with its duration; `at_most_outages`: no
    more than that many (a fault the service may ride out without calling it an outage)."""
    problems = []
    for process in processes:
        where = f"{process.log_path.name}"
        summary = LogSummary.of(process.log())
        if summary.tracebacks > MAX_TRACEBACKS:
            problems.append(
                f"{where}: {summary.tracebacks} tracebacks in {summary.lines} lines "
                f"(at most {MAX_TRACEBACKS}: never a traceback per delivery)"
            )
        if summary.noisy > MAX_WARNINGS:
            common = summary.events.most_common(5)
            problems.append(
                f"{where}: {summary.noisy} warning/error lines in {summary.lines} (at most "
                f"{MAX_WARNINGS}: repeated errors must be rate-limited); most common events: "
                f"{common}"
            )
        started, ended = summary.events[OUTAGE_STARTED], summary.events[OUTAGE_ENDED]
        if outages is not None and (started, ended) != (outages, outages):
            problems.append(
                f"{where}: {started} {OUTAGE_STARTED!r} and {ended} {OUTAGE_ENDED!r} lines, "
                f"expected {outages} of each (one line when an outage starts, one when it ends)"
            )
        if at_most_outages is not None and (started > at_most_outages or ended > started):
            problems.append(
                f"{where}: {started} {OUTAGE_STARTED!r} and {ended} {OUTAGE_ENDED!r} lines, "
                f"expected at most {at_most_outages} outage(s), each ended once"
            )
        durations = [s for s in summary.outage_seconds if not isinstance(s, int | float)]
        if durations:
            problems.append(f"{where}: {OUTAGE_ENDED!r} without a numeric outage_seconds")
    if problems:
        listed = "\n- ".join(problems)
        raise AssertionError(f"the consumer logs are not sane:\n- {listed}")
