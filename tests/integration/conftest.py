"""Fixtures of the HTTP API tests: the app on the test's database and broker, tokens, a client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from consumer.adapters.database import create_engine
from consumer.adapters.tokens import create_token
from consumer.bootstrap import bootstrap
from consumer.config import Settings
from consumer.entrypoints.http.app import ApiContext, create_app
from publisher import BatchPublisher

API = "/api/v1/batch"
ADMIN, STAFF, CLIENT_3, CLIENT_4, PRO_6 = 1, 2, 3, 4, 6


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    engine = create_engine(settings.database_url, pool_size=2)
    # The service's own job control (its pool opens on first use), without its consumer.
    wired = bootstrap(settings, consume=False)
    application = create_app(
        ApiContext(
            engine=engine,
            publisher=BatchPublisher(settings.amqp_url, namespace=settings.namespace),
            max_body_bytes=settings.max_body_bytes,
            readiness={},
            max_operations=settings.max_operations,
            job_control=wired.job_control,
            amqp_url=settings.amqp_url,
            topology=settings.topology,
            allow_private_callbacks=settings.webhook_allow_private,
        )
    )
    async with application.router.lifespan_context(application):
        yield application
    await wired.close()
    await engine.dispose()


@pytest.fixture
async def tokens(settings: Settings) -> dict[int, str]:
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            return {
                uid: await create_token(conn, uid)
                for uid in (ADMIN, STAFF, CLIENT_3, CLIENT_4, PRO_6)
            }
    finally:
        await engine.dispose()


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://batchops.test") as http:
        yield http
