// A cluster emitter in Node.js: orders for the sockets of socketioxide servers running the
// backplane's adapter, published with the current npm Service Bus SDK (`@azure/service-bus`,
// AMQP), so mixed stacks can publish. The format is documented in
// backplane/src/socketio/emitter.rs; this script is what a Node.js worker would do.
//
// Env: CONNECTION_STRING (the SDK's, UseDevelopmentEmulator=true for the emulator), TOPIC,
// NS (default "/"), ORDERS (a JSON array of orders, sent in order, each awaited).
// Prints "sent N".
'use strict';

const crypto = require('node:crypto');
const { ServiceBusClient } = require('@azure/service-bus');

function u32(n) {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}
function str(s) {
  const b = Buffer.from(s, 'utf8');
  return Buffer.concat([u32(b.length), b]);
}

// Envelope v1 with one broadcast event (integration/compat/envelope.js documents it).
function envelope(origin, seq, payload) {
  const seqBytes = Buffer.alloc(8);
  seqBytes.writeBigUInt64BE(BigInt(seq));
  return Buffer.concat([
    Buffer.from([1]), str(origin), u32(1),
    Buffer.from([1]), seqBytes,
    Buffer.from([1]), u32(0), u32(0),
    u32(payload.length), payload,
  ]);
}

// The adapter's emitter frame: 0x04 | namespace length (u16 BE) | namespace | JSON order.
function emitFrame(ns, order) {
  const name = Buffer.from(ns, 'utf8');
  const len = Buffer.alloc(2);
  len.writeUInt16BE(name.length);
  return Buffer.concat([Buffer.from([4]), len, name, Buffer.from(JSON.stringify(order), 'utf8')]);
}

async function main() {
  const { CONNECTION_STRING, TOPIC } = process.env;
  const ns = process.env.NS || '/';
  const orders = JSON.parse(process.env.ORDERS || '[]');
  // A new origin per run (the servers number each origin's events from 1); an origin id is
  // 1-40 letters, digits, '-' or '_'.
  const origin = `emitter-js-${crypto.randomBytes(12).toString('hex')}`;
  const client = new ServiceBusClient(CONNECTION_STRING);
  const sender = client.createSender(TOPIC);
  try {
    let seq = 1;
    for (const order of orders) {
      // Unpartitioned: every order goes to the app's first topic.
      await sender.sendMessages({
        body: envelope(origin, seq++, emitFrame(ns, order)),
        contentType: 'application/octet-stream',
        subject: 'bp-all',
        applicationProperties: { bp_origin: origin },
      });
    }
    console.log(`sent ${orders.length}`);
  } finally {
    await sender.close();
    await client.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
