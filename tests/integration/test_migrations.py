"""The Alembic migrations create exactly the schema the code's tables describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from consumer.adapters.database import create_engine
from consumer.adapters.tables import metadata


async def test_migrating_to_head_leaves_no_difference_from_the_table_definitions(
    database_url: str,
) -> None:
    engine = create_engine(database_url, pool_size=1)

    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(differences)
    finally:
        await engine.dispose()

    assert diff == [], f"tables.py and the migrations disagree: {diff}"
