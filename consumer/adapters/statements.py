"""Whether batchops may keep prepared statements on its database connections.

It does by default: asyncpg prepares each statement once per connection and reuses it. A
connection pooler in transaction mode (PgBouncer's `pool_mode = transaction`) hands each
transaction to whichever server connection is free, where a statement prepared by another
transaction is missing, or one of the same name exists already. SQLAlchemy's URL option
`prepared_statement_cache_size=0` is the switch: with it in BATCHOPS_DATABASE_URL, no statement
is kept beyond its transaction (asyncpg's cache is off too, and the statements SQLAlchemy names
get names nobody else uses).
"""

from __future__ import annotations

import uuid

from sqlalchemy import make_url

STATEMENT_CACHE_SIZE = 256  # statements asyncpg keeps per connection, when it may
_SWITCH = "prepared_statement_cache_size"


def statement_cache_size(database_url: str) -> int:
    """asyncpg's `statement_cache_size` for connections to `database_url`: 0 when the URL turns
    prepared statements off, else STATEMENT_CACHE_SIZE."""
    value = make_url(database_url).query.get(_SWITCH)
    return 0 if value is not None and str(value).strip() == "0" else STATEMENT_CACHE_SIZE


def unique_statement_name() -> str:
    """A prepared statement name no other client of a pooled server connection uses."""
    return f"__batchops_{uuid.uuid4().hex}__"


def statement_options(database_url: str) -> dict[str, object]:
    """asyncpg's connect arguments for prepared statements on connections to `database_url`:
    its cache, and unique statement names when statements must not outlive a transaction."""
    cache_size = statement_cache_size(database_url)
    if cache_size:
        return {"statement_cache_size": cache_size}
    return {"statement_cache_size": 0, "prepared_statement_name_func": unique_statement_name}
