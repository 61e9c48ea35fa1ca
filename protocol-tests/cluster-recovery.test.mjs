// Recovery for unmodified pusher-js across a Redis cluster (README "History
// and recovery", "Recovery for pusher-js, unmodified", "On a Redis
// cluster"): a signed-in user's confirmed positions live in Redis, so a
// pusher-js client cut off on node 1 that reconnects to node 2 (through a
// proxy whose upstream the test switches), also after `kill -9` of node 1,
// gets the 50 events published meanwhile once, in order, then live ones; an
// anonymous client does the same with the README's `resumeWithSince`
// snippet; a position taken on a node whose mirror never saw the channel
// starts at the stream's latest serial (nothing from before the join is
// replayed); positions never cross users or apps.
//
// Its own redis-server and nodes N1, N2 (plus N3 started late) with two apps
// that have history on; every process is killed at the end.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { collect, sleep, tomlString as q, waitFor, withTimeout } from './helpers.mjs';
import { killAll, rawOn, sdkOn, spawnNode, startRedis, waitBus, writeConfig } from './cluster-helpers.mjs';
import { cuttableProxy } from './proxy-helpers.mjs';
import { recoveringClient, resumeWithSince } from './recovery-helpers.mjs';

const T = { timeout: 30000 };
const RUN = `${process.pid.toString(36)}${Date.now().toString(36).slice(-5)}`;
let uid = 0;
const uniq = (prefix) => `${prefix}-${RUN}-${(uid += 1)}`;

const APP = { appId: 'app-id', key: 'app-key', secret: 'app-secret' };
const APP2 = { appId: 'app-two', key: 'app-two-key', secret: 'app-two-secret' };

let redis;
let config;
let N1;
let N2;

function recoveryConfig(redisUrl) {
  const app = ({ appId, key, secret }) => `[[apps]]
id = ${q(appId)}
key = ${q(key)}
secret = ${q(secret)}
history = true
history_size = 100
`;
  return `adapter = "redis"

[server]
host = "127.0.0.1"
port = 6001
log_level = "info"
shutdown_grace = 1

[redis]
url = ${q(redisUrl)}
prefix = ${q(`rusher-crec-${RUN}`)}
heartbeat_secs = 1
node_timeout_secs = 3
operation_timeout_ms = 500

${app(APP)}
${app(APP2)}`;
}

before(async () => {
  redis = await startRedis();
  config = writeConfig(recoveryConfig(redis.url));
  [N1, N2] = await Promise.all([spawnNode('N1', config.path), spawnNode('N2', config.path)]);
  await waitBus([N1, N2], uniq('probe'));
});

after(async () => {
  await killAll();
});

/** A recovering pusher-js client through `proxy` (see recovery-helpers.mjs); `app` defaults to APP. */
function client(t, proxy, opts = {}) {
  const app = opts.app ?? APP;
  return recoveringClient(t, proxy, sdkOn(N2, app), { ...opts, app });
}

async function subscribe(pusher, name) {
  const channel = pusher.subscribe(name);
  await withTimeout(
    new Promise((resolve, reject) => {
      channel.bind('pusher:subscription_succeeded', resolve);
      channel.bind('pusher:subscription_error', reject);
    }),
    6000,
    `subscription to ${name}`,
  );
  return channel;
}

/**
 * A raw client on N2 subscribed to `channel`: `publish` waits until it saw
 * each event, so events published through different nodes get their serials
 * in the order of i (a publish is answered before Redis orders it).
 */
async function witness(t, channel, app = APP) {
  const raw = await rawOn(t, N2, app);
  await raw.subscribe(channel);
  return { raw, channel, app };
}

/** Publishes {i} for i in [from, to], alternately through `nodes`, each seen by `w` before the next. */
async function publish(w, nodes, from, to) {
  for (let i = from; i <= to; i += 1) {
    await sdkOn(nodes[i % nodes.length], w.app).trigger(w.channel, 'e', { i });
    await waitFor(
      () => w.raw.frames.some((f) => f.event === 'e' && f.channel === w.channel && f.dataParsed.i === i),
      5000,
      5,
      `event ${i} on the bus`,
    );
  }
}

async function metric(node, name) {
  const text = await (await fetch(`http://127.0.0.1:${node.port}/metrics`)).text();
  const m = text.match(new RegExp(`^${name}(?:\\{\\})? ([0-9.e+]+)$`, 'm'));
  return m ? Number(m[1]) : 0;
}

async function reconnected(pusher, oldSocketId) {
  await waitFor(
    () => pusher.connection.state === 'connected' && pusher.connection.socket_id !== oldSocketId,
    10000,
    20,
    'pusher-js reconnected',
  );
}

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, k) => from + k);

/**
 * Issue 12's scenario across nodes: 5 events seen (and, signed in,
 * confirmed) on N1, the connection cut (`mode`), 50 events published through
 * both nodes, `beforeResume()` (e.g. kill -9 N1), reconnect to N2, then a
 * live one: the client gets 1..56 once, in order.
 */
async function fiftyAcrossNodes(t, { user, snippet = false, mode = 'close', beforeResume = async () => {} }) {
  const name = uniq('news');
  const w = await witness(t, name);
  const proxy = await cuttableProxy(t, N1);
  const pusher = await client(t, proxy, { user, snippet });
  const got = collect(await subscribe(pusher, name), 'e');
  const confirmed = await metric(N1, 'rusher_recovery_confirmations_total');
  await publish(w, [N1, N2], 1, 5);
  for (let i = 1; i <= 5; i += 1) assert.deepEqual(await got.next(), { i });
  if (user) {
    // Until the client confirmed them they would come again (at least once).
    await waitFor(async () => (await metric(N1, 'rusher_recovery_confirmations_total')) > confirmed, 5000, 50, 'confirmed');
  }
  const oldSocketId = pusher.connection.socket_id;
  proxy.cut(mode);
  await publish(w, [N1, N2], 6, 55);
  if (mode === 'silent') {
    await waitFor(() => pusher.connection.state !== 'connected', 10000, 20, 'pusher-js noticed the cut');
  }
  await beforeResume();
  proxy.resume(N2);
  await reconnected(pusher, oldSocketId);
  for (let i = 6; i <= 55; i += 1) assert.deepEqual(await got.next(5000), { i }, `event ${i}`);
  await publish(w, [N2], 56, 56);
  assert.deepEqual(await got.next(), { i: 56 });
  await sleep(300);
  assert.deepEqual(
    got.events.map((e) => e.i),
    range(1, 56),
    'each event once, in order',
  );
  return pusher;
}

test('the README snippet is found', () => {
  assert.equal(typeof resumeWithSince, 'function', 'a js block defining resumeWithSince in README.md');
});

test('signed-in pusher-js cut off on node 1 reconnects to node 2: the 50 events published meanwhile on both nodes arrive once, in order, then live', T, async (t) => {
  const recovered = await metric(N2, 'rusher_history_recoveries_total');
  await fiftyAcrossNodes(t, { user: { id: uniq('ann') } });
  assert.ok((await metric(N2, 'rusher_history_recoveries_total')) > recovered, 'node 2 recovered it');
  assert.equal(await metric(N2, 'rusher_recovery_fail_open_total'), 0, 'from Redis');
});

test('anonymous pusher-js with the README snippet recovers across nodes the same way', T, async (t) => {
  await fiftyAcrossNodes(t, { snippet: true });
});

test('positions never cross users or apps: another user, or the same user id in another app, gets nothing replayed', T, async (t) => {
  const name = uniq('news');
  const w = await witness(t, name);
  const w2 = await witness(t, name, APP2);
  const id = uniq('bob');
  const proxy = await cuttableProxy(t, N1);
  const bob = await client(t, proxy, { user: { id } });
  const got = collect(await subscribe(bob, name), 'e');
  const other = await client(t, proxy, { user: { id }, app: APP2 });
  await subscribe(other, name);
  const confirmed = await metric(N1, 'rusher_recovery_confirmations_total');
  await publish(w, [N1, N2], 1, 3);
  await publish(w2, [N1], 1, 3);
  for (let i = 1; i <= 3; i += 1) assert.deepEqual(await got.next(), { i });
  await waitFor(async () => (await metric(N1, 'rusher_recovery_confirmations_total')) >= confirmed + 2, 5000, 50, 'confirmed');
  proxy.cut('close');
  await publish(w, [N1, N2], 4, 10);

  // Another user of the same app on node 2: live only.
  const direct = await cuttableProxy(t, N2);
  const carol = await client(t, direct, { user: { id: uniq('carol') } });
  const carolGot = collect(await subscribe(carol, name), 'e');
  // The same user id in app two, where nothing was missed on that channel
  // name: live only (app one's 7 missed events are not its).
  const twin = await client(t, direct, { user: { id }, app: APP2 });
  const twinGot = collect(await subscribe(twin, name), 'e');
  await publish(w, [N2], 11, 11);
  await publish(w2, [N2], 4, 4);
  assert.deepEqual(await carolGot.next(), { i: 11 });
  assert.deepEqual(await twinGot.next(), { i: 4 });
  await sleep(300);
  assert.deepEqual(carolGot.events, [{ i: 11 }], 'nothing of bob replayed to carol');
  assert.deepEqual(twinGot.events, [{ i: 4 }], 'nothing of app one, nor of its own past, replayed in app two');
});

test("a position taken on a node whose mirror never saw the channel starts at the stream's latest serial", T, async (t) => {
  const name = uniq('late');
  const w = await witness(t, name);
  // 30 events before node 3 exists: its mirror of the channel starts empty.
  await publish(w, [N1, N2], 1, 30);
  const N3 = await spawnNode('N3', config.path);
  t.after(() => N3.kill());
  await waitBus([N2, N3], uniq('probe'));
  const proxy = await cuttableProxy(t, N3);
  const pusher = await client(t, proxy, { user: { id: uniq('dan') } });
  const got = collect(await subscribe(pusher, name), 'e');
  // Cut before any event reached it (nothing confirmed: the join's position stands).
  const oldSocketId = pusher.connection.socket_id;
  await sleep(200);
  proxy.cut('close');
  await publish(w, [N1, N2], 31, 50);
  proxy.resume(N2);
  await reconnected(pusher, oldSocketId);
  for (let i = 31; i <= 50; i += 1) assert.deepEqual(await got.next(5000), { i }, `event ${i}`);
  await publish(w, [N2], 51, 51);
  assert.deepEqual(await got.next(), { i: 51 });
  await sleep(300);
  assert.deepEqual(got.events.map((e) => e.i), range(31, 51), 'nothing from before the join, nothing twice');
});

test('signed-in pusher-js silently cut off, then node 1 killed with -9: node 2 recovers the 50 events from the position in Redis', T, async (t) => {
  await fiftyAcrossNodes(t, {
    user: { id: uniq('eve') },
    mode: 'silent',
    beforeResume: async () => {
      await N1.kill('SIGKILL');
    },
  });
});
