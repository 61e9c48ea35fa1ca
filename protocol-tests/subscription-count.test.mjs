// Subscription counting (per app, off by default): pusher-js subscribers of a
// non-presence channel get `pusher_internal:subscription_count`, surfaced as
// `pusher:subscription_count` and `channel.subscriptionCount`, coalesced to at
// most one per channel per `subscription_count_interval_ms`, ending on the
// true count. The two-node variant is in cluster.test.mjs.
//
// This suite runs its own rusher process (webhook-helpers.mjs).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { newPusherClient, sleep, subscribeAndWait, waitFor } from './helpers.mjs';
import { buildConfig, metric, sdkOn, spawnRusher, subscribeSigned, wsClient } from './webhook-helpers.mjs';

const T = { timeout: 20000 };
const INTERVAL = 300;
const COUNTED = { id: 'count-app', key: 'count-key', secret: 'count-secret', subscription_count: true, subscription_count_interval_ms: INTERVAL };
const PLAIN = { id: 'plain-app', key: 'plain-key', secret: 'plain-secret' };
const RUN = Date.now().toString(36).slice(-5);
let uid = 0;
const chan = (prefix) => `${prefix}-${RUN}-${(uid += 1)}`;

let server;
before(async () => {
  server = await spawnRusher(buildConfig({ apps: [COUNTED, PLAIN] }));
});
after(async () => {
  if (server) await server.kill();
});

/** A pusher-js client of `app` on the suite's server, disconnected after the test. */
async function pusher(t, app = COUNTED) {
  const client = await newPusherClient(app.key, {}, { host: '127.0.0.1', port: server.port });
  t.after(() => client.disconnect());
  return client;
}

/** Every pusher:subscription_count a pusher-js channel gets (with the time it came). */
function counts(channel) {
  const seen = [];
  channel.bind('pusher:subscription_count', (data) => seen.push({ n: data.subscription_count, at: Date.now() }));
  return seen;
}

test('pusher-js subscribers get pusher:subscription_count with the count, and channel.subscriptionCount follows it', T, async (t) => {
  const name = chan('room');
  const first = await subscribeAndWait(await pusher(t), name);
  const seenFirst = counts(first);
  // A new subscriber learns the count within the interval (its own join counts).
  await waitFor(() => first.subscriptionCount === 1, INTERVAL * 3, 10, 'subscriptionCount 1');
  const secondClient = await pusher(t);
  const second = await subscribeAndWait(secondClient, name);
  const seenSecond = counts(second);
  await waitFor(() => first.subscriptionCount === 2 && second.subscriptionCount === 2, INTERVAL * 3, 10, 'both see 2');
  assert.deepEqual(seenSecond.map((e) => e.n), [2]);
  // A leave: the one left sees 1.
  secondClient.unsubscribe(name);
  await waitFor(() => first.subscriptionCount === 1 && seenFirst.at(-1)?.n === 1, INTERVAL * 3, 10, 'back to 1');
  assert.deepEqual(seenFirst.map((e) => e.n), [1, 2, 1]);
});

test('a burst of joins and leaves is coalesced (at most one frame per interval) and every subscriber ends on the true count', T, async (t) => {
  const name = chan('burst');
  const watcher = await subscribeAndWait(await pusher(t), name);
  const seen = counts(watcher);
  await waitFor(() => seen.length >= 1, INTERVAL * 3, 10, 'first count');
  const raws = [];
  for (let i = 0; i < 12; i += 1) {
    const c = wsClient(server.port, COUNTED.key);
    t.after(() => c.close());
    await c.ready;
    await c.subscribe(name);
    raws.push(c);
  }
  for (const c of raws.slice(0, 5)) c.unsubscribe(name);
  const settled = Date.now();
  // 1 + 12 - 5 = 8, within the interval and a little.
  await waitFor(() => watcher.subscriptionCount === 8, INTERVAL * 2 + 200, 10, `count 8 (seen ${JSON.stringify(seen)})`);
  assert.ok(Date.now() - settled <= INTERVAL * 2 + 200);
  await sleep(INTERVAL * 2);
  assert.equal(seen.at(-1).n, 8, JSON.stringify(seen));
  for (let i = 1; i < seen.length; i += 1) {
    assert.ok(seen[i].at - seen[i - 1].at >= INTERVAL - 60, `two frames ${seen[i].at - seen[i - 1].at} ms apart: ${JSON.stringify(seen)}`);
  }
  assert.ok(seen.length <= 4, `not coalesced: ${JSON.stringify(seen)}`);
  // The raw clients ended on 8 too (the frame's exact shape: data a JSON string).
  const last = raws[11].frames.filter((f) => f.event === 'pusher_internal:subscription_count').at(-1);
  assert.equal(typeof last.data, 'string');
  assert.deepEqual(JSON.parse(last.data), { subscription_count: 8 });
  assert.equal(last.channel, name);
  assert.ok((await metric(server, 'rusher_subscription_counts_sent_total')) >= 2);
});

test('presence channels get no subscription count, cache channels do, and an app without the option gets none', T, async (t) => {
  const sdkless = wsClient(server.port, COUNTED.key);
  t.after(() => sdkless.close());
  await sdkless.ready;
  const pres = chan('presence-count');
  const sdk = sdkOn(server, COUNTED);
  await subscribeSigned(sdkless, sdk, pres, { user_id: 'u1' });
  const cache = chan('cache-count');
  await sdkless.subscribe(cache);
  await sdkless.next((f) => f.event === 'pusher_internal:subscription_count' && f.channel === cache, INTERVAL * 3);
  const plain = wsClient(server.port, PLAIN.key);
  t.after(() => plain.close());
  await plain.ready;
  await plain.subscribe(chan('room'));
  await sleep(INTERVAL * 2);
  assert.equal(sdkless.frames.filter((f) => f.event === 'pusher_internal:subscription_count' && f.channel === pres).length, 0);
  assert.equal(plain.count('pusher_internal:subscription_count'), 0);
});
