"""`batchops publish FILE`: one JSON batch request, or many as JSON lines.

JSON lines are all validated before anything is published (one bad line publishes nothing), then
published in file order with confirms, with progress on stderr; `--wait` awaits every completion.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from consumer.config import Settings
from consumer.entrypoints.exits import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TIMEOUT,
    CommandFailed,
)
from consumer.entrypoints.failures import broker_errors
from consumer.entrypoints.summary import render_completion
from contracts import (
    MAX_OPERATIONS,
    BatchCompleted,
    BatchRejected,
    BatchRequest,
    RejectionReason,
)
from publisher import (
    BatchPublisher,
    Completion,
    CompletionTimeout,
    EventSubscription,
    PublishError,
)

JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")


@dataclass(frozen=True, slots=True)
class NumberedRequest:
    line: int
    request: BatchRequest


@dataclass(frozen=True, slots=True)
class InvalidLine:
    line: int
    problems: list[str]


def to_request(raw: dict[str, Any]) -> BatchRequest:
    """A request from a decoded JSON object; a missing batch_id gets a fresh one.

    Raises ValidationError. Validated as JSON so that the strict rules of the wire apply.
    """
    return BatchRequest.model_validate_json(json.dumps({"batch_id": str(uuid.uuid4()), **raw}))


def problems(exc: ValidationError) -> list[str]:
    reasons = RejectionReason.from_errors(exc.errors(include_url=False))
    return [reason.describe("body") for reason in reasons]


def is_json_lines(requested: str, path: Path, text: str) -> bool:
    """`--format` if given; else JSON lines for a .jsonl/.ndjson name or for several lines that
    are not one JSON document together."""
    if requested != "auto":
        return requested == "jsonl"
    if path.suffix.lower() in JSON_LINES_SUFFIXES:
        return True
    try:
        json.loads(text)
    except ValueError:
        return sum(1 for line in text.splitlines() if line.strip()) > 1
    return False


def over_limit(request: BatchRequest, max_operations: int) -> list[str]:
    """The problem of a request with more operations than this deployment takes (the consumer
    would reject it)."""
    if len(request.operations) <= max_operations:
        return []
    return [
        f"operations: {len(request.operations)} operations; the limit is {max_operations} "
        "(BATCHOPS_MAX_OPERATIONS)"
    ]


def parse_json_lines(
    text: str, max_operations: int = MAX_OPERATIONS
) -> tuple[list[NumberedRequest], list[InvalidLine]]:
    """Every valid request with its line number, and every invalid line with why; blank lines
    are skipped and a batch_id may appear on one line only."""
    requests: list[NumberedRequest] = []
    invalid: list[InvalidLine] = []
    first_line_of: dict[uuid.UUID, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except ValueError as exc:
            invalid.append(InvalidLine(number, [f"not JSON: {exc}"]))
            continue
        if not isinstance(raw, dict):
            invalid.append(InvalidLine(number, ["not a JSON object"]))
            continue
        try:
            request = to_request(raw)
        except ValidationError as exc:
            invalid.append(InvalidLine(number, problems(exc)))
            continue
        if too_many := over_limit(request, max_operations):
            invalid.append(InvalidLine(number, too_many))
            continue
        first = first_line_of.setdefault(request.batch_id, number)
        if first != number:
            invalid.append(InvalidLine(number, [f"batch_id: also on line {first}"]))
            continue
        requests.append(NumberedRequest(number, request))
    return requests, invalid


class Progress:
    """`label done/total` on stderr: rewritten in place on a terminal, otherwise one line per
    tenth of the way so that logs stay short."""

    def __init__(self, label: str, total: int, stream: TextIO) -> None:
        self._label = label
        self._total = total
        self._stream = stream
        self._tty = stream.isatty()
        self._step = max(1, total // 10)
        self.done = 0

    def advance(self) -> None:
        self.done += 1
        text = f"{self._label} {self.done}/{self._total}"
        if self._tty:
            end = "\n" if self.done == self._total else ""
            self._stream.write(f"\r{text}{end}")
        elif self.done == self._total or self.done % self._step == 0:
            self._stream.write(f"{text}\n")
        self._stream.flush()

    def finish(self) -> None:
        """End an interrupted in-place line so that what follows starts on its own line."""
        if self._tty and 0 < self.done < self._total:
            self._stream.write("\n")
            self._stream.flush()


async def _publish_in_order(
    publisher: BatchPublisher, requests: Sequence[NumberedRequest], progress: Progress
) -> None:
    # One at a time, in file order: with a single consumer the batches also run in that order.
    try:
        for item in requests:
            try:
                await publisher.publish(item.request)
            except PublishError as exc:
                raise CommandFailed(
                    f"published {progress.done} of {len(requests)} batches; the broker did not "
                    f"take line {item.line} (batch {item.request.batch_id}): {exc}"
                ) from exc
            progress.advance()
    finally:
        progress.finish()


async def _collect(
    events: EventSubscription, batch_ids: set[uuid.UUID], progress: Progress, timeout: float
) -> dict[uuid.UUID, Completion]:
    found: dict[uuid.UUID, Completion] = {}

    async def until_all_arrived() -> None:
        async for event in events:
            if (
                isinstance(event, BatchCompleted | BatchRejected)
                and event.batch_id in batch_ids
                and event.batch_id not in found
            ):
                found[event.batch_id] = event
                progress.advance()
                if len(found) == len(batch_ids):
                    return

    try:
        await asyncio.wait_for(until_all_arrived(), timeout)
    except TimeoutError:
        progress.finish()
    return found


async def publish_lines(
    publisher: BatchPublisher,
    requests: Sequence[NumberedRequest],
    *,
    wait: bool,
    timeout: float,
    out: TextIO,
    err: TextIO,
) -> int:
    """Publish every request; with `wait`, also report each completion. Returns the exit code:
    1 if any was rejected, 3 if any completion did not arrive within `timeout`."""
    operations = sum(len(item.request.operations) for item in requests)
    async with publisher:
        if not wait:
            await _publish_in_order(publisher, requests, Progress("published", len(requests), err))
            for item in requests:
                out.write(f"line {item.line}: batch {item.request.batch_id}\n")
            out.write(f"published {len(requests)} batches ({operations} operations)\n")
            return EXIT_OK
        # Subscribed before publishing, so that no completion can slip past.
        async with publisher.subscribe("batch.#") as events:
            await _publish_in_order(publisher, requests, Progress("published", len(requests), err))
            found = await _collect(
                events,
                {item.request.batch_id for item in requests},
                Progress("finished", len(requests), err),
                timeout,
            )
    return _report(requests, found, timeout, out, err)


def _report(
    requests: Sequence[NumberedRequest],
    found: dict[uuid.UUID, Completion],
    timeout: float,
    out: TextIO,
    err: TextIO,
) -> int:
    statuses: dict[str, int] = {}
    for item in requests:
        event = found.get(item.request.batch_id)
        if event is None:
            out.write(f"line {item.line}: batch {item.request.batch_id}: no completion yet\n")
            continue
        statuses[event.status.value] = statuses.get(event.status.value, 0) + 1
        out.write(f"line {item.line}: {render_completion(event).splitlines()[0]}\n")
    tally = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
    out.write(f"{len(found)} of {len(requests)} batches finished: {tally or 'none'}\n")
    if len(found) < len(requests):
        err.write(
            f"batchops publish: {len(requests) - len(found)} batches did not finish within "
            f"{timeout:g}s\n"
        )
        return EXIT_TIMEOUT
    return EXIT_FAILED if "rejected" in statuses else EXIT_OK


def publish(settings: Settings, args: argparse.Namespace) -> int:
    """The `publish` command: 0 published (and finished), 1 rejected or not taken, 2 invalid
    input, 3 no completion in time."""
    try:
        text = sys.stdin.read() if str(args.file) == "-" else args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandFailed(f"cannot read {args.file}: {exc}", EXIT_BAD_INPUT) from exc
    publisher = BatchPublisher(
        settings.amqp_url, namespace=settings.namespace, delivery_limit=settings.delivery_limit
    )
    if not is_json_lines(args.format, args.file, text):
        request = _rehearsed(_one_request(text, args.file), rehearse=args.dry_run)
        if too_many := over_limit(request, settings.max_operations):
            lines = [f"{args.file} is not a valid batch request:", *(f"  - {p}" for p in too_many)]
            raise CommandFailed("\n".join(lines), EXIT_BAD_INPUT)
        return _publish_one(settings, publisher, request, args)
    requests, invalid = parse_json_lines(text, settings.max_operations)
    if invalid:
        lines = [f"{args.file}: {len(invalid)} invalid lines; nothing was published:"]
        lines += [f"  line {bad.line}: {problem}" for bad in invalid for problem in bad.problems]
        raise CommandFailed("\n".join(lines), EXIT_BAD_INPUT)
    if not requests:
        raise CommandFailed(f"{args.file} holds no batch requests", EXIT_BAD_INPUT)
    requests = [
        NumberedRequest(item.line, _rehearsed(item.request, rehearse=args.dry_run))
        for item in requests
    ]
    with broker_errors(settings.amqp_url):
        return asyncio.run(
            publish_lines(
                publisher,
                requests,
                wait=args.wait,
                timeout=args.timeout,
                out=sys.stdout,
                err=sys.stderr,
            )
        )


def _rehearsed(request: BatchRequest, *, rehearse: bool) -> BatchRequest:
    """With `--dry-run`, the request as a dry run."""
    return request.model_copy(update={"dry_run": True}) if rehearse else request


def _one_request(text: str, path: Path) -> BatchRequest:
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise CommandFailed(f"cannot read {path}: {exc}", EXIT_BAD_INPUT) from exc
    try:
        if isinstance(raw, dict):
            return to_request(raw)
        return BatchRequest.model_validate_json(json.dumps(raw))
    except ValidationError as exc:
        lines = [f"{path} is not a valid batch request:", *(f"  - {p}" for p in problems(exc))]
        raise CommandFailed("\n".join(lines), EXIT_BAD_INPUT) from exc


def _publish_one(
    settings: Settings, publisher: BatchPublisher, request: BatchRequest, args: argparse.Namespace
) -> int:
    async def run() -> int:
        async with publisher:
            if not args.wait:
                await publisher.publish(request)
                print(f"published batch {request.batch_id} ({len(request.operations)} operations)")
                return EXIT_OK
            print(f"published batch {request.batch_id}; waiting for its completion...")
            event = await publisher.publish_and_wait(request, timeout=args.timeout)
            print(render_completion(event))
            return EXIT_FAILED if isinstance(event, BatchRejected) else EXIT_OK

    try:
        with broker_errors(settings.amqp_url):
            return asyncio.run(run())
    except CompletionTimeout as exc:
        raise CommandFailed(str(exc), EXIT_TIMEOUT) from exc
