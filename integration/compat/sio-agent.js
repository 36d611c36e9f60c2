// Drives real Socket.IO clients (npm socket.io-client) for the Rust tests, one JSON
// object per line on stdin and stdout.
//
// In:  {id, op: "connect", client, url}           -> {id, ok, sid, node} after `welcome`
//      {id, op: "emit", client, event, data, ack}  -> {id, ok, answer} (answer with ack)
//      {id, op: "close", client}                   -> {id, ok}
// Out: {event: "recv", client, name, data} for every event a client receives, and
//      {event: "disconnect", client, reason}.
// A client answers a `poll` (an event with acknowledgement) with {client, question}.
"use strict";
const { io } = require("socket.io-client");
const readline = require("node:readline");

const clients = new Map();
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

function connect({ id, client, url }) {
  const socket = io(url, { transports: ["websocket"], reconnection: false, forceNew: true });
  clients.set(client, socket);
  let answered = false;
  const fail = (why) => {
    if (!answered) {
      answered = true;
      out({ id, ok: false, error: String(why) });
    }
  };
  const timer = setTimeout(() => fail("no welcome within 20 s"), 20000);
  socket.onAny((name, ...args) => {
    out({ event: "recv", client, name, data: args.length > 0 ? args[0] : null });
    if (name === "welcome" && !answered) {
      answered = true;
      clearTimeout(timer);
      out({ id, ok: true, sid: args[0].sid, node: args[0].node });
    }
  });
  socket.on("poll", (question, callback) => {
    if (typeof callback === "function") callback({ client, question });
  });
  socket.on("connect_error", (e) => fail(e.message));
  socket.on("disconnect", (reason) => out({ event: "disconnect", client, reason }));
}

async function emit({ id, client, event, data, ack }) {
  const socket = clients.get(client);
  if (!socket) return out({ id, ok: false, error: `no client ${client}` });
  if (!ack) {
    socket.emit(event, data);
    return out({ id, ok: true });
  }
  try {
    const answer = await socket.timeout(20000).emitWithAck(event, data);
    out({ id, ok: true, answer });
  } catch (e) {
    out({ id, ok: false, error: e.message });
  }
}

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const cmd = JSON.parse(line);
  switch (cmd.op) {
    case "connect":
      return connect(cmd);
    case "emit":
      return emit(cmd);
    case "close": {
      const socket = clients.get(cmd.client);
      if (socket) socket.close();
      return out({ id: cmd.id, ok: true });
    }
    default:
      return out({ id: cmd.id, ok: false, error: `unknown op ${cmd.op}` });
  }
}).on("close", () => {
  for (const socket of clients.values()) socket.close();
  process.exit(0);
});
