"""Custom handler registry (consumer/service_layer/registry.py): entry points and `extra`.

A third-party package is simulated by a module and a `*.dist-info` directory in tmp_path put
on sys.path, which is all importlib.metadata needs to see an installed distribution.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from uuid import UUID

import batchops_example_handlers
import pytest
from structlog.testing import capture_logs

from consumer.service_layer.batch_run import Disposition
from consumer.service_layer.events import EventFactory
from consumer.service_layer.executor import BatchExecutor
from consumer.service_layer.handlers import HANDLERS, OperationContext, OperationHandler
from consumer.service_layer.intake import Delivery, IntakePolicy
from consumer.service_layer.registry import ENTRY_POINT_GROUP, load_custom_handlers
from consumer.service_layer.retry import RetryPolicy
from contracts import (
    MAX_BODY_BYTES,
    MAX_OPERATIONS,
    BatchStatus,
    Method,
    Operation,
    OperationResult,
    Topology,
)
from tests.unit.fakes import FakeUnitOfWork, demo_marketplace, transactions_for

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
BATCH_ID = UUID("0c9e7f4a-5d3b-4e21-9a8f-1b2c3d4e5f60")
ACME_MODULES = ("acme_handlers", "acme_explodes")

ACME_SOURCE = '''
"""acme's batchops handlers: stamp an order's notes."""

from consumer.service_layer.handlers import require_actor


async def stamp(ctx, operation):
    require_actor(ctx)
    order = await ctx.uow.marketplace.get_order_for_update(operation.resource_id)
    order.notes = "stamped by acme"
    await ctx.uow.marketplace.save_order(order)
    return {"id": order.id, "notes": order.notes, "handled_by": "acme"}
'''


def install_distribution(
    site: Path, name: str, entry_points: str, modules: dict[str, str] | None = None
) -> None:
    """Write `modules` and a minimal `<name>-1.0.dist-info` declaring `entry_points`."""
    for module, source in (modules or {}).items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))
    dist_info = site / f"{name}-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path for third-party distributions; their modules are forgotten after."""
    monkeypatch.syspath_prepend(tmp_path)
    yield tmp_path
    for module in ACME_MODULES:
        sys.modules.pop(module, None)


@pytest.fixture
def acme(site: Path) -> Path:
    install_distribution(
        site,
        "acme_handlers",
        f"""
        [{ENTRY_POINT_GROUP}]
        acme_stamp = acme_handlers:stamp
        """,
        {"acme_handlers": ACME_SOURCE},
    )
    return site


async def run_on_order_1(handler: Any) -> tuple[dict[str, Any], str]:
    """Run `handler` as the admin on order 1; its result and the order's notes once committed."""
    db = demo_marketplace()
    operation = Operation(method=Method.POST, resource_id=1, data={"text": "hello"})
    async with FakeUnitOfWork(db) as uow:
        ctx = OperationContext(uow, 1, await uow.marketplace.get_actor(1), NOW)
        result = await handler(ctx, operation)
        await uow.commit()
    return result, db.orders[1].notes


class TestTheExamplePlugin:
    """examples/handlers, installed beside batchops by `make install`."""

    def test_batchops_itself_registers_no_handler(self):
        # An example shipped inside the package would be accepted by every deployment.
        declared = metadata.distribution("batchops").entry_points
        assert [ep for ep in declared if ep.group == ENTRY_POINT_GROUP] == []

    def test_append_order_note_is_registered_by_the_example_plugin(self):
        [entry_point] = metadata.entry_points(group=ENTRY_POINT_GROUP, name="append_order_note")
        assert entry_point.dist is not None
        assert entry_point.dist.name == "batchops-example-handlers"
        handlers = load_custom_handlers()
        assert handlers["append_order_note"] is batchops_example_handlers.append_order_note

    def test_no_built_in_operation_type_is_registered_as_custom(self):
        assert set(load_custom_handlers()).isdisjoint(HANDLERS)

    async def test_the_loaded_handler_runs(self):
        result, notes = await run_on_order_1(load_custom_handlers()["append_order_note"])
        assert (result["id"], result["notes"], notes) == (1, "hello", "hello")


class TestThirdPartyPackage:
    @pytest.mark.usefixtures("acme")
    def test_its_entry_point_is_picked_up_beside_the_example_plugin(self):
        handlers = load_custom_handlers()
        assert handlers["acme_stamp"] is sys.modules["acme_handlers"].stamp
        assert handlers["append_order_note"] is batchops_example_handlers.append_order_note

    @pytest.mark.usefixtures("acme")
    async def test_its_handler_runs(self):
        result, notes = await run_on_order_1(load_custom_handlers()["acme_stamp"])
        assert result == {"id": 1, "notes": "stamped by acme", "handled_by": "acme"}
        assert notes == "stamped by acme"

    @pytest.mark.usefixtures("acme")
    async def test_a_custom_batch_naming_it_is_executed_by_the_executor(self):
        db = demo_marketplace()
        custom = load_custom_handlers()
        executor = BatchExecutor(
            transactions_for(db, RetryPolicy(attempts=1)),
            HANDLERS,
            custom,
            IntakePolicy(
                max_body_bytes=MAX_BODY_BYTES,
                max_operations=MAX_OPERATIONS,
                allowed_publishers=frozenset(),
                operation_types=frozenset(HANDLERS) | {"custom"},
                custom_handlers=frozenset(custom),
            ),
            EventFactory(Topology()),
            delivery_limit=5,
        )
        body = {
            "batch_id": str(BATCH_ID),
            "operation_type": "custom",
            "handler": "acme_stamp",
            "actor_id": 1,
            "operations": [{"method": "POST", "resource_id": 2, "data": {}}],
        }
        delivery = Delivery(body=json.dumps(body).encode(), user_id="producer")
        with capture_logs():
            assert await executor.handle(delivery) is Disposition.ACK

        assert db.batches[BATCH_ID].state.status is BatchStatus.COMPLETED
        [row] = db.results_of(BATCH_ID)
        assert OperationResult.model_validate_json(row.event).data == {
            "id": 2,
            "notes": "stamped by acme",
            "handled_by": "acme",
        }
        assert db.orders[2].notes == "stamped by acme"

    def test_entry_points_of_other_groups_are_ignored(self, site):
        install_distribution(
            site,
            "acme_handlers",
            """
            [batchops.other]
            acme_stamp = acme_handlers:stamp
            [console_scripts]
            acme = acme_handlers:stamp
            """,
            {"acme_handlers": ACME_SOURCE},
        )
        assert "acme_stamp" not in load_custom_handlers()
        assert "acme" not in load_custom_handlers()


class TestBrokenEntryPoint:
    @pytest.fixture
    def broken(self, acme: Path) -> Path:
        """Beside acme: one entry point naming a missing module, one a missing attribute, one a
        module that raises on import."""
        install_distribution(
            acme,
            "acme_broken",
            f"""
            [{ENTRY_POINT_GROUP}]
            acme_missing_module = acme_not_installed:handler
            acme_missing_attribute = acme_handlers:no_such_handler
            acme_explodes = acme_explodes:handler
            """,
            {"acme_explodes": 'raise RuntimeError("acme is misconfigured")\n'},
        )
        return acme

    @pytest.mark.usefixtures("broken")
    def test_it_is_skipped_and_the_others_still_load(self):
        with capture_logs():
            handlers = load_custom_handlers()
        assert {"acme_stamp", "append_order_note"} <= set(handlers)
        assert not {"acme_missing_module", "acme_missing_attribute", "acme_explodes"} & set(
            handlers
        )

    @pytest.mark.usefixtures("broken")
    def test_each_failure_is_logged_with_its_name_value_and_traceback(self):
        with capture_logs() as logs:
            load_custom_handlers()
        failures = {
            entry["name"]: entry
            for entry in logs
            if entry["event"] == "custom_handler_failed_to_load"
        }
        assert set(failures) == {
            "acme_missing_module",
            "acme_missing_attribute",
            "acme_explodes",
        }, f"logged: {logs}"
        assert failures["acme_explodes"]["value"] == "acme_explodes:handler"
        for entry in failures.values():
            assert entry["log_level"] == "error"
            assert entry["exc_info"] is True, "the traceback must reach the log"

    @pytest.mark.usefixtures("acme")
    def test_nothing_is_logged_when_every_entry_point_loads(self):
        with capture_logs() as logs:
            load_custom_handlers()
        assert logs == []


class TestExtraHandlers:
    @pytest.mark.usefixtures("acme")
    async def test_extra_handlers_win_over_entry_points_of_the_same_name(self):
        async def replacement(ctx: OperationContext, operation: Operation) -> dict[str, Any]:
            return {"id": operation.resource_id, "replaced": True}

        handlers = load_custom_handlers(
            {"append_order_note": replacement, "acme_stamp": replacement}
        )
        assert handlers["append_order_note"] is replacement
        assert handlers["acme_stamp"] is replacement
        result, notes = await run_on_order_1(handlers["append_order_note"])
        assert (result, notes) == ({"id": 1, "replaced": True}, "")

    def test_extra_handlers_are_added_beside_entry_points(self):
        async def mine(ctx: OperationContext, operation: Operation) -> dict[str, Any]:
            return {}

        extra: dict[str, OperationHandler] = {"mine": mine}
        handlers = load_custom_handlers(extra)
        assert handlers["mine"] is mine
        assert handlers["append_order_note"] is batchops_example_handlers.append_order_note

    def test_no_extra_is_the_same_as_an_empty_one(self):
        assert load_custom_handlers() == load_custom_handlers({})

    def test_the_callers_dict_is_not_modified(self):
        extra: dict[str, OperationHandler] = {
            "append_order_note": batchops_example_handlers.append_order_note
        }
        load_custom_handlers(extra)
        assert extra == {"append_order_note": batchops_example_handlers.append_order_note}
