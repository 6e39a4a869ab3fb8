"""The HTTP API served by uvicorn inside the service's own event loop (`serve`, and `consume`'s
probes and metrics), on a socket the service bound itself."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator

import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.config import Settings
from consumer.entrypoints.http.app import ApiContext, create_app
from consumer.entrypoints.http.rate_limits import RateLimits
from consumer.entrypoints.queue_watch import QueueWatch
from consumer.service_layer.job_control import JobControl
from publisher import BatchPublisher


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside our loop: the service, not uvicorn, owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def api_context(
    settings: Settings,
    engine: AsyncEngine,
    job_control: JobControl,
    queues: QueueWatch | None,
    readiness: dict[str, Callable[[], bool]],
) -> ApiContext:
    """What the API's routes need, from the settings and the service's own parts."""
    return ApiContext(
        engine=engine,
        publisher=BatchPublisher(
            settings.amqp_url,
            namespace=settings.namespace,
            delivery_limit=settings.delivery_limit,
        ),
        max_body_bytes=settings.max_body_bytes,
        readiness=readiness,
        max_operations=settings.max_operations,
        job_control=job_control,
        amqp_url=settings.amqp_url,
        topology=settings.topology,
        queues=queues,
        rate_limits=RateLimits(submit=settings.rate_limit_submit, read=settings.rate_limit_read),
        allow_private_callbacks=settings.webhook_allow_private,
    )


async def serve(
    context: ApiContext, sock: socket.socket, *, probes_only: bool = False
) -> tuple[EmbeddedServer, asyncio.Task[None]]:
    """Serve the API on `sock` once uvicorn has started; the task ends when the server's
    `should_exit` is set."""
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        create_app(context, probes_only=probes_only),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    server = EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="http")
    while not server.started:
        if task.done():
            task.result()  # raises why it could not start
            raise RuntimeError(f"the HTTP API could not listen on port {port}")
        await asyncio.sleep(0.02)
    return server, task
