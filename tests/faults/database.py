"""The test's own view of the scenario database: queries, row locks that pause the consumer at
an exact statement, and waits on what the consumer's backends are doing."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tests.integration.helpers import eventually
from tests.support import observer_engine


@dataclass
class Holder:
    """An open transaction of the test's, holding locks until the `holding` block ends."""

    connection: AsyncConnection
    pid: int

    async def run(self, sql: str, **params: Any) -> None:
        await self.connection.execute(text(sql), params)

    async def scalar(self, sql: str, **params: Any) -> Any:
        return await self.connection.scalar(text(sql), params)

    async def commit(self) -> None:
        await self.connection.commit()

    async def release(self) -> None:
        """End the transaction now: whoever waits on its locks goes on."""
        await self.connection.rollback()

    def start(self, sql: str) -> asyncio.Task[None]:
        """Run `sql` in the background: it may wait on a lock the consumer holds or awaits."""
        return asyncio.create_task(self.run(sql))


class ScenarioDatabase:
    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: AsyncEngine = observer_engine(url, pool_size=2, pool_pre_ping=True)

    async def dispose(self) -> None:
        await self._engine.dispose()

    async def rows(self, sql: str, **params: Any) -> list[Any]:
        async with self._engine.connect() as conn:
            return list(await conn.execute(text(sql), params))

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self._engine.connect() as conn:
            return await conn.scalar(text(sql), params)

    async def execute(self, sql: str, **params: Any) -> None:
        """Run `sql` in a transaction of its own and commit it."""
        async with self._engine.begin() as conn:
            await conn.execute(text(sql), params)

    @contextlib.asynccontextmanager
    async def holding(self, *statements: str, **params: Any) -> AsyncIterator[Holder]:
        """Run `statements` in a transaction kept open (locks held) for the block's duration."""
        async with self._engine.connect() as conn:
            await conn.begin()
            holder = Holder(conn, int(await conn.scalar(text("SELECT pg_backend_pid()"))))
            for statement in statements:
                await holder.run(statement, **params)
            try:
                yield holder
            finally:
                # A killed server connection (PostgreSQL restarted) has nothing left to undo.
                with contextlib.suppress(Exception):
                    await conn.rollback()

    async def result_count(self, batch_id: uuid.UUID) -> int:
        return int(
            await self.scalar(
                "SELECT count(*) FROM operation_results WHERE batch_id = :b", b=batch_id
            )
        )

    async def wait_for_results(self, batch_id: uuid.UUID, count: int, timeout: float = 20) -> None:
        async def committed() -> bool:
            return await self.result_count(batch_id) >= count

        await eventually(
            committed, what=f"{count} operation(s) of {batch_id} committed", timeout=timeout
        )

    async def blocked_by(self, holder: Holder, running: str = "") -> list[int]:
        """Pids of the backends waiting, directly or behind another waiter, for a lock that
        `holder` holds (or waits for ahead of them), in a statement containing `running`.

        Matching the lock rather than the SQL text keeps the pause points right when the
        product rewrites its statements. A second waiter for a row waits on the first one (who
        holds the row's tuple lock), hence the transitive closure.
        """
        found = await self.rows(
            "SELECT pid, pg_blocking_pids(pid), query FROM pg_stat_activity"
            " WHERE datname = current_database()"
        )
        behind = {holder.pid}
        grew = True
        while grew:
            waiting = {pid for pid, blockers, _ in found if set(blockers) & behind}
            grew = not waiting <= behind
            behind |= waiting
        return [pid for pid, _, query in found if pid in behind - {holder.pid} and running in query]

    async def wait_until_blocked(
        self, by: Holder, *, running: str = "", count: int = 1, timeout: float = 20
    ) -> list[int]:
        """Until `count` backends wait on `by`'s locks in a statement containing `running`."""
        pids: list[int] = []

        async def waiting() -> bool:
            nonlocal pids
            pids = await self.blocked_by(by, running)
            return len(pids) >= count

        what = f"{count} backend(s) waiting on the test's lock" + (
            f" in a statement with {running!r}" if running else ""
        )
        await eventually(waiting, what=what, timeout=timeout)
        return pids

    async def wait_until_waiting(self, holder: Holder, timeout: float = 20) -> None:
        """Until `holder`'s own statement waits for a lock (it has joined the lock's queue)."""

        async def waiting() -> bool:
            found = await self.scalar(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid", pid=holder.pid
            )
            return bool(found == "Lock")

        await eventually(waiting, what=f"the test's backend {holder.pid} queued", timeout=timeout)

    async def backends(self, exclude: set[int]) -> set[int]:
        """Pids of every other client backend connected to this database."""
        found = await self.rows(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        return {pid for (pid,) in found} - exclude

    async def wait_until_gone(self, pids: set[int], timeout: float = 20) -> None:
        """Until none of `pids` is connected: their open transactions are rolled back."""

        async def gone() -> bool:
            return not (await self.backends(set()) & pids)

        await eventually(gone, what=f"backends {sorted(pids)} ended", timeout=timeout)

    async def unsent_events(self) -> int:
        """Outbox rows not sent, and operation events the relay's position has not passed."""
        return int(
            await self.scalar(
                "SELECT (SELECT count(*) FROM outbox WHERE sent_at IS NULL)"
                " + (SELECT count(*) FROM operation_results r, relay_positions w"
                " WHERE w.name = 'operation_events' AND r.announce"
                " AND (r.txid >= w.horizon OR r.txid = ANY(w.pending)))"
            )
        )
