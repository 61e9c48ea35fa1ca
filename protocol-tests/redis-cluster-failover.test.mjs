// rusher on a Redis Cluster of three masters with one replica each
// (`--cluster-replicas 1`, `--cluster-node-timeout 1000`), two nodes with
// `operation_timeout_ms = 3000`:
//
// - one master (and its replica, so nothing fails over) stopped: history on
//   the other shards' channels stays available on both nodes (reads and
//   recoveries never answer "unavailable"), the nodes re-announce none of
//   the healthy shards' groups, and `rusher_redis_unhealthy_groups` names
//   the stopped shard's groups only (health is per shard group);
// - the same outage: cross-node delivery on the healthy shards' channels
//   stays well under operation_timeout_ms while a publish for the stopped
//   shard's channel waits (one outbox pipeline per group);
// - one master killed (kill -9): its replica is promoted, cross-node
//   delivery on its channels works again, presence and counts are right
//   after the nodes re-announce, and the other shards' channels never stop.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import { APPS, sleep, waitFor } from './helpers.mjs';
import {
  HISTORY_APP,
  adapterLogs,
  clusterConfig,
  getJson,
  killAll,
  listen,
  pusherOn,
  rawOn,
  sdkOn,
  spawnNode,
  subscribed,
  waitBus,
  writeConfig,
} from './cluster-helpers.mjs';
import { groupOf, startRedisCluster } from './redis-cluster-helpers.mjs';

const RUN = `${process.pid.toString(36)}${Date.now().toString(36).slice(-5)}`;
const PREFIX = `rusher-fo-${RUN}`;
const GROUPS = 16;
const OPERATION_TIMEOUT_MS = 3000;
let uid = 0;
const chan = (base) => `${base}-${RUN}-${(uid += 1)}`;

let redis;
let config;
let A;
let B;

before(async () => {
  redis = await startRedisCluster(3, { replicas: 1, nodeTimeoutMs: 1000 });
  config = writeConfig(
    clusterConfig({
      redisUrl: redis.url,
      prefix: PREFIX,
      // Nothing listens there: the webhook app is not used here.
      webhookUrl: 'http://127.0.0.1:9/',
      cluster: true,
    }).replace('operation_timeout_ms = 500', `operation_timeout_ms = ${OPERATION_TIMEOUT_MS}`),
  );
  [A, B] = await Promise.all([spawnNode('A', config.path), spawnNode('B', config.path)]);
  await waitBus([A, B], `probe-${RUN}`);
});

after(async () => {
  await killAll();
  if (redis) await redis.shutdown();
  if (config) fs.rmSync(config.dir, { recursive: true, force: true });
});

/** The Redis adapter's log lines and every warning/error of the nodes, for failure messages. */
const logs = () => adapterLogs([A, B], 25);

/** The value of one series on a node's /metrics (0 when it is not there). */
function metric(node, series) {
  return new Promise((resolve, reject) => {
    http
      .get(`http://127.0.0.1:${node.port}/metrics`, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => {
          const line = body.split('\n').find((l) => l.startsWith(`${series} `));
          resolve(line ? Number(line.split(' ')[1]) : 0);
        });
      })
      .on('error', reject);
  });
}

/** The masters (indexes into redis.ports) now. */
const masters = () => redis.ports.map((_, i) => i).filter((i) => redis.isMaster(i));

/** A master that does not hold the node-wide keys (nodes ZSET): the outage is one shard's groups only. */
function shardToStop() {
  const nodesOwner = redis.ownerOf(`${PREFIX}:nodes`);
  const master = masters().find((i) => i !== nodesOwner);
  assert.ok(master !== undefined, 'a master without the nodes ZSET');
  return master;
}

/** A channel name of `app` whose group's bus channel lives on master `want` (or not on it when `not`). */
function channelOn(base, want, { not = false, app = APPS.main, from = undefined } = {}) {
  for (let i = 0; i < 500; i += 1) {
    const name = `${base}-${i}`;
    const owner = redis.ownerOf(`{${PREFIX}:g${groupOf(app.appId, name)}}:bus`, from);
    if ((owner === want) !== not) return name;
  }
  throw new Error(`no channel ${not ? 'off' : 'on'} master ${want}`);
}

/** The groups whose bus channel lives on master `i`. */
function groupsOn(i) {
  const groups = [];
  for (let g = 0; g < GROUPS; g += 1) if (redis.ownerOf(`{${PREFIX}:g${g}}:bus`) === i) groups.push(g);
  return groups;
}

/** Stops master `i` and its replica (SIGSTOP: no failover), resumed after the test. */
function stopShard(t, i) {
  const replica = redis.replicaOf(i);
  redis.pause(i);
  if (replica >= 0) redis.pause(replica);
  const resume = () => {
    redis.resume(i);
    if (replica >= 0) redis.resume(replica);
  };
  t.after(resume);
  return resume;
}

/** A history page of `channel` through `node`: its HTTP status and events' serials. */
async function page(node, channel) {
  try {
    const res = await sdkOn(node, HISTORY_APP).get({ path: `/channels/${channel}/history`, params: { since: 0 } });
    const body = await res.json();
    return { status: res.status, serials: body.events.map((e) => e.serial) };
  } catch (e) {
    return { status: e.status ?? 0, error: `${e.message} ${e.body ?? ''}` };
  }
}

/** A recovery (`since`) on a new raw socket on `node`: the serials replayed, or 'failed'. */
async function recovery(t, node, channel, since, expect) {
  const socket = await rawOn(t, node, HISTORY_APP);
  await socket.subscribe(channel, { since });
  const replayed = () => socket.frames.filter((f) => f.channel === channel && f.event === 'e').map((f) => f.serial);
  await waitFor(
    () => socket.frames.some((f) => f.event === 'pusher:recovery_failed') || replayed().length >= expect,
    OPERATION_TIMEOUT_MS + 2000,
    20,
    `recovery of ${channel} on ${node.name}`,
  );
  socket.close();
  return socket.frames.some((f) => f.event === 'pusher:recovery_failed') ? 'failed' : replayed();
}

test('one shard stopped: history on the other shards\' channels never answers "unavailable" and their groups are not re-announced (health is per shard group)', { timeout: 40000 }, async (t) => {
  await redis.settled();
  const stopped = shardToStop();
  const healthy = channelOn(chan('hist-ok'), stopped, { not: true, app: HISTORY_APP });
  const paused = channelOn(chan('hist-down'), stopped, { app: HISTORY_APP });
  const sdkA = sdkOn(A, HISTORY_APP);
  for (let i = 1; i <= 3; i += 1) await sdkA.trigger(healthy, 'e', { i });
  await sdkA.trigger(paused, 'e', { i: 1 });
  await waitFor(async () => (await page(B, healthy)).serials?.length === 3, 5000, 50, 'history written');
  await waitFor(async () => (await page(B, paused)).serials?.length === 1, 5000, 50, 'history written');

  const down = groupsOn(stopped).length;
  const resyncedBefore = (await metric(A, 'rusher_redis_resynced_groups_total')) + (await metric(B, 'rusher_redis_resynced_groups_total'));
  const resume = stopShard(t, stopped);
  // Operations on the stopped shard keep failing (each after operation_timeout_ms)...
  let outage = true;
  const pressure = (async () => {
    while (outage) {
      await Promise.all([sdkOn(A, HISTORY_APP).trigger(paused, 'e', { down: 1 }), sdkOn(B, HISTORY_APP).trigger(paused, 'e', { down: 1 })]);
      await sleep(100);
    }
  })();
  // ...while the healthy shards' history is read on both nodes, through
  // more than two failures and several heartbeats.
  const unavailable = [];
  let reads = 0;
  const until = Date.now() + OPERATION_TIMEOUT_MS * 2 + 1500;
  let recoveries = 0;
  while (Date.now() < until) {
    for (const node of [A, B]) {
      const got = await page(node, healthy);
      reads += 1;
      if (got.status !== 200 || got.serials.length !== 3) unavailable.push(`${node.name}: ${got.status} ${got.error ?? got.serials}`);
    }
    if (reads % 20 === 0) {
      recoveries += 1;
      const replayed = await recovery(t, recoveries % 2 ? A : B, healthy, 1, 2);
      if (replayed === 'failed') unavailable.push(`recovery on ${recoveries % 2 ? 'A' : 'B'}: recovery_failed`);
    }
    await sleep(20);
  }
  outage = false;
  await pressure;
  assert.deepEqual(unavailable, [], `history of a healthy shard's channel answered unavailable (${unavailable.length} of ${reads} reads, ${recoveries} recoveries)\n${logs()}`);
  assert.ok(recoveries >= 2, 'recoveries were tried');
  // The outage was seen, for the stopped shard's groups only.
  for (const node of [A, B]) {
    const unhealthy = await metric(node, 'rusher_redis_unhealthy_groups');
    assert.ok(unhealthy >= 1 && unhealthy <= down, `node ${node.name}: ${unhealthy} unhealthy groups, the stopped shard has ${down}`);
  }
  // No group was re-announced during the outage (the stopped shard's fail; the others' need nothing).
  const resyncedDuring = (await metric(A, 'rusher_redis_resynced_groups_total')) + (await metric(B, 'rusher_redis_resynced_groups_total'));
  assert.equal(resyncedDuring - resyncedBefore, 0, `groups re-announced during the outage\n${logs()}`);

  resume();
  // The stopped shard's groups come back: history there is served again.
  await waitFor(async () => (await page(B, paused)).status === 200 && (await page(A, paused)).status === 200, 15000, 200, 'history of the stopped shard\'s channel again').catch((e) => {
    throw new Error(`${e.message}\n${logs()}`);
  });
  await waitFor(async () => (await metric(A, 'rusher_redis_unhealthy_groups')) === 0 && (await metric(B, 'rusher_redis_unhealthy_groups')) === 0, 15000, 200, 'no unhealthy group');
  // Only the stopped shard's groups were re-announced (each at most twice: the
  // resync after the outage, and the one after its bus channel is subscribed again).
  const resyncedAfter = (await metric(A, 'rusher_redis_resynced_groups_total')) + (await metric(B, 'rusher_redis_resynced_groups_total'));
  assert.ok(resyncedAfter - resyncedBefore <= 2 * 2 * down, `${resyncedAfter - resyncedBefore} groups re-announced, the stopped shard has ${down}`);
});

test('one shard stopped: cross-node delivery on the other shards\' channels stays well under operation_timeout_ms while publishes for the stopped shard wait', { timeout: 40000 }, async (t) => {
  await redis.settled();
  const stopped = shardToStop();
  const healthy = channelOn(chan('fast'), stopped, { not: true });
  const paused = channelOn(chan('slow'), stopped);
  const onB = await rawOn(t, B);
  await onB.subscribe(healthy);
  const sdkA = sdkOn(A);
  const got = () => onB.frames.filter((f) => f.channel === healthy && f.event === 'tick');
  await sdkA.trigger(healthy, 'tick', { n: -1, at: Date.now() });
  await waitFor(() => got().length === 1, 3000, 10, 'delivery before the outage');

  const resume = stopShard(t, stopped);
  const latencies = [];
  for (let n = 0; n < 20; n += 1) {
    // In the same moment: one for the stopped shard, one for a healthy one.
    const sent = Date.now();
    await Promise.all([sdkA.trigger(paused, 'tick', { n }), sdkA.trigger(healthy, 'tick', { n, at: sent })]);
    await waitFor(() => got().some((f) => f.dataParsed?.n === n), 1500, 5, `event ${n} on B`).catch((e) => {
      throw new Error(`${e.message} (latencies so far ${latencies.join(', ')} ms)\n${logs()}`);
    });
    latencies.push(Date.now() - sent);
  }
  const worst = Math.max(...latencies);
  assert.ok(worst < 1000, `p-max ${worst} ms (operation_timeout_ms ${OPERATION_TIMEOUT_MS}): ${latencies.join(', ')}`);
  resume();
  // The stopped shard's channel delivers again once it is back.
  const onBPaused = await rawOn(t, B);
  await onBPaused.subscribe(paused).catch(() => {});
  let m = 0;
  await waitFor(
    async () => {
      m += 1;
      await sdkA.trigger(paused, 'tick', { after: m });
      await sleep(150);
      return onBPaused.frames.some((f) => f.channel === paused && f.dataParsed?.after);
    },
    15000,
    50,
    'the stopped shard\'s channel after it returns',
  );
});

test('a master killed (kill -9): its replica is promoted, its channels deliver across nodes again with presence and counts right; the other shards never stop', { timeout: 40000 }, async (t) => {
  await redis.settled();
  const victim = shardToStop();
  const replica = redis.replicaOf(victim);
  assert.ok(replica >= 0, 'the master has a replica');
  const survivor = masters().find((i) => i !== victim);
  const failing = channelOn(chan('fo'), victim);
  const steady = channelOn(chan('steady'), victim, { not: true });
  const room = channelOn(`presence-${chan('fo-room')}`, victim);
  const clientsA = await pusherOn(t, A, { presence: { user_id: 'ua', user_info: {} } });
  const clientsB = await pusherOn(t, B, { presence: { user_id: 'ub', user_info: {} } });
  const onA = listen(await subscribed(clientsA, failing), 'tick');
  const onB = listen(await subscribed(clientsB, failing), 'tick');
  const steadyB = listen(await subscribed(clientsB, steady), 'tick');
  await subscribed(clientsA, room);
  await subscribed(clientsB, room);
  await sdkOn(A).trigger(failing, 'tick', 'before');
  await onB.next(3000);
  await onA.next(3000);

  const killedAt = Date.now();
  redis.kill(victim);
  // The other shards' channels keep delivering through the failover.
  let failover = true;
  const steadyRun = (async () => {
    let n = 0;
    while (failover) {
      n += 1;
      await sdkOn(A).trigger(steady, 'tick', `s-${n}`);
      const { data } = await steadyB.next(2500).catch((e) => {
        throw new Error(`${e.message}: steady publish ${n}, ${Date.now() - killedAt} ms after the kill\n${logs()}`);
      });
      assert.equal(data, `s-${n}`);
      await sleep(100);
    }
    return n;
  })();
  try {
    await waitFor(() => redis.isMaster(replica), 15000, 100, 'the replica promoted');
    const promoted = Date.now() - killedAt;
    // Cross-node delivery on the failed shard's channel, both ways.
    let n = 0;
    await waitFor(
      async () => {
        n += 1;
        await sdkOn(A).trigger(failing, 'tick', `a-${n}`);
        await sdkOn(B).trigger(failing, 'tick', `b-${n}`);
        await sleep(150);
        return onB.events.some((e) => String(e.data).startsWith('a-')) && onA.events.some((e) => String(e.data).startsWith('b-'));
      },
      15000,
      50,
      'cross-node delivery on the failed-over shard\'s channel',
    ).catch((e) => {
      throw new Error(`${e.message}\n${logs()}`);
    });
    t.diagnostic(`replica promoted after ${promoted} ms; delivery back after ${Date.now() - killedAt} ms`);
  } finally {
    failover = false;
  }
  assert.ok((await steadyRun) >= 2, 'the steady channel was exercised during the failover');
  // Presence and counts on the failed-over shard, from both nodes.
  await waitFor(
    async () => {
      for (const node of [A, B]) {
        const users = (await getJson(node, `/channels/${room}/users`)).users.map((u) => u.id).sort();
        if (users.join() !== 'ua,ub') return false;
        const info = await getJson(node, `/channels/${failing}`, { info: 'subscription_count' });
        if (info.subscription_count !== 2 || info.occupied !== true) return false;
      }
      return true;
    },
    10000,
    200,
    'presence and counts of the failed-over shard on both nodes',
  ).catch(async (e) => {
    const seen = await getJson(A, `/channels/${room}/users`).catch((x) => x.message);
    throw new Error(`${e.message}: ${JSON.stringify(seen)} (survivor ${survivor})\n${logs()}`);
  });
});
