"""The services run on uvloop where it is installed, on asyncio's loop when
BATCHOPS_EVENT_LOOP=asyncio says so, and refuse to start when uvloop is asked for and missing."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable

import pytest

from consumer.entrypoints.event_loop import loop_factory
from consumer.entrypoints.exits import EXIT_BAD_INPUT, CommandFailed
from tests.e2e.conftest import ServeProcess


def consuming_line(service: ServeProcess) -> dict[str, object]:
    lines = [line for line in service.log().splitlines() if '"consuming"' in line]
    found: dict[str, object] = json.loads(lines[0])
    return found


@pytest.mark.parametrize(("setting", "loop"), [(None, "uvloop"), ("asyncio", "asyncio")])
async def test_consume_runs_on_the_loop_the_setting_names(
    serve: Callable[..., ServeProcess], setting: str | None, loop: str
) -> None:
    service = serve("consume", **({"BATCHOPS_EVENT_LOOP": setting} if setting else {}))
    await service.wait_for_log('"consuming"')

    assert consuming_line(service)["event_loop"] == loop
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(timeout=20) == 0


class TestLoopFactory:
    def test_asyncio_is_the_default_loop(self) -> None:
        assert loop_factory("asyncio") is None

    def test_auto_and_uvloop_are_uvloop_when_it_is_installed(self) -> None:
        import uvloop

        assert loop_factory("auto") is uvloop.new_event_loop
        assert loop_factory("uvloop") is uvloop.new_event_loop

    def test_without_uvloop_auto_falls_back_and_uvloop_is_refused(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "uvloop", None)  # what a missing module looks like

        assert loop_factory("auto") is None
        with pytest.raises(CommandFailed, match="uvloop is not installed") as refused:
            loop_factory("uvloop")
        assert refused.value.exit_code == EXIT_BAD_INPUT
