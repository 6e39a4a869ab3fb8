// What every batchops client needs: the broker URL, the namespace and the names built from it
// (docs/contract.md, "Topology"), and a confirmed, mandatory publish.
import { randomUUID } from "node:crypto";
import amqp from "amqplib";

export const AMQP_URL = process.env.BATCHOPS_AMQP_URL ?? "amqp://guest:guest@localhost:5672/";
export const NAMESPACE = process.env.BATCHOPS_NAMESPACE ?? "batchops";
export const REQUESTS = `${NAMESPACE}.requests`; // topic exchange: routing key = operation_type
export const RESULTS = `${NAMESPACE}.results`; // topic exchange of every event

// RabbitMQ refuses a user_id other than the connection's own user: send exactly that one.
export const BROKER_USER = decodeURIComponent(new URL(AMQP_URL).username || "guest");

export async function connect() {
  const connection = await amqp.connect(AMQP_URL);
  const channel = await connection.createConfirmChannel();
  return { connection, channel };
}

export function newBatchId() {
  return randomUUID();
}

// Publish a batch request: resolves once the broker confirmed it, rejects when the broker
// nacks it or returns it unroutable (docs/contract.md, "AMQP properties").
export function publishRequest(channel, body, { correlationId, replyTo, messageId } = {}) {
  const bytes = Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
  const routingKey = Buffer.isBuffer(body) ? "unknown" : body.operation_type;
  return new Promise((resolve, reject) => {
    const onReturn = (message) => {
      if (message.properties.messageId === (messageId ?? body.batch_id)) {
        reject(new Error(`request returned unroutable: is the service's topology declared?`));
      }
    };
    channel.once("return", onReturn);
    channel.publish(
      REQUESTS,
      routingKey,
      bytes,
      {
        mandatory: true,
        persistent: true, // delivery_mode 2
        contentType: "application/json",
        type: "batchops.request.v1",
        userId: BROKER_USER, // the one property the service requires
        messageId: messageId ?? body.batch_id,
        correlationId,
        replyTo,
      },
      (error) => {
        channel.removeListener("return", onReturn);
        if (error) reject(new Error("the broker did not confirm the request (nack)"));
        else resolve();
      },
    );
  });
}
