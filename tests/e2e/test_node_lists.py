"""The console script given several broker nodes, the first of them down: `serve` starts on the
next one, `publish --wait` gets its completion through it and `status` reads the queues there;
a malformed list is a configuration error (exit 2), not a broker failure."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import yarl

from tests.e2e.conftest import ServeProcess, run_cli
from tests.faults.pgserver import free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "order_update.json"


@pytest.fixture
def node_list_env(cli_env: dict[str, str]) -> dict[str, str]:
    """The test's broker as the second node of a list whose first node answers nowhere."""
    broker = yarl.URL(cli_env["BATCHOPS_AMQP_URL"])
    down = broker.with_host("127.0.0.1").with_port(free_port())
    return {**cli_env, "BATCHOPS_AMQP_URL": f"{down},{broker}"}


class TestNodeLists:
    async def test_serve_and_publish_go_to_the_node_that_answers(
        self,
        node_list_env: dict[str, str],
        cli_env: dict[str, str],
        serve: Callable[[], ServeProcess],
    ) -> None:
        cli_env.update(node_list_env)  # `serve` starts with the test's environment
        service = serve()
        await service.wait_for_log('"consuming"')

        published = run_cli(node_list_env, "publish", str(EXAMPLE), "--wait", "--timeout", "30")

        assert published.returncode == 0, published.stderr
        assert "PARTIAL" in published.stdout
        service.process.send_signal(signal.SIGTERM)
        assert service.process.wait(timeout=20) == 0

    def test_a_malformed_node_list_is_a_configuration_error(self, cli_env: dict[str, str]) -> None:
        env = {**cli_env, "BATCHOPS_AMQP_URL": f"{cli_env['BATCHOPS_AMQP_URL']},rabbit-1:5672"}

        result = run_cli(env, "publish", str(EXAMPLE))

        assert result.returncode == 2, result.stderr
        assert "amqp" in result.stderr

    def test_status_reads_the_queues_through_the_node_that_answers(
        self, node_list_env: dict[str, str]
    ) -> None:
        result = run_cli(node_list_env, "status", "--json")

        assert result.returncode == 0, result.stderr
        assert [queue["name"] for queue in json.loads(result.stdout)["queues"]]
