// Room broadcasts between real Socket.IO clients, for `scripts/bench`: one sender on
// SEND_URL, RECEIVERS receivers on RECV_URL joined to room "bench". The server relays each
// `bench` event to the room as `m`. Sends MESSAGES events, as fast as the slowest receiver
// takes them with at most WINDOW in flight to it (RATE=0; socketioxide drops what overflows
// a socket's buffer, 128 packets by default, so the window is per receiver, not a total),
// or at RATE per second, and prints one JSON line: delivered events/s (over the time to the
// last delivery, so an event lost does not count the wait for it), latency percentiles
// (sender and receivers share this process's clock) and, for the report's plot, up to 1,000
// evenly spaced latencies of the sorted sample (ms). With ROOMS=K > 1 every receiver joins
// rooms "bench-0" .. "bench-(K-1)" instead, and event i goes to room "bench-(i mod K)", so a
// partitioned adapter can spread the rooms over its topics.
"use strict";
const { io } = require("socket.io-client");

const env = process.env;
const receivers = Number(env.RECEIVERS || 4);
const messages = Number(env.MESSAGES || 20000);
const rate = Number(env.RATE || 0);
const windowSize = Number(env.WINDOW || 64);
const deadlineMs = Number(env.DEADLINE_MS || 60000);
const rooms = Number(env.ROOMS || 1);
const roomOf = (i) => (rooms > 1 ? "bench-" + (i % rooms) : undefined);
const pad = "x".repeat(100);
const now = () => performance.timeOrigin + performance.now();

function connect(url) {
  const socket = io(url, { transports: ["websocket"], reconnection: false, forceNew: true });
  return new Promise((resolve, reject) => {
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", reject);
  });
}

async function main() {
  const sockets = await Promise.all(Array.from({ length: receivers }, () => connect(env.RECV_URL)));
  for (const s of sockets) {
    if (rooms > 1) {
      for (let k = 0; k < rooms; k++) await s.timeout(10000).emitWithAck("join", "bench-" + k);
    } else {
      await s.timeout(10000).emitWithAck("join", "bench");
    }
  }
  const sender = await connect(env.SEND_URL);
  const expected = receivers * messages;
  const latencies = [];
  let delivered = 0;
  const got = sockets.map(() => 0);
  let last = 0;
  let finish;
  const finished = new Promise((resolve) => (finish = resolve));
  let wake = null;
  sockets.forEach((s, k) => {
    s.on("m", (m) => {
      const t = now();
      delivered += 1;
      got[k] += 1;
      last = t;
      if (m.i >= messages / 10) latencies.push(t - m.t);
      if (delivered === expected) finish();
      if (wake) {
        const w = wake;
        wake = null;
        w();
      }
    });
  });
  const start = now();
  if (rate === 0) {
    const give_up = start + deadlineMs;
    for (let i = 0; i < messages && now() < give_up; i++) {
      while (i - windowSize >= Math.min(...got) && now() < give_up) {
        await Promise.race([new Promise((r) => (wake = r)), new Promise((r) => setTimeout(r, 100))]);
      }
      sender.emit("bench", { t: now(), i, pad, room: roomOf(i) });
    }
  } else {
    let i = 0;
    await new Promise((resolve) => {
      const tick = setInterval(() => {
        const due = Math.min(messages, Math.floor(((now() - start) / 1000) * rate));
        for (; i < due; i++) sender.emit("bench", { t: now(), i, pad, room: roomOf(i) });
        if (i >= messages) {
          clearInterval(tick);
          resolve();
        }
      }, 2);
    });
  }
  // The deadline timer is cleared once every copy arrived: a pending timer would keep node
  // alive (idle) until it fired, about a minute after the figures are printed.
  let deadline;
  await Promise.race([finished, new Promise((r) => (deadline = setTimeout(r, deadlineMs)))]);
  clearTimeout(deadline);
  latencies.sort((a, b) => a - b);
  const pct = (p) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))] : NaN);
  const seconds = ((delivered > 0 ? last : now()) - start) / 1000;
  const step = Math.max(1, Math.ceil(latencies.length / 1000));
  const samples = latencies.filter((_, k) => k % step === 0 || k === latencies.length - 1);
  console.log(JSON.stringify({ delivered, expected, seconds, rate: delivered / seconds, p50: pct(0.5), p99: pct(0.99), samples }));
  sender.close();
  for (const s of sockets) s.close();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
