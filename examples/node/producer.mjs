// Publish one batch request and print its batch_id. Usage: node producer.mjs [FILE.json]
// Without a file it accepts order 3 of the demo data as its professional (user 6).
import { readFile } from "node:fs/promises";
import { connect, newBatchId, publishRequest } from "./broker.mjs";

export function acceptOrder(orderId, actorId = 6) {
  return {
    batch_id: newBatchId(),
    operation_type: "order_update",
    actor_id: actorId,
    mode: "continue",
    operations: [{ method: "PATCH", resource_id: orderId, data: { status: "accepted" } }],
  };
}

async function main() {
  const path = process.argv[2];
  const request = path ? JSON.parse(await readFile(path, "utf8")) : acceptOrder(3);
  request.batch_id ??= newBatchId();
  const { connection, channel } = await connect();
  try {
    await publishRequest(channel, request, { correlationId: `node-${request.batch_id}` });
    console.log(request.batch_id);
  } finally {
    await connection.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((error) => {
    console.error(`producer: ${error.message}`);
    process.exit(1);
  });
}
