"""structlog set-up, done once by each entrypoint: JSON in production, colours on a TTY."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable

import structlog


def configure_logging(
    level: str = "INFO", fmt: str = "auto", *, libraries: str = "WARNING"
) -> None:
    """structlog for our lines, and the standard library's loggers (uvicorn, aio-pika, aiormq,
    asyncpg, alembic) through the same processors and renderer: every line is JSON when
    stderr is not a terminal. Library lines below `libraries` (and below `level`) are dropped:
    a one-shot command says what went wrong in its own one line."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if not use_console:
        shared.append(structlog.processors.format_exc_info)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    _route_standard_logging(level, libraries, shared, renderer)


def _route_standard_logging(
    level: str,
    libraries: str,
    shared: list[structlog.typing.Processor],
    renderer: structlog.typing.Processor,
) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler.addFilter(_lost_broker_connection_without_traceback)
    root.addHandler(handler)
    # Libraries chatter at INFO (every connection, every server start): warnings and worse.
    root.setLevel(max(logging.getLevelName(level.upper()), logging.getLevelName(libraries)))
    # uvicorn configures its own loggers only when given a log_config; we give it none, so its
    # lines propagate here. Python's warnings become log lines too.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.captureWarnings(True)


# An exception of these kinds, logged by the broker client, is a lost connection (a node
# stopped, a network cut): its message says so, and the robust connection reconnects.
_CONNECTION_LOSSES = (ConnectionError, EOFError, OSError, asyncio.CancelledError)


def _lost_broker_connection_without_traceback(record: logging.LogRecord) -> bool:
    """aio-pika and aiormq log each lost broker connection with one or two tracebacks that say
    nothing their message does not; several per node restart would bury the service's own
    lines. The line stays, its traceback goes."""
    if record.name.startswith(("aiormq", "aio_pika")) and record.exc_info:
        exc = record.exc_info[1]
        if isinstance(exc, _CONNECTION_LOSSES):
            record.exc_info = None
            record.exc_text = None
    return True


class LogThrottle:
    """Repeated warnings as one line per event per `interval` seconds: the line after a quiet
    spell says how many were suppressed in between. For faults that repeat while they last
    (a broker away, a transaction refused again and again), where a line per occurrence would
    bury everything else."""

    def __init__(
        self,
        logger: structlog.typing.FilteringBoundLogger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, event: str, **fields: object) -> None:
        if self._admit(event, fields):
            self._log.warning(event, **fields)

    def error(self, event: str, **fields: object) -> None:
        if self._admit(event, fields):
            self._log.error(event, **fields)

    def _admit(self, event: str, fields: dict[str, object]) -> bool:
        now = self._clock()
        last = self._last.get(event)
        if last is not None and now - last < self._interval:
            self._suppressed[event] = self._suppressed.get(event, 0) + 1
            return False
        self._last[event] = now
        suppressed = self._suppressed.pop(event, 0)
        if suppressed:
            fields["suppressed"] = suppressed
        return True
