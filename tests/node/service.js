// A small upstream service in Node.js, using changewatch only through the wire contract:
// celery-node sends the tasks by name, and a celery-node worker of its own receives the
// notifications on its queue. tests/e2e/test_node_client.py runs it against a real worker.
//
// Input (JSON on argv[2]): brokers (every broker of the deployment; the person's is
// chosen by broker_index.js, as the contract says), backend, notifyQueue, deleteSecret, userId, sessions
// ([{sessionId, capturedAt, images}, ...] two of them), malformedSessionId.
// Output: one JSON line "ready" after the analyses, the comparison and the malformed job
// and a forget without a token (the test checks them against `producer result` and the
// rows), then, once "forget" arrives on stdin,
// one JSON line with what forget_person returned.
"use strict";

const crypto = require("crypto");
const readline = require("readline");
const celery = require("celery-node");
const { brokerIndex } = require("./broker_index");

const spec = JSON.parse(process.argv[2]);
// Every message about the person goes to their broker, notifications included.
const broker = spec.brokers[brokerIndex(spec.userId, spec.brokers.length)];
const client = celery.createClient(broker, spec.backend, "changewatch");
const notified = new Map(); // notification_id -> kwargs: deduplicated, at least once

const receiver = celery.createWorker(broker, spec.backend, spec.notifyQueue);
receiver.register("changewatch.notification", (kwargs) => {
  notified.set(kwargs.notification_id, kwargs);
  return "ok";
});
receiver.start();

// A delete token: HMAC-SHA256 over "v1\n<task>\n<id>\n<expires>" (README, schema/authority.py).
function deleteToken(task, id, lifetimeSeconds = 300) {
  const expires = Math.floor(Date.now() / 1000) + lifetimeSeconds;
  const mac = crypto.createHmac("sha256", spec.deleteSecret);
  mac.update(`v1\n${task}\n${id.toLowerCase()}\n${expires}`);
  return `v1.${expires}.${mac.digest("hex")}`;
}

async function call(task, kwargs, timeoutMs = 180000) {
  const result = client.sendTask(task, [], kwargs);
  try {
    return { taskId: result.taskId, status: "SUCCESS", result: await result.get(timeoutMs) };
  } catch (err) {
    return { taskId: result.taskId, status: "FAILURE", error: String(err && err.message) };
  }
}

async function notificationsFor(sessionId, count, timeoutMs = 180000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const mine = [...notified.values()].filter((n) => n.session_id === sessionId);
    if (mine.length >= count || Date.now() > deadline) return mine;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

function line(object) {
  process.stdout.write(JSON.stringify(object) + "\n");
}

async function main() {
  const enrolled = await call("changewatch.enroll_person", { user_id: spec.userId });
  const analyses = [];
  const notifications = [];
  for (const s of spec.sessions) { // one after the other: the second builds on the first
    analyses.push(client.sendTask("changewatch.analyze_session", [], {
      user_id: spec.userId, session_id: s.sessionId, captured_at: s.capturedAt, images: s.images,
    }).taskId);
    notifications.push(...(await notificationsFor(s.sessionId, 1)));
  }
  const comparison = await call("changewatch.compare_sessions", {
    user_id: spec.userId,
    current_session_id: spec.sessions[1].sessionId,
    previous_session_id: spec.sessions[0].sessionId,
  });
  const told = await notificationsFor(spec.sessions[1].sessionId, 2);
  const compared = told.find((n) => n.kind === "comparison") || null;
  const malformed = client.sendTask("changewatch.analyze_session", [], {
    user_id: spec.userId, session_id: spec.malformedSessionId,
    captured_at: spec.sessions[0].capturedAt, images: { front: "s3://bucket/key.jpg" },
  });
  const [refusal] = await notificationsFor(spec.malformedSessionId, 1);
  // Forgetting without a token: refused, and nothing is deleted.
  const unsigned = await call("changewatch.forget_person", { user_id: spec.userId, token: "" });
  line({ event: "ready", enrolled, analyses, notifications, comparison, compared, unsigned,
         malformed: { taskId: malformed.taskId, notification: refusal || null } });

  const input = readline.createInterface({ input: process.stdin });
  for await (const command of input) {
    if (command.trim() !== "forget") continue;
    const forgotten = await call("changewatch.forget_person", {
      user_id: spec.userId, token: deleteToken("changewatch.forget_person", spec.userId),
    });
    line({ event: "forgotten", forgotten });
    break;
  }
  input.close();
  await receiver.whenCurrentJobsFinished();
  client.disconnect();
  receiver.disconnect();
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write(`node service failed: ${err && err.stack}\n`);
  process.exit(1);
});
