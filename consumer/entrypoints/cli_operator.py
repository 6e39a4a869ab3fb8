"""The operator commands of `batchops`: batches, dead letters, status and teardown."""

from __future__ import annotations

import uuid

from consumer.entrypoints.cli_help import (
    Commands,
    command_group,
    command_parser,
    lazy,
    positive_int,
)
from contracts import BatchStatus, OperationType

OPERATOR = "consumer.entrypoints.operator"


def add_operator_commands(commands: Commands) -> None:
    _add_batch_commands(commands)
    _add_dead_letter_commands(commands)
    status = command_parser(
        commands,
        "status",
        "what the service is doing: queues, consumers, work in flight, outbox, dead letters, "
        "the last batch",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(command=lazy("consumer.entrypoints.status", "status"))
    teardown = command_parser(
        commands,
        "teardown",
        "delete a namespace's queues and exchanges and its database",
        "For demos and test environments: everything BATCHOPS_NAMESPACE and "
        "BATCHOPS_DATABASE_URL name is gone for good, messages and batches included.",
    )
    teardown.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    teardown.add_argument(
        "--keep-database", action="store_true", help="delete only the broker's side"
    )
    teardown.set_defaults(command=lazy("consumer.entrypoints.status", "teardown"))


def _add_batch_commands(commands: Commands) -> None:
    batches = command_group(commands, "batches", "stored batches and their results")
    show = command_parser(batches, "show", "one batch with every operation's result")
    show.add_argument("batch_id", type=uuid.UUID, metavar="ID", help="the batch id")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(command=lazy(OPERATOR, "show_batch"))
    listing = command_parser(batches, "list", "recent batches, newest first")
    listing.add_argument(
        "--limit", type=positive_int, default=20, metavar="N", help="at most N batches"
    )
    listing.add_argument(
        "--status",
        choices=[s.value for s in BatchStatus],
        metavar="STATUS",
        help=f"only this status: {', '.join(s.value for s in BatchStatus)}",
    )
    listing.add_argument(
        "--operation-type",
        choices=[t.value for t in OperationType],
        metavar="TYPE",
        help=f"only this type: {', '.join(t.value for t in OperationType)}",
    )
    listing.add_argument("--actor", type=int, metavar="USER_ID", help="only this actor's")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(command=lazy(OPERATOR, "list_batches"))


def _add_dead_letter_commands(commands: Commands) -> None:
    dead = command_group(commands, "dead-letters", "requests in the dead-letter queue {ns}.dead")
    peek = command_parser(
        dead,
        "list",
        "show dead letters with their reason and body, without removing them",
    )
    peek.add_argument(
        "--limit", type=positive_int, default=20, metavar="N", help="at most N, oldest first"
    )
    peek.add_argument("--json", action="store_true", help="machine-readable output")
    peek.set_defaults(command=lazy(OPERATOR, "list_dead_letters"))
    replay = command_parser(
        dead,
        "replay",
        "republish dead letters to the requests exchange, then remove them",
        "Each is removed only after the broker confirmed its copy; replaying a finished batch "
        "only re-sends its completion.",
    )
    replay.add_argument("--limit", type=positive_int, metavar="N", help="at most N (default: all)")
    replay.add_argument("--batch-id", type=uuid.UUID, metavar="ID", help="only this batch's")
    replay.set_defaults(command=lazy(OPERATOR, "replay_dead_letters"))
    purge = command_parser(dead, "purge", "delete every dead letter for good")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    purge.set_defaults(command=lazy(OPERATOR, "purge_dead_letters"))
