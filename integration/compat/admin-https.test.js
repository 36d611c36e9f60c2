// npm `@azure/service-bus` 7.9.5's ServiceBusAdministrationClient, unpatched, manages
// entities over the emulator's HTTPS (`--tls`). The client always builds
// `https://{endpoint}/...` URLs, so it is given the emulator's connection string as printed
// and nothing else: no pipeline policy, no URL rewriting. Node trusts the emulator's CA
// through NODE_EXTRA_CA_CERTS, as the banner says; so does its AMQP client over TLS. With EXPECT_UNTRUSTED=1 (and no CA) it
// checks instead that the client refuses the certificate: the traffic really is TLS.
// Run by emulator/tests/https_clients.rs with EMULATOR_CONNECTION_STRING.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const { ServiceBusAdministrationClient, ServiceBusClient } = require('@azure/service-bus');

const connectionString = process.env.EMULATOR_CONNECTION_STRING;
if (!connectionString) throw new Error('EMULATOR_CONNECTION_STRING is not set');
const untrusted = process.env.EXPECT_UNTRUSTED === '1';

if (untrusted) {
  test('without the CA the admin client refuses the certificate', async () => {
    const admin = new ServiceBusAdministrationClient(connectionString, { retryOptions: { maxRetries: 0 } });
    await assert.rejects(admin.getNamespaceProperties(), (e) => {
      assert.match(`${e.code} ${e.message}`, /CERT|certificate/i);
      return true;
    });
  });
} else {
  test('queues: create with properties, get, runtime counts, list, exists, delete', async () => {
    const admin = new ServiceBusAdministrationClient(connectionString);
    const namespace = await admin.getNamespaceProperties();
    assert.ok(namespace.name);
    const created = await admin.createQueue('https-queue', { maxDeliveryCount: 7, lockDuration: 'PT45S' });
    assert.equal(created.name, 'https-queue');
    const got = await admin.getQueue('https-queue');
    assert.equal(got.maxDeliveryCount, 7);
    assert.equal(got.lockDuration, 'PT45S');
    await admin.updateQueue({ ...got, maxDeliveryCount: 9 });
    assert.equal((await admin.getQueue('https-queue')).maxDeliveryCount, 9);
    const names = [];
    for await (const q of admin.listQueues()) names.push(q.name);
    assert.deepEqual(names, ['https-queue']);
    const runtime = await admin.getQueueRuntimeProperties('https-queue');
    assert.equal(runtime.activeMessageCount, 0);
    assert.equal(await admin.queueExists('https-queue'), true);
    await admin.deleteQueue('https-queue');
    assert.equal(await admin.queueExists('https-queue'), false);
  });

  test('topics, subscriptions and rules; errors keep their codes over TLS', async () => {
    const admin = new ServiceBusAdministrationClient(connectionString);
    await admin.createTopic('https-topic');
    await admin.createSubscription('https-topic', 'red');
    await admin.createRule('https-topic', 'red', 'only-red', { sqlExpression: "color = 'red'" });
    // Names come from the entries' ids, matched case-sensitively on `/Subscriptions/` and
    // `/Rules/`.
    const subscriptions = [];
    for await (const sub of admin.listSubscriptions('https-topic')) subscriptions.push(sub.subscriptionName);
    assert.deepEqual(subscriptions, ['red']);
    const rules = [];
    for await (const r of admin.listRules('https-topic', 'red')) rules.push(r.name);
    assert.deepEqual(rules.sort(), ['$Default', 'only-red']);
    await admin.deleteRule('https-topic', 'red', '$Default');
    const rule = await admin.getRule('https-topic', 'red', 'only-red');
    assert.equal(rule.filter.sqlExpression, "color = 'red'");
    await assert.rejects(admin.createTopic('https-topic'), (e) => e.code === 'MessageEntityAlreadyExistsError' && e.statusCode === 409);
    // As on Azure, a GET of a missing entity answers 200 with an empty feed, which the
    // client turns into this code (its statusCode stays 200).
    await assert.rejects(admin.getQueue('missing'), (e) => e.code === 'MessageEntityNotFoundError');
    const subs = await admin.getTopicRuntimeProperties('https-topic');
    assert.equal(subs.subscriptionCount, 1);
    await admin.deleteTopic('https-topic');
    assert.equal(await admin.topicExists('https-topic'), false);
  });

  test('the AMQP client over TLS, as it reaches Azure on 5671', async () => {
    const admin = new ServiceBusAdministrationClient(connectionString);
    await admin.createQueue('over-amqps');
    // No UseDevelopmentEmulator: the SDK speaks AMQP over TLS, trusting the CA through
    // NODE_EXTRA_CA_CERTS like every other Node TLS client.
    const client = new ServiceBusClient(process.env.EMULATOR_AMQPS_CONNECTION_STRING);
    try {
      await client.createSender('over-amqps').sendMessages({ body: 'over amqps', applicationProperties: { n: 1 } });
      const receiver = client.createReceiver('over-amqps');
      const [message] = await receiver.receiveMessages(1, { maxWaitTimeInMs: 10000 });
      assert.equal(message.body, 'over amqps');
      assert.equal(message.applicationProperties.n, 1);
      await receiver.completeMessage(message);
    } finally {
      await client.close();
    }
    assert.equal((await admin.getQueueRuntimeProperties('over-amqps')).activeMessageCount, 0);
  });

  test('an entity the admin client made over HTTPS carries messages over AMQP', async () => {
    const admin = new ServiceBusAdministrationClient(connectionString);
    await admin.createQueue('https-then-amqp');
    const amqp = new ServiceBusClient(process.env.EMULATOR_AMQP_CONNECTION_STRING);
    try {
      await amqp.createSender('https-then-amqp').sendMessages({ body: 'made over https' });
      const receiver = amqp.createReceiver('https-then-amqp', { receiveMode: 'receiveAndDelete' });
      const [message] = await receiver.receiveMessages(1, { maxWaitTimeInMs: 10000 });
      assert.equal(message.body, 'made over https');
    } finally {
      await amqp.close();
    }
    const runtime = await admin.getQueueRuntimeProperties('https-then-amqp');
    assert.equal(runtime.activeMessageCount, 0);
    await admin.deleteQueue('https-then-amqp');
  });
}
