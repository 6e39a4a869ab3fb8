"""API tokens: created for a user, stored as a digest, revocable."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from consumer.adapters.tables import api_tokens, users
from consumer.domain.model import Actor, Role

TOKEN_PREFIX = "bo_"  # noqa: S105 - a public marker, not a secret


class UnknownUser(LookupError):
    pass


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def create_token(conn: AsyncConnection, user_id: int) -> str:
    """A new token for an existing, not deleted user. Raises UnknownUser otherwise."""
    exists = await conn.scalar(
        select(users.c.id).where(users.c.id == user_id, users.c.deleted_at.is_(None))
    )
    if exists is None:
        raise UnknownUser(f"user {user_id} does not exist")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    await conn.execute(
        insert(api_tokens).values(user_id=user_id, token_sha256=_digest(token), prefix=token[:10])
    )
    return token


async def revoke_token(conn: AsyncConnection, token: str) -> bool:
    """Revoke `token`; False when it is unknown or already revoked."""
    revoked = await conn.scalar(
        update(api_tokens)
        .where(api_tokens.c.token_sha256 == _digest(token), api_tokens.c.revoked_at.is_(None))
        .values(revoked_at=func.now())
        .returning(api_tokens.c.id)
    )
    return revoked is not None


async def authenticate(conn: AsyncConnection, token: str) -> Actor | None:
    """The active user behind a live token, or None."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = (
        await conn.execute(
            select(users.c.id, users.c.role, users.c.is_active)
            .join(api_tokens, api_tokens.c.user_id == users.c.id)
            .where(
                api_tokens.c.token_sha256 == _digest(token),
                api_tokens.c.revoked_at.is_(None),
                users.c.deleted_at.is_(None),
                users.c.is_active.is_(True),
            )
        )
    ).one_or_none()
    return None if row is None else Actor(row.id, Role(row.role), row.is_active)
