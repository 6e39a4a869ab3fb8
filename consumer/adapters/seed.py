"""The deterministic demo marketplace (docs/contract.md, Demo data), loaded into an empty
database."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from consumer.adapters.tables import orders, professionals, services, users


class DatabaseNotEmpty(Exception):
    pass


_USERS = [
    (1, "Ada Admin", "admin", "admin@example.com"),
    (2, "Sam Staff", "staff", "staff@example.com"),
    (3, "Carla Client", "client", "client3@example.com"),
    (4, "Caio Client", "client", "client4@example.com"),
    (5, "Cora Client", "client", "client5@example.com"),
    (6, "Paulo Professional", "professional", "pro6@example.com"),
    (7, "Priya Professional", "professional", "pro7@example.com"),
    (8, "Pedro Professional", "professional", "pro8@example.com"),
]
_CATEGORIES = ["cleaning", "plumbing", "electrical"]


async def seed(conn: AsyncConnection, *, order_count: int = 100) -> None:
    """Insert users 1–8, professionals 1–3, services 1–6 and orders 1..order_count.

    Raises DatabaseNotEmpty when any user exists: seeding never mixes with real data.
    """
    if await conn.scalar(select(func.count()).select_from(users)):
        raise DatabaseNotEmpty("the database already has users; seed only an empty database")
    await conn.execute(insert(users), _users())
    await conn.execute(insert(professionals), _professionals(datetime.now(UTC)))
    await conn.execute(insert(services), _services())
    # Generated in the database: a million orders take seconds, not minutes.
    await conn.execute(
        text(
            "INSERT INTO orders (id, client_id, professional_id, service_id, status, price) "
            "SELECT i, 3 + i % 3, 1 + i % 3, 2 * (1 + i % 3) - 1, 'pending', 100.00 "
            "FROM generate_series(1, :n) AS i"
        ),
        {"n": order_count},
    )
    for table in (users, professionals, services, orders):
        await conn.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                f"(SELECT coalesce(max(id), 0) + 1 FROM {table.name}), false)"
            )
        )


def _users() -> list[dict[str, object]]:
    return [
        {"id": uid, "name": name, "role": role, "email": email, "phone": f"+55 11 9000-000{uid}"}
        for uid, name, role, email in _USERS
    ]


def _professionals(now: datetime) -> list[dict[str, object]]:
    """Professional k is user 5 + k; only professional 1 is approved (by the admin)."""
    return [
        {
            "id": k,
            "user_id": 5 + k,
            "approved": k == 1,
            "verified": k == 1,
            "approved_by": 1 if k == 1 else None,
            "approved_at": now if k == 1 else None,
        }
        for k in (1, 2, 3)
    ]


def _services() -> list[dict[str, object]]:
    """Services 2k-1 and 2k belong to professional k."""
    return [
        {
            "id": sid,
            "professional_id": (sid + 1) // 2,
            "name": f"{_CATEGORIES[(sid - 1) // 2].title()} service {sid}",
            "description": f"Demo service {sid}",
            "price": Decimal("100.00"),
            "category": _CATEGORIES[(sid - 1) // 2],
        }
        for sid in range(1, 7)
    ]
