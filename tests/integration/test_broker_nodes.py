"""Connections to a list of broker nodes, against the real broker: three TCP proxies in front
of it stand for three nodes, and dropping a proxy's connections is a node going away."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aio_pika
import pytest
import yarl

from consumer.config import Settings
from contracts import BatchRequest
from publisher import BatchPublisher, connect, connect_robust
from tests.faults.pgserver import free_port
from tests.faults.proxy import TcpProxy
from tests.integration.helpers import batch, patch

RECONNECT = {"reconnect_interval": "0.1"}  # aio-pika waits 5 s between attempts by default

# aiormq before 7 leaves the socket of a connection the peer reset to the garbage collector,
# which reports it as unclosed: the lowest versions pyproject.toml allows (`make floors`) meet
# that here, where proxies reset connections on purpose.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:Exception ignored in. <function StreamWriter.__del__"
    ":pytest.PytestUnraisableExceptionWarning"
)


@contextlib.asynccontextmanager
async def nodes(settings: Settings, count: int = 3) -> AsyncIterator[list[TcpProxy]]:
    url = yarl.URL(settings.amqp_url)
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(TcpProxy(url.host or "127.0.0.1", url.port or 5672))
            for _ in range(count)
        ]


def node_list(settings: Settings, ports: list[int]) -> str:
    url = yarl.URL(settings.amqp_url).with_host("127.0.0.1")
    return ",".join(str(url.with_port(port).update_query(RECONNECT)) for port in ports)


def accepted(proxies: list[TcpProxy]) -> list[int]:
    return [proxy.accepted for proxy in proxies]


class TestRobustConnectionMovesOnToTheNextNode:
    async def test_each_reconnect_goes_to_the_next_node_round_the_list(
        self, settings: Settings
    ) -> None:
        async with nodes(settings) as proxies:
            connection = await connect_robust(node_list(settings, [p.port for p in proxies]))
            try:
                assert accepted(proxies) == [1, 0, 0]
                for lost, following, expected in (
                    (0, 1, [1, 1, 0]),
                    (1, 2, [1, 1, 1]),
                    (2, 0, [2, 1, 1]),
                ):
                    proxies[lost].drop()
                    await proxies[following].wait_for_accepted(expected[following], timeout=10)
                    await connection.connected.wait()
                    assert accepted(proxies) == expected
            finally:
                await connection.close()

    async def test_the_first_connection_skips_a_node_that_is_down(self, settings: Settings) -> None:
        async with nodes(settings, 1) as [proxy]:
            url = node_list(settings, [free_port(), proxy.port])
            robust = await connect_robust(url)
            plain = await connect(url)
            await robust.close()
            await plain.close()
            assert proxy.accepted == 2

    async def test_no_node_answering_raises_the_connection_error(self) -> None:
        url = ",".join(f"amqp://guest:guest@127.0.0.1:{free_port()}/" for _ in range(2))
        with pytest.raises(ConnectionError):
            await connect_robust(url)
        with pytest.raises(ConnectionError):
            await connect(url)


class TestPublisherAcrossNodes:
    async def test_the_publisher_goes_on_through_the_next_node_after_losing_its_own(
        self, settings: Settings
    ) -> None:
        async with nodes(settings, 2) as proxies:
            url = node_list(settings, [p.port for p in proxies])
            async with BatchPublisher(url, namespace=settings.namespace) as publisher:
                proxies[0].drop()
                await proxies[1].wait_for_accepted(1, timeout=10)
                request = batch(6, patch(3, notes="through the second node"))
                await publisher.publish(BatchRequest.model_validate(request))

            connection = await aio_pika.connect(settings.amqp_url)
            try:
                channel = await connection.channel()
                queue = await channel.get_queue(settings.topology.requests_queue, ensure=False)
                message = await queue.get(no_ack=True, timeout=10)
                assert message is not None
                assert message.message_id == request["batch_id"]
                assert message.user_id == yarl.URL(settings.amqp_url).user
            finally:
                await connection.close()
