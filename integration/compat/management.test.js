// The legacy npm `azure-sb` client (a real third-party Service Bus REST client) drives the
// emulator's management surface and asserts what it reads back.
// Run by emulator/tests/compat_azure_sb.rs with EMULATOR_URL=http://127.0.0.1:PORT.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const azure = require('azure-sb');

const url = process.env.EMULATOR_URL;
if (!url) throw new Error('EMULATOR_URL is not set');
const KEY_NAME = process.env.EMULATOR_KEY_NAME || 'RootManageSharedAccessKey';
const KEY = process.env.EMULATOR_KEY || 'SAS_KEY_VALUE';

// azure-sb rewrites sb:// to https://, so it is given the emulator's http:// endpoint.
const connect = (key) => azure.createServiceBusService(`Endpoint=${url}/;SharedAccessKeyName=${KEY_NAME};SharedAccessKey=${key}`);
const sb = connect(KEY);

// Calls an azure-sb method and resolves to [result, statusCode], or rejects with its error.
function call(service, method, ...args) {
  return new Promise((resolve, reject) => {
    service[method](...args, (error, result, response) => (error ? reject(error) : resolve([result, response && response.statusCode])));
  });
}
const op = (method, ...args) => call(sb, method, ...args);

test('topics: create, conflict, get, list with paging, not found', async () => {
  const [topic, status] = await op('createTopic', 'compat-topic', { MaxSizeInMegabytes: '2048', DefaultMessageTimeToLive: 'PT2H' });
  assert.equal(status, 201);
  assert.equal(topic.TopicName, 'compat-topic');
  assert.equal(topic.MaxSizeInMegabytes, '2048');
  assert.equal(topic.DefaultMessageTimeToLive, 'PT2H');
  assert.equal(topic.RequiresDuplicateDetection, 'false');
  assert.equal(topic.Status, 'Active');

  const [created] = await op('createTopicIfNotExists', 'compat-topic');
  assert.equal(created, false, 'createTopicIfNotExists sees the existing topic');
  await assert.rejects(op('createTopic', 'compat-topic'), (e) => e.statusCode === 409 && /SubCode=40900/.test(e.message));

  const [got] = await op('getTopic', 'compat-topic');
  assert.equal(got.MaxSizeInMegabytes, '2048');
  assert.equal(got.AccessedAt, '0001-01-01T00:00:00Z');
  assert.equal(got.CountDetails['d2p1:ActiveMessageCount'], '0');

  await op('createTopic', 'compat-topic-2');
  const [all] = await op('listTopics');
  assert.deepEqual(all.map((t) => t.TopicName), ['compat-topic', 'compat-topic-2']);
  const [page] = await op('listTopics', { top: 1, skip: 1 });
  assert.deepEqual(page.map((t) => t.TopicName), ['compat-topic-2']);

  await assert.rejects(op('getTopic', 'compat-missing'), (e) => e.code === 'TopicNotFound');
  await op('deleteTopic', 'compat-topic-2');
  await assert.rejects(op('deleteTopic', 'compat-topic-2'), (e) => e.statusCode === 404);
});

test('subscriptions: create with settings, get, list, not found, delete', async () => {
  const settings = { LockDuration: 'PT45S', MaxDeliveryCount: '7', DefaultMessageTimeToLive: 'PT1H', DeadLetteringOnMessageExpiration: true, AutoDeleteOnIdle: 'PT2H' };
  const [sub, status] = await op('createSubscription', 'compat-topic', 'sub-a', settings);
  assert.equal(status, 201);
  assert.equal(sub.TopicName, 'compat-topic');
  assert.equal(sub.SubscriptionName, 'sub-a');
  assert.equal(sub.LockDuration, 'PT45S');
  assert.equal(sub.MaxDeliveryCount, '7');
  assert.equal(sub.DeadLetteringOnMessageExpiration, 'true');
  assert.equal(sub.AutoDeleteOnIdle, 'PT2H');

  const [got] = await op('getSubscription', 'compat-topic', 'sub-a');
  assert.equal(got.DefaultMessageTimeToLive, 'PT1H');
  assert.equal(got.MessageCount, '0');
  await op('createSubscription', 'compat-topic', 'sub-b');
  const [list] = await op('listSubscriptions', 'compat-topic');
  assert.deepEqual(list.map((s) => s.SubscriptionName), ['sub-a', 'sub-b']);
  await assert.rejects(op('getSubscription', 'compat-topic', 'sub-none'), (e) => e.code === 'SubscriptionNotFound');
  await assert.rejects(op('createSubscription', 'compat-missing', 'sub-x'), (e) => e.statusCode === 404);

  const [topic] = await op('getTopic', 'compat-topic');
  assert.equal(topic.SubscriptionCount, '2');
  await op('deleteSubscription', 'compat-topic', 'sub-b');
  await assert.rejects(op('deleteSubscription', 'compat-topic', 'sub-b'), (e) => e.statusCode === 404);
});

test('rules: SQL, correlation, action, $Default, list, delete', async () => {
  const [sql, status] = await op('createRule', 'compat-topic', 'sub-a', 'red-only', { sqlExpressionFilter: "color = 'red' AND n > 5" });
  assert.equal(status, 201);
  assert.equal(sql.RuleName, 'red-only');
  assert.equal(sql.Filter.SqlExpression, "color = 'red' AND n > 5");
  const [corr] = await op('createRule', 'compat-topic', 'sub-a', 'by-corr', { correlationIdFilter: 'corr-A' });
  assert.equal(corr.Filter.CorrelationId, 'corr-A');
  const [act] = await op('createRule', 'compat-topic', 'sub-a', 'tagger', { sqlExpressionFilter: 'n = 1', sqlRuleAction: "SET tagged = 'yes'" });
  assert.equal(act.Action.SqlExpression, "SET tagged = 'yes'");
  await assert.rejects(op('createRule', 'compat-topic', 'sub-a', 'red-only', { sqlExpressionFilter: '1=1' }), (e) => e.statusCode === 409);

  const [got] = await op('getRule', 'compat-topic', 'sub-a', 'by-corr');
  assert.equal(got.Filter.CorrelationId, 'corr-A');
  const [rules] = await op('listRules', 'compat-topic', 'sub-a');
  assert.deepEqual(rules.map((r) => r.RuleName), ['$Default', 'by-corr', 'red-only', 'tagger']);
  assert.equal(rules[0].Filter.SqlExpression, '1=1');

  await op('deleteRule', 'compat-topic', 'sub-a', '$Default');
  await op('deleteRule', 'compat-topic', 'sub-a', 'by-corr');
  await assert.rejects(op('deleteRule', 'compat-topic', 'sub-a', 'by-corr'), (e) => e.statusCode === 404);
  const [left] = await op('listRules', 'compat-topic', 'sub-a');
  assert.deepEqual(left.map((r) => r.RuleName), ['red-only', 'tagger']);
});

test('deleting a topic removes its subscriptions and rules', async () => {
  await op('deleteTopic', 'compat-topic');
  await assert.rejects(op('getTopic', 'compat-topic'), (e) => e.code === 'TopicNotFound');
  await op('createTopic', 'compat-topic');
  const [subs] = await op('listSubscriptions', 'compat-topic');
  assert.deepEqual(subs, []);
  await op('deleteTopic', 'compat-topic');
});

test('queues: create with settings, get, list, delete', async () => {
  const [queue, status] = await op('createQueue', 'compat-queue', { LockDuration: 'PT30S', MaxSizeInMegabytes: '1024', MaxDeliveryCount: '5', RequiresDuplicateDetection: true });
  assert.equal(status, 201);
  assert.equal(queue.QueueName, 'compat-queue');
  assert.equal(queue.LockDuration, 'PT30S');
  assert.equal(queue.MaxDeliveryCount, '5');
  assert.equal(queue.RequiresDuplicateDetection, 'true');
  const [created] = await op('createQueueIfNotExists', 'compat-queue');
  assert.equal(created, false);
  const [got] = await op('getQueue', 'compat-queue');
  assert.equal(got.MessageCount, '0');
  assert.equal(got.SizeInBytes, '0');
  const [queues] = await op('listQueues');
  assert.deepEqual(queues.map((q) => q.QueueName), ['compat-queue']);
  await op('deleteQueue', 'compat-queue');
  await assert.rejects(op('getQueue', 'compat-queue'), (e) => e.code === 'QueueNotFound');
});

test('a wrong key is refused with 401', async () => {
  await assert.rejects(call(connect('wrong' + KEY), 'listTopics'), (e) => e.statusCode === 401 && /40103/.test(e.message));
});
