// The npm Service Bus SDK as the load of emulator/tests/amqp_durability.rs, which kills the
// emulator with SIGKILL while this runs: senders and peek-lock receivers on queue `k`
// print what the broker acknowledged, one line each, written synchronously so that
// nothing printed is lost when the process ends. A worker stops at its first error (the
// emulator is gone); the process exits once every worker has stopped.
'use strict';

const fs = require('node:fs');
const { ServiceBusClient } = require('@azure/service-bus');

const amqp = process.env.EMULATOR_AMQP;
const cycle = process.env.CYCLE || '0';
const client = new ServiceBusClient(
  `Endpoint=sb://${amqp};SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;`,
  { retryOptions: { maxRetries: 0, timeoutInMs: 5000 } },
);
const out = (line) => fs.writeSync(1, `${line}\n`);
const MAX = 2000;

async function send(s) {
  const sender = client.createSender('k');
  for (let j = 0; j < MAX; j++) {
    const id = `c${cycle}-s${s}-${j}`;
    try {
      await sender.sendMessages({ body: id, messageId: id });
    } catch (e) {
      return;
    }
    out(`sent ${id}`);
  }
}

async function receive() {
  const receiver = client.createReceiver('k', { maxAutoLockRenewalDurationInMs: 0 });
  for (let i = 0; i < MAX; i++) {
    let messages;
    try {
      messages = await receiver.receiveMessages(8, { maxWaitTimeInMs: 1000 });
    } catch (e) {
      return;
    }
    for (const m of messages) {
      out(`completing ${m.messageId}`);
      try {
        await receiver.completeMessage(m);
      } catch (e) {
        return;
      }
      out(`completed ${m.messageId}`);
    }
  }
}

Promise.all([send(0), send(1), send(2), send(3), receive(), receive()]).finally(() => {
  out('done');
  process.exit(0);
});
