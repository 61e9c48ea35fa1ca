// The console across nodes (README "The console"): two rusher nodes share
// one redis-server (and, for one case, a Redis Cluster of three masters); a
// console's live stream open on node A shows the app's events that happen
// on node B (a pusher-js client's connect and subscribe, an event the Node
// `pusher` SDK triggers, a client event, a refused handshake), each exactly
// once and within a second, and an event published through A to B's
// subscribers once. Node B forwards only while a console watches: the
// explicit end when the stream closes stops it at once, and a lease not
// renewed (A killed) is forgotten after 3 lease periods. A node started
// later learns of the open console within one period. The stream's
// connection count is the cluster's.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { APPS, connectRaw, tomlString as q, uniqueChannel, waitFor } from './helpers.mjs';
import { startReceiver } from './webhook-helpers.mjs';
import {
  adapterLogs,
  clusterConfig,
  killAll,
  pusherOn,
  sdkOn,
  spawnNode,
  startRedis,
  subscribed,
  waitBus,
  writeConfig,
} from './cluster-helpers.mjs';
import { startRedisCluster } from './redis-cluster-helpers.mjs';

const T = { timeout: 40000 };
const LEASE_MS = 300;
/** How soon an event on node B must be in node A's console log. */
const SHOWN_MS = 1000;
const SESSION_SECRET = 'cluster-console-session-secret-0123';

let receiver;
let single; // {redis, configPath, A, B}

/** A console config over `redisUrl` (a Redis Cluster when `cluster`). */
function consoleConfig(redisUrl, prefix, cluster = false) {
  return `${clusterConfig({ redisUrl, prefix, webhookUrl: `http://127.0.0.1:${receiver.port}/hooks`, cluster })}
[console]
enabled = true
session_secret = ${q(SESSION_SECRET)}
lease_ms = ${LEASE_MS}
`;
}

async function startNodes(redisUrl, prefix, cluster = false) {
  const { path: configPath } = writeConfig(consoleConfig(redisUrl, prefix, cluster));
  const [A, B] = await Promise.all([spawnNode('A', configPath), spawnNode('B', configPath)]);
  await waitBus([A, B], uniqueChannel('console-bus'));
  return { configPath, A, B };
}

before(async () => {
  receiver = await startReceiver();
  const redis = await startRedis();
  single = { redis, ...(await startNodes(redis.url, `console-${process.pid}`)) };
});

after(async () => {
  await killAll();
  await receiver?.stop();
});

/** A metric's value on `node` (0 when absent). */
async function metric(node, name) {
  const text = await (await fetch(`http://127.0.0.1:${node.port}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : 0;
}

/**
 * Log in to `app` on `node` and open its live stream (closed when the test
 * ends, or by close()). Returns {text(), readUntil(pattern, ms), logEvents(), close()}.
 */
async function openLive(t, node, app = APPS.main) {
  const base = `http://127.0.0.1:${node.port}`;
  const login = await fetch(`${base}/console/api/login`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ app_id: app.appId, secret: app.secret }),
  });
  assert.equal(login.status, 200);
  const cookie = (login.headers.get('set-cookie') || '').split(';')[0];
  const controller = new AbortController();
  t.after(() => controller.abort());
  const response = await fetch(`${base}/console/api/apps/${app.appId}/live`, {
    headers: { Cookie: cookie },
    signal: controller.signal,
  });
  assert.equal(response.status, 200);
  const reader = response.body.getReader();
  let text = '';
  const live = {
    text: () => text,
    async readUntil(pattern, ms = 5000) {
      const deadline = Date.now() + ms;
      while (!pattern.test(text)) {
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`no ${pattern} in the stream within ${ms} ms: ${text.slice(-3000)}`);
        let timer;
        const timeout = new Promise((resolve) => {
          timer = setTimeout(() => resolve({ timedOut: true }), left);
        });
        const read = await Promise.race([reader.read(), timeout]).finally(() => clearTimeout(timer));
        if (read.timedOut) continue;
        if (read.done) throw new Error(`the stream ended: ${text.slice(-3000)}`);
        text += Buffer.from(read.value).toString('utf8');
      }
    },
    logEvents: () =>
      text
        .split('\n')
        .filter((line) => line.startsWith('data: {"kind":'))
        .map((line) => JSON.parse(line.slice(6))),
    close: () => controller.abort(),
  };
  await live.readUntil(/event: stats/);
  return live;
}

/** The log events matching `pred`. */
const matching = (live, pred) => live.logEvents().filter(pred);

/** Waits until `node` forwards `app`'s events (it holds a lease of another node's console). */
async function forwarding(node, what, within = 3000) {
  await waitFor(async () => (await metric(node, 'rusher_console_remote_watched_apps')) >= 1, within, 20, what);
}

/**
 * The cross-node case: a console on A, everything happening on B shown once.
 * Returns the live stream (still open).
 */
async function consoleSeesTheOtherNode(t, { A, B }) {
  const live = await openLive(t, A);
  await forwarding(B, 'node B forwarding after the console opened on A');
  const channel = uniqueChannel('console-x');
  const privateChannel = `private-${uniqueChannel('console-x')}`;

  // A pusher-js client connects and subscribes on B.
  let started = Date.now();
  const client = await pusherOn(t, B);
  const socketId = client.connection.socket_id;
  const onB = await subscribed(client, channel);
  await live.readUntil(new RegExp(`"kind":"subscribed","time_ms":\\d+,"channel":"${channel}"`), SHOWN_MS + (Date.now() - started));
  const connected = matching(live, (e) => e.kind === 'connected' && e.socket_id === socketId);
  assert.equal(connected.length, 1, `one connected of ${socketId}: ${live.text().slice(-2000)}`);
  const nodeB = connected[0].node;
  assert.match(nodeB ?? '', /^[0-9a-f]{16}$/, 'a log line of several nodes names its node');

  // The Node SDK triggers through B.
  started = Date.now();
  await sdkOn(B).trigger(channel, 'from-b', { via: 'node B' });
  await live.readUntil(/"event":"from-b"/, SHOWN_MS);
  assert.ok(Date.now() - started <= SHOWN_MS, `shown after ${Date.now() - started} ms`);

  // A client event on B.
  const priv = await subscribed(client, privateChannel);
  priv.trigger('client-typing', { by: 'b' });
  await live.readUntil(/"event":"client-typing"/, SHOWN_MS);

  // A refused handshake on B (a protocol version pusher-js never sends).
  const old = connectRaw(APPS.main.key, 'protocol=3&client=js&version=1.0', undefined, {}, { host: '127.0.0.1', port: B.port });
  t.after(() => old.close());
  await live.readUntil(/"detail":"4007 /, SHOWN_MS);

  // Published through A to B's subscriber: shown once (by A, where it was published).
  const received = new Promise((resolve) => onB.bind('from-a', resolve));
  await sdkOn(A).trigger(channel, 'from-a', { via: 'node A' });
  await received;
  // A last event from B, once shown, comes after everything before it from B.
  await sdkOn(B).trigger(channel, 'marker', {});
  await live.readUntil(/"event":"marker"/, SHOWN_MS);

  const once = (what, pred) => assert.equal(matching(live, pred).length, 1, `${what} once: ${live.text().slice(-3000)}`);
  once('from-b', (e) => e.event === 'from-b');
  once('from-a', (e) => e.event === 'from-a');
  once('client-typing', (e) => e.event === 'client-typing');
  once('the subscribe', (e) => e.kind === 'subscribed' && e.channel === channel);
  once('the refusal', (e) => e.kind === 'refused');
  for (const [event, node] of [
    ['from-b', nodeB],
    ['client-typing', nodeB],
  ]) {
    assert.equal(matching(live, (e) => e.event === event)[0].node, node, `${event} names node B`);
  }
  const fromA = matching(live, (e) => e.event === 'from-a')[0];
  assert.ok(fromA.node && fromA.node !== nodeB, 'the event published through A names node A');
  assert.ok(
    matching(live, (e) => e.event === 'from-b')[0].data.includes('node B'),
    'the preview of the payload travels too',
  );
  return { live, client };
}

test('a console on node A shows the app\'s events of node B, each once within a second; its count is the cluster\'s', T, async (t) => {
  const { A, B } = single;
  const { live } = await consoleSeesTheOtherNode(t, single).catch((e) => {
    throw new Error(`${e.message}\n${adapterLogs([A, B])}`);
  });
  // The connection on B counts in A's stats (the usage the nodes share).
  await live.readUntil(/"connections":[1-9]/, 5000);
});

test('node B stops forwarding at once when the console closes', T, async (t) => {
  const { A, B } = single;
  const live = await openLive(t, A);
  await forwarding(B, 'node B forwarding');
  const channel = uniqueChannel('console-stop');
  await sdkOn(B).trigger(channel, 'while-open', {});
  await live.readUntil(/"event":"while-open"/, SHOWN_MS);
  const forwarded = await metric(B, 'rusher_console_forwarded_total');
  assert.ok(forwarded >= 1, `B counted what it forwarded (${forwarded})`);

  live.close();
  // The explicit end: B forgets the lease without waiting for it to expire.
  await waitFor(async () => (await metric(B, 'rusher_console_remote_watched_apps')) === 0, LEASE_MS, 20, 'node B forgetting the lease at once');
  for (let i = 0; i < 5; i += 1) await sdkOn(B).trigger(channel, 'after-close', {});
  // A trigger's console event is encoded before its HTTP answer: none was.
  assert.equal(await metric(B, 'rusher_console_forwarded_total'), forwarded, 'nothing forwarded after the close');
  assert.equal(await metric(B, 'rusher_console_forward_dropped_total'), 0);
});

test('a node started later learns of the open console within a lease; a killed node\'s lease expires', T, async (t) => {
  const { A, B, configPath } = single;
  await openLive(t, A);
  await forwarding(B, 'node B forwarding');
  const C = await spawnNode('C', configPath);
  // Within one lease period of C listening (plus the metric's polling).
  await forwarding(C, 'node C learning of the console on A', LEASE_MS * 2 + 1000);
  // A dies without saying its console closed: B and C forget it after 3 leases.
  await A.kill('SIGKILL');
  const expiry = LEASE_MS * 3 + LEASE_MS + 1000;
  for (const node of [B, C]) {
    await waitFor(async () => (await metric(node, 'rusher_console_remote_watched_apps')) === 0, expiry, 50, `node ${node.name} forgetting the dead node's lease`);
  }
});

test('on a Redis Cluster too: a console on node A shows node B\'s events once', { timeout: 60000 }, async (t) => {
  const cluster = await startRedisCluster();
  t.after(() => cluster.shutdown());
  const nodes = await startNodes(cluster.url, `console-rc-${process.pid}`, true);
  await consoleSeesTheOtherNode(t, nodes).catch((e) => {
    throw new Error(`${e.message}\n${adapterLogs([nodes.A, nodes.B])}`);
  });
  await nodes.A.kill();
  await nodes.B.kill();
});
