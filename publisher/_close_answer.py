"""Every Channel.Close from the broker gets its Channel.CloseOk.

The broker closes a channel on a protocol error, an acknowledgement timeout, or a publish to a
missing exchange, and keeps it until the client answers Channel.CloseOk: the messages
delivered on it and not yet acknowledged stay with it, out of everyone's reach, and the
channel's number stays taken. aiormq (6.8 to 7.2 at least) queues that answer without waiting
and drops it when the connection's queue of frames to write is full, which a flood of
acknowledgements and publishes does (it holds 10). The broker then keeps those messages until
the connection closes, and refuses the channel's number when a robust connection reopens it.
aiormq has no setting or hook for this, so `answer_every_channel_close` wraps the handler of
that frame: when the queue is full as the handler starts, the answer it is about to drop is
queued again, waiting its turn for room.

Only for the aiormq versions checked (up to `CHECKED_UP_TO`): a release that answers by itself
would answer twice with the wrapper, and the broker closes the connection for that. With a
newer release the wrapper stays off, and tests/integration/test_channel_close_answer.py tells
whether it still drops the answer (then raise `CHECKED_UP_TO`).
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from typing import Any

from aiormq.abc import ChannelFrame
from aiormq.channel import Channel
from pamqp import commands

_MARK = "_batchops_answers_every_close"
CHECKED_UP_TO = (7, 2, 4)
_POLL_SECONDS = 0.001
_PATIENCE_SECONDS = 1.0

_Handler = Callable[[Channel, commands.Channel.Close], Awaitable[None]]


def answer_every_channel_close() -> None:
    """Make aiormq answer every Channel.Close, even with its write queue full (idempotent;
    it holds for every channel of the process)."""
    handler: _Handler = Channel._on_close_frame
    if getattr(handler, _MARK, False) or _release(version("aiormq")) > CHECKED_UP_TO:
        return

    @functools.wraps(handler)
    async def answer_even_when_full(channel: Channel, frame: commands.Channel.Close) -> None:
        # The handler queues its answer before its first await, so a queue full now is a
        # queue full then: the answer is dropped, and sent here instead, behind every frame
        # that was waiting for room (some may be of this channel).
        dropped = channel.write_queue.full()
        try:
            await handler(channel, frame)
        finally:
            if dropped:
                answer = commands.Channel.CloseOk()
                await _put_last(
                    channel.write_queue,
                    ChannelFrame.marshall(channel_number=channel.number, frames=[answer]),
                )

    setattr(answer_even_when_full, _MARK, True)
    setattr(Channel, "_on_close_frame", answer_even_when_full)  # noqa: B010 - mypy: a method


async def _put_last(queue: asyncio.Queue[Any], answer: ChannelFrame) -> None:
    """Put `answer` once every frame that was waiting for room is in `queue` (or, after
    `_PATIENCE_SECONDS`, as a plain put: a queue never quiet must not hold it back for good).
    Frames of the closed channel may be among them: acknowledgements sent just before the
    Close arrived. Written after its CloseOk, the broker would take one for a protocol error
    and close the whole connection. A plain `put` is not enough: asyncio's
    queue lets a newcomer take a slot before the waiter woken for it has run, so the room and
    the waiters are checked on two turns of the loop with nothing put in between."""
    deadline = asyncio.get_running_loop().time() + _PATIENCE_SECONDS
    while asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0)
        puts = queue._unfinished_tasks  # type: ignore[attr-defined]
        if _room_and_nobody_waiting(queue):
            await asyncio.sleep(0)  # a waiter woken during the last turn puts its frame now
            if queue._unfinished_tasks == puts and _room_and_nobody_waiting(queue):  # type: ignore[attr-defined]
                queue.put_nowait(answer)
                return
        await asyncio.sleep(_POLL_SECONDS)
    await queue.put(answer)


def _room_and_nobody_waiting(queue: asyncio.Queue[Any]) -> bool:
    return not queue.full() and not queue._putters  # type: ignore[attr-defined]


def _release(text: str) -> tuple[int, ...]:
    """(7, 2, 4) of "7.2.4"; a pre-release counts as its release ("7.2.5rc1": (7, 2, 5))."""
    parts = []
    for part in text.split(".")[:3]:
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        parts.append(int(digits.group()))
        if digits.end() < len(part):
            break
    return tuple(parts)
