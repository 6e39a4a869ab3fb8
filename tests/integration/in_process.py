"""`batchops consume` inside the test's event loop, started when the test says so (the `service`
fixture starts it before the test runs)."""

from __future__ import annotations

import asyncio

from consumer.bootstrap import Service, bootstrap
from consumer.config import Settings


class InProcessConsumer:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._running: list[tuple[Service, asyncio.Task[None]]] = []

    async def start(self) -> Service:
        service = bootstrap(self._settings)
        task = asyncio.create_task(service.run())
        self._running.append((service, task))
        started = asyncio.create_task(service.started.wait())
        done, _ = await asyncio.wait(
            {task, started}, timeout=20, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            task.result()  # start-up failed: raise its error here
        assert started in done, "the consumer did not start within 20s"
        return service

    def stop(self) -> None:
        """Ask every consumer started to stop (they finish the operation in hand)."""
        for service, _ in self._running:
            service.stop()

    async def close(self) -> None:
        self.stop()
        await asyncio.wait_for(asyncio.gather(*(task for _, task in self._running)), 30)
