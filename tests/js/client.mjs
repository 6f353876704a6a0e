// The official socket.io-client, driven by JSON lines: tests (tests/realtime_clients.py)
// start it as a subprocess, write one command a line on its stdin and read what happens as
// one JSON line per fact on its stdout, so they can assert on exactly what a web client
// written against socket.io-client v4 would see.
//
// Commands (each may carry "socket": a name, so one process can hold several clients;
// "ref" is echoed back on what answers the command):
//   {"cmd": "connect", "socket": "a", "url": "http://...", "auth": {...}, "query": {...},
//    "options": {...}}                          -> {"type": "connect", "sid"} | {"type": "connect_error", "message", "data"}
//   {"cmd": "emit", "socket": "a", "event": "x", "args": [...], "ack": true, "timeout": ms, "ref": 1}
//                                               -> {"type": "ack", "args": [...]} | {"type": "ack_timeout"} | {"type": "sent"}
//   {"cmd": "disconnect", "socket": "a"}         -> {"type": "done"} (after its "disconnect", if it was connected)
//   {"cmd": "exit"} (or the end of stdin)       -> disconnects every socket, then exits
// and, unasked, for every event the server sends:
//   {"type": "event", "socket": "a", "event": "message_delta", "args": [...], "t": <ms since the epoch>}
//   {"type": "disconnect", "socket": "a", "reason": "io server disconnect"}
// A command the driver cannot follow answers {"type": "error", "message"}.

import { createInterface } from "node:readline";
import { performance } from "node:perf_hooks";
import { io } from "socket.io-client";

const sockets = new Map();

function now() {
  return performance.timeOrigin + performance.now();
}

function out(fact) {
  process.stdout.write(JSON.stringify(fact) + "\n");
}

function forget(name) {
  const socket = sockets.get(name);
  if (!socket) return;
  socket.removeAllListeners();
  socket.offAny();
  socket.disconnect();
  sockets.delete(name);
}

function connect({ socket: name = "default", ref, url, auth, query, options = {} }) {
  forget(name);
  // One client, one connection: no reconnection and no multiplexing, so what a test
  // sees is what this connection did.
  const socket = io(url, { reconnection: false, forceNew: true, timeout: 10000, ...options,
                           ...(auth !== undefined && { auth }), ...(query !== undefined && { query }) });
  sockets.set(name, socket);
  socket.once("connect", () => out({ type: "connect", socket: name, ref, sid: socket.id }));
  socket.on("connect_error", (err) =>
    out({ type: "connect_error", socket: name, ref, message: err.message, data: err.data ?? null }));
  socket.on("disconnect", (reason, details) =>
    out({ type: "disconnect", socket: name, reason, description: details?.description?.message ?? null }));
  socket.onAny((event, ...args) => out({ type: "event", socket: name, event, args, t: now() }));
}

function emit({ socket: name = "default", ref, event, args = [], ack = true, timeout = 10000 }) {
  const socket = sockets.get(name);
  if (!socket) return out({ type: "error", socket: name, ref, message: `no socket named ${name}` });
  if (!ack) {
    socket.emit(event, ...args);
    return out({ type: "sent", socket: name, ref });
  }
  socket.timeout(timeout).emit(event, ...args, (err, ...answer) =>
    out(err ? { type: "ack_timeout", socket: name, ref } : { type: "ack", socket: name, ref, args: answer, t: now() }));
}

function disconnect({ socket: name = "default", ref }) {
  // A connected socket reports its "disconnect" (reason "io client disconnect") first.
  sockets.get(name)?.disconnect();
  sockets.delete(name);
  out({ type: "done", socket: name, ref });
}

function exit() {
  for (const socket of sockets.values()) socket.disconnect();
  sockets.clear();
  // Let stdout drain before leaving.
  process.stdout.write("", () => process.exit(0));
}

const commands = { connect, emit, disconnect, exit };

createInterface({ input: process.stdin, crlfDelay: Infinity })
  .on("line", (line) => {
    if (!line.trim()) return;
    let command;
    try {
      command = JSON.parse(line);
    } catch (error) {
      return out({ type: "error", message: `not JSON: ${error.message}` });
    }
    const run = commands[command.cmd];
    if (!run) return out({ type: "error", ref: command.ref, message: `unknown command ${JSON.stringify(command.cmd)}` });
    try {
      run(command);
    } catch (error) {
      out({ type: "error", socket: command.socket, ref: command.ref, message: String(error?.stack ?? error) });
    }
  })
  .on("close", exit);

out({ type: "ready", version: process.version });
