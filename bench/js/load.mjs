// Many socket.io-client v4 connections in one Node process, for bench/realtime.py.
//
// The client is the one the realtime tests pin (tests/js/package-lock.json, installed into
// tests/js/node_modules): one version of it in the repository. The benchmark drives this
// process with JSON lines on stdin and reads one JSON line per answer on stdout:
//
//   {"cmd": "connect", "url", "clients": [{"token", "room"}], "concurrency": 50}
//       opens the connections (websocket transport, as behind a load balancer without sticky
//       sessions), each joining its room -> {"connected": n, "refused": n, "errors": {message: count}}
//   {"cmd": "reset"}     forgets what was measured -> {"reset": true}
//   {"cmd": "report"}    -> {"deliveries", "timed", "histogram": {"<0.1 ms bucket>": count}, "max_ms",
//                            "out_of_order", "reorders": [a few of them], "finals",
//                            "arrivals": {"<message id>:<index>": [ms, ...]}}
//   {"cmd": "exit"} or the end of stdin: disconnects everything and exits.
//
// A `message_delta` carrying `sent_at` (ms since the epoch, written by the benchmark's
// publisher just before it hands the event to Redis) adds `now - sent_at` to the latency
// histogram when it also carries `measured: true`. Other deltas (real replies from the
// model simulator) have their arrival times kept by message and index, to be matched with
// the times their worker wrote them to the reply's Redis stream.

import { createRequire } from "node:module";
import { createInterface } from "node:readline";
import { performance } from "node:perf_hooks";

const require = createRequire(new URL("../../tests/js/package.json", import.meta.url));
const { io } = require("socket.io-client");

const sockets = [];
let stats = fresh();

function fresh() {
  return { deliveries: 0, timed: 0, histogram: new Map(), maxMs: 0, outOfOrder: 0, reorders: [], finals: 0,
           arrivals: new Map(), last: new Map() };
}

function now() {
  return performance.timeOrigin + performance.now();
}

function out(message) {
  process.stdout.write(JSON.stringify(message) + "\n");
}

function onDelta(socketIndex, delta) {
  const arrived = now();
  stats.deliveries += 1;
  // Indices of one reply arrive in order on one connection; anything else is a gap or a reorder.
  const key = `${socketIndex}:${delta.message_id}`;
  const last = stats.last.get(key);
  if (last !== undefined && delta.index !== last + 1) {
    stats.outOfOrder += 1;
    if (stats.reorders.length < 5) {
      const synthetic = "sent_at" in delta;
      stats.reorders.push({ message_id: delta.message_id, after: last, index: delta.index, synthetic });
    }
  }
  stats.last.set(key, delta.index);
  if (typeof delta.sent_at === "number") {
    if (!delta.measured) return;
    const ms = Math.max(0, arrived - delta.sent_at);
    const bucket = Math.floor(ms * 10);
    stats.histogram.set(bucket, (stats.histogram.get(bucket) ?? 0) + 1);
    stats.timed += 1;
    if (ms > stats.maxMs) stats.maxMs = ms;
  } else {
    const id = `${delta.message_id}:${delta.index}`;
    if (!stats.arrivals.has(id)) stats.arrivals.set(id, []);
    stats.arrivals.get(id).push(arrived);
  }
}

function open(url, { token, room }) {
  return new Promise((resolve) => {
    const index = sockets.length;
    const socket = io(url, { auth: { token }, transports: ["websocket"], reconnection: false, forceNew: true,
                             timeout: 30000 });
    sockets.push(socket);
    socket.on("message_delta", (delta) => onDelta(index, delta));
    socket.on("message_received", (message) => {
      if (message.role === "assistant" && message.status === "complete") stats.finals += 1;
    });
    socket.once("connect_error", (err) => resolve(`connect_error: ${err.message}`));
    socket.once("connect", async () => {
      try {
        const ack = await socket.timeout(30000).emitWithAck("join_conversation", { conversationId: room });
        resolve(ack?.success ? null : `join: ${ack?.code ?? JSON.stringify(ack)}`);
      } catch (error) {
        resolve(`join: ${error.message}`);
      }
    });
  });
}

async function connect({ url, clients, concurrency = 50 }) {
  const errors = {};
  let next = 0;
  let connected = 0;
  async function lane() {
    while (next < clients.length) {
      const error = await open(url, clients[next++]);
      if (error) errors[error] = (errors[error] ?? 0) + 1;
      else connected += 1;
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, clients.length) }, lane));
  out({ connected, refused: clients.length - connected, errors });
}

function report() {
  out({ deliveries: stats.deliveries, timed: stats.timed, histogram: Object.fromEntries(stats.histogram),
        max_ms: stats.maxMs, out_of_order: stats.outOfOrder, reorders: stats.reorders, finals: stats.finals,
        arrivals: Object.fromEntries(stats.arrivals),
        connected: sockets.filter((socket) => socket.connected).length });
}

function exit() {
  for (const socket of sockets) socket.disconnect();
  process.stdout.write("", () => process.exit(0));
}

createInterface({ input: process.stdin, crlfDelay: Infinity })
  .on("line", async (line) => {
    if (!line.trim()) return;
    let command;
    try {
      command = JSON.parse(line);
      if (command.cmd === "connect") await connect(command);
      else if (command.cmd === "reset") { stats = fresh(); out({ reset: true }); }
      else if (command.cmd === "report") report();
      else if (command.cmd === "exit") exit();
      else out({ failed: `unknown command ${JSON.stringify(command.cmd)}` });
    } catch (error) {
      out({ failed: String(error?.stack ?? error) });
    }
  })
  .on("close", exit);

out({ hello: true });
