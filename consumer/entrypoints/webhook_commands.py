"""`batchops webhook-secret USER_ID [--rotate]`: the key receivers check signatures with."""

from __future__ import annotations

import argparse

from consumer.adapters.tokens import UnknownUser
from consumer.adapters.webhooks import webhook_secret as stored_secret
from consumer.config import Settings
from consumer.entrypoints.exits import EXIT_BAD_INPUT, EXIT_OK, CommandFailed
from consumer.entrypoints.failures import in_database


def webhook_secret(settings: Settings, args: argparse.Namespace) -> int:
    try:
        secret = in_database(
            settings.database_url,
            lambda conn: stored_secret(conn, args.user_id, rotate=args.rotate),
        )
    except UnknownUser as exc:
        raise CommandFailed(f"webhook-secret: {exc}", EXIT_BAD_INPUT) from exc
    what = "new webhook secret" if args.rotate else "webhook secret"
    print(f"{what} of user {args.user_id} (signs the webhooks of the batches it submits):")
    print(secret)
    return EXIT_OK
