// Persistence on a Redis cluster: stored-message sequences come from one
// counter shared through Redis, so messages published through different
// nodes never share a sequence and `since` works whichever node served them.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, killAll as killCluster } from './cluster-helpers.mjs';
import {
  suiteMongo,
  storeConfig,
  startRusher,
  sdkOn,
  persistenceApi,
  killAll as killPersistence,
  RUN_ID,
} from './persistence-helpers.mjs';

after(async () => {
  await killPersistence();
  await killCluster();
});

test('messages published through two nodes get unique increasing sequences and since works across them', async () => {
  const redis = await startRedis();
  const mongo = await suiteMongo();
  const config =
    `adapter = "redis"\n\n[redis]\nurl = "${redis.url}"\nprefix = "seq-${RUN_ID}"\nheartbeat_secs = 1\nnode_timeout_secs = 3\n\n` +
    storeConfig({ url: mongo.url, database: `cluster_seq_${RUN_ID}` });
  const a = await startRusher(config);
  const b = await startRusher(config);
  const channel = `orders-${RUN_ID}`;
  // Each node learns follows made through it at once (others within 10 s).
  for (const node of [a, b]) {
    const res = await persistenceApi(node).follow('u-seq', channel);
    assert.equal(res.status, 200, res.text);
  }
  const sdks = [sdkOn(a), sdkOn(b)];
  for (let i = 0; i < 10; i += 1) {
    await sdks[i % 2].trigger(channel, 'numbered', { i });
  }
  let messages = [];
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    const res = await persistenceApi(a).messages('u-seq', { limit: 100 });
    messages = res.json.messages;
    if (messages.length === 10) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(messages.length, 10, JSON.stringify(messages));
  const seqs = messages.map((m) => m.seq);
  for (let i = 1; i < seqs.length; i += 1) {
    assert.ok(seqs[i] > seqs[i - 1], `sequences strictly increase: ${seqs}`);
  }
  assert.deepEqual(
    messages.map((m) => JSON.parse(m.data).i),
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    'published order kept',
  );
  const since = seqs[4];
  const newer = await persistenceApi(b).messages('u-seq', { since, limit: 100 });
  assert.deepEqual(
    newer.json.messages.map((m) => m.seq),
    seqs.slice(5),
    'since returns exactly the later ones, whichever node answers',
  );
});
