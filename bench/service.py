"""batchops as the bench runs it: `batchops consume` (or `serve`) subprocesses with their own
environment, started, watched and always stopped."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.measure import cpu_seconds, peak_rss_mb

_PR_SET_PDEATHSIG = 1


def batchops_executable() -> str:
    beside = Path(sys.executable).with_name("batchops")
    if beside.exists():
        return str(beside)
    found = shutil.which("batchops")
    if found is None:
        raise FileNotFoundError("the `batchops` console script is not installed (pip install -e .)")
    return found


def _die_with_parent() -> None:
    # If the bench itself is killed (SIGKILL skips every `finally`), its services go too.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ServiceProcess:
    """One `batchops COMMAND` process (or the process `argv` names, e.g. a peer); its output
    (log lines) goes to `log_path`."""

    def __init__(
        self,
        command: str,
        env: dict[str, str],
        log_path: Path,
        *,
        argv: list[str] | None = None,
    ) -> None:
        # The working directory is the log directory: no stray `.env` file changes the settings.
        self.log_path = log_path
        self._log = log_path.open("wb")
        # A session of its own: a Ctrl-C on the bench's terminal reaches the bench only, and
        # the bench decides how its services stop.
        self.process = subprocess.Popen(
            argv or [batchops_executable(), command],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=log_path.parent,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - the bench starts no threads before this
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    async def wait_for_log(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.log_path.read_text(encoding="utf-8", errors="replace"):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"batchops exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"{needle!r} not logged within {timeout}s:\n{self.log_tail()}")
            await asyncio.sleep(0.05)

    def peak_rss_mb(self) -> float:
        return peak_rss_mb(self.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def is_running(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no chance to clean up (the chaos soak's fault)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()

    async def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (graceful shutdown), then SIGKILL after `timeout`; returns the exit code."""
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    await asyncio.to_thread(self.process.wait, timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(10)
            self._log.close()
        return self.process.returncode


async def start_services(
    count: int,
    command: str,
    env: dict[str, str],
    log_dir: Path,
    timeout: float = 30.0,
    *,
    argv: list[str] | None = None,
    label: str | None = None,
) -> list[ServiceProcess]:
    """Start `count` processes (`batchops COMMAND`, or `argv`) and return once each consumes
    the work queue; their logs are `LABEL-N.log` (LABEL: `command` unless given). On failure
    every process started so far is stopped before the error propagates."""
    started: list[ServiceProcess] = []
    try:
        for number in range(count):
            log_path = log_dir / f"{label or command}-{number}.log"
            started.append(ServiceProcess(command, env, log_path, argv=argv))
        for service in started:
            # structlog's JSON line for RequestConsumer.start(): `"event": "consuming"` (the
            # peers print the same line).
            await service.wait_for_log('"consuming"', timeout)
    except BaseException:
        for service in started:
            await service.stop(timeout=5)
        raise
    return started
