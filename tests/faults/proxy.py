"""An in-test TCP proxy on 127.0.0.1 that can drop, black-hole and inspect its connections.

Put it between the consumer process and a real service (point `BATCHOPS_AMQP_URL` or
`BATCHOPS_DATABASE_URL` at `proxy.port`), then:

- `drop()` resets every open connection at once (both sides see it);
- `blackhole()` stops forwarding without closing anything, as a silent network partition does;
  what was in flight is held, not lost, and flows again on `heal()`;
- a `Tap` sees the client's bytes before they are forwarded and may cut the connection or hold
  the stream at an exact protocol message (see `taps.py`).

Bounded: at most `max_links` connections, and each direction holds at most one read chunk while
it is not forwarding (the sender then meets TCP back-pressure).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self

CHUNK_BYTES = 64 * 1024


class Action(enum.Enum):
    FORWARD = "forward"  # keep going
    CUT = "cut"  # forward what the tap returned, then close both sides
    HOLD = "hold"  # forward what the tap returned, then nothing more in this direction
    SILENCE = "silence"  # forward what the tap returned, then black-hole this connection


@dataclass(frozen=True, slots=True)
class Verdict:
    forward: bytes
    action: Action = Action.FORWARD


class Tap(Protocol):
    """Inspects one connection's client-to-server bytes, in order."""

    def __call__(self, data: bytes) -> Verdict: ...


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    flowing: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    pipes: list[asyncio.Task[None]] = field(default_factory=list)

    def close(self, *, reset: bool) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        self.flowing.set()  # wake pipes parked by a black-hole so that they can finish
        for writer in (self.client, self.upstream):
            if reset:
                writer.transport.abort()
            else:
                writer.close()  # flushes what was written (e.g. a COMMIT), then FIN


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target_host`:`target_port`; use as `async with`."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        tap_factory: Callable[[], Tap] | None = None,
        max_links: int = 32,
    ) -> None:
        self._target = (target_host, target_port)
        self._tap_factory = tap_factory
        self._max_links = max_links
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None
        self._blackhole_new = False
        self._accepted = asyncio.Condition()
        self.accepted = 0  # connections accepted so far

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("start the proxy with `async with TcpProxy(...)` first")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def open_links(self) -> int:
        return len(self._links)

    def drop(self) -> int:
        """Reset every open connection; returns how many there were."""
        links = list(self._links)
        for link in links:
            link.close(reset=True)
        return len(links)

    def blackhole(self, *, new_connections: bool = True) -> None:
        """Stop forwarding on every open connection, and on new ones too unless told not to."""
        self._blackhole_new = new_connections
        for link in self._links:
            link.flowing.clear()

    def heal(self) -> None:
        """Forward again on every connection, and accept new ones normally."""
        self._blackhole_new = False
        for link in self._links:
            link.flowing.set()

    async def wait_for_accepted(self, count: int, timeout: float) -> None:
        """Until `count` connections were accepted in total (e.g. a client reconnected)."""

        async def until() -> None:
            async with self._accepted:
                await self._accepted.wait_for(lambda: self.accepted >= count)

        try:
            await asyncio.wait_for(until(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"the proxy accepted {self.accepted} connections within {timeout}s, "
                f"expected at least {count}: the client did not reconnect"
            ) from None

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        pipes = [pipe for link in self._links for pipe in link.pipes]
        self.drop()
        for pipe in pipes:
            pipe.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._links) >= self._max_links:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()  # the service is down: the client sees a reset
            return
        link = _Link(client=writer, upstream=upstream_writer)
        if not self._blackhole_new:
            link.flowing.set()
        self._links.add(link)
        tap = self._tap_factory() if self._tap_factory is not None else None
        link.pipes = [
            asyncio.create_task(self._pipe(link, reader, upstream_writer, tap)),
            asyncio.create_task(self._pipe(link, upstream_reader, writer, None)),
        ]
        async with self._accepted:
            self.accepted += 1
            self._accepted.notify_all()

    async def _pipe(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        tap: Tap | None,
    ) -> None:
        action = Action.FORWARD
        try:
            while action in {Action.FORWARD, Action.SILENCE}:
                data = await reader.read(CHUNK_BYTES)
                # A black-hole holds what was read, an end of stream included: the other side
                # must not learn about a close it could not have seen through a partition.
                await link.flowing.wait()
                if link.closed.is_set():
                    return
                if not data:
                    break
                if tap is not None:
                    verdict = tap(data)
                    data, action = verdict.forward, verdict.action
                if data:
                    writer.write(data)
                    await writer.drain()
                if action is Action.SILENCE:
                    link.flowing.clear()  # the link stays open and says nothing, for good
                    action = Action.FORWARD
            if action is Action.HOLD:
                await link.closed.wait()
        except (ConnectionError, OSError):
            pass
        finally:
            # One side ended (EOF, reset, cut): neither protocol survives a half-closed link.
            link.close(reset=False)
            self._links.discard(link)
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
