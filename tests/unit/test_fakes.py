"""The in-memory unit of work (tests/unit/fakes.py) must behave like the database it stands
for: what the unit tests prove on it would otherwise prove nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest

from consumer.domain.batch import BatchState
from consumer.domain.model import OrderStatus
from consumer.service_layer.unit_of_work import DuplicateResult, OutboxMessage, StoredBatch
from contracts import Mode, Outcome
from tests.unit.fakes import FakeDatabase, FakeUnitOfWork, demo_marketplace

BATCH_ID = UUID("3d0f5c2e-6b8e-4f5e-9d63-2a4c7e1b9f10")
T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
ADMIN = 1


def announcement(body: bytes) -> OutboxMessage:
    """An event's outbox row, as the executor would queue it with a result."""
    return OutboxMessage("results", "operation.order_update.succeeded", uuid4(), None, body)


def order_status(db: FakeDatabase, order_id: int) -> OrderStatus:
    return db.orders[order_id].status


def untouched(db: FakeDatabase, *order_ids: int) -> bool:
    fresh = demo_marketplace()
    return all(db.orders[i] == fresh.orders[i] for i in order_ids)


@pytest.fixture
def db() -> FakeDatabase:
    return demo_marketplace()


class TestFakeUnitOfWork:
    async def test_staged_changes_are_visible_only_after_commit(self, db):
        async with FakeUnitOfWork(db) as uow:
            order = await uow.marketplace.get_order_for_update(1)
            assert order is not None
            order.status = OrderStatus.ACCEPTED
            await uow.marketplace.save_order(order)
            assert order_status(db, 1) is OrderStatus.PENDING
            await uow.commit()
        assert order_status(db, 1) is OrderStatus.ACCEPTED

    async def test_leaving_without_commit_rolls_back(self, db):
        async with FakeUnitOfWork(db) as uow:
            order = await uow.marketplace.get_order_for_update(1)
            assert order is not None
            order.notes = "lost"
            await uow.marketplace.save_order(order)
        assert untouched(db, 1)

    async def test_a_second_result_for_an_index_is_a_duplicate(self, db):
        async with FakeUnitOfWork(db) as uow:
            await uow.batches.claim(
                StoredBatch(
                    BatchState(BATCH_ID, "order_update", ADMIN, Mode.CONTINUE, 2, T0),
                    None,
                    b"",
                    None,
                    None,
                )
            )
            await uow.batches.add_result(
                BATCH_ID,
                0,
                1,
                Outcome.SUCCEEDED,
                200,
                None,
                b"{}",
                announcement(b"{}"),
                cancellable=True,
            )
            await uow.commit()
        async with FakeUnitOfWork(db) as uow:
            with pytest.raises(DuplicateResult):
                await uow.batches.add_result(
                    BATCH_ID,
                    0,
                    1,
                    Outcome.FAILED,
                    409,
                    "CONFLICT",
                    b"",
                    announcement(b""),
                    cancellable=True,
                )
        assert db.batches[BATCH_ID].state.completed == 1
