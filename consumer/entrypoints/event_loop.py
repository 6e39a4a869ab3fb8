"""Which event loop the services run on (BATCHOPS_EVENT_LOOP): uvloop's where it is installed,
since asyncpg and aio-pika then spend less CPU per round trip (docs/performance.md), or
asyncio's own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from consumer.entrypoints.exits import EXIT_BAD_INPUT, CommandFailed

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(choice: str) -> LoopFactory | None:
    """The factory for `asyncio.Runner` (None: asyncio's default loop). `auto` is uvloop when
    it can be imported; `uvloop` asked for and missing is an error, not a silent fallback."""
    if choice == "asyncio":
        return None
    try:
        import uvloop  # noqa: PLC0415 - optional: not installed on Windows
    except ImportError:
        if choice == "uvloop":
            raise CommandFailed(
                "BATCHOPS_EVENT_LOOP=uvloop, but uvloop is not installed (pip install uvloop)",
                EXIT_BAD_INPUT,
            ) from None
        return None
    return uvloop.new_event_loop


def run_on_chosen_loop(choice: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run `main()` to its end on the loop `choice` names."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        runner.run(main())
