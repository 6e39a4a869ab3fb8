// Subscribe to events: a private queue bound to the results exchange with routing-key
// patterns, de-duplicated on event_id (delivery is at-least-once).
// Usage: node subscriber.mjs ['batch.#' 'operation.*.failed' ...]   (Ctrl-C stops)
import { connect, RESULTS } from "./broker.mjs";

export async function subscribe(channel, patterns, onEvent, { dedupe = true } = {}) {
  const { queue } = await channel.assertQueue("", { exclusive: true, autoDelete: true });
  for (const pattern of patterns) await channel.bindQueue(queue, RESULTS, pattern);
  const seen = new Set();
  await channel.consume(
    queue,
    (message) => {
      const event = JSON.parse(message.content.toString("utf8"));
      if (!dedupe || !seen.has(event.event_id)) {
        seen.add(event.event_id);
        onEvent(message.fields.routingKey, event, message.properties);
      }
    },
    { noAck: true },
  );
  return queue;
}

async function main() {
  const patterns = process.argv.length > 2 ? process.argv.slice(2) : ["#"];
  const { channel } = await connect();
  await subscribe(channel, patterns, (routingKey, event) => {
    const what = event.status === "rejected" ? event.code : event.status;
    console.log(`${routingKey} ${event.batch_id} ${what} event_id=${event.event_id}`);
  });
  console.error(`subscribed to ${patterns.join(", ")} on ${RESULTS}`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((error) => {
    console.error(`subscriber: ${error.message}`);
    process.exit(1);
  });
}
