// What a user behind a load balancer feels when two nodes share one Redis
// (adapter = "redis") and one MongoDB: a change made through one node takes
// effect on the other at once, not at its next periodic reload (10 s):
// follows (stored messages and personal-{user} delivery), notification
// registrations (web callbacks), pushi `logout`; and a presence member who
// leaves through one node and rejoins through the other within the
// member_removed hold-back produces no webhook, as on one node.
//
// Runs its own redis-server, MongoDB (jongodb, or RUSHER_TEST_MONGODB_URL)
// and webhook/callback receivers on free ports; two nodes A and B.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { APPS, collect, fixtureApps, hmacHex, sleep, tomlString as q, waitFor } from './helpers.mjs';
import { startReceiver, summarizeEvents } from './webhook-helpers.mjs';
import { startRedis, killAll as killCluster, pusherOn as pusherOnNode, subscribed } from './cluster-helpers.mjs';
import {
  RUN_ID,
  api,
  killAll as killPersistence,
  persistenceApi,
  pusherOn,
  sdkOn,
  signIn,
  startRusher,
  subscribeOk,
  suiteMongo,
} from './persistence-helpers.mjs';

const T = { timeout: 30000 };
/** How soon a change made through one node must hold on the other. */
const AT_ONCE_MS = 1000;
/** The webhook hold-back of member_removed and channel_vacated. */
const HOLD_MS = 1500;
const WH_APP = { appId: 'inval-wh', key: 'inval-wh-key', secret: 'inval-wh-secret' };

let counter = 0;
const uniq = (prefix) => `${prefix}-${RUN_ID}-${(counter += 1)}`;

let redis;
let mongo;
let hooks; // webhooks of WH_APP
let callbacks; // notification callbacks
let A;
let B;

before(async () => {
  [redis, mongo, hooks, callbacks] = await Promise.all([startRedis(), suiteMongo(), startReceiver(), startReceiver()]);
  const config = `adapter = "redis"

[server]
host = "127.0.0.1"
port = 6001
log_level = "info"
shutdown_grace = 1

[server.webhooks]
batch_ms = 50
member_removed_delay_ms = ${HOLD_MS}
channel_vacated_delay_ms = ${HOLD_MS}
backoff_ms = 100
timeout_ms = 1000

[redis]
url = ${q(redis.url)}
prefix = ${q(`inval-${RUN_ID}`)}
heartbeat_secs = 1
node_timeout_secs = 3
operation_timeout_ms = 500

[store]
backend = "mongodb"
url = ${q(mongo.url)}
database = ${q(`inval_${RUN_ID}`)}
timeout_ms = 1000

# One job at a time: a callback routed before another is sent before it.
[notifications]
concurrency = 1
backoff_ms = 100

${fixtureApps()}

[[apps]]
id = ${q(WH_APP.appId)}
key = ${q(WH_APP.key)}
secret = ${q(WH_APP.secret)}

[[apps.webhooks]]
url = ${q(hooks.url)}
`;
  [A, B] = await Promise.all([startRusher(config), startRusher(config)]);
  A.name = 'A';
  B.name = 'B';
  await waitBusBetween(A, B);
});

after(async () => {
  await killPersistence();
  await killCluster();
  await hooks?.stop();
  await callbacks?.stop();
});

/** Both nodes are on the bus: an event triggered on one reaches a subscriber on the other. */
async function waitBusBetween(a, b) {
  const channel = uniq('probe');
  const cleanups = [];
  const fake = { after: (fn) => cleanups.push(fn) };
  try {
    for (const [from, to] of [
      [a, b],
      [b, a],
    ]) {
      const client = await pusherOn(fake, to);
      const { channel: sub } = await subscribeOk(client, channel);
      const seen = collect(sub, 'probe');
      await waitFor(
        async () => {
          await sdkOn(from).trigger(channel, 'probe', {});
          await sleep(100);
          return seen.events.length > 0;
        },
        15000,
        50,
        'the nodes reaching each other through Redis',
      );
    }
  } finally {
    for (const fn of cleanups) fn();
  }
}

/**
 * Triggers `event` on `channel` through `node` every 50 ms until `arrived()`
 * holds; resolves with the milliseconds from the call to the arrival.
 */
async function publishUntil(node, channel, event, arrived, limitMs) {
  const start = Date.now();
  const sdk = sdkOn(node);
  for (let i = 0; Date.now() - start < limitMs + 2000; i += 1) {
    await sdk.trigger(channel, event, { i });
    const deadline = Date.now() + 50;
    while (Date.now() < deadline) {
      if (arrived()) return Date.now() - start;
      await sleep(5);
    }
  }
  throw new Error(`${event} on ${channel} through node ${node.name}: nothing arrived within ${limitMs + 2000} ms`);
}

/** A pusher-js client on `node` signed in as `user`, subscribed to personal-{user}. */
async function personalOn(t, node, user) {
  const client = await pusherOn(t, node, { user: { id: user } });
  await signIn(client, user);
  return (await subscribeOk(client, `personal-${user}`)).channel;
}

test('a follow made through A holds for events published through B at once; an unfollow likewise', T, async (t) => {
  const user = uniq('u');
  const [feed, keep] = [uniq('feed'), uniq('keep')];
  const personal = await personalOn(t, A, user);
  const ticks = collect(personal, 'tick');
  const marks = collect(personal, 'mark');
  assert.equal((await persistenceApi(B).follow(user, keep)).status, 200);

  const res = await persistenceApi(A).follow(user, feed);
  assert.equal(res.status, 200, res.text);
  const took = await publishUntil(B, feed, 'tick', () => ticks.events.length > 0, AT_ONCE_MS);
  assert.ok(took <= AT_ONCE_MS, `the follow took ${took} ms to reach node B`);
  const stored = await waitFor(
    async () => {
      const r = await persistenceApi(B).messages(user);
      return r.json.messages.some((m) => m.channel === feed) && r.json.messages;
    },
    5000,
    50,
    'the message stored for the follower',
  );
  assert.ok(stored.some((m) => m.channel === feed && m.event === 'tick'), JSON.stringify(stored));

  const gone = await persistenceApi(A).unfollow(user, feed);
  assert.equal(gone.status, 200, gone.text);
  await sleep(AT_ONCE_MS);
  const delivered = ticks.events.length;
  const sdkB = sdkOn(B);
  await sdkB.trigger(feed, 'tick', { after: true });
  // Published after `tick` through the same node: once it arrived, the tick would have.
  await sdkB.trigger(keep, 'mark', {});
  await marks.next(5000);
  assert.equal(ticks.events.length, delivered, `an event of an unfollowed channel was delivered: ${JSON.stringify(ticks.events)}`);
  const after = await persistenceApi(A).messages(user, { limit: 100 });
  assert.ok(
    after.json.messages.every((m) => !(m.channel === feed && m.data.includes('after'))),
    `stored after the unfollow: ${after.text}`,
  );
});

test('a notification callback registered through A is called for events published through B at once; unsubscribe likewise', T, async () => {
  const [channel, other] = [uniq('news'), uniq('other')];
  const path = `/apps/${APPS.main.appId}/notifications`;
  const callbacksOf = (event) => callbacks.accepted().filter((r) => r.json?.channel === channel && r.json?.event === event);
  const reg = await api(A, 'POST', `${path}/subscribe`, { body: { channel, url: callbacks.url } });
  assert.equal(reg.status, 200, reg.text);
  assert.equal((await api(B, 'POST', `${path}/subscribe`, { body: { channel: other, url: callbacks.url } })).status, 200);

  const took = await publishUntil(B, channel, 'update', () => callbacksOf('update').length > 0, AT_ONCE_MS);
  assert.ok(took <= AT_ONCE_MS, `the registration took ${took} ms to reach node B`);
  const got = callbacksOf('update')[0];
  assert.equal(got.headers['x-pusher-key'], APPS.main.key);
  assert.equal(got.headers['x-pusher-signature'], hmacHex(APPS.main.secret, got.rawBody));

  const gone = await api(A, 'POST', `${path}/unsubscribe`, { body: { channel, url: callbacks.url } });
  assert.equal(gone.status, 200, gone.text);
  await sleep(AT_ONCE_MS);
  const sdkB = sdkOn(B);
  await sdkB.trigger(channel, 'late', {});
  // Routed after `late` through the same node (one job at a time): once it
  // arrived, `late` would have.
  await sdkB.trigger(other, 'marker', {});
  await waitFor(() => callbacks.accepted().some((r) => r.json?.channel === other), 5000, 20, 'the marker callback');
  assert.deepEqual(callbacksOf('late'), [], 'a callback after the unsubscribe');
});

/** A pushi call on `node`: {status, json}. */
async function pushi(node, path, params) {
  const res = await fetch(`http://${node.host}:${node.port}/pushi/${path}?${new URLSearchParams(params)}`);
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.status, json, text };
}

test('pushi: a token logged out through B is refused by A at once', T, async () => {
  const login = await pushi(A, 'login', { app_id: APPS.main.appId, app_key: APPS.main.key, app_secret: APPS.main.secret });
  assert.equal(login.status, 200, login.text);
  const sid = login.json.token;
  assert.equal((await pushi(A, 'apps', { sid })).status, 200, 'the token works on A');
  assert.equal((await pushi(B, 'apps', { sid })).status, 200, 'and on B');
  const out = await pushi(B, 'logout', { sid });
  assert.equal(out.status, 200, out.text);
  assert.notEqual((await pushi(B, 'apps', { sid })).status, 200, 'refused on B at once');
  let refused;
  await waitFor(
    async () => {
      refused = await pushi(A, 'apps', { sid });
      return refused.status !== 200;
    },
    AT_ONCE_MS,
    20,
    'node A refusing the logged-out token',
  );
  assert.equal(refused.status, 403, refused.text);
  assert.match(refused.text, /logout/);
});

test('a member who leaves through A and rejoins through B within the hold-back: no webhook, as on one node; pusher-js members see member_removed then member_added', T, async (t) => {
  const [shared, alone] = [`presence-${uniq('room')}`, `presence-${uniq('solo')}`];
  const of = (channel) =>
    hooks
      .events()
      .filter((e) => e.channel === channel)
      .map((e) => (e.user_id ? `${e.name}:${e.user_id}` : e.name));
  const watcher = await pusherOnNode(t, A, { app: WH_APP, presence: { user_id: 'watcher' } });
  const watched = await subscribed(watcher, shared);
  // What the watcher's pusher-js sees of the mover, in order.
  const seen = [];
  watched.bind('pusher:member_added', (m) => seen.push(`added:${m.id}`));
  watched.bind('pusher:member_removed', (m) => seen.push(`removed:${m.id}`));
  const mover = await pusherOnNode(t, A, { app: WH_APP, presence: { user_id: 'mover' } });
  await subscribed(mover, shared);
  await subscribed(mover, alone);
  await waitFor(() => seen.length > 0, 3000, 10, 'member_added of mover');
  await hooks.waitEvent((e) => e.channel === alone && e.name === 'member_added', 3000, 'member_added on the solo channel');
  await hooks.waitEvent((e) => e.channel === shared && e.name === 'member_added' && e.user_id === 'mover', 3000, 'member_added of mover');

  const left = Date.now();
  mover.disconnect();
  const back = await pusherOnNode(t, B, { app: WH_APP, presence: { user_id: 'mover' } });
  await subscribed(back, shared);
  await subscribed(back, alone);
  assert.ok(Date.now() - left < HOLD_MS, `the rejoin took ${Date.now() - left} ms: not within the hold-back`);
  // What a member sees is immediate, as on one node: the leave, then the join.
  await waitFor(() => seen.length >= 3, 3000, 10, `the leave and the rejoin; seen ${seen}`);
  await sleep(200);
  assert.deepEqual(seen, ['added:mover', 'removed:mover', 'added:mover']);
  assert.equal(watched.members.count, 2, 'pusher-js lists both members');
  await sleep(HOLD_MS + 700);
  const all = summarizeEvents(hooks.events().filter((e) => e.channel === shared || e.channel === alone));
  assert.deepEqual(of(alone).sort(), ['channel_occupied', 'member_added:mover'], all);
  assert.deepEqual(of(shared).sort(), ['channel_occupied', 'member_added:mover', 'member_added:watcher'], all);
});
