"""`batchops consume` (or `serve`) as a separate process: started, killed with SIGKILL,
restarted, its probes asked."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.faults.pgserver import free_port

BATCHOPS = str(Path(sys.executable).with_name("batchops"))
REPOSITORY = Path(__file__).resolve().parents[2]


class ConsumerProcess:
    """One `batchops consume` (or `serve`); its output (JSON log lines) goes to `log_path`.
    With a `probe_port` it serves /healthz and /readyz there (the whole API for `serve`)."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        command: str = "consume",
        probe_port: int | None = None,
    ) -> None:
        self.log_path = log_path
        self.command = command
        self.probe_port = probe_port
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [BATCHOPS, command],
            env=env,
            cwd=log_path.parent,  # no stray `.env` file of the developer's applies
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    async def wait_for_log(self, needle: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.log():
            if not self.alive:
                raise AssertionError(
                    f"the consumer exited with {self.process.returncode} before logging "
                    f"{needle!r}:\n{self.log()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not logged within {timeout}s:\n{self.log()}")
            await asyncio.sleep(0.05)

    async def readiness(self) -> int | None:
        """The status /readyz answers with, or None while nothing answers on the port."""
        if self.probe_port is None:
            raise RuntimeError("start the process with `spawn_probed` to ask its readiness")
        url = f"http://127.0.0.1:{self.probe_port}/readyz"
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                return (await client.get(url)).status_code
        except httpx.TransportError:
            return None

    async def wait_until_answering(self, timeout: float = 20.0) -> int:
        """Until the process answers its readiness probe, whatever it answers (a consumer
        whose database is down is alive but not ready); returns the status."""
        return await self._poll_readiness(
            lambda status: status is not None, "answer /readyz", timeout
        )

    async def wait_until_ready(self, timeout: float = 20.0) -> None:
        """Until /readyz answers 200: the database and the broker answer and the consumer is
        subscribed to its queue."""
        await self._poll_readiness(lambda status: status == 200, "answer /readyz with 200", timeout)

    async def _poll_readiness(
        self, until: Callable[[int | None], bool], what: str, timeout: float
    ) -> int:
        deadline = time.monotonic() + timeout
        while not until(status := await self.readiness()):
            if not self.alive:
                raise AssertionError(
                    f"`batchops {self.command}` exited with {self.process.returncode} before it "
                    f"would {what} (last answer: {status}):\n{self.log()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"`batchops {self.command}` did not {what} within {timeout}s (last answer: "
                    f"{status}):\n{self.log()[-4000:]}"
                )
            await asyncio.sleep(0.05)
        assert status is not None  # neither condition accepts None
        return status

    async def wait_for_exit(self, timeout: float = 20.0) -> int:
        return await asyncio.to_thread(self.process.wait, timeout)

    def pause(self) -> None:
        """SIGSTOP: the process holds everything it has and does nothing until `resume()`."""
        if self.alive:
            os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.alive:
            os.kill(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed, sockets are simply gone."""
        if self.alive:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def close(self) -> None:
        self.kill()
        self._log.close()


class Consumers:
    """The scenario's consumer processes: `await start(BATCHOPS_X="…")` starts one and waits
    until it consumes; `kill_all()` ends every one still running."""

    def __init__(self, env: dict[str, str], directory: Path) -> None:
        self._env = env
        self._directory = directory
        self.started: list[ConsumerProcess] = []

    async def start(self, **env: str) -> ConsumerProcess:
        process = self.spawn(**env)
        await process.wait_for_log('"consuming"')
        return process

    async def start_probed(self, **env: str) -> ConsumerProcess:
        """Start a consumer that answers /readyz (see `spawn_probed`) and wait until it is
        ready."""
        process = self.spawn_probed("consume", **env)
        await process.wait_until_ready()
        return process

    def spawn(self, **env: str) -> ConsumerProcess:
        """Start one without waiting for it (it may die before it says it consumes)."""
        return self._spawn("consume", None, env)

    def spawn_probed(self, command: str, **env: str) -> ConsumerProcess:
        """`batchops consume` answering /healthz and /readyz on a free port, or `batchops
        serve` with its whole HTTP API there; not waited for either."""
        port = free_port()
        variable = "BATCHOPS_HTTP_PORT" if command == "serve" else "BATCHOPS_METRICS_PORT"
        return self._spawn(
            command, port, {"BATCHOPS_HTTP_HOST": "127.0.0.1", variable: str(port), **env}
        )

    def _spawn(self, command: str, probe_port: int | None, env: dict[str, str]) -> ConsumerProcess:
        process = ConsumerProcess(
            {**self._env, **env},
            self._directory / f"{command}-{len(self.started)}.log",
            command,
            probe_port,
        )
        self.started.append(process)
        return process

    def kill_all(self) -> None:
        for process in self.started:
            process.kill()

    def close(self) -> None:
        for process in self.started:
            process.close()
