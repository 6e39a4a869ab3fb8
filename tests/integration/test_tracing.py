"""Optional tracing: the producer's trace continues through the consumer to every event."""

from __future__ import annotations

import json
from collections.abc import Iterator

import aio_pika
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from consumer.config import Settings
from contracts import BatchRequest
from publisher import BatchPublisher
from tests.integration.helpers import batch, patch
from tests.support import EventLog

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    # The global provider can be set once per process; every test shares it and clears it.
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


@pytest.mark.usefixtures("service")
class TestTracePropagation:
    async def test_batch_and_operation_spans_join_the_producers_trace_and_events_carry_it(
        self, settings: Settings, events: EventLog, spans: InMemorySpanExporter
    ) -> None:
        request = BatchRequest.model_validate_json(
            json.dumps(batch(6, patch(3, status="accepted"), patch(6, notes="n")))
        )
        headers: list[dict[str, object]] = []
        connection = await aio_pika.connect_robust(settings.amqp_url)
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(settings.topology.results_exchange, "batch.#")
        tracer = trace.get_tracer("producer")
        try:
            with tracer.start_as_current_span("producer") as producer:
                async with BatchPublisher(settings.amqp_url, namespace=settings.namespace) as pub:
                    await pub.publish(request)
            trace_id = producer.get_span_context().trace_id
            await events.completion(request.batch_id)
            async with queue.iterator() as messages:
                async for message in messages:
                    async with message.process():
                        headers.append(dict(message.headers or {}))
                    break
        finally:
            await connection.close()

        finished = [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
        names = sorted(s.name for s in finished)
        assert names == ["batchops.batch", "batchops.operation", "batchops.operation", "producer"]
        batch_span = next(s for s in finished if s.name == "batchops.batch")
        assert batch_span.attributes is not None
        assert batch_span.attributes["batch_id"] == str(request.batch_id)
        traceparent = str(headers[0]["traceparent"])
        assert traceparent.split("-")[1] == f"{trace_id:032x}", "the event continues the trace"
