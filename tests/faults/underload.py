"""The steps every database-fault load scenario shares: a few hundred batches flowing through a
consumer when the fault strikes, and the judgement once it healed (the oracle, wrongly failed
== 0, readiness back, sane logs), all problems reported together."""

from __future__ import annotations

from collections.abc import Sequence

from contracts import BatchRequest
from tests.faults.load import IN_FLIGHT_AT_FAULT, mixed_load
from tests.faults.logs import check_consumer_logs
from tests.faults.oracle import Allowances
from tests.faults.processes import ConsumerProcess
from tests.faults.scenario import Scenario
from tests.integration.helpers import eventually

UNDER_WAY = 5  # batches terminal before a mid-load fault strikes: the consumer is busy
# From the moment the fault healed: the whole load, run by a consumer that reconnected.
SETTLES_WITHIN = 60.0
READY_AGAIN_WITHIN = 20.0


async def running_load(
    scenario: Scenario, **env: str
) -> tuple[ConsumerProcess, list[BatchRequest]]:
    """Publish the load, start a consumer and return once it is working through it (the first
    batches are terminal); the caller strikes right away."""
    load = mixed_load()
    await scenario.publish_all(load)
    consumer = await scenario.consumers.start_probed(**env)

    async def under_way() -> bool:
        return await scenario.not_terminal(load) <= len(load) - UNDER_WAY

    await eventually(under_way, what=f"{UNDER_WAY} batches of the load terminal", timeout=30)
    return consumer, load


async def strike_point(scenario: Scenario, load: Sequence[BatchRequest]) -> None:
    """The premise, checked as the fault strikes: at least 200 batches still in flight."""
    await scenario.require_in_flight(load, IN_FLIGHT_AT_FAULT)


async def judge(
    scenario: Scenario,
    *,
    outages: int | None = None,
    at_most_outages: int | None = None,
    ready_again: Sequence[ConsumerProcess] = (),
    allow: Allowances | None = None,
) -> None:
    """Once the fault healed: every process in `ready_again` answers /readyz with 200 again,
    the oracle finds nothing (wrongly failed included) and every consumer log is sane."""
    problems: list[str] = []
    for process in ready_again:

        async def ready(process: ConsumerProcess = process) -> bool:
            return await process.readiness() == 200

        try:
            await eventually(
                ready,
                what=f"`batchops {process.command}` ready again",
                timeout=READY_AGAIN_WITHIN,
            )
        except AssertionError as exc:
            problems.append(str(exc))
    try:
        report = await scenario.check(allow or Allowances(terminal_within=SETTLES_WITHIN))
        if report.wrongly_failed:  # the oracle already fails on any; said here for the reader
            problems.append(f"{report.wrongly_failed} operation(s) wrongly failed")
    except AssertionError as exc:
        problems.append(str(exc))
    try:
        check_consumer_logs(
            scenario.consumers.started, outages=outages, at_most_outages=at_most_outages
        )
    except AssertionError as exc:
        problems.append(str(exc))
    if problems:
        raise AssertionError("\n".join(problems))
