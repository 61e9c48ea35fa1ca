// Apps managed at runtime (README "Apps at runtime: the admin API"): the
// admin API behind `[admin] token` creates, changes and deletes apps; a new
// app serves pusher-js and the Node `pusher` SDK at once, with its webhooks;
// a disabled or deleted app is refused (4003 / 403) and its open connections
// are closed with 4003; with `[apps_store] backend = "mongodb"` and the Redis
// adapter, an app created through one node serves on the other within the
// documented interval; with MongoDB down the apps in use keep working and
// the admin API answers 503.
//
// Real parts: pusher-js, the Node `pusher` SDK, raw ws, jongodb (the
// MongoDB-wire test server, persistence-helpers.mjs), redis-server
// (cluster-helpers.mjs). Every process is the suite's own.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  APPS,
  connectRaw,
  fixtureApps,
  newPusherClient,
  serverSdk,
  subscribeAndWait,
  tomlString as q,
  waitFor,
  withTimeout,
} from './helpers.mjs';
import { killAll as killMongo, persistenceApi, startRusher, suiteMongo, RUN_ID } from './persistence-helpers.mjs';
import { killAll as killCluster, spawnNode, startRedis, writeConfig } from './cluster-helpers.mjs';
import { startReceiver } from './webhook-helpers.mjs';

const T = { timeout: 30000 };
const TOKEN = `admin-token-${RUN_ID}-0123456789`;
const POLL_MS = 1000;

let single; // one node, apps in memory (backend = "config")
let noAdmin; // one node without [admin] token
let mongo;
let redis;
let nodes = [];
let receiver;
let clusterText;

function baseConfig(extra = '', top = '') {
  return `${top}
[server]
host = "127.0.0.1"
port = 6001
log_level = "info"
shutdown_grace = 1

[server.webhooks]
batch_ms = 50
member_removed_delay_ms = 0
channel_vacated_delay_ms = 0
${extra}
${fixtureApps()}`;
}

before(async () => {
  receiver = await startReceiver();
  single = await startRusher(baseConfig(`\n[admin]\ntoken = ${q(TOKEN)}\n`));
  noAdmin = await startRusher(baseConfig());
  mongo = await suiteMongo();
  redis = await startRedis();
  const database = `apps_${RUN_ID}`;
  const cluster = baseConfig(`
[redis]
url = ${q(redis.url)}
prefix = ${q(`apps-${RUN_ID}`)}
heartbeat_secs = 1
node_timeout_secs = 3
operation_timeout_ms = 500

[store]
url = ${q(mongo.url)}
database = ${q(database)}
timeout_ms = 1000

[apps_store]
backend = "mongodb"
poll_interval_ms = ${POLL_MS}

[admin]
token = ${q(TOKEN)}
`, 'adapter = "redis"');
  clusterText = cluster;
  const { path } = writeConfig(cluster);
  nodes = [await spawnNode('a', path), await spawnNode('b', path)];
});

after(async () => {
  await receiver?.stop();
  await killCluster();
  await killMongo();
});

const at = (server) => ({ host: '127.0.0.1', port: server.port });

/** An admin API call; resolves {status, json}. */
async function admin(server, method, path, { body, token = TOKEN, header } = {}) {
  const headers = { 'content-type': 'application/json' };
  if (header !== undefined) headers.authorization = header;
  else if (token !== null) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`http://127.0.0.1:${server.port}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.status, json, text };
}

async function createApp(server, options = {}) {
  const res = await admin(server, 'POST', '/admin/apps', { body: { name: 'test', ...options } });
  assert.equal(res.status, 201, res.text);
  return res.json;
}

const sdkFor = (server, app) => serverSdk({ appId: app.id, key: app.key, secret: app.secret }, '127.0.0.1', server.port);

/** A pusher-js client of `app` on `server`, disconnected after the test. */
async function pusher(t, server, app) {
  const client = await newPusherClient(app.key, {}, at(server));
  t.after(() => client.disconnect());
  return client;
}

/** pusher-js on `server` receives what the Node SDK triggers with `app`'s credentials. */
async function roundTrip(t, server, app, client) {
  const channel = `room-${Math.random().toString(36).slice(2, 8)}`;
  const sub = await subscribeAndWait(client ?? (await pusher(t, server, app)), channel);
  const got = new Promise((resolve) => sub.bind('hello', resolve));
  const res = await sdkFor(server, app).trigger(channel, 'hello', { n: 1 });
  assert.equal(res.status, 200);
  assert.deepEqual(await withTimeout(got, 3000, 'event not received'), { n: 1 });
}

/** A raw connection's refusal or close: {code} of its pusher:error / close. */
async function refusedWith(server, key) {
  const conn = connectRaw(key, undefined, undefined, {}, at(server));
  const info = await withTimeout(conn.closed, 5000, 'connection not closed');
  const error = conn.frames.find((f) => f.event === 'pusher:error');
  conn.close();
  return { close: info.code, error: error ? JSON.parse(typeof error.data === 'string' ? error.data : JSON.stringify(error.data)).code : null };
}

test('an app created through the admin API serves pusher-js and the Node SDK at once, webhooks included', T, async (t) => {
  const app = await createApp(single, {
    max_connections: 10,
    webhooks: [{ url: receiver.url, event_types: ['channel_occupied'] }],
  });
  for (const field of ['id', 'key', 'secret']) assert.match(app[field], /^[0-9a-f]{64}$/);
  assert.equal(app.source, 'store');
  assert.equal(app.max_connections, 10);
  await roundTrip(t, single, app);
  // Its webhook, signed with its own key and secret.
  const occupied = await receiver.waitEvent((e) => e.name === 'channel_occupied' && e._req.headers['x-pusher-key'] === app.key);
  assert.ok(occupied);
  // Listed and shown with its credentials; config apps listed as such.
  const list = await admin(single, 'GET', '/admin/apps');
  assert.equal(list.status, 200);
  assert.ok(list.json.apps.some((a) => a.id === app.id && a.source === 'store'));
  assert.ok(list.json.apps.some((a) => a.id === APPS.main.appId && a.source === 'config'));
  const shown = await admin(single, 'GET', `/admin/apps/${app.id}`);
  assert.equal(shown.json.secret, app.secret);
});

test('a new app gets limits, subscription counting and offline subscriptions like a configured one', T, async (t) => {
  const app = await createApp(single, { max_connections: 1, subscription_count: true, subscription_count_interval_ms: 200 });
  // max_connections: the second connection is refused with 4004.
  const client = await pusher(t, single, app);
  assert.deepEqual(await refusedWith(single, app.key), { close: 4004, error: 4004 });
  // Subscription counting: pusher-js learns its channel's count.
  const channel = await subscribeAndWait(client, `counted-${RUN_ID}`);
  await waitFor(() => channel.subscriptionCount === 1, 3000, 20, 'subscriptionCount 1');
  // Offline subscriptions (follow API): a follower's message is stored for it.
  const papi = persistenceApi(single, { appId: app.id, key: app.key, secret: app.secret });
  const followed = `news-${RUN_ID}`;
  const res = await papi.follow('u1', followed);
  assert.equal(res.status, 200, res.text);
  await sdkFor(single, app).trigger(followed, 'article', { n: 7 });
  await waitFor(async () => (await papi.messages('u1')).json?.messages?.length === 1, 3000, 50, 'stored message');
});

test('bad input is refused like a bad config file: 400 naming the option; config apps are not editable (409)', T, async () => {
  const zero = await admin(single, 'POST', '/admin/apps', { body: { max_event_data_bytes: 0 } });
  assert.equal(zero.status, 400);
  assert.match(zero.json.error, /max_event_data_bytes/);
  const unknown = await admin(single, 'POST', '/admin/apps', { body: { max_conections: 3 } });
  assert.equal(unknown.status, 400);
  assert.match(unknown.json.error, /max_conections/);
  const own = await admin(single, 'POST', '/admin/apps', { body: { secret: 'mine' } });
  assert.equal(own.status, 400);
  const config = await admin(single, 'PATCH', `/admin/apps/${APPS.main.appId}`, { body: { enabled: false } });
  assert.equal(config.status, 409);
  assert.equal((await admin(single, 'GET', '/admin/apps/nope')).status, 404);
});

test('concurrent PATCHes of one app each change their option: none is lost', T, async () => {
  const changes = [{ max_connections: 7 }, { name: 'n7' }, { client_events: true }, { max_channels_per_connection: 77 }, { max_event_data_bytes: 777 }, { history: true }];
  for (let round = 0; round < 40; round += 1) {
    const app = await createApp(single);
    const answers = await Promise.all(changes.map((body) => admin(single, 'PATCH', `/admin/apps/${app.id}`, { body })));
    assert.deepEqual(answers.map((a) => a.status), changes.map(() => 200));
    const shown = (await admin(single, 'GET', `/admin/apps/${app.id}`)).json;
    for (const change of changes) {
      for (const [option, value] of Object.entries(change)) assert.equal(shown[option], value, `round ${round}: ${option} lost`);
    }
    assert.equal((await admin(single, 'DELETE', `/admin/apps/${app.id}`)).status, 200);
  }
});

test('a missing or wrong token, or an app secret as the token, is 401; without a token the admin API is off', T, async () => {
  const app = await createApp(single);
  for (const options of [{ token: null }, { token: 'wrong-token-wrong-token' }, { token: app.secret }, { token: APPS.main.secret }, { header: TOKEN }]) {
    const res = await admin(single, 'GET', '/admin/apps', options);
    assert.equal(res.status, 401, JSON.stringify(options));
    assert.match(res.json.error, /admin token/);
  }
  const off = await admin(noAdmin, 'GET', '/admin/apps');
  assert.equal(off.status, 404);
  assert.match(off.json.error, /admin API is off/);
});

test('a disabled app is refused at once (4003, HTTP 403) and its open connections are closed with 4003', T, async (t) => {
  const app = await createApp(single);
  const open = connectRaw(app.key, undefined, undefined, {}, at(single));
  t.after(() => open.close());
  await open.established();
  const res = await admin(single, 'PATCH', `/admin/apps/${app.id}`, { body: { enabled: false } });
  assert.equal(res.status, 200, res.text);
  assert.equal(res.json.enabled, false);
  const closed = await withTimeout(open.closed, 3000, 'open connection not closed');
  assert.equal(closed.code, 4003);
  assert.deepEqual(await refusedWith(single, app.key), { close: 4003, error: 4003 });
  await assert.rejects(sdkFor(single, app).trigger('c', 'e', {}), (e) => e.status === 403);
  // Enabled again: serves again.
  assert.equal((await admin(single, 'PATCH', `/admin/apps/${app.id}`, { body: { enabled: true } })).status, 200);
  await roundTrip(t, single, app);
});

test('a deleted app closes its connections with 4003, then is unknown (4001, 404)', T, async (t) => {
  const app = await createApp(single);
  const open = connectRaw(app.key, undefined, undefined, {}, at(single));
  t.after(() => open.close());
  await open.established();
  const res = await admin(single, 'DELETE', `/admin/apps/${app.id}`);
  assert.equal(res.status, 200, res.text);
  assert.equal((await withTimeout(open.closed, 3000, 'open connection not closed')).code, 4003);
  assert.deepEqual(await refusedWith(single, app.key), { close: 4001, error: 4001 });
  await assert.rejects(sdkFor(single, app).trigger('c', 'e', {}), (e) => e.status === 404);
  assert.equal((await admin(single, 'GET', `/admin/apps/${app.id}`)).status, 404);
});

test('MongoDB apps store on two Redis nodes: an app created through one serves on the other within the poll interval; a disable reaches both', T, async (t) => {
  const [a, b] = nodes;
  const app = await createApp(a);
  // The invalidation on Redis makes it immediate; polling bounds it.
  const started = Date.now();
  await waitFor(async () => (await admin(b, 'GET', `/admin/apps/${app.id}`)).status === 200, POLL_MS * 3, 50, 'node b knows the app');
  assert.ok(Date.now() - started <= POLL_MS * 3);
  const onB = await pusher(t, b, app);
  await roundTrip(t, b, app, onB);
  // Triggered through node a, received on node b.
  const channel = `x-${RUN_ID}`;
  const sub = await subscribeAndWait(onB, channel);
  const got = new Promise((resolve) => sub.bind('cross', resolve));
  await sdkFor(a, app).trigger(channel, 'cross', { ok: true });
  assert.deepEqual(await withTimeout(got, 3000, 'cross-node event'), { ok: true });
  // Disabled through node b: node a refuses it too and closes its sockets.
  const openOnA = connectRaw(app.key, undefined, undefined, {}, at(a));
  t.after(() => openOnA.close());
  await openOnA.established();
  assert.equal((await admin(b, 'PATCH', `/admin/apps/${app.id}`, { body: { enabled: false } })).status, 200);
  assert.equal((await withTimeout(openOnA.closed, POLL_MS * 3, 'node a did not close')).code, 4003);
  assert.deepEqual(await refusedWith(a, app.key), { close: 4003, error: 4003 });
});

test('a stored app invalid for one node (its outgoing_queue is smaller) is skipped there with a log line and a metric, never a crash', T, async () => {
  const [a] = nodes;
  // history_size must be at most server.outgoing_queue / 2: fine on a and b, not on c.
  const app = await createApp(a, { history: true, history_size: 400 });
  const { path } = writeConfig(clusterText.replace('shutdown_grace = 1', 'shutdown_grace = 1\noutgoing_queue = 200'));
  const c = await spawnNode('c', path);
  try {
    await waitFor(() => c.log.join('').includes('stored app skipped'), POLL_MS * 3, 50, 'skip logged on c');
    assert.match(c.log.join(''), new RegExp(`${app.id}.*history_size|history_size.*${app.id}`));
    const metrics = await (await fetch(`http://127.0.0.1:${c.port}/metrics`)).text();
    assert.match(metrics, /^rusher_apps_invalid_total [1-9]/m);
    assert.deepEqual(await refusedWith(c, app.key), { close: 4001, error: 4001 });
    assert.ok(c.alive);
    // The others serve it.
    assert.equal((await admin(a, 'GET', `/admin/apps/${app.id}`)).status, 200);
  } finally {
    await c.kill();
    await admin(a, 'DELETE', `/admin/apps/${app.id}`);
  }
});

test('MongoDB down: the apps in use keep working from the cache, the admin API answers 503', T, async (t) => {
  if (mongo.external) return t.skip('cannot stop an external MongoDB');
  const [a] = nodes;
  const app = await createApp(a);
  await waitFor(async () => (await admin(a, 'GET', `/admin/apps/${app.id}`)).status === 200, 3000, 50, 'app known');
  await mongo.stop();
  // A poll failed meanwhile: the app stays.
  await new Promise((r) => setTimeout(r, POLL_MS * 2));
  await roundTrip(t, a, app);
  const down = await admin(a, 'POST', '/admin/apps', { body: {} });
  assert.equal(down.status, 503, down.text);
  assert.match(down.json.error, /apps store unavailable/);
  assert.ok(a.alive);
});
