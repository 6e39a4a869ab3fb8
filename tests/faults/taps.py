"""Protocol-aware taps for the TCP proxy: act at an exact AMQP frame or PostgreSQL message.

Both parse only the client's stream and only as far as they need to: frame/message boundaries,
AMQP method ids, and PostgreSQL statement texts.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from tests.faults.proxy import Action, Tap, Verdict

AMQP_HEADER = b"AMQP\x00\x00\x09\x01"
AMQP_METHOD_FRAME = 1
AMQP_FRAME_END = 0xCE
# class basic: ack, reject, nack: how a consumer settles a delivery
SETTLE_METHODS = frozenset({(60, 80), (60, 90), (60, 120)})


class SettleTrap:
    """Holds the consumer's stream to the broker at its first `basic.ack`, `basic.reject` or
    `basic.nack`: that and everything after it never reaches the broker, as if the process
    died right before settling the delivery."""

    def __init__(self) -> None:
        self.armed = True
        self.held = asyncio.Event()

    def tap(self) -> Tap:
        return _AmqpSettleTap(self)


class _AmqpSettleTap:
    def __init__(self, trap: SettleTrap) -> None:
        self._trap = trap
        self._buffer = bytearray()
        self._header_seen = False

    def __call__(self, data: bytes) -> Verdict:
        self._buffer += data
        forward = bytearray()
        if not self._header_seen:
            if len(self._buffer) < len(AMQP_HEADER):
                return Verdict(b"")
            forward += self._buffer[: len(AMQP_HEADER)]
            del self._buffer[: len(AMQP_HEADER)]
            self._header_seen = True
        while len(self._buffer) >= 7:
            kind = self._buffer[0]
            size = int.from_bytes(self._buffer[3:7], "big")
            end = 7 + size + 1
            if len(self._buffer) < end:
                break
            frame = bytes(self._buffer[:end])
            if frame[-1] != AMQP_FRAME_END:
                raise AssertionError(f"the proxy lost AMQP framing: frame ends with {frame[-1]}")
            method = (int.from_bytes(frame[7:9], "big"), int.from_bytes(frame[9:11], "big"))
            if self._trap.armed and kind == AMQP_METHOD_FRAME and method in SETTLE_METHODS:
                self._trap.armed = False
                self._trap.held.set()
                return Verdict(bytes(forward), Action.HOLD)
            forward += frame
            del self._buffer[:end]
        return Verdict(bytes(forward))


class Cut(enum.Enum):
    AFTER = "after"  # COMMIT forwarded, reply lost: committed, but the client cannot know
    BEFORE = "before"  # COMMIT never arrives: rolled back, and the client cannot know either
    SILENT = "silent"  # COMMIT forwarded, then the connection goes silent without closing
    NONE = "none"


@dataclass
class CommitCutter:
    """Cuts database connections at the COMMIT of transactions that wrote something.

    Write transactions' COMMITs take turns from `pattern`, up to `max_cuts` cuts in total;
    read-only transactions (e.g. the relay's idle polls) are never cut, nor those that ran no
    statement containing `only` when it is given.
    """

    pattern: tuple[Cut, ...] = (Cut.AFTER, Cut.NONE, Cut.BEFORE, Cut.NONE)
    max_cuts: int = 6
    only: str | None = None
    cuts: list[Cut] = field(default_factory=list)
    commits_seen: int = 0
    _turns: Iterator[Cut] = field(init=False)

    def __post_init__(self) -> None:
        self._turns = itertools.cycle(self.pattern)

    def tap(self) -> Tap:
        return _PgCommitTap(self)

    def decide(self, writes: list[str]) -> Cut:
        """What to do with the COMMIT of a transaction that ran the `writes` statements."""
        if self.only is not None and not any(self.only in sql for sql in writes):
            return Cut.NONE
        self.commits_seen += 1
        turn = next(self._turns)
        if turn is Cut.NONE or len(self.cuts) >= self.max_cuts:
            return Cut.NONE
        self.cuts.append(turn)
        return turn


_UNTYPED_REQUESTS = {80877103, 80877104}  # SSLRequest, GSSENCRequest: a startup follows
# Anywhere in the statement: the product may write inside a CTE (`WITH … AS (INSERT …)`).
# `SELECT … FOR UPDATE` is no write: UPDATE must be followed by a table and SET.
_WRITE = re.compile(r"\b(INSERT\s+INTO|DELETE\s+FROM|UPDATE\s+\S+\s+SET)\b", re.IGNORECASE)


def _cstrings(payload: bytes, count: int) -> list[str]:
    parts = payload.split(b"\x00", count)
    return [part.decode("utf-8", "replace") for part in parts[:count]]


class _PgCommitTap:
    """Frontend message stream of one connection: forwards whole messages only."""

    def __init__(self, cutter: CommitCutter) -> None:
        self._cutter = cutter
        self._buffer = bytearray()
        self._started = False
        self._statements: dict[str, str] = {}  # prepared statement name -> SQL
        self._writes: list[str] = []  # what the open transaction wrote with

    def __call__(self, data: bytes) -> Verdict:
        self._buffer += data
        forward = bytearray()
        while message := self._next_message():
            cut = self._inspect(message) if self._started else self._startup(message)
            if cut is Cut.BEFORE:
                return Verdict(bytes(forward), Action.CUT)
            forward += message
            if cut is Cut.AFTER:
                return Verdict(bytes(forward), Action.CUT)
            if cut is Cut.SILENT:
                return Verdict(bytes(forward), Action.SILENCE)
        return Verdict(bytes(forward))

    def _next_message(self) -> bytes:
        header = 4 if not self._started else 5
        if len(self._buffer) < header:
            return b""
        length = int.from_bytes(self._buffer[header - 4 : header], "big")
        end = header - 4 + length
        if len(self._buffer) < end:
            return b""
        message = bytes(self._buffer[:end])
        del self._buffer[:end]
        return message

    def _startup(self, message: bytes) -> Cut:
        if int.from_bytes(message[4:8], "big") not in _UNTYPED_REQUESTS:
            self._started = True
        return Cut.NONE

    def _inspect(self, message: bytes) -> Cut:
        kind, payload = chr(message[0]), message[5:]
        if kind == "P":  # Parse: statement name, query
            name, query = _cstrings(payload, 2)
            self._statements[name] = query
        elif kind == "B":  # Bind: portal name, statement name
            _, statement = _cstrings(payload, 2)
            self._note(self._statements.get(statement, ""))
        elif kind == "Q":  # simple query: how asyncpg sends BEGIN, COMMIT and ROLLBACK
            # One message may chain several (`COMMIT; BEGIN`): a cut applies to the message.
            query = _cstrings(payload, 1)[0]
            cut = Cut.NONE
            for command in (part.strip().upper() for part in query.split(";")):
                if command in {"COMMIT", "END"}:
                    wrote, self._writes = self._writes, []
                    cut = self._cutter.decide(wrote) if wrote else Cut.NONE
                elif command in {"ROLLBACK", "ABORT"}:
                    self._writes = []
                elif command:
                    self._note(command)
            return cut
        return Cut.NONE

    def _note(self, sql: str) -> None:
        if _WRITE.search(sql):
            self._writes.append(sql)
