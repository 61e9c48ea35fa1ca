// Acknowledged delivery across a Redis cluster (README "Acknowledged
// delivery", the default `store = "auto"`, which is Redis with
// `adapter = "redis"`): a signed-in user's unacknowledged message
// follows the user to a connection on another node, is claimed by exactly
// one of two new connections, survives a `kill -9` of the node holding the
// connection, and with Redis stopped delivery goes on (kept in the node's
// memory, counted) without hanging a connection.
//
// Its own redis-server and nodes (N1, N2, and N3 for the kill -9) with an
// app whose acknowledged delivery names no store (so the default must pick
// Redis); every process is
// killed at the end.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { sleep, tomlString as q, waitFor } from './helpers.mjs';
import { metric } from './webhook-helpers.mjs';
import { killAll, rawOn, sdkOn, spawnNode, startRedis, writeConfig } from './cluster-helpers.mjs';

const T = { timeout: 30000 };
const RUN = `${process.pid.toString(36)}${Date.now().toString(36).slice(-5)}`;
const PREFIX = `rusher-ack-${RUN}`;
const ACK = { appId: 'ack-app', key: 'ack-key', secret: 'ack-secret' };
let uid = 0;
const uniq = (prefix) => `${prefix}-${RUN}-${(uid += 1)}`;

let redis;
let config;
let N1;
let N2;

function ackConfig(redisUrl) {
  return `adapter = "redis"

[server]
host = "127.0.0.1"
port = 6001
log_level = "info"
shutdown_grace = 1

[redis]
url = ${q(redisUrl)}
prefix = ${q(PREFIX)}
heartbeat_secs = 1
node_timeout_secs = 3
operation_timeout_ms = 500

[[apps]]
id = "ack-app"
key = "ack-key"
secret = "ack-secret"

[apps.delivery]
enabled = true
channels = ["acked-"]
ack_timeout_ms = 20000
max_retries = 3
message_ttl = 60
max_pending = 10
`;
}

before(async () => {
  redis = await startRedis();
  config = writeConfig(ackConfig(redis.url));
  [N1, N2] = await Promise.all([spawnNode('N1', config.path), spawnNode('N2', config.path)]);
});

after(async () => {
  await killAll();
});

/** One command to our redis-server over RESP; resolves the integer reply. */
function redisInt(...args) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(redis.port, '127.0.0.1');
    let buf = '';
    sock.on('connect', () => {
      sock.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`);
    });
    sock.on('data', (d) => {
      buf += d.toString();
      if (buf.includes('\r\n')) {
        sock.destroy();
        if (buf.startsWith(':')) resolve(Number(buf.slice(1, buf.indexOf('\r\n'))));
        else reject(new Error(`redis answered ${buf}`));
      }
    });
    sock.on('error', reject);
  });
}

const userKey = (user) => `${PREFIX}:delivery:{${ACK.appId}:${user.id}}`;
const isEvent = (channel) => (f) => f.event === 'e' && f.channel === channel;
const connections = (node) => metric(node, 'rusher_connections');

/** A raw client of the user on `node`, signed in. */
async function signedIn(t, node, user) {
  const conn = await rawOn(t, node, ACK);
  conn.send({ event: 'pusher:signin', data: sdkOn(node, ACK).authenticateUser(conn.socketId, user) });
  await conn.next((f) => f.event === 'pusher:signin_success');
  return conn;
}

/** The user gets one unacknowledged message on `node`, then its connection closes. */
async function leaveUnacknowledged(t, node, user, channel) {
  // The previous test's connections close when it ends (t.after), perhaps
  // not yet: count from a node whose count stopped moving.
  let before = await connections(node);
  await waitFor(async () => {
    await sleep(150);
    const now = await connections(node);
    const still = now === before;
    before = now;
    return still;
  }, 5000, 0, `${node.name} connection count settled`);
  const conn = await signedIn(t, node, user);
  await conn.subscribe(channel);
  await sdkOn(node, ACK).trigger(channel, 'e', { n: 1 });
  const original = await conn.next(isEvent(channel));
  assert.match(original.message_id, /^[0-9a-f]{16}-\d+$/);
  await conn.end();
  // The node parked it before its connection count went back.
  await waitFor(async () => (await connections(node)) === before, 5000, 20, `${node.name} saw the close`);
  return original;
}

test('a message left unacknowledged on N1 reaches the same user on N2 (same message_id); acked there, it never comes again on any node', T, async (t) => {
  const user = { id: uniq('user') };
  const channel = uniq('acked');
  const original = await leaveUnacknowledged(t, N1, user, channel);
  // Parked in Redis, under a key that expires.
  assert.equal(await redisInt('HLEN', userKey(user)), 1);
  const ttl = await redisInt('PTTL', userKey(user));
  assert.ok(ttl > 0 && ttl <= 60000, `PTTL ${ttl}`);

  const other = await rawOn(t, N2, ACK);
  await other.subscribe(channel);
  const second = await signedIn(t, N2, user);
  await second.subscribe(channel);
  const again = await second.next(isEvent(channel), 2000);
  assert.equal(again.message_id, original.message_id);
  assert.deepEqual(again.dataParsed, { n: 1 });
  second.send({ event: 'pusher:ack', data: { message_id: again.message_id } });
  // Another connection of the channel (anonymous) never gets a user's message.
  assert.equal(other.frames.filter(isEvent(channel)).length, 0);

  // Acknowledged: gone from Redis once N2 flushed, and not resent anywhere.
  await waitFor(async () => (await redisInt('EXISTS', userKey(user))) === 0, 3000, 50, 'key removed after the ack');
  await second.end();
  for (const node of [N1, N2]) {
    const conn = await signedIn(t, node, user);
    await conn.subscribe(channel);
    await assert.rejects(conn.next((f) => isEvent(channel)(f) || f.event === 'pusher:error', 500));
  }
});

test('of two simultaneous new connections of the user (one per node), exactly one gets a parked message', T, async (t) => {
  const user = { id: uniq('user') };
  const channel = uniq('acked');
  const original = await leaveUnacknowledged(t, N1, user, channel);
  const [a, b] = await Promise.all([signedIn(t, N1, user), signedIn(t, N2, user)]);
  await Promise.all([a.subscribe(channel), b.subscribe(channel)]);
  const got = await Promise.any([a, b].map((c) => c.next(isEvent(channel), 2000)));
  assert.equal(got.message_id, original.message_id);
  // The loser's claim found nothing; the winner keeps it as its own (live).
  await waitFor(async () => (await redisInt('HLEN', userKey(user))) === 1, 3000, 50, 'mirrored by the winner');
  const loser = a.frames.some(isEvent(channel)) ? b : a;
  await assert.rejects(loser.next(isEvent(channel), 700));
  assert.equal(a.frames.filter(isEvent(channel)).length + b.frames.filter(isEvent(channel)).length, 1);
});

test('kill -9 of the node holding the connection: the unacknowledged message reaches the user on another node', T, async (t) => {
  const N3 = await spawnNode('N3', config.path);
  const user = { id: uniq('user') };
  const channel = uniq('acked');
  const conn = await signedIn(t, N3, user);
  await conn.subscribe(channel);
  await sdkOn(N3, ACK).trigger(channel, 'e', { n: 3 });
  const original = await conn.next(isEvent(channel));
  // Mirrored to Redis by the live connection (batched, within 250 ms).
  await waitFor(async () => (await redisInt('HLEN', userKey(user))) === 1, 3000, 50, 'mirrored');
  await N3.kill('SIGKILL');

  const second = await signedIn(t, N2, user);
  await second.subscribe(channel);
  // Claimed once N3's heartbeat is older than node_timeout_secs (3 s).
  const again = await second.next(isEvent(channel), 8000);
  assert.equal(again.message_id, original.message_id);
  assert.deepEqual(again.dataParsed, { n: 3 });
});

test('Redis stopped: delivery goes on, the user\'s message is kept in the node\'s memory (counted), no connection hangs', T, async (t) => {
  const user = { id: uniq('user') };
  const channel = uniq('acked');
  await redis.stop();
  const fallbacks = await metric(N1, 'rusher_delivery_store_fallbacks_total');
  const started = Date.now();
  const original = await leaveUnacknowledged(t, N1, user, channel);
  await waitFor(async () => (await metric(N1, 'rusher_delivery_store_fallbacks_total')) > fallbacks, 3000, 50, 'fallback counted');
  const second = await signedIn(t, N1, user);
  await second.subscribe(channel);
  const again = await second.next(isEvent(channel), 3000);
  assert.equal(again.message_id, original.message_id);
  second.send({ event: 'pusher:ack', data: { message_id: again.message_id } });
  await assert.rejects(second.next((f) => f.event === 'pusher:error', 300));
  // Each step waited at most the operation timeout (500 ms), never longer.
  assert.ok(Date.now() - started < 10000, `took ${Date.now() - started} ms`);
});
