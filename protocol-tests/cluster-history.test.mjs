// Channel history across a Redis cluster (README "History and recovery",
// "On a Redis cluster"): serials are given by Redis, one order for every
// node; a client recovers on another node, after a kill -9 of its node, and
// on a restarted node whose mirror is empty (from the Redis stream); the
// history API answers the same on every node; with Redis down, publishing
// and live delivery go on, recovery answers "unavailable" at once, and the
// history writes kept meanwhile are stored once Redis is back.
//
// Its own redis-server and two nodes (N1, N2) with an app that has history
// on; every process is killed at the end.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { sleep, tomlString as q, waitFor } from './helpers.mjs';
import { metric } from './webhook-helpers.mjs';
import { frames, getJson, killAll, pusherOn, rawOn, sdkOn, spawnNode, startRedis, subscribed, waitBus, writeConfig } from './cluster-helpers.mjs';
import { cuttableProxy } from './proxy-helpers.mjs';

const T = { timeout: 30000 };
const RUN = `${process.pid.toString(36)}${Date.now().toString(36).slice(-5)}`;
let uid = 0;
const chan = (prefix) => `${prefix}-${RUN}-${(uid += 1)}`;

let redis;
let config;
let N1;
let N2;

function historyConfig(redisUrl) {
  return `adapter = "redis"

[server]
host = "127.0.0.1"
port = 6001
log_level = "info"
shutdown_grace = 1

[redis]
url = ${q(redisUrl)}
prefix = ${q(`rusher-hist-${RUN}`)}
heartbeat_secs = 1
node_timeout_secs = 3
operation_timeout_ms = 500
history_retry_queue = 1000

[[apps]]
id = "app-id"
key = "app-key"
secret = "app-secret"
history = true
history_size = 100
`;
}

before(async () => {
  redis = await startRedis();
  config = writeConfig(historyConfig(redis.url));
  [N1, N2] = await Promise.all([spawnNode('N1', config.path), spawnNode('N2', config.path)]);
  await waitBus([N1, N2], chan('probe'));
});

after(async () => {
  await killAll();
});



/** Events `e` on `channel` a raw client got, in order. */
const got = (conn, channel) => conn.frames.filter((f) => f.event === 'e' && f.channel === channel);

/** Waits until a raw client has `count` events `e` on `channel`; returns them. */
async function waitEvents(conn, channel, count, timeoutMs = 8000) {
  await waitFor(() => got(conn, channel).length >= count, timeoutMs, 20, `${count} events on ${channel}`);
  return got(conn, channel);
}

/** Publish events {i} from `from` to `to` alternately through `nodes`; each is seen by `witness` before the next. */
async function publishSeen(nodes, witness, channel, from, to) {
  for (let i = from; i <= to; i += 1) {
    const node = nodes[i % nodes.length];
    await sdkOn(node).trigger(channel, 'e', { i });
    await waitFor(() => got(witness, channel).some((f) => f.dataParsed.i === i), 5000, 5, `event ${i} on the bus`);
  }
}

const range = (from, count) => Array.from({ length: count }, (_, k) => from + k);

test('a pusher-js client cut off on node 1 recovers the 50 events it missed on node 2, once and in order, then live ones', T, async (t) => {
  const channel = chan('feed');
  const proxy = await cuttableProxy(t, N1);
  const client = await pusherOn(t, { name: 'N1 via proxy', port: proxy.port });
  const messages = frames(client);
  await subscribed(client, channel);
  const witness = await rawOn(t, N2);
  await witness.subscribe(channel);

  await publishSeen([N1, N2], witness, channel, 1, 2);
  await waitFor(() => messages.filter((m) => m.event === 'e').length === 2, 5000, 20, 'pusher-js got 2 events');
  assert.deepEqual(
    messages.filter((m) => m.event === 'e').map((m) => m.data.i),
    [1, 2],
    'pusher-js receives events on a channel with history as usual',
  );
  // pusher-js does not pass the serial on; the same frame on node 2 has it.
  const last = got(witness, channel)[1].serial;
  assert.equal(last, 2);

  proxy.close();
  await waitFor(() => client.connection.state !== 'connected', 5000, 20, 'pusher-js notices the cut');
  await publishSeen([N1, N2], witness, channel, 3, 52);
  client.disconnect();

  const again = await rawOn(t, N2);
  const ok = await again.subscribe(channel, { since: last });
  assert.equal(ok.event, 'pusher_internal:subscription_succeeded');
  const replayed = await waitEvents(again, channel, 50);
  assert.deepEqual(
    replayed.map((f) => f.serial),
    range(last + 1, 50),
  );
  assert.deepEqual(
    replayed.map((f) => f.dataParsed.i),
    range(3, 50),
  );
  await sdkOn(N1).trigger(channel, 'e', { i: 53, live: true });
  const all = await waitEvents(again, channel, 51);
  assert.equal(all[50].serial, 53);
  assert.equal(all[50].dataParsed.live, true, 'then live events');
  await sleep(300);
  assert.equal(got(again, channel).length, 51, 'nothing twice');
  assert.ok(!again.frames.some((f) => f.event === 'pusher:recovery_failed'));
});

test('serials are one order for the cluster: 200 events from each node at once reach every subscriber as 1..400', T, async (t) => {
  const channel = chan('race');
  const subs = [await rawOn(t, N1), await rawOn(t, N1), await rawOn(t, N2), await rawOn(t, N2)];
  await Promise.all(subs.map((c) => c.subscribe(channel)));
  const burst = async (node, tag) => {
    const sdk = sdkOn(node);
    for (let k = 0; k < 200; k += 20) {
      await Promise.all(range(k, 20).map((i) => sdk.trigger(channel, 'e', { from: tag, i })));
    }
  };
  await Promise.all([burst(N1, 'n1'), burst(N2, 'n2')]);
  const orders = [];
  for (const sub of subs) {
    const events = await waitEvents(sub, channel, 400, 15000);
    assert.deepEqual(
      events.map((f) => f.serial),
      range(1, 400),
    );
    orders.push(events.map((f) => `${f.dataParsed.from}${f.dataParsed.i}`).join(','));
  }
  assert.equal(new Set(orders).size, 1, 'every subscriber, on both nodes, sees the same order');
  assert.equal(new Set(orders[0].split(',')).size, 400, 'each event once');

  // The history API gives the same pages on both nodes: the newest 100.
  const pages = async (node) => {
    const all = [];
    let since = 0;
    for (;;) {
      const page = await getJson(node, `/channels/${channel}/history`, { since, limit: 30 });
      all.push(page);
      if (page.next === null) return all;
      since = page.next;
    }
  };
  const [one, two] = await Promise.all([pages(N1), pages(N2)]);
  assert.deepEqual(one, two);
  const serials = one.flatMap((p) => p.events.map((e) => e.serial));
  assert.deepEqual(serials, range(301, 100));
  assert.equal(one[0].oldest, 301);
  assert.equal(one[0].latest, 400);
  assert.equal(one[0].events[0].event, 'e');
});

test('socket exclusion holds on a history channel: the excluded socket alone misses the event, on every node', T, async (t) => {
  const channel = chan('except');
  const [a, b, c] = [await rawOn(t, N1), await rawOn(t, N1), await rawOn(t, N2)];
  await Promise.all([a, b, c].map((x) => x.subscribe(channel)));
  await sdkOn(N2).trigger(channel, 'e', { i: 1 }, { socket_id: a.socketId });
  const [fromB, fromC] = [await waitEvents(b, channel, 1), await waitEvents(c, channel, 1)];
  assert.equal(fromB[0].serial, 1);
  assert.equal(fromC[0].serial, 1);
  await sdkOn(N1).trigger(channel, 'e', { i: 2 });
  await waitEvents(a, channel, 1);
  assert.deepEqual(
    got(a, channel).map((f) => f.dataParsed.i),
    [2],
    'the excluded socket got only the next event',
  );
  const page = await getJson(N1, `/channels/${channel}/history`);
  assert.equal(page.events[0].socket_id, a.socketId, 'the history keeps who was excluded');
});

test('a since far ahead of the latest serial (1e14, 2^53) is told so on every node, by recovery and by the history API, and Redis stays healthy', T, async (t) => {
  const channel = chan('ahead');
  await sdkOn(N1).trigger(channel, 'e', { i: 1 });
  await sdkOn(N2).trigger(channel, 'e', { i: 2 });
  await waitFor(async () => (await getJson(N1, `/channels/${channel}/history`)).latest === 2, 5000, 20, 'two events stored');
  for (const since of [99999999999999, 100000000000000, 2 ** 53]) {
    for (const node of [N1, N2]) {
      const c = await rawOn(t, node);
      await c.subscribe(channel, { since });
      const failed = await c.next((f) => f.event === 'pusher:recovery_failed' && f.channel === channel);
      assert.equal(failed.dataParsed.since, since);
      assert.match(failed.dataParsed.reason, /ahead of the channel's latest serial/, `since ${since} on ${node.name}`);
      const page = await getJson(node, `/channels/${channel}/history`, { since: String(since) });
      assert.deepEqual(page.events, [], `page after ${since} on ${node.name}`);
      assert.equal(page.latest, 2);
    }
  }
  // Recovery from a real serial still works afterwards.
  const c = await rawOn(t, N2);
  await c.subscribe(channel, { since: 1 });
  assert.deepEqual((await waitEvents(c, channel, 1)).map((f) => f.serial), [2]);
});

test('after kill -9 of its node a client recovers on the other; a restarted node recovers from the stream', T, async (t) => {
  const N3 = await spawnNode('N3', config.path);
  const channel = chan('crash');
  const witness = await rawOn(t, N2);
  await witness.subscribe(channel);
  const victim = await rawOn(t, N3);
  await victim.subscribe(channel);
  await publishSeen([N2, N3], witness, channel, 1, 3);
  const seen = await waitEvents(victim, channel, 3);
  const last = seen[2].serial;

  await N3.kill('SIGKILL');
  await publishSeen([N2], witness, channel, 4, 53);

  const moved = await rawOn(t, N2);
  await moved.subscribe(channel, { since: last });
  const replayed = await waitEvents(moved, channel, 50);
  assert.deepEqual(
    replayed.map((f) => f.dataParsed.i),
    range(4, 50),
  );
  assert.deepEqual(
    replayed.map((f) => f.serial),
    range(last + 1, 50),
  );

  // A node started afresh has seen nothing on the bus: the stream answers.
  const N4 = await spawnNode('N4', config.path);
  t.after(() => N4.kill());
  await waitBus([N2, N4], chan('probe'));
  const back = await rawOn(t, N4);
  await back.subscribe(channel, { since: last });
  const fromStream = await waitEvents(back, channel, 50);
  assert.deepEqual(
    fromStream.map((f) => f.serial),
    range(last + 1, 50),
  );
  await sdkOn(N2).trigger(channel, 'e', { i: 54 });
  const withLive = await waitEvents(back, channel, 51);
  assert.equal(withLive[50].dataParsed.i, 54);
  assert.equal(withLive[50].serial, last + 51);
  await sleep(300);
  assert.equal(got(back, channel).length, 51, 'nothing twice');
});

test('Redis down: publishes answered and delivered on the node, recovery and the API say unavailable at once; the writes are stored when Redis is back', T, async (t) => {
  const channel = chan('outage');
  const local = await rawOn(t, N1);
  await local.subscribe(channel);
  const witness = await rawOn(t, N2);
  await witness.subscribe(channel);
  await publishSeen([N1], witness, channel, 1, 2);
  const queuedBefore = await metric(N1, 'rusher_history_writes_queued_total');

  await redis.stop('SIGKILL');
  const sdk = sdkOn(N1);
  for (let i = 3; i <= 7; i += 1) {
    const res = await sdk.trigger(channel, 'e', { i });
    assert.equal(res.status, 200);
  }
  const live = await waitEvents(local, channel, 7);
  assert.deepEqual(
    live.map((f) => f.dataParsed.i),
    range(1, 7),
    'live delivery on the node goes on',
  );
  assert.equal(live[6].serial, undefined, 'no serial without Redis');

  const recovering = await rawOn(t, N1);
  const started = Date.now();
  await recovering.subscribe(channel, { since: 1 });
  const failed = await recovering.next((f) => f.event === 'pusher:recovery_failed' && f.channel === channel, 2000);
  assert.ok(Date.now() - started < 1000, `answered in ${Date.now() - started} ms`);
  assert.match(failed.dataParsed.reason, /unavailable/);
  await sdk.trigger(channel, 'e', { i: 8 });
  await recovering.next((f) => f.event === 'e' && f.channel === channel && f.dataParsed.i === 8, 3000);

  const res = await fetchHistory(N1, channel);
  assert.equal(res.status, 503);
  assert.match(res.body, /unavailable/);
  assert.equal(await metric(N1, 'rusher_history_writes_queued_total'), queuedBefore + 6);

  // Redis comes back empty (no persistence): the 6 kept writes are stored.
  await redis.start();
  let page;
  await waitFor(
    async () => {
      const r = await fetchHistory(N2, channel);
      if (r.status !== 200) return false;
      page = JSON.parse(r.body);
      return page.events.length === 6;
    },
    15000,
    100,
    'the queued writes in the history API',
  );
  assert.deepEqual(
    page.events.map((e) => JSON.parse(e.data).i),
    range(3, 6),
  );
  assert.ok((await metric(N1, 'rusher_history_writes_retried_total')) >= 6);
  await sleep(300);
  assert.equal(got(local, channel).length, 8, 'the retried writes are not delivered again');
  // The bus could not reach node 2 during the outage: it gets them late, in
  // order, with the serials Redis gave them, rather than never.
  const late = await waitEvents(witness, channel, 8);
  assert.deepEqual(late.map((f) => f.dataParsed.i), range(1, 8), 'the other node gets the outage events late');
  assert.deepEqual(
    late.slice(2).map((f) => f.serial),
    page.events.map((e) => e.serial),
    'with their serials',
  );
});

/** The history API through the SDK, without throwing on a non-200 answer. */
async function fetchHistory(node, channel) {
  try {
    const res = await sdkOn(node).get({ path: `/channels/${channel}/history`, params: {} });
    return { status: res.status, body: await res.text() };
  } catch (e) {
    return { status: e.status ?? 0, body: String(e.body ?? e.message) };
  }
}
