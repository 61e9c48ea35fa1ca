// Idempotent publish (README "Idempotent publish"): an `idempotency_key` on
// POST /events (body field, or the X-Idempotency-Key header the sockudo SDKs
// send) and on each /batch_events item. A repeat of a key within the app's
// idempotency_window is answered 200 with the first answer and not
// delivered again, on one node and across two nodes sharing Redis; bad keys
// are 400; a refused request claims nothing; past the window a key publishes
// again.
//
// "Not delivered again" is checked without sleeps: after the repeats, a
// marker event is published on every node the repeats went through; frames
// from one node reach a subscriber in order, so once the marker arrived any
// duplicate would have arrived before it.
//
// The suite runs its own rusher (adapter = "local") and, for the cluster
// part, its own redis-server and two nodes; RUSHER_PORT's server is unused.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { APPS, hmacHex, md5, serverSdk, waitFor } from './helpers.mjs';
import { killAll as killServers, startRusher } from './persistence-helpers.mjs';
import { wsClient } from './webhook-helpers.mjs';
import { clusterConfig, killAll as killNodes, spawnNode, startRedis, writeConfig } from './cluster-helpers.mjs';

const T = { timeout: 30000 };
const MAIN = APPS.main;
const SHORT = { appId: 'short-app', key: 'short-key', secret: 'short-secret' };
const OFF = { appId: 'off-app', key: 'off-key', secret: 'off-secret' };

const CONFIG = `[server]
host = "127.0.0.1"
port = 6001
shutdown_grace = 1
log_level = "info"

# The default window (120 s).
[[apps]]
id = ${JSON.stringify(MAIN.appId)}
key = ${JSON.stringify(MAIN.key)}
secret = ${JSON.stringify(MAIN.secret)}
max_event_data_bytes = 100

# A key is remembered for 1 s.
[[apps]]
id = "short-app"
key = "short-key"
secret = "short-secret"
idempotency_window = 1

# Idempotent publish off: keys are checked, then ignored.
[[apps]]
id = "off-app"
key = "off-key"
secret = "off-secret"
idempotency_window = 0
`;

const RUN = `${process.pid.toString(36)}${Date.now().toString(36).slice(-5)}`;
let uid = 0;
const uniq = (prefix) => `${prefix}-${RUN}-${(uid += 1)}`;

let server;

before(async () => {
  server = await startRusher(CONFIG);
});

after(async () => {
  await killServers();
  await killNodes();
});

/** A signed POST (the Node SDK's signing) to `at` ({port}); resolves {status, json, headers}. */
async function post(at, path, body, { app = MAIN, headers = {} } = {}) {
  const text = JSON.stringify(body);
  const query = {
    auth_key: app.key,
    auth_timestamp: String(Math.floor(Date.now() / 1000)),
    auth_version: '1.0',
    body_md5: md5(text),
  };
  const qs = Object.keys(query)
    .sort()
    .map((k) => `${k}=${query[k]}`)
    .join('&');
  const full = `/apps/${app.appId}${path}`;
  const signature = hmacHex(app.secret, `POST\n${full}\n${qs}`);
  const res = await fetch(`http://127.0.0.1:${at.port}${full}?${qs}&auth_signature=${signature}`, {
    method: 'POST',
    body: text,
    headers: { 'content-type': 'application/json', ...headers },
  });
  const raw = await res.text();
  let json = null;
  try {
    json = JSON.parse(raw);
  } catch {
    /* not JSON */
  }
  return { status: res.status, json, text: raw, headers: res.headers };
}

/** A raw subscriber on `at` for `app`, subscribed to `channel`; closed after the test. */
async function subscriber(t, at, app, channel) {
  const client = wsClient(at.port, app.key);
  t.after(() => client.close());
  await client.ready;
  await client.subscribe(channel);
  return client;
}

/** The `data` of every frame of event `e` on `channel` a client got. */
const received = (client, channel, event = 'e') =>
  client.frames.filter((f) => f.event === event && f.channel === channel).map((f) => f.dataParsed);

/** Publishes a marker through each of `nodes` and waits until every client has them all. */
async function settle(nodes, app, channel, clients) {
  const before = clients.map((c) => received(c, channel, 'marker').length);
  for (const node of nodes) {
    await serverSdk(app, '127.0.0.1', node.port).trigger(channel, 'marker', { from: node.port });
  }
  await waitFor(
    () => clients.every((c, i) => received(c, channel, 'marker').length === before[i] + nodes.length),
    5000,
    50,
    'every marker delivered',
  );
}

/** One inline Redis command (words without spaces); resolves the first reply line. */
function redisCommand(port, line) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1', () => sock.write(`${line}\r\n`));
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString();
      if (buf.includes('\r\n')) {
        sock.destroy();
        resolve(buf.split('\r\n')[0]);
      }
    });
    sock.on('error', reject);
  });
}

/** A labelled counter on GET /metrics (0 when absent). */
async function counter(at, name, labels) {
  const text = await (await fetch(`http://127.0.0.1:${at.port}/metrics`)).text();
  const m = text.match(new RegExp(`^${name}\\{${labels}\\} ([0-9.e+]+)$`, 'm'));
  return m ? Number(m[1]) : 0;
}

test('a repeated key is answered like the first (Node SDK, with info) and delivered once', T, async (t) => {
  const channel = uniq('idem');
  const client = await subscriber(t, server, MAIN, channel);
  const sdk = serverSdk(MAIN, '127.0.0.1', server.port);
  const key = uniq('key');
  const params = { idempotency_key: key, info: 'subscription_count' };
  const first = await sdk.trigger(channel, 'e', { n: 1 }, params);
  assert.equal(first.status, 200);
  const firstBody = await first.json();
  assert.deepEqual(firstBody, { channels: { [channel]: { subscription_count: 1 } } });
  // A second subscriber changes the live count; the repeat still answers the first answer.
  await subscriber(t, server, MAIN, channel);
  const repeats = await Promise.all([1, 2, 3].map(() => sdk.trigger(channel, 'e', { n: 1 }, params)));
  for (const repeat of repeats) {
    assert.equal(repeat.status, 200);
    assert.deepEqual(await repeat.json(), firstBody);
    assert.equal(repeat.headers.get('idempotent-replayed'), 'true');
  }
  // Another body with the same key is the same publish: answered, not delivered.
  const other = await sdk.trigger(channel, 'e', { n: 2 }, params);
  assert.deepEqual(await other.json(), firstBody);
  await settle([server], MAIN, channel, [client]);
  assert.deepEqual(received(client, channel), [{ n: 1 }]);
  assert.ok((await counter(server, 'rusher_idempotent_publishes_total', 'result="repeat"')) >= 4);
});

test('concurrent requests with one key deliver once and all get the same answer', T, async (t) => {
  const channel = uniq('idem-race');
  const client = await subscriber(t, server, MAIN, channel);
  const key = uniq('key');
  const answers = await Promise.all(
    Array.from({ length: 10 }, () => post(server, '/events', { name: 'e', data: '{"n":1}', channel, idempotency_key: key })),
  );
  for (const answer of answers) assert.deepEqual([answer.status, answer.json], [200, {}]);
  await settle([server], MAIN, channel, [client]);
  assert.equal(received(client, channel).length, 1);
});

test('the X-Idempotency-Key header (sockudo SDKs) is a key; a body key that differs is refused', T, async (t) => {
  const channel = uniq('idem-header');
  const client = await subscriber(t, server, MAIN, channel);
  const key = uniq('key');
  const body = { name: 'e', data: '{"n":1}', channel };
  for (const headers of [{ 'x-idempotency-key': key }, { 'idempotency-key': key }]) {
    assert.equal((await post(server, '/events', body, { headers })).status, 200);
  }
  assert.equal((await post(server, '/events', { ...body, idempotency_key: key }, { headers: { 'x-idempotency-key': key } })).status, 200);
  const mismatch = await post(server, '/events', { ...body, idempotency_key: key }, { headers: { 'x-idempotency-key': 'other' } });
  assert.equal(mismatch.status, 400);
  assert.match(mismatch.json.error, /differ/);
  await settle([server], MAIN, channel, [client]);
  assert.equal(received(client, channel).length, 1);
});

test('batch items carry their own keys: repeats (also within one batch) are answered, not delivered', T, async (t) => {
  const [a, b] = [uniq('idem-batch-a'), uniq('idem-batch-b')];
  const client = await subscriber(t, server, MAIN, a);
  await client.subscribe(b);
  const [ka, kb] = [uniq('key'), uniq('key')];
  const sdk = serverSdk(MAIN, '127.0.0.1', server.port);
  const batch = () => [
    { channel: a, name: 'e', data: { n: 'a' }, idempotency_key: ka, info: 'subscription_count' },
    { channel: b, name: 'e', data: { n: 'b' }, idempotency_key: kb, info: 'subscription_count' },
    { channel: b, name: 'e', data: { n: 'b-again' }, idempotency_key: kb, info: 'subscription_count' },
    { channel: b, name: 'e', data: { n: 'no key' } },
  ];
  const first = await (await sdk.triggerBatch(batch())).json();
  assert.deepEqual(first, { batch: [{ subscription_count: 1 }, { subscription_count: 1 }, { subscription_count: 1 }, {}] });
  const again = await (await sdk.triggerBatch(batch())).json();
  assert.deepEqual(again, first);
  await settle([server], MAIN, a, [client]);
  await settle([server], MAIN, b, [client]);
  assert.deepEqual(received(client, a), [{ n: 'a' }]);
  assert.deepEqual(received(client, b), [{ n: 'b' }, { n: 'no key' }, { n: 'no key' }]);
});

test('bad keys are refused with 400 and a message naming the rule', T, async () => {
  const channel = uniq('idem-bad');
  const cases = [
    ['', /must not be empty/],
    ['x'.repeat(257), /longer than 256 bytes/],
    ['a\nb', /control characters/],
    [42, /must be a string/],
    [{ k: 1 }, /must be a string/],
  ];
  for (const [key, message] of cases) {
    const res = await post(server, '/events', { name: 'e', data: '1', channel, idempotency_key: key });
    assert.equal(res.status, 400, JSON.stringify(key));
    assert.match(res.json.error, message);
    const batch = await post(server, '/batch_events', { batch: [{ name: 'e', data: '1', channel, idempotency_key: key }] });
    assert.equal(batch.status, 400, `batch ${JSON.stringify(key)}`);
    assert.match(batch.json.error, message);
  }
  const header = await post(server, '/events', { name: 'e', data: '1', channel }, { headers: { 'x-idempotency-key': 'x'.repeat(300) } });
  assert.equal(header.status, 400);
  assert.match(header.json.error, /x-idempotency-key.*longer than 256 bytes/);
  assert.equal((await post(server, '/events', { name: 'e', data: '1', channel, idempotency_key: 'x'.repeat(256) })).status, 200);
});

test('a refused request does not use up its key: the corrected retry is delivered', T, async (t) => {
  const channel = uniq('idem-retry');
  const client = await subscriber(t, server, MAIN, channel);
  const key = uniq('key');
  const tooBig = await post(server, '/events', { name: 'e', data: 'x'.repeat(101), channel, idempotency_key: key });
  assert.equal(tooBig.status, 413);
  const badBatch = await post(server, '/batch_events', {
    batch: [
      { name: 'e', data: '{"n":0}', channel, idempotency_key: key },
      { name: 'e', data: '1', channel: 'bad channel' },
    ],
  });
  assert.equal(badBatch.status, 400);
  const fixed = await post(server, '/events', { name: 'e', data: '{"n":1}', channel, idempotency_key: key });
  assert.equal(fixed.status, 200);
  assert.equal(fixed.headers.get('idempotent-replayed'), null);
  await settle([server], MAIN, channel, [client]);
  assert.deepEqual(received(client, channel), [{ n: 1 }]);
});

test('past the window a key publishes again; with a window of 0 keys are ignored', T, async (t) => {
  const channel = uniq('idem-window');
  const short = await subscriber(t, server, SHORT, channel);
  const off = await subscriber(t, server, OFF, channel);
  const key = uniq('key');
  const send = (app) => post(server, '/events', { name: 'e', data: '{"n":1}', channel, idempotency_key: key }, { app });
  assert.equal((await send(SHORT)).status, 200);
  assert.equal((await send(SHORT)).headers.get('idempotent-replayed'), 'true');
  // The window is 1 s: wait until a repeat is a new publish again.
  await waitFor(async () => (await send(SHORT)).headers.get('idempotent-replayed') === null, 4000, 100, 'the window to end');
  for (let i = 0; i < 2; i += 1) assert.equal((await send(OFF)).status, 200);
  await settle([server], SHORT, channel, [short]);
  await settle([server], OFF, channel, [off]);
  assert.equal(received(short, channel).length, 2);
  assert.equal(received(off, channel).length, 2);
});

test('two nodes sharing Redis: one key sent to both (also at once) is delivered once on each; a stuck claim answers 503 + Retry-After', T, async (t) => {
  const redis = await startRedis();
  const config = writeConfig(clusterConfig({ redisUrl: redis.url, prefix: `idem-${RUN}`, webhookUrl: 'http://127.0.0.1:9/' }));
  const nodes = [await spawnNode('A', config.path), await spawnNode('B', config.path)];
  const channel = uniq('idem-cluster');
  const clients = [await subscriber(t, nodes[0], MAIN, channel), await subscriber(t, nodes[1], MAIN, channel)];
  // The bus is up once an event from each node reaches the other's subscriber.
  await waitFor(
    async () => {
      for (const node of nodes) await serverSdk(MAIN, '127.0.0.1', node.port).trigger(channel, 'probe', { from: node.port });
      await new Promise((r) => setTimeout(r, 100));
      return clients.every((c) => nodes.every((n) => received(c, channel, 'probe').some((d) => d.from === n.port)));
    },
    10000,
    0,
    'both nodes on the bus',
  );
  const send = (node, key, n) =>
    serverSdk(MAIN, '127.0.0.1', node.port).trigger(channel, 'e', { n }, { idempotency_key: key, info: 'subscription_count' });

  const one = uniq('key');
  const firstAnswer = await (await send(nodes[0], one, 1)).json();
  assert.deepEqual(firstAnswer, { channels: { [channel]: { subscription_count: 2 } } });
  const repeat = await send(nodes[1], one, 1);
  assert.equal(repeat.headers.get('idempotent-replayed'), 'true');
  assert.deepEqual(await repeat.json(), firstAnswer);

  const racing = uniq('key');
  const raced = await Promise.all([0, 1, 0, 1, 0, 1].map((i) => send(nodes[i], racing, 2)));
  const bodies = await Promise.all(raced.map((r) => r.json()));
  for (const body of bodies) assert.deepEqual(body, bodies[0]);
  assert.equal(raced.filter((r) => r.headers.get('idempotent-replayed') === null).length, 1, 'one first answer');

  await settle(nodes, MAIN, channel, clients);
  for (const client of clients) assert.deepEqual(received(client, channel), [{ n: 1 }, { n: 2 }]);

  // A claim whose publish never answers (a node died mid-publish): repeats
  // wait, then get 503 + Retry-After; once the claim is gone, the key publishes.
  const stuck = uniq('key');
  const redisKey = `idem-${RUN}:${MAIN.appId}:idem:${stuck}`;
  assert.equal(await redisCommand(redis.port, `SET ${redisKey} p1 PX 60000`), '+OK');
  const busy = await post(nodes[1], '/events', { name: 'e', data: '{"n":3}', channel, idempotency_key: stuck });
  assert.equal(busy.status, 503);
  assert.equal(busy.headers.get('retry-after'), '1');
  assert.match(busy.json.error, /still being published; retry with the same key/);
  assert.equal(await redisCommand(redis.port, `DEL ${redisKey}`), ':1');
  assert.equal((await post(nodes[1], '/events', { name: 'e', data: '{"n":3}', channel, idempotency_key: stuck })).status, 200);
  await settle(nodes, MAIN, channel, clients);
  for (const client of clients) assert.deepEqual(received(client, channel), [{ n: 1 }, { n: 2 }, { n: 3 }]);
  assert.equal(await counter(nodes[1], 'rusher_idempotent_publishes_total', 'result="busy"'), 1);
});

test('Redis down: publishes with a key go on (fail open, counted) and the node still catches its own repeats', T, async (t) => {
  const redis = await startRedis();
  const config = writeConfig(clusterConfig({ redisUrl: redis.url, prefix: `idem-down-${RUN}`, webhookUrl: 'http://127.0.0.1:9/' }));
  const node = await spawnNode('solo', config.path);
  const channel = uniq('idem-down');
  const client = await subscriber(t, node, MAIN, channel);
  await redis.stop('SIGKILL');
  const key = uniq('key');
  const send = () => post(node, '/events', { name: 'e', data: '{"n":1}', channel, idempotency_key: key });
  const first = await send();
  assert.equal(first.status, 200);
  const repeat = await send();
  assert.equal(repeat.status, 200);
  assert.equal(repeat.headers.get('idempotent-replayed'), 'true');
  await waitFor(() => received(client, channel).length === 1, 5000, 50, 'the event delivered');
  const text = await (await fetch(`http://127.0.0.1:${node.port}/metrics`)).text();
  assert.match(text, /^rusher_idempotency_fail_open_total [2-9]/m);
});
