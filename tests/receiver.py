"""A webhook receiver for tests: an HTTP/1.1 server on 127.0.0.1 and a free port that answers
each POST as the test scripted it and keeps what it received (written on asyncio streams, so
that nothing of batchops' own HTTP stack judges batchops)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

CONTRACT = Path(__file__).resolve().parents[1] / "docs" / "contract.md"

# A scripted answer that never comes: the connection stays open until the receiver closes.
HANG = "hang"
# A redirect to another path of this receiver, which would answer 200 if it were followed.
REDIRECT = "redirect"


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes


class Receiver:
    def __init__(
        self,
        answers: Sequence[int | str] = (),
        then: int | str = 200,
        *,
        tls: ssl.SSLContext | None = None,
        host_name: str = "127.0.0.1",
    ) -> None:
        """`tls`: serve https; `host_name`: how `url` names 127.0.0.1."""
        self._tls = tls
        self._host_name = host_name
        self._answers = list(answers)
        self._then = then
        self.received: list[Received] = []
        self._arrived = asyncio.Condition()
        self._closing = asyncio.Event()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._tls)
        port = self._server.sockets[0].getsockname()[1]
        scheme = "http" if self._tls is None else "https"
        self.url = f"{scheme}://{self._host_name}:{port}/hooks/batchops"
        return self

    async def __aexit__(
        self, *exc: type[BaseException] | BaseException | TracebackType | None
    ) -> None:
        self._closing.set()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """The first `count` requests, once they arrived."""
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: len(self.received) >= count), timeout
            )
        return self.received[:count]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await reader.readline()).decode("latin-1").split()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            async with self._arrived:
                self.received.append(Received(request_line[1], headers, body))
                self._arrived.notify_all()
            answer = self._answers.pop(0) if self._answers else self._then
            if answer == HANG:
                await self._closing.wait()
                return
            extra = f"Location: {self.url}/elsewhere\r\n" if answer == REDIRECT else ""
            status = 302 if answer == REDIRECT else int(answer)
            writer.write(
                f"HTTP/1.1 {status} Scripted\r\n{extra}Content-Length: 2\r\n"
                "Connection: close\r\n\r\nok".encode()
            )
            await writer.drain()
        finally:
            writer.close()


def signature_is_valid(secret: str, received: Received, tolerance_seconds: int = 300) -> bool:
    """The check a receiver does (docs/contract.md, Webhooks), written apart from batchops'."""
    fields = dict(part.split("=", 1) for part in received.headers["batchops-signature"].split(","))
    timestamp = int(fields["t"])
    if abs(time.time() - timestamp) > tolerance_seconds:
        return False
    signed = str(timestamp).encode() + b"." + received.body
    expected = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"])


def contract_snippet(language: str) -> str:
    """The receiver's verification code in `language` (python, js) as docs/contract.md's
    Webhooks section shows it."""
    text = CONTRACT.read_text(encoding="utf-8")
    section = text[text.index("\n## Webhooks\n") :]
    section = section[: section.index("\n## ", 1)]
    (code,) = re.findall(rf"```{language}\n(.*?)\n```", section, re.DOTALL)
    return str(code)
