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

import functools
import re
from collections.abc import Awaitable, Callable
from importlib.metadata import version

from aiormq.abc import ChannelFrame
from aiormq.channel import Channel
from pamqp import commands

_MARK = "_batchops_answers_every_close"
CHECKED_UP_TO = (7, 2, 4)

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
        # queue full then: the answer is dropped, and sent here instead. A put waits its turn
        # behind the puts already waiting, so the answer still goes before the Channel.Open of
        # a channel that reuses the number.
        dropped = channel.write_queue.full()
        try:
            await handler(channel, frame)
        finally:
            if dropped:
                answer = commands.Channel.CloseOk()
                await channel.write_queue.put(
                    ChannelFrame.marshall(channel_number=channel.number, frames=[answer])
                )

    setattr(answer_even_when_full, _MARK, True)
    setattr(Channel, "_on_close_frame", answer_even_when_full)  # noqa: B010 - mypy: a method


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
