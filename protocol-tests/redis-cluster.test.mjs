// rusher on a Redis Cluster of three masters (`[redis] cluster = true`): the
// cases of cluster-cases.mjs (fan-out, presence, counts, client events,
// terminate, webhooks once, kill -9 reaping), plus one shard stopped: the
// channels whose shard group lives on the other masters keep their
// cross-node delivery, and the stopped shard's channels recover when it
// comes back.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { APPS, sleep, waitFor } from './helpers.mjs';
import { HISTORY_APP, listen, pusherOn, rawOn, sdkOn, subscribed } from './cluster-helpers.mjs';
import { clusterSuite } from './cluster-cases.mjs';
import { groupOf } from './redis-cluster-helpers.mjs';

const suite = clusterSuite({ redisKind: 'cluster' });

/** A channel name whose group's bus channel lives on master `want` (or not on it when `not`). */
function channelOn(redis, prefix, base, want, not = false) {
  for (let i = 0; i < 500; i += 1) {
    const name = `${base}-${i}`;
    const owner = redis.ownerOf(`{${prefix}:g${groupOf(APPS.main.appId, name)}}:bus`);
    if ((owner === want) !== not) return name;
  }
  throw new Error(`no channel ${not ? 'off' : 'on'} master ${want}`);
}

test('one shard stopped: channels on the other shards keep cross-node delivery; the stopped shard\'s channels recover when it returns', { timeout: 40000 }, async (t) => {
  const { A, B } = suite.nodes;
  const redis = suite.redis;
  const stopped = 2;
  const healthy = channelOn(redis, suite.prefix(), suite.chan('healthy'), stopped, true);
  const paused = channelOn(redis, suite.prefix(), suite.chan('paused'), stopped);
  const onA = await pusherOn(t, A);
  const onB = await pusherOn(t, B);
  await subscribed(onA, healthy);
  await subscribed(onA, paused);
  const sHealthy = listen(await subscribed(onB, healthy), 'tick');
  const sPaused = listen(await subscribed(onB, paused), 'tick');
  const sdkA = sdkOn(A);
  // Both reach B through their shards first.
  await sdkA.trigger(healthy, 'tick', 'before');
  await sdkA.trigger(paused, 'tick', 'before');
  await sHealthy.next(3000);
  await sPaused.next(3000);

  redis.pause(stopped);
  t.after(() => redis.resume(stopped));
  // Every publish on the healthy shards' channel reaches B while the other is stopped.
  for (let n = 0; n < 5; n += 1) {
    await sdkA.trigger(healthy, 'tick', `during-${n}`);
    const { data } = await sHealthy.next(3000).catch((e) => {
      throw new Error(`${e.message} (publish ${n} with master ${stopped} stopped)\n${suite.logsOf(A, B)}`);
    });
    assert.equal(data, `during-${n}`);
  }
  // The stopped shard's channel really is cut off: B does not get it meanwhile.
  await sdkA.trigger(paused, 'tick', 'during-pause');
  await sleep(1000);
  assert.ok(!sPaused.events.some((e) => e.data === 'during-pause'), 'the paused shard delivered');

  redis.resume(stopped);
  let n = 0;
  await waitFor(
    async () => {
      n += 1;
      await sdkA.trigger(paused, 'tick', `after-${n}`);
      await sleep(200);
      return sPaused.events.some((e) => String(e.data).startsWith('after-'));
    },
    15000,
    100,
    'the stopped shard\'s channel delivering across nodes again',
  ).catch((e) => {
    throw new Error(`${e.message}\n${suite.logsOf(A, B)}`);
  });
  // And the healthy one never stopped.
  await sdkA.trigger(healthy, 'tick', 'after');
  await waitFor(() => sHealthy.events.some((e) => e.data === 'after'), 3000, 20, 'healthy channel after');
});

test('history on the cluster: serials in one order across nodes, and a recovery on the other node replays from the stream (scripts SPUBLISH on the channel\'s shard)', { timeout: 20000 }, async (t) => {
  const { A, B } = suite.nodes;
  const channel = suite.chan('hist');
  const onB = await rawOn(t, B, HISTORY_APP);
  await onB.subscribe(channel);
  const sdkA = sdkOn(A, HISTORY_APP);
  for (let i = 1; i <= 5; i += 1) await sdkA.trigger(channel, 'e', { i });
  const live = () => onB.frames.filter((f) => f.channel === channel && f.event === 'e');
  await waitFor(() => live().length === 5, 5000, 20, 'five events on B');
  assert.deepEqual(live().map((f) => f.serial), [1, 2, 3, 4, 5]);
  // A new socket on A recovers after serial 2 (the stream read, then the marker on the group's bus channel).
  const again = await rawOn(t, A, HISTORY_APP);
  const ok = await again.subscribe(channel, { since: 2 });
  assert.equal(ok.event, 'pusher_internal:subscription_succeeded');
  await waitFor(() => again.frames.filter((f) => f.channel === channel && f.event === 'e').length === 3, 5000, 20, 'replay on A');
  assert.deepEqual(again.frames.filter((f) => f.channel === channel && f.event === 'e').map((f) => f.serial), [3, 4, 5]);
  assert.ok(!again.frames.some((f) => f.event === 'pusher:recovery_failed'), 'no recovery_failed');
  const page = await (await sdkOn(B, HISTORY_APP).get({ path: `/channels/${channel}/history`, params: { since: 0 } })).json();
  assert.deepEqual(page.events.map((e) => e.serial), [1, 2, 3, 4, 5]);
});
