// Connection recovery with pusher-js (README "Recovery for pusher-js,
// unmodified" and "Recovery for anonymous pusher-js clients: a snippet"):
// a signed-in pusher-js client, unmodified, and an anonymous one running the
// README's snippet, lose their connection (a TCP proxy of the test's own
// between them and rusher is cut: either both sides closed, or silently
// black-holed so rusher keeps the old socket open until pusher-js has
// reconnected), 50 events are published meanwhile, and on reconnect all 50
// arrive once, in order, then live events.
//
// The suite runs its own rusher (history on) on a free port.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { collect, connectRaw, sleep, waitFor, withTimeout } from './helpers.mjs';
import { killAll, rawOn, rawSubscribe, sdkOn, startRusher } from './persistence-helpers.mjs';
import { cuttableProxy } from './proxy-helpers.mjs';
import { recoveringClient, resumeWithSince } from './recovery-helpers.mjs';

const T = { timeout: 40000 };
const APP = { appId: 'app-id', key: 'app-key', secret: 'app-secret' };
const OTHER = { appId: 'other-app', key: 'other-key', secret: 'other-secret' };

// rusher's own keep-alive is slow (30 s): in the silent case it must not be
// what closes the dead socket; pusher-js's is fast (1 s + 1 s).
const CONFIG = `[server]
host = "127.0.0.1"
port = 6001
activity_timeout = 30
pong_timeout = 10
shutdown_grace = 1
log_level = "info"

[[apps]]
id = "app-id"
key = "app-key"
secret = "app-secret"
history = true

[[apps]]
id = "other-app"
key = "other-key"
secret = "other-secret"
history = true
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

/** A recovering pusher-js client through `proxy` (see recovery-helpers.mjs); `app` defaults to APP. */
function client(t, proxy, opts = {}) {
  const app = opts.app ?? APP;
  return recoveringClient(t, proxy, sdkOn(server, app), { ...opts, app });
}

/** Subscribe and wait for the outcome: true on success, false on subscription_error. */
function subscribed(channel) {
  return withTimeout(
    new Promise((resolve) => {
      channel.bind('pusher:subscription_succeeded', () => resolve(true));
      channel.bind('pusher:subscription_error', () => resolve(false));
    }),
    6000,
    `no subscription outcome for ${channel.name}`,
  );
}

async function publish(app, channel, from, count) {
  const sdk = sdkOn(server, app);
  for (let i = from; i < from + count; i += 1) await sdk.trigger(channel, 'e', { i });
}

async function metric(name) {
  const text = await (await fetch(`http://127.0.0.1:${server.port}/metrics`)).text();
  const m = text.match(new RegExp(`^${name}(?:\\{\\})? ([0-9.e+]+)$`, 'm'));
  return m ? Number(m[1]) : 0;
}

/** Waits for pusher-js to be connected on a socket other than `oldSocketId`. */
async function reconnected(pusher, oldSocketId) {
  await waitFor(
    () => pusher.connection.state === 'connected' && pusher.connection.socket_id !== oldSocketId,
    10000,
    20,
    'pusher-js reconnected',
  );
}

/**
 * The scenario of issue 12: 5 events seen (and, signed in, confirmed), the
 * connection cut (`mode`), 50 events published, reconnect, then a live one:
 * the client gets 1..56 once, in order.
 */
async function fiftyEventsAcrossACut(t, { mode, channelName, user, snippet, authAfterSignin }) {
  const proxy = await cuttableProxy(t, server);
  const pusher = await client(t, proxy, { user, snippet, authAfterSignin });
  const channel = pusher.subscribe(channelName);
  assert.equal(await subscribed(channel), true);
  const got = collect(channel, 'e');
  const confirmed = await metric('rusher_recovery_confirmations_total');
  await publish(APP, channelName, 1, 5);
  for (let i = 1; i <= 5; i += 1) assert.deepEqual(await got.next(), { i });
  if (user) {
    // Wait until rusher knows the client read them (else they come again: at least once).
    await waitFor(async () => (await metric('rusher_recovery_confirmations_total')) > confirmed, 5000, 50, 'confirmed');
  }
  const oldSocketId = pusher.connection.socket_id;
  const [oldPair] = proxy.pairs;
  proxy.cut(mode);
  await publish(APP, channelName, 6, 50);
  if (mode === 'silent') {
    // pusher-js notices by itself (ping unanswered) and tries again.
    await waitFor(() => pusher.connection.state !== 'connected', 10000, 20, 'pusher-js noticed the cut');
  }
  proxy.resume();
  await reconnected(pusher, oldSocketId);
  for (let i = 6; i <= 55; i += 1) assert.deepEqual(await got.next(5000), { i }, `event ${i}`);
  if (mode === 'silent') {
    assert.equal(oldPair.upstream.destroyed, false, 'rusher still held the old socket open during the recovery');
  }
  await publish(APP, channelName, 56, 1);
  assert.deepEqual(await got.next(), { i: 56 });
  await sleep(300);
  assert.deepEqual(
    got.events.map((e) => e.i),
    Array.from({ length: 56 }, (_, k) => k + 1),
    'each event once, in order',
  );
  return { pusher, proxy };
}

test('the README snippet is found', () => {
  assert.equal(typeof resumeWithSince, 'function', 'a js block defining resumeWithSince in README.md');
});

test('signed-in pusher-js, public channel (subscribe before sign-in), server sees the close: 50 missed events once, in order, then live', T, async (t) => {
  await fiftyEventsAcrossACut(t, { mode: 'close', channelName: uniq('news'), user: { id: uniq('ann') } });
});

test('signed-in pusher-js, public channel, silent cut (rusher keeps writing to the dead socket): 50 missed events once, in order, then live', T, async (t) => {
  await fiftyEventsAcrossACut(t, { mode: 'silent', channelName: uniq('news'), user: { id: uniq('bob') } });
});

test('signed-in pusher-js, private channel subscribed after the sign-in: 50 missed events once, in order, then live', T, async (t) => {
  await fiftyEventsAcrossACut(t, {
    mode: 'close',
    channelName: uniq('private-orders'),
    user: { id: uniq('cid') },
    authAfterSignin: true,
  });
});

test('anonymous pusher-js with the README snippet: 50 missed events once, in order, then live (close and silent cuts)', T, async (t) => {
  await fiftyEventsAcrossACut(t, { mode: 'close', channelName: uniq('feed'), snippet: true });
  await fiftyEventsAcrossACut(t, { mode: 'silent', channelName: uniq('feed'), snippet: true });
});

test('signed-in pusher-js with the snippet too: since and the user position never both replay', T, async (t) => {
  await fiftyEventsAcrossACut(t, { mode: 'close', channelName: uniq('both'), user: { id: uniq('dan') }, snippet: true });
  await fiftyEventsAcrossACut(t, {
    mode: 'close',
    channelName: uniq('private-both'),
    user: { id: uniq('eve') },
    snippet: true,
    authAfterSignin: true,
  });
});

test('private channel: a forged signature on reconnect is refused and nothing is replayed', T, async (t) => {
  const channelName = uniq('private-secret');
  const proxy = await cuttableProxy(t, server);
  let forging = false;
  const pusher = await client(t, proxy, { user: { id: uniq('fay') }, forge: () => forging, authAfterSignin: true });
  const channel = pusher.subscribe(channelName);
  assert.equal(await subscribed(channel), true);
  const got = collect(channel, 'e');
  const raw = [];
  await publish(APP, channelName, 1, 2);
  assert.deepEqual([await got.next(), await got.next()], [{ i: 1 }, { i: 2 }]);
  const oldSocketId = pusher.connection.socket_id;
  proxy.cut('close');
  await publish(APP, channelName, 3, 50);
  forging = true;
  const refused = withTimeout(
    new Promise((resolve) => channel.bind('pusher:subscription_error', resolve)),
    8000,
    'subscription_error after reconnect',
  );
  proxy.resume();
  await reconnected(pusher, oldSocketId);
  pusher.connection.connection.transport.bind('message', (m) => raw.push(JSON.parse(m.data)));
  await refused;
  await sleep(500);
  assert.equal(got.events.length, 2, 'no replayed event reached pusher-js');
  assert.deepEqual(
    raw.filter((f) => f.channel === channelName && f.event !== 'pusher:subscription_error'),
    [],
    'nothing at all on the channel after the refusal',
  );
});

test('another user, or the same user id in another app, does not get the first user\'s missed events', T, async (t) => {
  const channelName = uniq('shared');
  const id = uniq('gus');
  const proxy = await cuttableProxy(t, server);
  const first = await client(t, proxy, { user: { id } });
  const channel = first.subscribe(channelName);
  assert.equal(await subscribed(channel), true);
  proxy.cut('close');
  await publish(APP, channelName, 1, 50);
  await publish(OTHER, channelName, 1, 50);
  proxy.resume();

  const direct = { port: server.port };
  const other = await client(t, direct, { user: { id: uniq('hal') } });
  const otherApp = await client(t, direct, { user: { id }, app: OTHER });
  const seen = [];
  for (const [pusher, app] of [
    [other, APP],
    [otherApp, OTHER],
  ]) {
    const ch = pusher.subscribe(channelName);
    assert.equal(await subscribed(ch), true);
    ch.bind('e', (data) => seen.push([app.appId, data.i]));
  }
  await publish(APP, channelName, 51, 1);
  await publish(OTHER, channelName, 51, 1);
  await waitFor(() => seen.length >= 2, 5000, 20, 'the live events');
  await sleep(300);
  assert.deepEqual(seen.sort(), [
    [APP.appId, 51],
    [OTHER.appId, 51],
  ]);
});

test('a repeated subscribe with since on a channel the socket is already on replays nothing it got live', T, async (t) => {
  const channel = uniq('again');
  await publish(APP, channel, 1, 3);
  const conn = await rawOn(t, server, APP);
  await rawSubscribe(conn, channel, { since: 1 });
  const first = [];
  for (let n = 0; n < 2; n += 1) first.push((await conn.next((f) => f.event === 'e' && f.channel === channel)).serial);
  assert.deepEqual(first, [2, 3]);
  await publish(APP, channel, 4, 2);
  for (let n = 0; n < 2; n += 1) await conn.next((f) => f.event === 'e' && f.channel === channel);
  // The client asks again from 1: 2 and 3 came by replay, 4 and 5 live.
  const again = await rawSubscribe(conn, channel, { since: 1 });
  assert.equal(again.event, 'pusher_internal:subscription_succeeded');
  await conn.none((f) => f.event === 'e' && f.channel === channel && f.serial <= 5, 400);
  // From before the subscription: only what precedes its first live event.
  const late = uniq('late');
  await publish(APP, late, 1, 3);
  const other = await rawOn(t, server, APP);
  await rawSubscribe(other, late);
  await publish(APP, late, 4, 1);
  assert.equal((await other.next((f) => f.event === 'e' && f.channel === late)).serial, 4);
  await rawSubscribe(other, late, { since: 1 });
  const replayed = [];
  for (let n = 0; n < 2; n += 1) replayed.push((await other.next((f) => f.event === 'e' && f.channel === late && f.serial < 4)).serial);
  assert.deepEqual(replayed, [2, 3]);
  await other.none((f) => f.event === 'e' && f.channel === late, 300);
});

test('an unsubscribe forgets the position even when a confirmation (pong) for the channel arrives after it', T, async (t) => {
  const channel = uniq('left');
  const id = uniq('ida');
  const sdk = sdkOn(server, APP);
  // A raw socket that answers pings only when told: the probe's pong comes after the unsubscribe.
  const conn = connectRaw(APP.key, undefined, undefined, { autoPong: false }, { port: server.port });
  t.after(() => conn.close());
  const pings = [];
  conn.ws.on('ping', (payload) => pings.push(payload));
  const { socket_id: socketId } = await conn.established();
  conn.send({ event: 'pusher:signin', data: sdk.authenticateUser(socketId, { id }) });
  await conn.next('pusher:signin_success');
  await rawSubscribe(conn, channel);
  await publish(APP, channel, 1, 1);
  await conn.next((f) => f.event === 'e' && f.channel === channel);
  await waitFor(() => pings.length > 0, 5000, 20, 'the probe ping');
  conn.send({ event: 'pusher:unsubscribe', data: { channel } });
  await publish(APP, channel, 2, 3);
  conn.ws.pong(pings[0]);
  await sleep(200);
  conn.close();
  await conn.closed;
  // The user's next socket on the channel starts live: nothing is replayed.
  const next = await rawOn(t, server, APP);
  next.send({ event: 'pusher:signin', data: sdk.authenticateUser(next.socketId, { id }) });
  await next.next('pusher:signin_success');
  await rawSubscribe(next, channel);
  await next.none((f) => f.channel === channel && (f.event === 'e' || f.event === 'pusher:recovery_failed'), 400);
});
