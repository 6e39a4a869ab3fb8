"""`batchops cancel ID` and `batchops retry ID [--wait]`: job control for operators, who may
act on any batch (and cancel one nobody has seen yet, in advance)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from consumer.bootstrap import bootstrap
from consumer.config import Settings
from consumer.entrypoints.exits import EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT, CommandFailed
from consumer.entrypoints.failures import broker_errors, database_errors
from consumer.entrypoints.summary import render_completion
from consumer.service_layer.job_control import JobControl, Refused, Verdict
from contracts import BatchRejected, BatchRequest
from publisher import BatchPublisher, CompletionTimeout

T = TypeVar("T")


def cancel(settings: Settings, args: argparse.Namespace) -> int:
    """0 cancelled (or asked to: a running batch stops before its next operation; an unseen
    one runs nothing when it arrives); 1 when it is already finished."""
    verdict = _with_job_control(settings, lambda control: control.cancel(args.batch_id, None))
    if verdict is Verdict.REFUSED:
        raise CommandFailed(
            f"cancel: batch {args.batch_id} is already finished; nothing changed", EXIT_FAILED
        )
    print(f"batch {args.batch_id}: cancel requested")
    return EXIT_OK


def retry(settings: Settings, args: argparse.Namespace) -> int:
    """Publish a new batch of the operations of ID that did not succeed: 0 published (and,
    with --wait, finished), 1 refused (not partial, failed or cancelled) or rejected, 3 no
    completion in time."""
    try:
        request = _with_job_control(
            settings, lambda control: control.retry_request(args.batch_id, None)
        )
    except Refused as refused:
        raise CommandFailed(f"retry: {refused.reason}", EXIT_FAILED) from None
    publisher = BatchPublisher(
        settings.amqp_url, namespace=settings.namespace, delivery_limit=settings.delivery_limit
    )
    try:
        with broker_errors(settings.amqp_url):
            return asyncio.run(_publish(publisher, request, args.wait, args.timeout))
    except CompletionTimeout as exc:
        raise CommandFailed(str(exc), EXIT_TIMEOUT) from exc


async def _publish(
    publisher: BatchPublisher, request: BatchRequest, wait: bool, timeout: float
) -> int:
    count = len(request.operations)
    async with publisher:
        if not wait:
            await publisher.publish(request)
            print(f"published batch {request.batch_id}: a retry of {count} operations")
            return EXIT_OK
        print(f"published batch {request.batch_id}; waiting for its completion...")
        event = await publisher.publish_and_wait(request, timeout=timeout)
    print(render_completion(event))
    return EXIT_FAILED if isinstance(event, BatchRejected) else EXIT_OK


def _with_job_control(settings: Settings, work: Callable[[JobControl], Awaitable[T]]) -> T:
    async def run() -> T:
        service = bootstrap(settings, consume=False)
        try:
            return await work(service.job_control)
        finally:
            await service.close()

    with database_errors(settings.database_url):
        return asyncio.run(run())
