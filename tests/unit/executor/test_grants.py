"""BatchExecutor with BATCHOPS_PUBLISHER_GRANTS: a broker user acts only for the actors it is
granted (by id, by role or all); anything else is rejected PERMISSION_DENIED and changes
nothing. Batches the HTTP API stored before publishing them are not subject to grants."""

from __future__ import annotations

import json

from consumer.domain.grants import EVERYONE, Grant
from consumer.domain.model import OrderStatus, Role
from consumer.service_layer.batch_run import Disposition
from contracts import BatchRejected, BatchRequest, BatchStatus, ErrorCode
from tests.unit.executor.helpers import (
    ACCEPT_1,
    BATCH_ID,
    NOTES_3,
    batch_body,
    delivery,
    executor_for,
    order_status,
    routing_keys,
    stored_state,
    untouched,
)
from tests.unit.executor.test_job_control import pending
from tests.unit.fakes import FakeDatabase

ADMIN, CLIENT_3, PRO_7, NOBODY = 1, 3, 7, 999
# The helpers' deliveries come from broker user "producer".
IDS_1_AND_3 = {"producer": Grant(actors=frozenset({1, 3}))}
BACK_OFFICE = {"producer": Grant(roles=frozenset({Role.ADMIN, Role.STAFF}))}


async def run(db: FakeDatabase, grants: dict[str, Grant] | None, body: bytes) -> Disposition:
    return await executor_for(db, grants=grants).handle(delivery(body))


def assert_denied(db: FakeDatabase, disposition: Disposition, actor_id: int) -> None:
    assert disposition is Disposition.DEAD_LETTER
    assert routing_keys(db) == ["batch.order_update.rejected"], "nothing but the refusal"
    rejection = BatchRejected.model_validate_json(db.outbox[0].body)
    assert rejection.code is ErrorCode.PERMISSION_DENIED
    assert [(e.type, e.loc) for e in rejection.errors] == [("actor_not_granted", ["actor_id"])]
    assert f"may not act for actor {actor_id}" in rejection.errors[0].msg
    assert db.results == {}
    assert untouched(db, 1, 3)


class TestGrantById:
    async def test_a_granted_actor_runs(self, db):
        disposition = await run(db, IDS_1_AND_3, batch_body([NOTES_3], actor_id=CLIENT_3))

        assert disposition is Disposition.ACK
        assert stored_state(db).status is BatchStatus.COMPLETED

    async def test_another_actor_is_denied_and_recorded_as_rejected(self, db):
        disposition = await run(db, IDS_1_AND_3, batch_body([ACCEPT_1], actor_id=PRO_7))

        assert_denied(db, disposition, PRO_7)
        stored = db.batches[BATCH_ID]
        assert (stored.state.status, stored.code) == (
            BatchStatus.REJECTED,
            ErrorCode.PERMISSION_DENIED,
        )
        assert stored.state.actor_id == PRO_7


class TestGrantByRole:
    async def test_an_actor_with_a_granted_role_runs(self, db):
        disposition = await run(db, BACK_OFFICE, batch_body([ACCEPT_1], actor_id=ADMIN))

        assert disposition is Disposition.ACK
        assert order_status(db, 1) is OrderStatus.ACCEPTED

    async def test_an_actor_with_another_role_is_denied(self, db):
        disposition = await run(db, BACK_OFFICE, batch_body([NOTES_3], actor_id=CLIENT_3))

        assert_denied(db, disposition, CLIENT_3)

    async def test_an_actor_that_does_not_exist_has_no_role_and_is_denied(self, db):
        disposition = await run(db, BACK_OFFICE, batch_body([ACCEPT_1], actor_id=NOBODY))

        assert_denied(db, disposition, NOBODY)

    async def test_ids_and_roles_together_grant_either(self, db):
        grants = {"producer": Grant(actors=frozenset({CLIENT_3}), roles=frozenset({Role.ADMIN}))}

        assert await run(db, grants, batch_body([NOTES_3], actor_id=CLIENT_3)) is Disposition.ACK


class TestEveryoneAndNobody:
    async def test_a_star_grant_acts_for_anyone_even_an_actor_that_does_not_exist(self, db):
        disposition = await run(db, {"producer": EVERYONE}, batch_body([ACCEPT_1], actor_id=NOBODY))

        # Past intake, the unknown actor fails every operation as it always has.
        assert disposition is Disposition.ACK
        assert stored_state(db).status is BatchStatus.FAILED

    async def test_a_user_absent_from_the_grants_acts_for_nobody(self, db):
        grants = {"someone-else": EVERYONE}

        disposition = await run(db, grants, batch_body([ACCEPT_1], actor_id=ADMIN))

        assert_denied(db, disposition, ADMIN)

    async def test_without_grants_every_publisher_acts_for_anyone(self, db):
        disposition = await run(db, None, batch_body([ACCEPT_1], actor_id=ADMIN))

        assert disposition is Disposition.ACK
        assert order_status(db, 1) is OrderStatus.ACCEPTED


class TestWhatGrantsDoNotGovern:
    async def test_a_batch_the_http_api_stored_runs_for_an_ungranted_publisher(self, db):
        body = batch_body([ACCEPT_1], actor_id=ADMIN)
        db.batches[BATCH_ID] = pending(BatchRequest.model_validate_json(body))

        disposition = await run(db, {}, body)

        assert disposition is Disposition.ACK
        assert order_status(db, 1) is OrderStatus.ACCEPTED

    async def test_another_body_under_a_pending_batch_id_is_denied_and_the_batch_stays(self, db):
        db.batches[BATCH_ID] = pending(
            BatchRequest.model_validate_json(batch_body([NOTES_3], actor_id=CLIENT_3))
        )

        disposition = await run(db, {}, batch_body([ACCEPT_1], actor_id=ADMIN))

        assert_denied(db, disposition, ADMIN)
        assert stored_state(db).status is BatchStatus.PENDING

    async def test_a_request_refused_before_is_checked_again(self, db):
        body = batch_body([ACCEPT_1], actor_id=PRO_7)
        await run(db, IDS_1_AND_3, body)

        disposition = await executor_for(db, grants=IDS_1_AND_3).handle(delivery(body))

        assert disposition is Disposition.DEAD_LETTER
        assert untouched(db, 1)
        granted = {"producer": Grant(actors=frozenset({PRO_7}))}
        assert await run(db, granted, body) is Disposition.ACK
        assert order_status(db, 1) is OrderStatus.ACCEPTED

    async def test_a_validation_error_comes_before_the_grant_check(self, db):
        body = json.loads(batch_body([ACCEPT_1], actor_id=PRO_7))
        body["mode"] = "sometimes"

        await run(db, {}, json.dumps(body).encode())

        rejection = BatchRejected.model_validate_json(db.outbox[0].body)
        assert rejection.code is ErrorCode.VALIDATION_ERROR

    async def test_the_dead_lettered_copy_of_a_denied_request_is_acked_and_announced_once(self, db):
        body = batch_body([ACCEPT_1], actor_id=PRO_7)
        assert await run(db, {}, body) is Disposition.DEAD_LETTER

        copy = delivery(body, dead_lettered=True)
        disposition = await executor_for(db, grants={}).handle(copy)

        assert disposition is Disposition.ACK
        assert routing_keys(db) == ["batch.order_update.rejected"], "one rejection, not two"
        assert untouched(db, 1)
