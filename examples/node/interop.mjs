// Run the producer, subscriber and request/reply client against a running batchops (with the
// demo data of docs/contract.md) and check what the contract promises. `make interop` starts
// the service for it. Prints one line per check and "N passed, M failed"; exits 1 on a failure.
import { connect, newBatchId, publishRequest } from "./broker.mjs";
import { acceptOrder } from "./producer.mjs";
import { requestReply } from "./request_reply.mjs";
import { subscribe } from "./subscriber.mjs";

const TIMEOUT_MS = 30000;
const results = { passed: 0, failed: 0 };

function check(name, condition, detail = "") {
  if (condition) results.passed += 1;
  else results.failed += 1;
  console.log(`${condition ? "ok  " : "FAIL"} ${name}${condition ? "" : `: ${detail}`}`);
}

// Events arrive on one subscription; each wait resolves when a matching one has arrived.
class Inbox {
  constructor() {
    this.events = [];
    this.waiters = [];
  }
  add(routingKey, event, properties) {
    this.events.push({ routingKey, event, properties });
    this.waiters = this.waiters.filter((waiter) => !waiter());
  }
  waitFor(predicate, count = 1) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("timed out waiting for events")), TIMEOUT_MS);
      const waiter = () => {
        const found = this.events.filter(predicate);
        if (found.length < count) return false;
        clearTimeout(timer);
        resolve(found);
        return true;
      };
      if (!waiter()) this.waiters.push(waiter);
    });
  }
}

async function partialBatch(channel, inbox) {
  // Professional 1 (user 6) accepts order 3 (theirs, pending) and completes order 9 (theirs,
  // but pending -> completed is not a transition): one success, one CONFLICT.
  const request = {
    batch_id: newBatchId(),
    operation_type: "order_update",
    actor_id: 6,
    operations: [
      { method: "PATCH", resource_id: 3, data: { status: "accepted" } },
      { method: "PATCH", resource_id: 9, data: { status: "completed" } },
    ],
  };
  await publishRequest(channel, request, { correlationId: "interop-partial" });
  const mine = (e) => e.event.batch_id === request.batch_id;
  const [completion] = await inbox.waitFor((e) => mine(e) && e.routingKey.startsWith("batch."));
  const operations = await inbox.waitFor((e) => mine(e) && e.routingKey.startsWith("operation."), 2);
  const byIndex = Object.fromEntries(operations.map((e) => [e.event.index, e]));
  const done = completion.event;
  check("completion routed batch.order_update.partial", completion.routingKey === "batch.order_update.partial", completion.routingKey);
  check("success_rate 50 and progress 100", done.success_rate === 50 && done.progress === 100, JSON.stringify(done));
  check("the completion echoes correlation_id", done.correlation_id === "interop-partial" && completion.properties.correlationId === "interop-partial");
  check("event message_id is the event_id", completion.properties.messageId === done.event_id);
  const success = byIndex[0]?.event;
  const failure = byIndex[1]?.event;
  check("success carries data, no error key", success && success.data?.status === "accepted" && !("error" in success), JSON.stringify(success));
  check("failure carries error, no data key", failure && failure.error?.code === "CONFLICT" && !("data" in failure), JSON.stringify(failure));
  check("error.type is the code's fixed word", failure?.error?.type === "ConflictError" && failure?.status === 409);
  return { request, completion: done };
}

async function republished(channel, request, first) {
  // A second subscription that keeps duplicates: the re-sent completion must be the same event.
  const raw = new Inbox();
  await subscribe(channel, ["batch.order_update.*"], (k, e, p) => raw.add(k, e, p), { dedupe: false });
  await publishRequest(channel, request);
  const [again] = await raw.waitFor((e) => e.event.batch_id === request.batch_id);
  check("re-publishing a batch re-sends its completion, same event_id", again.event.event_id === first.event_id && again.event.status === first.status, JSON.stringify(again.event));
}

async function conflicting(channel, inbox, request) {
  const other = { ...request, mode: "atomic" };
  await publishRequest(channel, other, { correlationId: "interop-conflict" });
  const [rejection] = await inbox.waitFor((e) => e.event.correlation_id === "interop-conflict");
  check("the same batch_id with another body is a CONFLICT rejection", rejection.event.code === "CONFLICT" && rejection.routingKey === "batch.order_update.rejected", JSON.stringify(rejection.event));
}

async function twoUnparseable(channel, inbox) {
  const bytes = Buffer.from("this is not JSON");
  await publishRequest(channel, bytes, { messageId: "bad-1", correlationId: "interop-bad-1" });
  await publishRequest(channel, bytes, { messageId: "bad-2", correlationId: "interop-bad-2" });
  const rejections = await inbox.waitFor((e) => e.event.correlation_id?.startsWith("interop-bad-"), 2);
  const [one, two] = rejections.map((e) => e.event);
  check("unparseable requests are routed batch.unknown.rejected", rejections.every((e) => e.routingKey === "batch.unknown.rejected"));
  check("two different messages get two rejection event_ids", one.event_id !== two.event_id);
  check("each rejection carries its own correlation_id", new Set([one.correlation_id, two.correlation_id]).size === 2);
}

async function main() {
  const { connection, channel } = await connect();
  const inbox = new Inbox();
  // Bind before publishing: events nobody is bound for are not kept.
  await subscribe(channel, ["batch.#", "operation.order_update.*"], (k, e, p) => inbox.add(k, e, p));
  try {
    const { request, completion } = await partialBatch(channel, inbox);
    const reply = await requestReply(channel, acceptOrder(6), TIMEOUT_MS);
    check("request/reply returns the completion", reply.status === "completed" && reply.total_operations === 1, JSON.stringify(reply));
    await republished(channel, request, completion);
    await conflicting(channel, inbox, request);
    await twoUnparseable(channel, inbox);
  } catch (error) {
    check("the scenario ran to the end", false, error.message);
  } finally {
    await connection.close();
  }
  console.log(`${results.passed} passed, ${results.failed} failed`);
  process.exit(results.failed ? 1 : 0);
}

main();
