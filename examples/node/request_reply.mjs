// Request/reply: publish a batch with reply_to and a correlation_id, and wait for its
// completion (or rejection) on a private queue. Usage: node request_reply.mjs [ORDER_ID]
import { randomUUID } from "node:crypto";
import { connect, publishRequest } from "./broker.mjs";
import { acceptOrder } from "./producer.mjs";

export async function requestReply(channel, request, timeoutMs = 30000) {
  // The completion comes through the default exchange to this queue, with our correlation_id.
  const { queue } = await channel.assertQueue("", { exclusive: true, autoDelete: true });
  const correlationId = randomUUID();
  const reply = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no completion in time")), timeoutMs);
    channel.consume(
      queue,
      (message) => {
        if (message.properties.correlationId !== correlationId) return; // not ours: drop
        clearTimeout(timer);
        resolve(JSON.parse(message.content.toString("utf8")));
      },
      { noAck: true },
    );
  });
  await publishRequest(channel, request, { correlationId, replyTo: queue });
  return reply;
}

async function main() {
  const orderId = Number(process.argv[2] ?? 6);
  const { connection, channel } = await connect();
  try {
    const completion = await requestReply(channel, acceptOrder(orderId));
    console.log(JSON.stringify(completion, null, 2));
  } finally {
    await connection.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((error) => {
    console.error(`request_reply: ${error.message}`);
    process.exit(1);
  });
}
