"""The completion event is built from its operation events' stored JSON without decoding them:
it must be byte for byte what encoding the whole event would give."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.domain.batch import BatchState
from consumer.service_layer.events import EventFactory
from contracts import BatchCompleted, ErrorCode, Mode, OperationResult, Topology

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
EVENTS = EventFactory(Topology())
# Strings that would fool a careless search for the results field.
TRICKY = st.sampled_from(['"results":[]', '","results":[]', '\\"results\\":[]', "résultats ✓"])
TEXT = st.one_of(TRICKY, st.text(max_size=30))
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)


def _results(
    batch: BatchState, correlation_id: str | None, outcomes: list[tuple[bool, Any]]
) -> list[OperationResult]:
    results = []
    for index, (success, data) in enumerate(outcomes):
        if success:
            result = EVENTS.succeeded(batch, correlation_id, index, index + 1, {"value": data}, T0)
            batch.completed += 1
        else:
            result = EVENTS.failed(
                batch, correlation_id, index, index + 1, ErrorCode.NOT_FOUND, str(data), T0
            )
            batch.failed += 1
        results.append(result)
    return results


@settings(max_examples=200, deadline=None)
@given(
    correlation_id=st.none() | TEXT,
    outcomes=st.lists(st.tuples(st.booleans(), JSON), min_size=1, max_size=6),
    dry_run=st.booleans(),
    retry=st.booleans(),
)
def test_the_spliced_completion_is_the_encoded_completion(
    correlation_id: str | None, outcomes: list[tuple[bool, Any]], dry_run: bool, retry: bool
) -> None:
    batch = BatchState(
        batch_id=uuid.uuid4(),
        operation_type="order_update",
        actor_id=1,
        mode=Mode.CONTINUE,
        total=len(outcomes),
        created_at=T0,
        started_at=T0,
        dry_run=dry_run,
        retry_of=uuid.uuid4() if retry else None,
    )
    results = _results(batch, correlation_id, outcomes)
    batch.complete(T0 + timedelta(seconds=1))
    stored = [result.model_dump_json().encode() for result in results]

    body = EVENTS.completion_body(batch, correlation_id, stored)

    assert body == EVENTS.completion(batch, correlation_id, results).model_dump_json().encode()
    parsed = BatchCompleted.model_validate_json(body).results
    assert [r.model_dump() for r in parsed] == [r.model_dump() for r in results]
