// The legacy npm `azure-sb` client drives the emulator's messaging runtime: send with custom
// properties, peek-lock, renew, unlock, complete, receive-and-delete, SQL and correlation
// routing. Bodies and properties must round-trip exactly. Run by compat_azure_sb.rs.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const azure = require('azure-sb');

const url = process.env.EMULATOR_URL;
if (!url) throw new Error('EMULATOR_URL is not set');
const sb = azure.createServiceBusService(`Endpoint=${url}/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE`);

function op(method, ...args) {
  return new Promise((resolve, reject) => {
    sb[method](...args, (error, result, response) => (error ? reject(error) : resolve([result, response && response.statusCode])));
  });
}
// Sends call back with (error, response); an empty receive fails with the bare string
// 'No messages to receive'.
function send(method, ...args) {
  return new Promise((resolve, reject) => {
    sb[method](...args, (error, response) => (error ? reject(error) : resolve(response.statusCode)));
  });
}
const noMessages = (e) => /No messages/i.test(String(e && e.message ? e.message : e));
const peekLock = { isPeekLock: true, timeoutIntervalInS: 5 };
const destructive = { isPeekLock: false, timeoutIntervalInS: 5 };

const when = new Date(Date.UTC(2024, 0, 2, 3, 4, 5));
const custom = { color: 'red', n: 42, flag: true, ratio: 2.5, when };

test('queue: send with properties, peek-lock, renew, unlock, complete, receive-and-delete', async () => {
  await op('createQueue', 'compat-rt-queue', { LockDuration: 'PT30S' });
  const sent = await send('sendQueueMessage', 'compat-rt-queue', {
    body: 'hello from azure-sb',
    contentType: 'text/plain',
    brokerProperties: { MessageId: 'm-1', Label: 'greeting', CorrelationId: 'corr-1', TimeToLive: 3600 },
    customProperties: custom,
  });
  assert.equal(sent, 201);
  assert.equal(await send('sendQueueMessage', 'compat-rt-queue', 'second'), 201);

  const [first] = await op('receiveQueueMessage', 'compat-rt-queue', peekLock);
  assert.equal(first.body, 'hello from azure-sb');
  assert.equal(first.contentType, 'text/plain');
  assert.equal(first.brokerProperties.MessageId, 'm-1');
  assert.equal(first.brokerProperties.Label, 'greeting');
  assert.equal(first.brokerProperties.CorrelationId, 'corr-1');
  assert.equal(first.brokerProperties.SequenceNumber, 1);
  assert.equal(first.brokerProperties.DeliveryCount, 1);
  assert.equal(first.customProperties.color, 'red');
  assert.equal(first.customProperties.n, 42);
  assert.equal(first.customProperties.flag, true);
  assert.equal(first.customProperties.ratio, 2.5);
  assert.equal(new Date(first.customProperties.when).getTime(), when.getTime());
  assert.match(first.location, /\/compat-rt-queue\/messages\/1\/[0-9a-f-]{36}$/);

  await op('renewLockForMessage', first);
  await op('unlockMessage', first);
  const [again] = await op('receiveQueueMessage', 'compat-rt-queue', peekLock);
  assert.equal(again.body, 'hello from azure-sb');
  assert.equal(again.brokerProperties.DeliveryCount, 2);
  await op('deleteMessage', again);
  await assert.rejects(op('deleteMessage', again), (e) => e.statusCode === 404);

  const [second, status] = await op('receiveQueueMessage', 'compat-rt-queue', destructive);
  assert.equal(status, 200);
  assert.equal(second.body, 'second');
  await assert.rejects(op('receiveQueueMessage', 'compat-rt-queue', { isPeekLock: true, timeoutIntervalInS: 1 }), noMessages);
  const [queue] = await op('getQueue', 'compat-rt-queue');
  assert.equal(queue.MessageCount, '0');
  await op('deleteQueue', 'compat-rt-queue');
});

test('topic: SQL and correlation routing to subscriptions', async () => {
  await op('createTopic', 'compat-rt-topic');
  await op('createSubscription', 'compat-rt-topic', 'all');
  await op('createSubscription', 'compat-rt-topic', 'red');
  await op('deleteRule', 'compat-rt-topic', 'red', '$Default');
  await op('createRule', 'compat-rt-topic', 'red', 'red-only', { sqlExpressionFilter: "color = 'red' AND n > 5" });
  await op('createSubscription', 'compat-rt-topic', 'corr');
  await op('deleteRule', 'compat-rt-topic', 'corr', '$Default');
  await op('createRule', 'compat-rt-topic', 'corr', 'by-corr', { correlationIdFilter: 'corr-A' });

  assert.equal(await send('sendTopicMessage', 'compat-rt-topic', { body: 'red big', customProperties: { color: 'red', n: 9 } }), 201);
  assert.equal(await send('sendTopicMessage', 'compat-rt-topic', { body: 'red small', customProperties: { color: 'red', n: 1 } }), 201);
  assert.equal(await send('sendTopicMessage', 'compat-rt-topic', { body: 'correlated', brokerProperties: { CorrelationId: 'corr-A' }, customProperties: { color: 'blue', n: 9 } }), 201);

  async function drain(sub) {
    const bodies = [];
    for (;;) {
      try {
        const [m] = await op('receiveSubscriptionMessage', 'compat-rt-topic', sub, { isPeekLock: true, timeoutIntervalInS: 1 });
        bodies.push(m.body);
        await op('deleteMessage', m);
      } catch (e) {
        if (noMessages(e)) return bodies;
        throw e;
      }
    }
  }
  assert.deepEqual(await drain('all'), ['red big', 'red small', 'correlated']);
  assert.deepEqual(await drain('red'), ['red big']);
  assert.deepEqual(await drain('corr'), ['correlated']);
  await op('deleteTopic', 'compat-rt-topic');
});
