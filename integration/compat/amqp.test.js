// The current npm Service Bus SDK, `@azure/service-bus` 7.9.5 (AMQP 1.0 over rhea), drives
// the emulator's AMQP listener unchanged: a connection string with
// UseDevelopmentEmulator=true is all it is given. Entities come from the emulator's
// --config file (amqp-entities.json); REST is used only to show both surfaces share one
// broker, and to move the manual clock. Run by emulator/tests/amqp_sdks.rs.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { ServiceBusClient, isServiceBusError } = require('@azure/service-bus');

const amqp = process.env.EMULATOR_AMQP;
const rest = process.env.EMULATOR_URL;
if (!amqp || !rest) throw new Error('EMULATOR_AMQP and EMULATOR_URL must be set');
const connectionString = (key = 'SAS_KEY_VALUE') =>
  `Endpoint=sb://${amqp};SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=${key};UseDevelopmentEmulator=true;`;

/** A SAS token for the REST surface, signed as every Service Bus client signs it. */
function sas(uri) {
  const expiry = Math.floor(Date.now() / 1000) + 3600;
  const resource = encodeURIComponent(uri);
  const signature = crypto.createHmac('sha256', 'SAS_KEY_VALUE').update(`${resource}\n${expiry}`).digest('base64');
  return `SharedAccessSignature sr=${resource}&sig=${encodeURIComponent(signature)}&se=${expiry}&skn=RootManageSharedAccessKey`;
}
function restCall(method, path, init = {}) {
  return fetch(`${rest}${path}`, { method, ...init, headers: { Authorization: sas(`${rest}/`), ...(init.headers || {}) } });
}
const wait = { maxWaitTimeInMs: 3000 };

let client;
test.before(() => { client = new ServiceBusClient(connectionString()); });
test.after(async () => { await client.close(); });

test('send (single, array, batch), peek-lock, complete; properties round-trip', async () => {
  const sender = client.createSender('js-queue');
  const when = new Date(Date.UTC(2024, 0, 2, 3, 4, 5));
  await sender.sendMessages({
    body: 'hello', messageId: 'm-1', correlationId: 'c-1', subject: 'greeting', contentType: 'text/plain',
    replyTo: 'back', to: 'someone', timeToLive: 3_600_000,
    applicationProperties: { color: 'red', n: 42, big: 2 ** 40, ratio: 2.5, flag: true, when, nothing: null },
  });
  await sender.sendMessages([{ body: 'a1' }, { body: 'a2' }]);
  const batch = await sender.createMessageBatch();
  assert.ok(batch.tryAddMessage({ body: { json: true } }));
  await sender.sendMessages(batch);
  await sender.close();

  const receiver = client.createReceiver('js-queue');
  const got = [];
  while (got.length < 4) {
    const more = await receiver.receiveMessages(4 - got.length, wait);
    assert.ok(more.length > 0, `received ${got.length} of 4`);
    got.push(...more);
  }
  const [first] = got;
  assert.equal(first.body, 'hello');
  assert.equal(first.messageId, 'm-1');
  assert.equal(first.correlationId, 'c-1');
  assert.equal(first.subject, 'greeting');
  assert.equal(first.contentType, 'text/plain');
  assert.equal(first.replyTo, 'back');
  assert.equal(first.to, 'someone');
  assert.equal(first.timeToLive, 3_600_000);
  assert.equal(first.deliveryCount, 0);
  assert.equal(first.sequenceNumber.toNumber(), 1);
  assert.match(first.lockToken, /^[0-9a-f-]{36}$/);
  assert.ok(first.lockedUntilUtc > new Date());
  assert.ok(first.enqueuedTimeUtc <= new Date());
  const p = first.applicationProperties;
  assert.deepEqual([p.color, p.n, p.big, p.ratio, p.flag], ['red', 42, 2 ** 40, 2.5, true]);
  assert.equal(new Date(p.when).getTime(), when.getTime());
  // A null has no REST text; over AMQP it comes back as sent.
  assert.strictEqual(p.nothing, null);
  assert.deepEqual(got.slice(1).map((m) => m.body), ['a1', 'a2', { json: true }]);
  assert.ok(got.slice(1).every((m) => typeof m.messageId === 'string' && m.messageId.length > 0),
    'the broker gives a message sent without an id one of its own');
  for (const m of got) await receiver.completeMessage(m);
  assert.deepEqual(await receiver.receiveMessages(1, { maxWaitTimeInMs: 500 }), []);
  await receiver.close();
});

test('abandon redelivers with a higher count; MaxDeliveryCount moves it to the dead-letter queue', async () => {
  await client.createSender('js-retry').sendMessages({ body: 'retry me' });
  const receiver = client.createReceiver('js-retry');
  const [one] = await receiver.receiveMessages(1, wait);
  assert.equal(one.deliveryCount, 0);
  await receiver.abandonMessage(one);
  const [two] = await receiver.receiveMessages(1, wait);
  assert.equal(two.deliveryCount, 1);
  await receiver.abandonMessage(two); // js-retry has MaxDeliveryCount 2
  assert.deepEqual(await receiver.receiveMessages(1, { maxWaitTimeInMs: 500 }), []);
  const dlq = client.createReceiver('js-retry', { subQueueType: 'deadLetter' });
  const [dead] = await dlq.receiveMessages(1, wait);
  assert.equal(dead.body, 'retry me');
  assert.equal(dead.deadLetterReason, 'MaxDeliveryCountExceeded');
  await dlq.completeMessage(dead);
  await Promise.all([receiver.close(), dlq.close()]);
});

test('dead-letter with a reason and a description; receive-and-delete from the dead-letter queue', async () => {
  await client.createSender('js-dead').sendMessages({ body: 'poison' });
  const receiver = client.createReceiver('js-dead');
  const [m] = await receiver.receiveMessages(1, wait);
  await receiver.deadLetterMessage(m, { deadLetterReason: 'Bad', deadLetterErrorDescription: 'really bad' });
  const dlq = client.createReceiver('js-dead', { subQueueType: 'deadLetter', receiveMode: 'receiveAndDelete' });
  const [dead] = await dlq.receiveMessages(1, wait);
  assert.equal(dead.body, 'poison');
  assert.equal(dead.deadLetterReason, 'Bad');
  assert.equal(dead.deadLetterErrorDescription, 'really bad');
  assert.deepEqual(await dlq.receiveMessages(1, { maxWaitTimeInMs: 500 }), []);
  await Promise.all([receiver.close(), dlq.close()]);
});

test('receive-and-delete takes messages for good; subscribe() streams them', async () => {
  const sender = client.createSender('js-rad');
  await sender.sendMessages([{ body: 1 }, { body: 2 }, { body: 3 }]);
  const rad = client.createReceiver('js-rad', { receiveMode: 'receiveAndDelete' });
  const [first] = await rad.receiveMessages(1, wait);
  assert.equal(first.body, 1);
  assert.equal(first.lockToken, undefined);
  await rad.close();
  const streamed = [];
  const receiver = client.createReceiver('js-rad');
  await new Promise((resolve, reject) => {
    const subscription = receiver.subscribe({
      async processMessage(m) {
        streamed.push(m.body);
        if (streamed.length === 2) subscription.close().then(resolve, reject);
      },
      async processError(args) { reject(args.error); },
    });
  });
  assert.deepEqual(streamed, [2, 3]);
  await receiver.close();
});

test('topics route through SQL and correlation rules', async () => {
  await client.createSender('js-topic').sendMessages([
    { body: 'red one', applicationProperties: { color: 'red' } },
    { body: 'blue one', applicationProperties: { color: 'blue' } },
    { body: 'labelled', subject: 'special' },
  ]);
  const bodies = async (subscription, n) => {
    const r = client.createReceiver('js-topic', subscription, { receiveMode: 'receiveAndDelete' });
    const got = [];
    while (got.length < n) {
      const more = await r.receiveMessages(n - got.length, wait);
      if (more.length === 0) break;
      got.push(...more.map((m) => m.body));
    }
    assert.deepEqual(await r.receiveMessages(1, { maxWaitTimeInMs: 300 }), []);
    await r.close();
    return got;
  };
  assert.deepEqual(await bodies('all', 3), ['red one', 'blue one', 'labelled']);
  assert.deepEqual(await bodies('red', 1), ['red one']);
  assert.deepEqual(await bodies('special', 1), ['labelled']);
});

test('peek shows messages in order, locked ones too, without locking or counting them', async () => {
  const receiver = client.createReceiver('js-peek');
  assert.deepEqual(await receiver.peekMessages(5), [], 'an empty queue peeks nothing');
  await client.createSender('js-peek').sendMessages([{ body: 'p1' }, { body: 'p2' }, { body: 'p3' }]);
  const [locked] = await receiver.receiveMessages(1, wait);
  assert.equal(locked.body, 'p1');
  const peeked = await receiver.peekMessages(10);
  assert.deepEqual(peeked.map((m) => m.body), ['p1', 'p2', 'p3']);
  assert.deepEqual(peeked.map((m) => m.sequenceNumber.toNumber()), [1, 2, 3]);
  assert.ok(peeked.every((m) => m.lockToken === undefined));
  const later = await receiver.peekMessages(10, { fromSequenceNumber: require('long').fromNumber(3) });
  assert.deepEqual(later.map((m) => m.body), ['p3']);
  const rest = await receiver.receiveMessages(2, wait);
  assert.deepEqual(rest.map((m) => [m.body, m.deliveryCount]), [['p2', 0], ['p3', 0]]);
  for (const m of [locked, ...rest]) await receiver.completeMessage(m);
  await receiver.close();
});

test('defer, then receive the deferred message by its sequence number and complete it', async () => {
  await client.createSender('js-defer').sendMessages([{ body: 'later' }, { body: 'now' }]);
  const receiver = client.createReceiver('js-defer');
  const [first] = await receiver.receiveMessages(1, wait);
  assert.equal(first.body, 'later');
  await receiver.deferMessage(first);
  const [next] = await receiver.receiveMessages(1, wait);
  assert.equal(next.body, 'now', 'a deferred message leaves normal delivery');
  await receiver.completeMessage(next);
  assert.deepEqual(await receiver.receiveMessages(1, { maxWaitTimeInMs: 300 }), []);
  const peeked = await receiver.peekMessages(5, { fromSequenceNumber: first.sequenceNumber });
  assert.deepEqual(peeked.map((m) => [m.body, m.state]), [['later', 'deferred']]);
  const [deferred] = await receiver.receiveDeferredMessages([first.sequenceNumber]);
  assert.equal(deferred.body, 'later');
  assert.equal(deferred.state, 'deferred');
  assert.match(deferred.lockToken, /^[0-9a-f-]{36}$/);
  await receiver.completeMessage(deferred);
  await assert.rejects(receiver.receiveDeferredMessages([first.sequenceNumber]),
    (e) => isServiceBusError(e) && e.code === 'MessageNotFound');
  await receiver.close();
});

test('scheduled messages wait for their time; a cancelled one never comes', async () => {
  const sender = client.createSender('js-sched');
  const tomorrow = new Date(Date.now() + 86_400_000);
  const [a, b] = await sender.scheduleMessages([{ body: 'A' }, { body: 'B' }], tomorrow);
  assert.ok(b.greaterThan(a), `sequence numbers in order: ${a} ${b}`);
  await sender.cancelScheduledMessages(b);
  const receiver = client.createReceiver('js-sched', { receiveMode: 'receiveAndDelete' });
  const peeked = await receiver.peekMessages(10);
  assert.deepEqual(peeked.map((m) => [m.body, m.state]), [['A', 'scheduled']]);
  assert.deepEqual(await receiver.receiveMessages(1, { maxWaitTimeInMs: 300 }), [], 'not before its time');
  assert.equal((await restCall('POST', `/$emulator/clock/advance?seconds=${2 * 86_400}`)).status, 200);
  const got = await receiver.receiveMessages(5, wait);
  assert.deepEqual(got.map((m) => m.body), ['A']);
  assert.deepEqual(await receiver.receiveMessages(1, { maxWaitTimeInMs: 300 }), []);
  await Promise.all([sender.close(), receiver.close()]);
});

test('renewing a lock moves lockedUntilUtc on; the message then survives past the first lock', async () => {
  await client.createSender('js-lock').sendMessages({ body: 'renew me' });
  const receiver = client.createReceiver('js-lock', { maxAutoLockRenewalDurationInMs: 0 });
  const [m] = await receiver.receiveMessages(1, wait);
  const first = m.lockedUntilUtc.getTime();
  assert.equal((await restCall('POST', '/$emulator/clock/advance?seconds=40')).status, 200);
  const renewed = await receiver.renewMessageLock(m);
  assert.ok(renewed.getTime() >= first + 40_000, `renewed to ${renewed.toISOString()}`);
  assert.equal((await restCall('POST', '/$emulator/clock/advance?seconds=40')).status, 200);
  assert.deepEqual(await receiver.receiveMessages(1, { maxWaitTimeInMs: 300 }), [], 'still locked');
  await receiver.completeMessage(m);
  await receiver.close();
});

test('a lock that expires redelivers; settling with it then fails with MessageLockLost', async () => {
  await client.createSender('js-lock').sendMessages({ body: 'slow' });
  const receiver = client.createReceiver('js-lock', { maxAutoLockRenewalDurationInMs: 0 });
  const [m] = await receiver.receiveMessages(1, wait);
  const moved = await restCall('POST', '/$emulator/clock/advance?seconds=61');
  assert.equal(moved.status, 200);
  const [again] = await receiver.receiveMessages(1, wait);
  assert.equal(again.body, 'slow');
  assert.equal(again.deliveryCount, 1);
  await assert.rejects(receiver.completeMessage(m), (e) => isServiceBusError(e) && e.code === 'MessageLockLost');
  await receiver.completeMessage(again);
  await receiver.close();
});

test('one broker: REST to AMQP and AMQP to REST keep body and properties', async () => {
  const sent = await restCall('POST', '/js-interop/messages', {
    body: 'from rest',
    headers: {
      'Content-Type': 'text/plain',
      BrokerProperties: JSON.stringify({ MessageId: 'r-1', Label: 'rest', CorrelationId: 'rc' }),
      color: '"green"', n: '7',
    },
  });
  assert.equal(sent.status, 201);
  const receiver = client.createReceiver('js-interop', { receiveMode: 'receiveAndDelete' });
  const [m] = await receiver.receiveMessages(1, wait);
  assert.equal(Buffer.from(m.body).toString(), 'from rest');
  assert.equal(m.messageId, 'r-1');
  assert.equal(m.subject, 'rest');
  assert.equal(m.correlationId, 'rc');
  assert.equal(m.contentType, 'text/plain');
  assert.deepEqual([m.applicationProperties.color, m.applicationProperties.n], ['green', 7]);
  await receiver.close();

  await client.createSender('js-interop').sendMessages({
    body: Buffer.from('from amqp'), messageId: 'a-1', subject: 'amqp', applicationProperties: { color: 'blue', n: 8 },
  });
  const got = await restCall('DELETE', '/js-interop/messages/head?timeout=5');
  assert.equal(got.status, 200);
  assert.equal(await got.text(), 'from amqp');
  const broker = JSON.parse(got.headers.get('brokerproperties'));
  assert.equal(broker.MessageId, 'a-1');
  assert.equal(broker.Label, 'amqp');
  assert.equal(broker.DeliveryCount, 1);
  assert.equal(got.headers.get('color'), '"blue"');
  assert.equal(got.headers.get('n'), '8');
});

test('errors: a wrong key is UnauthorizedAccess, a missing entity MessagingEntityNotFound', async () => {
  const wrong = new ServiceBusClient(connectionString('not-the-key'), { retryOptions: { maxRetries: 0, timeoutInMs: 10_000 } });
  await assert.rejects(wrong.createSender('js-queue').sendMessages({ body: 'x' }),
    (e) => isServiceBusError(e) && e.code === 'UnauthorizedAccess');
  await wrong.close();
  await assert.rejects(client.createSender('no-such-queue').sendMessages({ body: 'x' }),
    (e) => isServiceBusError(e) && e.code === 'MessagingEntityNotFound');
  const receiver = client.createReceiver('no-such-queue');
  await assert.rejects(receiver.receiveMessages(1, wait),
    (e) => isServiceBusError(e) && e.code === 'MessagingEntityNotFound');
  await receiver.close();
});

test('the rule manager adds, lists and removes rules over $management', async () => {
  const rules = client.createRuleManager('js-topic', 'all');
  await rules.createRule('green-only', { sqlExpression: "color = 'green'" }, { sqlExpression: "SET tagged = 'yes'" });
  await rules.createRule('labelled', { subject: 'x', applicationProperties: { n: 1 } });
  await assert.rejects(rules.createRule('green-only', { sqlExpression: '1=1' }),
    (e) => isServiceBusError(e) && e.code === 'MessagingEntityAlreadyExists');
  const listed = [];
  for await (const rule of rules.listRules()) listed.push(rule);
  assert.deepEqual(listed.map((r) => r.name).sort(), ['$Default', 'green-only', 'labelled']);
  const green = listed.find((r) => r.name === 'green-only');
  assert.equal(green.filter.sqlExpression, "color = 'green'");
  assert.equal(green.action.sqlExpression, "SET tagged = 'yes'");
  const labelled = listed.find((r) => r.name === 'labelled');
  assert.equal(labelled.filter.subject, 'x');
  assert.equal(labelled.filter.applicationProperties.n, 1);
  await rules.deleteRule('$Default');
  await rules.deleteRule('labelled');
  await client.createSender('js-topic').sendMessages([
    { body: 'green one', applicationProperties: { color: 'green' } },
    { body: 'blue one', applicationProperties: { color: 'blue' } },
  ]);
  const r = client.createReceiver('js-topic', 'all', { receiveMode: 'receiveAndDelete' });
  const [m] = await r.receiveMessages(1, wait);
  assert.equal(m.body, 'green one');
  assert.equal(m.applicationProperties.tagged, 'yes');
  assert.deepEqual(await r.receiveMessages(1, { maxWaitTimeInMs: 300 }), []);
  await r.close();
});
