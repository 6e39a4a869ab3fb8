"""One batch at a time across every consumer process, when the operator asks for it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

# pg_advisory_lock key of "batchops batches" (any constant shared by every process works).
_LOCK_KEY = 0x62617463686F7073


class SerialGate:
    """Held around each batch: an asyncio lock inside the process, then a PostgreSQL advisory
    lock across processes. Batches then run one after another in the order they are taken."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._local = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[None]:
        async with self._local, self._engine.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _LOCK_KEY})
            await conn.commit()
            try:
                yield
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _LOCK_KEY})
                await conn.commit()
