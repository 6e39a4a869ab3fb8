"""BatchState (consumer/domain/batch.py): counters, percentages, terminal status
(docs/contract.md, Statuses and figures)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.domain.batch import BatchState, BatchStateError
from contracts import BatchStatus, Mode, Outcome

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
BATCH_ID = UUID("3d0f5c2e-6b8e-4f5e-9d63-2a4c7e1b9f10")


def new_batch(total: int = 3, status: BatchStatus = BatchStatus.PENDING) -> BatchState:
    return BatchState(
        batch_id=BATCH_ID,
        operation_type="order_update",
        actor_id=1,
        mode=Mode.CONTINUE,
        total=total,
        created_at=T0,
        status=status,
    )


def processing_batch(total: int = 3, *outcomes: Outcome) -> BatchState:
    """A running batch whose operations so far ended in `outcomes` (the counters production
    keeps in SQL, one per result row)."""
    batch = new_batch(total, BatchStatus.PROCESSING)
    batch.started_at = T0
    batch.completed = outcomes.count(Outcome.SUCCEEDED)
    batch.failed = outcomes.count(Outcome.FAILED)
    batch.skipped = outcomes.count(Outcome.SKIPPED)
    return batch


def finished_batch(*outcomes: Outcome) -> BatchState:
    return processing_batch(len(outcomes), *outcomes)


class TestPercentages:
    def test_a_new_batch_has_no_progress_and_no_success(self):
        batch = new_batch(3)
        assert (batch.progress, batch.success_rate) == (0.0, 0.0)

    def test_progress_counts_every_finished_operation_whatever_its_outcome(self):
        batch = processing_batch(4, Outcome.SUCCEEDED, Outcome.FAILED, Outcome.SKIPPED)
        assert batch.progress == 75.0

    def test_success_rate_counts_only_succeeded_operations(self):
        batch = finished_batch(Outcome.SUCCEEDED, Outcome.FAILED, Outcome.SKIPPED, Outcome.SKIPPED)
        assert batch.success_rate == 25.0
        assert batch.progress == 100.0

    def test_two_of_three_is_rounded_to_two_places(self):
        batch = finished_batch(Outcome.SUCCEEDED, Outcome.SUCCEEDED, Outcome.FAILED)
        assert batch.success_rate == 66.67

    def test_one_of_three_is_rounded_to_two_places(self):
        batch = processing_batch(3, Outcome.FAILED)
        assert batch.progress == 33.33

    def test_a_batch_of_no_operations_reports_zero_instead_of_dividing_by_zero(self):
        batch = new_batch(0)
        assert (batch.progress, batch.success_rate) == (0.0, 0.0)


class TestIsComplete:
    @pytest.mark.parametrize("status", [BatchStatus.PENDING, BatchStatus.PROCESSING])
    def test_a_batch_still_running_is_not_complete(self, status):
        assert not new_batch(status=status).is_complete

    @pytest.mark.parametrize(
        "status",
        [BatchStatus.COMPLETED, BatchStatus.PARTIAL, BatchStatus.FAILED, BatchStatus.REJECTED],
    )
    def test_a_batch_in_a_terminal_status_is_complete(self, status):
        assert new_batch(status=status).is_complete


class TestDuration:
    def test_duration_is_unknown_before_the_batch_starts(self):
        assert new_batch().duration_seconds is None

    def test_duration_is_unknown_while_the_batch_runs(self):
        assert processing_batch().duration_seconds is None

    def test_duration_runs_from_start_to_completion_in_seconds(self):
        batch = finished_batch(Outcome.SUCCEEDED)
        batch.complete(T0 + timedelta(seconds=1, microseconds=500))
        assert batch.duration_seconds == 1.0005


class TestComplete:
    def test_every_operation_succeeded_is_completed(self):
        batch = finished_batch(Outcome.SUCCEEDED, Outcome.SUCCEEDED)
        assert batch.complete(T0) is BatchStatus.COMPLETED
        assert batch.status is BatchStatus.COMPLETED

    @pytest.mark.parametrize(
        "outcomes",
        [
            (Outcome.SUCCEEDED, Outcome.FAILED),
            (Outcome.SUCCEEDED, Outcome.SKIPPED),
            (Outcome.FAILED, Outcome.SUCCEEDED, Outcome.SKIPPED),
        ],
    )
    def test_some_succeeded_and_some_failed_or_skipped_is_partial(self, outcomes):
        assert finished_batch(*outcomes).complete(T0) is BatchStatus.PARTIAL

    @pytest.mark.parametrize(
        "outcomes",
        [
            (Outcome.FAILED,),
            (Outcome.FAILED, Outcome.SKIPPED),
            (Outcome.SKIPPED, Outcome.SKIPPED),
        ],
    )
    def test_none_succeeded_is_failed(self, outcomes):
        assert finished_batch(*outcomes).complete(T0) is BatchStatus.FAILED

    def test_completing_records_the_completion_time(self):
        batch = finished_batch(Outcome.SUCCEEDED)
        batch.complete(T0 + timedelta(seconds=2))
        assert batch.completed_at == T0 + timedelta(seconds=2)

    def test_completing_is_refused_while_results_are_missing(self):
        batch = processing_batch(3, Outcome.SUCCEEDED)
        with pytest.raises(BatchStateError, match="2 operations have no result"):
            batch.complete(T0)
        assert batch.status is BatchStatus.PROCESSING
        assert batch.completed_at is None

    def test_completing_twice_keeps_the_first_status_and_time(self):
        batch = finished_batch(Outcome.SUCCEEDED, Outcome.FAILED)
        batch.complete(T0)
        assert batch.complete(T0 + timedelta(hours=1)) is BatchStatus.PARTIAL
        assert batch.completed_at == T0


@given(st.lists(st.sampled_from(list(Outcome)), min_size=1, max_size=50))
def test_any_sequence_of_outcomes_adds_up_to_the_total_and_ends_in_the_designed_status(
    outcomes: list[Outcome],
) -> None:
    batch = finished_batch(*outcomes)
    status = batch.complete(T0)

    assert batch.completed + batch.failed + batch.skipped == batch.total == len(outcomes)
    assert batch.progress == 100.0
    succeeded = outcomes.count(Outcome.SUCCEEDED)
    if succeeded == len(outcomes):
        expected = BatchStatus.COMPLETED
    elif succeeded == 0:
        expected = BatchStatus.FAILED
    else:
        expected = BatchStatus.PARTIAL
    assert status is expected, f"{succeeded} of {len(outcomes)} succeeded gave {status}"
    assert batch.success_rate == round(succeeded * 100 / len(outcomes), 2)
