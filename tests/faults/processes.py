"""`batchops consume` as a separate process: started, killed with SIGKILL, restarted."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BATCHOPS = str(Path(sys.executable).with_name("batchops"))
REPOSITORY = Path(__file__).resolve().parents[2]


class ConsumerProcess:
    """One `batchops consume`; its output (JSON log lines) goes to `log_path`."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [BATCHOPS, "consume"],
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

    async def wait_for_exit(self, timeout: float = 20.0) -> int:
        return await asyncio.to_thread(self.process.wait, timeout)

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

    def spawn(self, **env: str) -> ConsumerProcess:
        """Start one without waiting for it (it may die before it says it consumes)."""
        process = ConsumerProcess(
            {**self._env, **env}, self._directory / f"consumer-{len(self.started)}.log"
        )
        self.started.append(process)
        return process

    def kill_all(self) -> None:
        for process in self.started:
            process.kill()

    def close(self) -> None:
        for process in self.started:
            process.close()
