"""Hostile input: each is refused or handled with nothing changed, and the consumer keeps
serving."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
from aiormq.exceptions import ChannelAccessRefused, ChannelPreconditionFailed

from consumer.adapters.tables import orders, services, users
from consumer.bootstrap import Service, bootstrap
from consumer.config import Settings
from contracts import BatchCompleted, BatchRejected, BatchStatus, ErrorCode
from tests.integration.helpers import (
    batch,
    executed_batches,
    fetch,
    order,
    patch,
    publish_raw,
)
from tests.support import EventLog

SQL_METACHARACTERS = "'; DROP TABLE orders; -- \" \\ %s $1 ` ; /* */ \\x27 OR 1=1"


async def rejected_with(
    events: EventLog, body: bytes, settings: Settings, **props: Any
) -> BatchRejected:
    before = len([e for _, e in events.received if isinstance(e, BatchRejected)])
    await publish_raw(settings.amqp_url, settings.topology.requests_exchange, body, **props)
    received = await events.wait_for(
        lambda ev: len([e for _, e in ev if isinstance(e, BatchRejected)]) > before
    )
    return [e for _, e in received if isinstance(e, BatchRejected)][before]


async def still_serves(settings: Settings, events: EventLog) -> BatchCompleted:
    body = batch(6, patch(3, notes="still here"))
    await publish_raw(
        settings.amqp_url, settings.topology.requests_exchange, json.dumps(body).encode()
    )
    return await events.completion(uuid.UUID(body["batch_id"]))


@pytest.mark.usefixtures("service")
class TestRefusedBeforeExecution:
    async def test_a_body_over_the_size_limit_is_rejected_and_nothing_changes(
        self, settings: Settings, events: EventLog
    ) -> None:
        body = json.dumps(batch(6, patch(3, notes="x" * 300_000))).encode()

        rejection = await rejected_with(events, body, settings)

        assert [e.type for e in rejection.errors] == ["body_too_large"]
        # Its first 4 KiB name the batch: the rejection (and its routing key) carry them.
        assert str(rejection.batch_id) == json.loads(body)["batch_id"]
        assert rejection.operation_type == "order_update"
        assert await executed_batches(settings.database_url) == 0
        assert (await still_serves(settings, events)).status is BatchStatus.COMPLETED

    async def test_data_nested_deeper_than_the_limit_is_rejected(
        self, settings: Settings, events: EventLog
    ) -> None:
        deep: dict[str, Any] = {}
        cursor = deep
        for _ in range(20):
            cursor["x"] = {}
            cursor = cursor["x"]

        rejection = await rejected_with(
            events, json.dumps(batch(6, patch(3, notes=deep))).encode(), settings
        )

        assert "deeper than" in rejection.errors[0].msg
        assert await executed_batches(settings.database_url) == 0

    async def test_a_json_recursion_bomb_is_rejected_as_invalid_json(
        self, settings: Settings, events: EventLog
    ) -> None:
        bomb = ('{"a":' * 20_000 + "1" + "}" * 20_000).encode()

        rejection = await rejected_with(events, bomb, settings)

        assert rejection.errors[0].type == "json_invalid"
        assert (await still_serves(settings, events)).status is BatchStatus.COMPLETED

    @pytest.mark.parametrize(
        "field", ["actor_id", "resource_id"], ids=["huge actor_id", "huge resource_id"]
    )
    async def test_huge_ids_are_rejected_not_crashed_on(
        self, settings: Settings, events: EventLog, field: str
    ) -> None:
        body = batch(6, patch(3, notes="n"))
        if field == "actor_id":
            body["actor_id"] = 10**30
        else:
            body["operations"][0]["resource_id"] = 2**63

        rejection = await rejected_with(events, json.dumps(body).encode(), settings)

        assert rejection.errors
        assert await executed_batches(settings.database_url) == 0


@pytest.mark.usefixtures("service")
class TestHandledAsOperationFailures:
    async def test_huge_numbers_and_strings_in_data_are_validation_errors(
        self, settings: Settings, events: EventLog
    ) -> None:
        body = batch(
            6,
            patch(3, price="1e400"),
            patch(6, price=10**40),
            patch(9, notes="n" * 100_000),
        )
        await publish_raw(
            settings.amqp_url, settings.topology.requests_exchange, json.dumps(body).encode()
        )

        completion = await events.completion(uuid.UUID(body["batch_id"]))

        assert [r.error.code if r.error else None for r in completion.results] == [
            ErrorCode.VALIDATION_ERROR
        ] * 3
        assert str((await order(settings.database_url, 3)).price) == "100.00"

    async def test_sql_metacharacters_in_every_string_field_are_stored_verbatim(
        self, settings: Settings, events: EventLog
    ) -> None:
        text = SQL_METACHARACTERS
        bodies = [
            batch(1, patch(3, notes=text)),
            batch(1, patch(4, name=text), operation_type="user_update"),
            batch(
                1,
                patch(1, name=text, description=text, category=text),
                operation_type="service_update",
            ),
        ]
        for body in bodies:
            await publish_raw(
                settings.amqp_url, settings.topology.requests_exchange, json.dumps(body).encode()
            )
        finished = [await events.completion(uuid.UUID(b["batch_id"])) for b in bodies]

        assert [c.status for c in finished] == [BatchStatus.COMPLETED] * 3, finished
        assert (await order(settings.database_url, 3)).notes == text
        (user,) = await fetch(settings.database_url, users.select().where(users.c.id == 4))
        assert user.name == text
        (service,) = await fetch(settings.database_url, services.select().where(services.c.id == 1))
        assert (service.name, service.description, service.category) == (text, text, text)
        assert len(await fetch(settings.database_url, orders.select())) == 30


class TestPublisherIdentity:
    async def test_the_broker_refuses_a_forged_user_id_and_nothing_reaches_the_queue(
        self, settings: Settings, service: Service, events: EventLog
    ) -> None:
        body = json.dumps(batch(1, patch(3, notes="forged"))).encode()

        with pytest.raises(
            (ChannelPreconditionFailed, ChannelAccessRefused, aio_pika.exceptions.ChannelClosed)
        ):
            await publish_raw(
                settings.amqp_url, settings.topology.requests_exchange, body, user_id="admin"
            )

        assert (await still_serves(settings, events)).status is BatchStatus.COMPLETED
        assert (await order(settings.database_url, 3)).notes == "still here"

    @pytest.fixture
    async def allow_listed(self, settings: Settings, events: EventLog) -> AsyncIterator[Service]:
        svc = bootstrap(settings.model_copy(update={"allowed_publishers": ["billing-service"]}))
        task = asyncio.create_task(svc.run())
        await asyncio.wait_for(svc.started.wait(), 20)
        yield svc
        svc.stop()
        await asyncio.wait_for(task, 30)

    async def test_a_publisher_not_on_the_allow_list_is_rejected(
        self, settings: Settings, events: EventLog, allow_listed: Service
    ) -> None:
        rejection = await rejected_with(
            events, json.dumps(batch(1, patch(3, notes="n"))).encode(), settings
        )

        assert [e.type for e in rejection.errors] == ["publisher_not_allowed"]
        assert await executed_batches(settings.database_url) == 0
