"""Bearer tokens of the HTTP API: who is asking."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.adapters.tokens import authenticate
from consumer.domain.model import Actor
from consumer.entrypoints.http import problems
from consumer.entrypoints.http.access import remember_user

bearer = HTTPBearer(auto_error=False, description="a token from `batchops token create`")


async def current_actor(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Actor:
    unauthorized = problems.ProblemError(
        401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
    )
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise unauthorized
    engine: AsyncEngine = request.app.state.context.engine
    async with engine.connect() as conn:
        actor = await authenticate(conn, credentials.credentials)
    if actor is None:
        raise unauthorized
    remember_user(request.state, actor.id)
    return actor


CurrentActor = Annotated[Actor, Depends(current_actor)]
