// Acknowledged delivery (README "Acknowledged delivery", extension): frames on
// channels of `[apps.delivery] channels` carry a top-level "message_id";
// `pusher:ack` acknowledges; an unacknowledged message is resent after
// ack_timeout_ms × retry_backoff^n, max_retries times, then expires; a
// signed-in user's unacknowledged messages follow it to its next connection.
//
// The suite runs its own rusher (adapter = "local") with short timeouts.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import Pusher from 'pusher-js';
import { sleep, waitFor } from './helpers.mjs';
import { killAll, rawOn, rawSubscribe, sdkOn, startRusher } from './persistence-helpers.mjs';
import { authedClient, rawSignIn } from './auth-helpers.mjs';

const T = { timeout: 30000 };
const ACK = { appId: 'ack-app', key: 'ack-key', secret: 'ack-secret' };
const PLAIN = { appId: 'plain-app', key: 'plain-key', secret: 'plain-secret' };
const TIMEOUT_MS = 300;

const CONFIG = `[server]
host = "127.0.0.1"
port = 6001
activity_timeout = 30
pong_timeout = 10
shutdown_grace = 1
log_level = "info"

[[apps]]
id = "ack-app"
key = "ack-key"
secret = "ack-secret"
client_events = true

[apps.delivery]
enabled = true
channels = ["acked-", "private-acked-", "cache-acked-"]
ack_timeout_ms = ${TIMEOUT_MS}
retry_backoff = 2.0
max_retries = 3
message_ttl = 60
max_pending = 3
ack_rate = 20

[[apps]]
id = "plain-app"
key = "plain-key"
secret = "plain-secret"
`;

let server;
let counter = 0;
const uniq = (prefix) => `${prefix}-${process.pid}-${(counter += 1)}`;

before(async () => {
  server = await startRusher(CONFIG);
});

after(async () => {
  await killAll();
});

/** The value of one metric line (`name{labels}`), 0 when absent. */
async function metric(line) {
  const text = await (await fetch(`http://127.0.0.1:${server.port}/metrics`)).text();
  for (const row of text.split('\n')) {
    const i = row.lastIndexOf(' ');
    if (row.slice(0, i) === line) return Number(row.slice(i + 1));
  }
  return 0;
}

const expired = (reason) => metric(`rusher_delivery_expired_total{reason="${reason}"}`);

/** A raw client subscribed to a fresh channel `prefix-*` of `app`. */
async function subscribed(t, prefix, app = ACK) {
  const conn = await rawOn(t, server, app);
  const channel = uniq(prefix);
  const ok = await rawSubscribe(conn, channel);
  assert.equal(ok.event, 'pusher_internal:subscription_succeeded');
  return { conn, channel };
}

const isEvent = (channel) => (f) => f.event === 'e' && f.channel === channel;

test('a client that never acks gets the message max_retries more times, with growing gaps, then never again', T, async (t) => {
  const { conn, channel } = await subscribed(t, 'acked');
  const expiredBefore = await expired('retries');
  await sdkOn(server, ACK).trigger(channel, 'e', { n: 1 });
  const first = await conn.next(isEvent(channel));
  assert.match(first.message_id, /^[0-9a-f]{16}-\d+$/);
  const times = [first.receivedAt];
  for (let i = 0; i < 3; i += 1) {
    const again = await conn.next(isEvent(channel), 4000);
    assert.equal(again.message_id, first.message_id);
    assert.deepEqual(again.dataParsed, { n: 1 });
    times.push(again.receivedAt);
  }
  const gaps = times.slice(1).map((at, i) => at - times[i]);
  // 300, 600, 1200 ms: each at least the timeout, each longer than the last.
  assert.ok(gaps[0] >= TIMEOUT_MS - 20, `gaps ${gaps}`);
  assert.ok(gaps[1] > gaps[0] * 1.5 && gaps[2] > gaps[1] * 1.5, `gaps ${gaps}`);
  // Expires 2400 ms after the last resend; nothing more arrives.
  await waitFor(async () => (await expired('retries')) === expiredBefore + 1, 5000, 50, 'expired +1');
  await conn.none(isEvent(channel), 700);
  assert.equal(conn.frames.filter(isEvent(channel)).length, 4);
});

test('an acking client gets the message once; a batch acks several', T, async (t) => {
  const { conn, channel } = await subscribed(t, 'acked');
  const sdk = sdkOn(server, ACK);
  const ackedBefore = await metric('rusher_delivery_acked_total');
  const retriedBefore = await metric('rusher_delivery_retried_total');
  await sdk.trigger(channel, 'e', { n: 1 });
  const one = await conn.next(isEvent(channel));
  conn.send({ event: 'pusher:ack', data: { message_id: one.message_id } });
  await sdk.triggerBatch([1, 2, 3].map((n) => ({ channel, name: 'e', data: { n } })));
  const batch = [await conn.next(isEvent(channel)), await conn.next(isEvent(channel)), await conn.next(isEvent(channel))];
  assert.equal(new Set(batch.map((f) => f.message_id)).size, 3);
  // pusher-js style: data as a JSON string also works.
  conn.send({ event: 'pusher:ack', data: JSON.stringify({ message_ids: batch.map((f) => f.message_id) }) });
  await conn.none((f) => isEvent(channel)(f) || f.event === 'pusher:error', TIMEOUT_MS * 4);
  assert.equal(await metric('rusher_delivery_acked_total'), ackedBefore + 4);
  assert.equal(await metric('rusher_delivery_retried_total'), retriedBefore);
});

test('one publish has one id for every subscriber (encoded once)', T, async (t) => {
  const { conn: a, channel } = await subscribed(t, 'acked');
  const b = await rawOn(t, server, ACK);
  await rawSubscribe(b, channel);
  await sdkOn(server, ACK).trigger(channel, 'e', { n: 1 });
  const [fa, fb] = [await a.next(isEvent(channel)), await b.next(isEvent(channel))];
  assert.equal(fa.message_id, fb.message_id);
  for (const [conn, f] of [[a, fa], [b, fb]]) conn.send({ event: 'pusher:ack', data: { message_id: f.message_id } });
  await a.none((f) => f.event === 'pusher:error', 200);
});

test('bad acks get pusher:error 4302 and the connection stays open', T, async (t) => {
  const { conn, channel } = await subscribed(t, 'acked');
  const bad = [
    { event: 'pusher:ack', data: { message_id: 'nope-1' } },
    { event: 'pusher:ack', data: {} },
    { event: 'pusher:ack', data: { message_ids: [] } },
    { event: 'pusher:ack', data: { message_id: 7 } },
    { event: 'pusher:ack' },
    { event: 'pusher:ack', data: { message_ids: ['a'.repeat(65)] } },
  ];
  for (const frame of bad) {
    conn.send(frame);
    const error = await conn.next('pusher:error');
    assert.equal(error.dataParsed.code, 4302, JSON.stringify(error));
    assert.match(error.dataParsed.message, /ack/i);
  }
  const unknown = conn.frames.find((f) => f.event === 'pusher:error' && /nope-1/.test(f.dataParsed.message));
  assert.ok(unknown, 'the unknown id is named');
  // Acking twice: the second is unknown.
  await sdkOn(server, ACK).trigger(channel, 'e', {});
  const f = await conn.next(isEvent(channel));
  conn.send({ event: 'pusher:ack', data: { message_ids: [f.message_id] } });
  conn.send({ event: 'pusher:ack', data: { message_ids: [f.message_id] } });
  assert.equal((await conn.next('pusher:error')).dataParsed.code, 4302);
  assert.equal(conn.isClosed, false);
  conn.send({ event: 'pusher:ping', data: {} });
  await conn.next('pusher:pong');
});

test('ack frames over ack_rate per second get 4301 and are dropped; the socket stays', T, async (t) => {
  const { conn } = await subscribed(t, 'acked');
  for (let i = 0; i < 21; i += 1) conn.send({ event: 'pusher:ack', data: { message_id: `x-${i}` } });
  const codes = [];
  for (let i = 0; i < 21; i += 1) codes.push((await conn.next('pusher:error')).dataParsed.code);
  assert.deepEqual(codes.slice(0, 20), Array(20).fill(4302));
  assert.equal(codes[20], 4301);
  assert.equal(conn.isClosed, false);
});

test('channels without acknowledged delivery carry no message_id and acks there are refused', T, async (t) => {
  const { conn, channel } = await subscribed(t, 'news');
  await sdkOn(server, ACK).trigger(channel, 'e', {});
  const f = await conn.next(isEvent(channel));
  assert.equal('message_id' in f, false);
  const plain = await subscribed(t, 'acked', PLAIN);
  await sdkOn(server, PLAIN).trigger(plain.channel, 'e', {});
  assert.equal('message_id' in (await plain.conn.next(isEvent(plain.channel))), false);
  plain.conn.send({ event: 'pusher:ack', data: { message_id: 'x-1' } });
  const error = await plain.conn.next('pusher:error');
  assert.equal(error.dataParsed.code, 4302);
  assert.match(error.dataParsed.message, /not enabled/);
});

test('a cache channel\'s last event, sent on subscribe, is pending like a live one', T, async (t) => {
  const channel = uniq('cache-acked');
  await sdkOn(server, ACK).trigger(channel, 'e', { n: 1 });
  const conn = await rawOn(t, server, ACK);
  await rawSubscribe(conn, channel);
  const cached = await conn.next(isEvent(channel));
  assert.match(cached.message_id, /-/);
  // Unacknowledged, it comes again; acknowledged, it is known and stops.
  const again = await conn.next(isEvent(channel), 2000);
  assert.equal(again.message_id, cached.message_id);
  conn.send({ event: 'pusher:ack', data: { message_id: cached.message_id } });
  await conn.none((f) => isEvent(channel)(f) || f.event === 'pusher:error', TIMEOUT_MS * 3);
});

test('beyond max_pending the oldest unacknowledged message is dropped as expired', T, async (t) => {
  const { conn, channel } = await subscribed(t, 'acked');
  const before = await expired('overflow');
  const sdk = sdkOn(server, ACK);
  for (let n = 1; n <= 5; n += 1) await sdk.trigger(channel, 'e', { n });
  const got = [];
  for (let n = 1; n <= 5; n += 1) got.push(await conn.next(isEvent(channel)));
  await waitFor(async () => (await expired('overflow')) === before + 2, 3000, 50, 'overflow +2');
  // Only the newest 3 (max_pending) are resent, once each at the first timeout.
  const resent = [await conn.next(isEvent(channel)), await conn.next(isEvent(channel)), await conn.next(isEvent(channel))];
  assert.deepEqual(
    resent.map((f) => f.dataParsed.n).sort(),
    [3, 4, 5],
  );
  conn.send({ event: 'pusher:ack', data: { message_ids: got.slice(2).map((f) => f.message_id) } });
  conn.send({ event: 'pusher:ack', data: { message_id: got[0].message_id } });
  const error = await conn.next('pusher:error');
  assert.equal(error.dataParsed.code, 4302);
  assert.ok(error.dataParsed.message.includes(got[0].message_id));
  await conn.none(isEvent(channel), TIMEOUT_MS * 3);
});

test('a signed-in user who reconnects gets the unacknowledged message after subscribing again; anonymous sockets do not', T, async (t) => {
  const sdk = sdkOn(server, ACK);
  const user = { id: uniq('user') };
  const channel = uniq('acked');
  // Earlier tests' sockets are gone first, so the count below means this one.
  const none = async () => (await metric('rusher_connections')) === 0;
  await waitFor(none, 5000, 20, 'no connections');
  const first = await rawOn(t, server, ACK);
  await rawSignIn(first, sdk, user);
  await rawSubscribe(first, channel);
  await sdk.trigger(channel, 'e', { n: 1 });
  const original = await first.next(isEvent(channel));
  first.ws.close();
  // The server has seen the close once its connection count is back.
  await waitFor(none, 5000, 20, 'first socket gone');

  const anonymous = await rawOn(t, server, ACK);
  await rawSubscribe(anonymous, channel);
  const second = await rawOn(t, server, ACK);
  await rawSignIn(second, sdk, user);
  await second.none(isEvent(channel), 200);
  await rawSubscribe(second, channel);
  const again = await second.next(isEvent(channel), 1000);
  assert.equal(again.message_id, original.message_id);
  assert.deepEqual(again.dataParsed, { n: 1 });
  second.send({ event: 'pusher:ack', data: { message_id: again.message_id } });
  await second.none((f) => isEvent(channel)(f) || f.event === 'pusher:error', TIMEOUT_MS * 3);
  await anonymous.none(isEvent(channel), 10);
  assert.equal(anonymous.frames.filter(isEvent(channel)).length, 0);
});

test('pusher-js: the README hook acks every message, so it arrives once, also after a reconnect', T, async (t) => {
  const pusher = new Pusher(ACK.key, {
    wsHost: server.host, wsPort: server.port, forceTLS: false,
    enabledTransports: ['ws'], cluster: 'mt1', disableStats: true,
  });
  t.after(() => pusher.disconnect());
  // As in README "Acknowledged delivery": pusher-js drops top-level fields
  // it does not know, so message_id is read from the transport's raw frame.
  pusher.connection.bind('connected', () => {
    pusher.connection.connection.transport.bind('message', (raw) => {
      const { message_id } = JSON.parse(raw.data);
      if (message_id) pusher.send_event('pusher:ack', { message_id });
    });
  });
  let connects = 0;
  pusher.connection.bind('connected', () => (connects += 1));
  const channelName = uniq('acked');
  const channel = pusher.subscribe(channelName);
  await new Promise((resolve) => channel.bind('pusher:subscription_succeeded', resolve));
  const got = [];
  channel.bind('e', (data) => got.push(data));
  const acked = await metric('rusher_delivery_acked_total');
  const sdk = sdkOn(server, ACK);
  await sdk.trigger(channelName, 'e', { n: 1 });
  await waitFor(async () => (await metric('rusher_delivery_acked_total')) === acked + 1, 3000, 20, 'ack');
  // A new transport after a reconnect is hooked again.
  const resubscribed = new Promise((resolve) => channel.bind('pusher:subscription_succeeded', resolve));
  pusher.connection.connection.close();
  await waitFor(() => connects === 2, 10000, 20, 'reconnect');
  await resubscribed;
  await sdk.trigger(channelName, 'e', { n: 2 });
  await waitFor(async () => (await metric('rusher_delivery_acked_total')) === acked + 2, 3000, 20, 'second ack');
  await sleep(TIMEOUT_MS * 3);
  assert.deepEqual(got, [{ n: 1 }, { n: 2 }]);
});

test('store = "redis" is refused with adapter = "local", naming the key', T, async () => {
  const bad = CONFIG.replace('max_pending = 3', 'max_pending = 3\nstore = "redis"');
  await assert.rejects(startRusher(bad), /apps\[0\]\.delivery\.store/);
});
