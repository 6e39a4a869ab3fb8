"""Every log line is JSON when stderr is not a terminal: ours, and the standard library's
(uvicorn, aio-pika, aiormq, asyncpg), exceptions included."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from consumer.log_config import configure_logging


@pytest.fixture(autouse=True)
def restore_logging() -> object:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def lines(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_library_lines_and_ours_are_json_with_logger_level_and_time(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json")
    logging.getLogger("aiormq.connection").warning("Connection attempt to %s failed", "x")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    structlog.get_logger("consumer").info("consuming", queue="q")

    warning, failure, ours = lines(capsys.readouterr().err)

    assert warning["event"] == "Connection attempt to x failed"
    assert warning["logger"] == "aiormq.connection"
    assert warning["level"] == "warning"
    assert "timestamp" in warning
    assert failure["logger"] == "uvicorn.error"
    assert "RuntimeError: boom" in str(failure["exception"])
    assert ours == {**ours, "event": "consuming", "queue": "q", "level": "info"}


def test_library_chatter_below_the_threshold_is_dropped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json", libraries="CRITICAL")
    logging.getLogger("aiormq.connection").error("error when creating transport")
    logging.getLogger("asyncpg").info("connected")

    assert capsys.readouterr().err == ""
