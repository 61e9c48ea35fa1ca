// Long retention of channel histories in MongoDB (README "Long retention in
// MongoDB"): with `history_retention`, every history event is also kept in
// MongoDB, so a recovery older than the hot buffer (history_size 10 here)
// joins MongoDB's part with the buffer, the history API pages through
// MongoDB, serials keep increasing across a restart, and a MongoDB outage
// stops neither publishing nor live delivery (recovery and the API say
// "unavailable" at once; the queued writes land when MongoDB is back).
//
// Its own MongoDB-wire server (jongodb, persistence-helpers) and its own
// rusher processes; RUSHER_PORT's shared server is not used.

import { channelKey } from './redis-cluster-helpers.mjs';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BIN, waitFor } from './helpers.mjs';
import { killAll as killRedis, startRedis } from './cluster-helpers.mjs';
import { RUN_ID, api, killAll, rawOn, rawSubscribe, sdkOn, startJongodb, startRusher, suiteMongo } from './persistence-helpers.mjs';

const T = { timeout: 60000 };
const APP = { appId: 'long-app', key: 'long-key', secret: 'long-secret' };
const SIZE = 10;

let counter = 0;
const uniq = (prefix) => `${prefix}-${RUN_ID}-${(counter += 1)}`;

/** A rusher on MongoDB `url` whose one app keeps 10 events hot and an hour in MongoDB. */
function config(url, database, redisUrl = '') {
  const redis = redisUrl ? `adapter = "redis"\n\n[redis]\nurl = "${redisUrl}"\nprefix = "ret${RUN_ID}"\n\n` : '';
  return `${redis}[server]
host = "127.0.0.1"
port = 6001
activity_timeout = 30
pong_timeout = 10
shutdown_grace = 2
log_level = "info"

[store]
backend = "mongodb"
url = "${url}"
database = "${database}"
timeout_ms = 1000

[[apps]]
id = "${APP.appId}"
key = "${APP.key}"
secret = "${APP.secret}"
history = true
history_size = ${SIZE}
history_ttl = 300
history_retention = 3600
`;
}

after(async () => {
  await killAll();
  await killRedis();
});

/** Publishes events `e` with data {i} for i in [from, from + count), one after the other. */
async function publish(sdk, channel, from, count) {
  for (let i = from; i < from + count; i += 1) {
    const res = await sdk.trigger(channel, 'e', { i });
    assert.equal(res.status, 200);
  }
}

/** The next `count` frames of event `e` on `channel`. */
async function events(conn, channel, count, timeoutMs = 5000) {
  const got = [];
  for (let n = 0; n < count; n += 1) {
    got.push(await conn.next((f) => f.event === 'e' && f.channel === channel, timeoutMs));
  }
  return got;
}

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, k) => from + k);

const history = (server, channel, params = {}) =>
  api(server, 'GET', `/apps/${APP.appId}/channels/${channel}/history`, { app: APP, params });

/** Every event of `channel` through the history API, `limit` at a time, following `next`. */
async function pageAll(server, channel, limit) {
  const all = [];
  let since = 0;
  for (let pages = 0; pages < 50; pages += 1) {
    const res = await history(server, channel, { since, limit });
    assert.equal(res.status, 200, res.text);
    all.push(...res.json.events);
    if (res.json.next === null) return all;
    assert.equal(res.json.next, res.json.events.at(-1).serial, 'next is the last serial of the page');
    since = res.json.next;
  }
  throw new Error('more than 50 pages');
}

async function metric(server, name) {
  const text = await (await fetch(`http://${server.host}:${server.port}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : 0;
}

test('history_retention without the MongoDB store is refused at startup, naming the key', T, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rusher-retention-'));
  try {
    const file = path.join(dir, 'rusher.toml');
    fs.writeFileSync(file, config('mongodb://127.0.0.1:1', 'x').replace('backend = "mongodb"', 'backend = "memory"'));
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('RUSHER_')));
    const run = spawnSync(BIN, ['--check-config', '--config', file], { env, encoding: 'utf8', timeout: 10000 });
    assert.equal(run.status, 1, run.stdout + run.stderr);
    assert.match(run.stderr, /apps\[0\]\.history_retention.*mongodb/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

describe('long retention on a shared MongoDB', () => {
  let mongo;
  let server;
  let sdk;
  const channel = uniq('news');

  before(async () => {
    mongo = await suiteMongo();
    server = await startRusher(config(mongo.url, `rusher_retention_${RUN_ID}`));
    sdk = sdkOn(server, APP);
  });

  test('100 events with a buffer of 10: a client recovering from serial 5 gets the 95 missed ones once, in order (MongoDB, then the buffer), then live events', T, async (t) => {
    await publish(sdk, channel, 1, 100);
    const conn = await rawOn(t, server, APP);
    const ok = await rawSubscribe(conn, channel, { since: 5 });
    assert.equal(ok.event, 'pusher_internal:subscription_succeeded', JSON.stringify(ok));
    await sdk.trigger(channel, 'e', { i: 101 });
    const got = await events(conn, channel, 96);
    assert.deepEqual(got.map((f) => f.serial), range(6, 101));
    assert.deepEqual(got.map((f) => f.dataParsed.i), range(6, 101));
    assert.ok(!conn.frames.some((f) => f.event === 'pusher:recovery_failed'), 'no recovery_failed');
  });

  test('the history API pages all the events through MongoDB with since/limit/next', T, async () => {
    const all = await pageAll(server, channel, 30);
    assert.deepEqual(all.map((e) => e.serial), range(1, 101));
    assert.deepEqual(all.map((e) => JSON.parse(e.data).i), range(1, 101));
    assert.ok(all.every((e) => e.event === 'e' && typeof e.time_ms === 'number'));
    const first = await history(server, channel, { since: 0, limit: 5 });
    assert.equal(first.json.oldest, 1);
    assert.equal(first.json.latest, 101);
  });

  test('a restart keeps the serials increasing by one and the history available', T, async (t) => {
    await server.stop();
    await server.start();
    const conn = await rawOn(t, server, APP);
    await rawSubscribe(conn, channel);
    await sdk.trigger(channel, 'e', { i: 102 });
    const [live] = await events(conn, channel, 1);
    assert.equal(live.serial, 102, 'the channel goes on from the serial MongoDB holds');

    const again = await rawOn(t, server, APP);
    await rawSubscribe(again, channel, { since: 90 });
    const got = await events(again, channel, 12);
    assert.deepEqual(got.map((f) => f.serial), range(91, 102));
    const all = await pageAll(server, channel, 100);
    assert.deepEqual(all.map((e) => e.serial), range(1, 102));
  });

  test('a replay longer than the connection queue allows is refused with recovery_failed (the client pages the API)', T, async (t) => {
    const long = uniq('long');
    // outgoing_queue is 1024: 1100 missed events cannot be queued at once.
    const batch = [];
    for (let i = 1; i <= 1100; i += 1) batch.push({ channel: long, name: 'e', data: JSON.stringify({ i }) });
    for (let k = 0; k < batch.length; k += 10) {
      assert.equal((await sdk.triggerBatch(batch.slice(k, k + 10))).status, 200);
    }
    const conn = await rawOn(t, server, APP);
    await rawSubscribe(conn, long, { since: 0 });
    const failed = await conn.next((f) => f.event === 'pusher:recovery_failed', 5000);
    assert.match(failed.dataParsed.reason, /does not fit/);
    assert.ok(!conn.frames.some((f) => f.event === 'e'), 'nothing replayed');
  });
});

describe('MongoDB outage with long retention', () => {
  test('MongoDB stopped: publishes answered and delivered live, recovery and API say unavailable at once; the queued writes land when MongoDB is back', { timeout: 90000 }, async (t) => {
    const own = await startJongodb();
    t.after(() => own.stop());
    const node = await startRusher(config(own.url, `rusher_retention_outage_${RUN_ID}`));
    t.after(() => node.stop('SIGKILL'));
    const sdk = sdkOn(node, APP);
    const channel = uniq('outage');
    await publish(sdk, channel, 1, 20);
    const live = await rawOn(t, node, APP);
    await rawSubscribe(live, channel);

    await own.stop('SIGKILL');
    const started = Date.now();
    await publish(sdk, channel, 21, 200);
    const got = await events(live, channel, 200);
    assert.deepEqual(got.map((f) => f.dataParsed.i), range(21, 220));
    assert.deepEqual(got.map((f) => f.serial), range(21, 220), 'serials go on during the outage');
    t.diagnostic(`200 publishes and deliveries in ${Date.now() - started} ms with MongoDB down`);

    // Once the node has seen MongoDB fail, nothing needing it waits.
    await waitFor(async () => (await metric(node, 'rusher_store_errors_total')) > 0, 15000, 100, 'a store error');
    const recovering = await rawOn(t, node, APP);
    const asked = Date.now();
    const ok = await rawSubscribe(recovering, channel, { since: 5 });
    assert.equal(ok.event, 'pusher_internal:subscription_succeeded');
    const failed = await recovering.next((f) => f.event === 'pusher:recovery_failed', 2000);
    assert.match(failed.dataParsed.reason, /unavailable/);
    assert.ok(Date.now() - asked < 1000, `recovery answered in ${Date.now() - asked} ms`);
    const down = await history(node, channel, { since: 0 });
    assert.equal(down.status, 503, down.text);
    assert.match(down.json.error, /MongoDB/);
    // A recovery the buffer holds needs no MongoDB.
    const near = await rawOn(t, node, APP);
    await rawSubscribe(near, channel, { since: 215 });
    assert.deepEqual((await events(near, channel, 5)).map((f) => f.serial), range(216, 220));
    assert.ok((await metric(node, 'rusher_history_writes_queued_total')) > 0, 'writes counted as queued');

    await own.start();
    // jongodb keeps data in memory: what it holds now came from the queue.
    await waitFor(
      async () => {
        const res = await history(node, channel, { since: 20, limit: 1000 });
        return res.status === 200 && res.json.events.length === 200;
      },
      30000,
      250,
      'the 200 queued writes in MongoDB',
    );
    assert.ok((await metric(node, 'rusher_history_writes_retried_total')) > 0, 'writes counted as retried');
    assert.equal(await metric(node, 'rusher_history_writes_dropped_total'), 0);
    // A restarted node has an empty buffer: the pages come from MongoDB alone.
    await node.stop();
    await node.start();
    const res = await history(node, channel, { since: 0, limit: 1000 });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json.events.map((e) => e.serial), range(21, 220));
  });
});

describe('long retention with adapter = "redis"', () => {
  test('two nodes: the publishing node archives each event once; a recovery on the other node joins MongoDB, the stream and its mirror; the API pages all', T, async (t) => {
    const [mongo, redis] = await Promise.all([suiteMongo(), startRedis()]);
    const text = config(mongo.url, `rusher_retention_redis_${RUN_ID}`, redis.url);
    const [a, b] = await Promise.all([startRusher(text), startRusher(text)]);
    const channel = uniq('cluster');
    const watcher = await rawOn(t, b, APP);
    await rawSubscribe(watcher, channel);
    await publish(sdkOn(a, APP), channel, 1, 250);
    const live = await events(watcher, channel, 250);
    assert.deepEqual(live.map((f) => f.serial), range(1, 250), 'Redis serials');

    // The stream (MAXLEN ~ 10, trimmed by whole nodes of 100 entries) no
    // longer holds serial 6: the start of the replay is MongoDB's.
    const xrange = spawnSync('redis-cli', ['-p', String(redis.port), 'XRANGE', channelKey(`ret${RUN_ID}`, 'history', APP.appId, channel), '-', '+', 'COUNT', '1'], {
      encoding: 'utf8',
    });
    const first = Number(xrange.stdout.split('\n')[0].split('-')[0]);
    assert.ok(first > 6, `stream starts at ${xrange.stdout.slice(0, 40)} ${spawnSync('redis-cli', ['-p', String(redis.port), 'KEYS', '*'], { encoding: 'utf8' }).stdout}`);
    const conn = await rawOn(t, b, APP);
    await rawSubscribe(conn, channel, { since: 5 });
    const got = await events(conn, channel, 245);
    assert.deepEqual(got.map((f) => f.serial), range(6, 250));
    assert.deepEqual(got.map((f) => f.dataParsed.i), range(6, 250));
    assert.ok(!conn.frames.some((f) => f.event === 'pusher:recovery_failed'));
    for (const node of [a, b]) {
      const all = await pageAll(node, channel, 100);
      assert.deepEqual(all.map((e) => e.serial), range(1, 250), `pages on port ${node.port}`);
    }
  });
});
