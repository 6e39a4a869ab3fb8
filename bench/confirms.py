"""How many publisher confirms per second a broker gives: persistent messages published to a
fresh quorum queue (what the work queue is) with confirms, a number of them in flight at once.

    python -m bench.confirms                                   # BATCHOPS_AMQP_URL
    python -m bench.confirms --amqp-url 'amqp://…@n1/,amqp://…@n2/,amqp://…@n3/'
    python -m bench.confirms --messages 20000 --in-flight 1 32 256 --size 2048

Prints one JSON line per in-flight level; the queue is deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid

import aio_pika

from publisher import connect, publish_confirmed


async def measure(amqp_url: str, messages: int, in_flight: int, size: int) -> dict[str, object]:
    connection = await connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        queue = f"bench-confirms-{uuid.uuid4().hex[:8]}"
        await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
        body = os.urandom(size // 2).hex().encode()
        window = asyncio.Semaphore(in_flight)

        async def one() -> None:
            async with window:
                message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
                await publish_confirmed(channel.default_exchange, message, queue, mandatory=True)

        began = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(messages)))
        seconds = time.perf_counter() - began
        await channel.queue_delete(queue)
    finally:
        await connection.close()
    return {
        "confirms_per_s": round(messages / seconds, 1),
        "messages": messages,
        "in_flight": in_flight,
        "size_bytes": size,
        "seconds": round(seconds, 2),
        "nodes": amqp_url.count(",") + 1,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.confirms", description=__doc__)
    parser.add_argument(
        "--amqp-url",
        default=os.environ.get("BATCHOPS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
    )
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--size", type=int, default=2048, help="body bytes (a batch request)")
    args = parser.parse_args(argv)
    for level in args.in_flight:
        # Sequential confirms are slow: fewer of them give the same rate.
        count = args.messages if level > 1 else max(1, args.messages // 10)
        print(json.dumps(asyncio.run(measure(args.amqp_url, count, level, args.size))))


if __name__ == "__main__":
    main()
