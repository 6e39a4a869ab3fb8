"""The database restarted mid-batch, and its connection cut while a COMMIT is in flight.

A transaction whose COMMIT got no answer may or may not have committed; the consumer must
find out from the database (the result row is the proof) instead of guessing, so that no
operation takes effect twice and none is lost.
"""

from __future__ import annotations

from tests.faults.model import companions, notes_batch
from tests.faults.oracle import Allowances
from tests.faults.pgserver import PostgresServer
from tests.faults.scenario import Scenario
from tests.faults.taps import CommitCutter, Cut


class TestConnectionCutDuringCommit:
    async def test_commits_whose_outcome_was_lost_are_resolved_without_double_effects(
        self, scenario: Scenario
    ) -> None:
        cutter = CommitCutter()
        proxy = await scenario.proxy_to_database(cutter.tap)
        await scenario.consumers.start(BATCHOPS_DATABASE_URL=scenario.database_url_via(proxy))
        await scenario.publish(notes_batch((3, "a0"), (6, "a1"), (3, "a2"), (6, "a3")))
        for companion in companions():
            await scenario.publish(companion)

        await scenario.check()

        assert {Cut.AFTER, Cut.BEFORE} <= set(cutter.cuts), (
            f"both kinds of cut must have happened (committed and not, the client unaware); "
            f"cuts: {cutter.cuts} over {cutter.commits_seen} write commits"
        )


class TestConnectionSilentDuringCommit:
    async def test_a_commit_whose_connection_goes_silent_is_given_up_and_resolved(
        self, scenario: Scenario
    ) -> None:
        cutter = CommitCutter(pattern=(Cut.SILENT,), max_cuts=1, only="INTO operation_results")
        proxy = await scenario.proxy_to_database(cutter.tap)
        await scenario.consumers.start(
            BATCHOPS_DATABASE_URL=scenario.database_url_via(proxy),
            BATCHOPS_DB_COMMAND_TIMEOUT_SECONDS="2",
        )
        await scenario.publish(notes_batch((3, "a0"), (6, "a1"), (3, "a2")))

        # The commit went through; only its answer never comes. A consumer that bounds its
        # wait retries on another connection and finds operation 0 already recorded.
        await scenario.check(Allowances(terminal_within=20))


class TestDatabaseRestarted:
    async def test_a_postgresql_restart_mid_batch_is_waited_out_without_double_effects(
        self, private_scenario: Scenario, pg_server: PostgresServer
    ) -> None:
        # The test's own server: restarting the machine's shared one would disrupt every
        # other test run using it.
        await private_scenario.consumers.start()
        target = notes_batch((3, "a0"), (6, "a1"), (3, "a2"))
        async with private_scenario.db.holding(
            "SELECT 1 FROM orders WHERE id = 6 FOR UPDATE"
        ) as order_6:  # the restart ends this transaction too
            await private_scenario.publish(target)
            for companion in companions():
                await private_scenario.publish(companion)
            await private_scenario.db.wait_for_results(target.batch_id, 1)
            await private_scenario.db.wait_until_blocked(order_6)
            await pg_server.restart("fast")

        # The operation cut short by the restart runs again once the server is back: nothing
        # fails because of it (no UNAVAILABLE), and nothing runs twice.
        await private_scenario.check()
