// HTTP fallback sessions (xhr_streaming) on two rusher nodes sharing a Redis
// Cluster of three masters (`[redis] cluster = true`): a session opened on
// one node is reachable through the other (relayed over the sharded bus),
// and the owner's lease of many sessions at once is renewed although their
// keys hash to several slots (a cluster refuses one pipeline across slots).
//
// The suite starts its own Redis Cluster on free ports and two nodes (A, B);
// everything is stopped at the end, also on failure.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { sleep, uniqueChannel } from './helpers.mjs';
import { clusterConfig, killAll, spawnNode, waitBus, writeConfig } from './cluster-helpers.mjs';
import { cli, startRedisCluster } from './redis-cluster-helpers.mjs';
import { XhrSession } from './xhr-helpers.mjs';

const T = { timeout: 40000 };
const PREFIX = `rxhr-${process.pid}-${Date.now().toString(36)}`;

let redis;
let A;
let B;

before(async () => {
  redis = await startRedisCluster();
  const text = clusterConfig({ redisUrl: redis.url, prefix: PREFIX, webhookUrl: 'http://127.0.0.1:9/unused', cluster: true })
    .replace('shutdown_grace = 1', 'shutdown_grace = 1\nactivity_timeout = 3');
  const { path } = writeConfig(text);
  [A, B] = await Promise.all([spawnNode('A', path), spawnNode('B', path)]);
  await waitBus([A, B], uniqueChannel('rxhr-bus-probe'));
});

after(async () => {
  await killAll();
  if (redis) await redis.shutdown();
});

/** `session` (opened on `from`) addressed through `to` instead. */
function through(session, from, to) {
  const other = new XhrSession();
  other.base = session.base.replace(`:${from.port}/`, `:${to.port}/`);
  return other;
}

/** Every session owner key in the cluster: {key: [port, pttl ms]}. */
function ownerLeases() {
  const leases = {};
  for (const port of redis.ports) {
    for (const key of cli(port, 'KEYS', `${PREFIX}:xhr:*`).split('\n').filter(Boolean)) {
      leases[key] = [port, Number(cli(port, 'PTTL', key).trim())];
    }
  }
  return leases;
}

test('sessions opened on one node answer through the other, and the owner renews the leases of many at once across slots', T, async (t) => {
  const sessions = [];
  t.after(() => sessions.forEach((s) => s.close()));
  for (let i = 0; i < 12; i += 1) {
    const session = new XhrSession({ host: '127.0.0.1', port: A.port });
    sessions.push(session);
    await session.stream();
    await session.socketId();
  }
  // Reached through B: relayed to A, answered on A's stream.
  for (const session of sessions.slice(0, 3)) {
    assert.equal((await through(session, A, B).send([{ event: 'pusher:ping', data: {} }])).status, 204);
    await session.frame('pusher:pong');
  }
  const first = ownerLeases();
  const firstAt = Date.now();
  const keys = Object.keys(first);
  assert.equal(keys.length, sessions.length, `one owner key per session: ${JSON.stringify(first)}`);
  const shards = new Set(Object.values(first).map(([port]) => port));
  assert.ok(shards.size > 1, `the keys span several masters: ${JSON.stringify(first)}`);

  await sleep(1500);
  // Activity on every session at once: the owner renews their leases in a batch.
  const sent = await Promise.all(sessions.map((s) => s.send([{ event: 'pusher:ping', data: {} }])));
  assert.deepEqual(sent.map((r) => r.status), sessions.map(() => 204));
  await Promise.all(sessions.map((s) => s.until((x) => x.frames().filter((f) => f.event === 'pusher:pong').length >= 1, 5000, 'pong')));
  await sleep(700);
  const renewed = ownerLeases();
  const elapsed = Date.now() - firstAt;
  for (const key of keys) {
    const [, before] = first[key];
    const [, after] = renewed[key] ?? [0, -2];
    // Not renewed: before - elapsed (at least 2.2 s less); renewed by the
    // pings 0.7 s ago: about the full lease less 0.7 s.
    assert.ok(after > before - elapsed + 1000, `${key}: lease renewed (pttl ${before} ms, then ${after} ms ${elapsed} ms later)`);
  }
});
