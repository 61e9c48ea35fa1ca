// Per-channel history with serials and connection recovery (README "History
// and recovery"): every event on a channel with history carries a top-level
// "serial"; `pusher:subscribe` with `since` replays what the client missed,
// in order, before live events, or answers `pusher:recovery_failed`; the
// history API pages a channel's kept events.
//
// The suite runs its own rusher (adapter = "local") on a free port with apps
// that have history on; RUSHER_PORT's shared server is not used.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import Pusher from 'pusher-js';
import { collect, waitFor, withTimeout } from './helpers.mjs';
import { api, channelAuth, killAll, rawOn, rawSubscribe, sdkOn, startRusher } from './persistence-helpers.mjs';

const T = { timeout: 30000 };
const MAIN = { appId: 'app-id', key: 'app-key', secret: 'app-secret' };
const SMALL = { appId: 'small-app', key: 'small-key', secret: 'small-secret' };
const TTL = { appId: 'ttl-app', key: 'ttl-key', secret: 'ttl-secret' };
const NOHIST = { appId: 'nohist-app', key: 'nohist-key', secret: 'nohist-secret' };

const CONFIG = `[server]
host = "127.0.0.1"
port = 6001
activity_timeout = 30
pong_timeout = 10
shutdown_grace = 1
log_level = "info"

# Every channel has history (100 events, 300 s).
[[apps]]
id = "app-id"
key = "app-key"
secret = "app-secret"
history = true

# A history of 5 events: an older since is a gap.
[[apps]]
id = "small-app"
key = "small-key"
secret = "small-secret"
history = true
history_size = 5

# Events live 1 s, on channels starting with h- only.
[[apps]]
id = "ttl-app"
key = "ttl-key"
secret = "ttl-secret"
history = true
history_ttl = 1
history_channels = ["h-"]

[[apps]]
id = "nohist-app"
key = "nohist-key"
secret = "nohist-secret"
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

/** Publish `count` events `e` with data {i} on `channel`, one after the other. */
async function publish(sdk, channel, from, count) {
  for (let i = from; i < from + count; i += 1) {
    await sdk.trigger(channel, 'e', { i });
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

const history = (app, channel, params = {}) =>
  api(server, 'GET', `/apps/${app.appId}/channels/${channel}/history`, { app, params });

test('pusher-js receives events normally on a channel with history; the raw frame has a serial', T, async (t) => {
  const channelName = uniq('news');
  const client = new Pusher(MAIN.key, {
    wsHost: server.host,
    wsPort: server.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: 'mt1',
  });
  t.after(() => client.disconnect());
  const channel = client.subscribe(channelName);
  await withTimeout(new Promise((r) => channel.bind('pusher:subscription_succeeded', r)), 5000, 'subscribed');
  const got = collect(channel, 'e');
  const raw = await rawOn(t, server, MAIN);
  await rawSubscribe(raw, channelName);
  await publish(sdkOn(server, MAIN), channelName, 1, 2);
  assert.deepEqual(await got.next(), { i: 1 });
  assert.deepEqual(await got.next(), { i: 2 });
  const [first, second] = await events(raw, channelName, 2);
  assert.deepEqual([first.serial, second.serial], [1, 2]);
  assert.deepEqual(first.dataParsed, { i: 1 });
});

test('a client that reconnects with since gets the 50 missed events once, in order, before live ones', T, async (t) => {
  const channel = uniq('feed');
  const sdk = sdkOn(server, MAIN);
  const first = await rawOn(t, server, MAIN);
  await rawSubscribe(first, channel);
  await publish(sdk, channel, 1, 5);
  const seen = await events(first, channel, 5);
  assert.deepEqual(
    seen.map((f) => f.serial),
    [1, 2, 3, 4, 5],
  );
  const last = seen[4].serial;
  first.close();
  await publish(sdk, channel, 6, 50);

  const again = await rawOn(t, server, MAIN);
  const ok = await rawSubscribe(again, channel, { since: last });
  assert.equal(ok.event, 'pusher_internal:subscription_succeeded');
  await sdk.trigger(channel, 'e', { i: 56, live: true });
  const replayed = await events(again, channel, 51);
  assert.deepEqual(
    replayed.map((f) => f.serial),
    Array.from({ length: 51 }, (_, k) => last + 1 + k),
  );
  assert.deepEqual(
    replayed.map((f) => f.dataParsed.i),
    Array.from({ length: 51 }, (_, k) => 6 + k),
  );
  assert.equal(replayed[50].dataParsed.live, true, 'the live event comes last');
  // The success frame came before every replayed event.
  const order = again.frames.filter((f) => f.channel === channel).map((f) => f.event);
  assert.equal(order[0], 'pusher_internal:subscription_succeeded');
  await again.none((f) => f.event === 'e' && f.channel === channel, 300);
});

test('a since older than the history gets pusher:recovery_failed, then live events', T, async (t) => {
  const channel = uniq('gap');
  const sdk = sdkOn(server, SMALL);
  await publish(sdk, channel, 1, 8);
  const conn = await rawOn(t, server, SMALL);
  await rawSubscribe(conn, channel, { since: 1 });
  const failed = await conn.next((f) => f.event === 'pusher:recovery_failed' && f.channel === channel);
  assert.equal(failed.dataParsed.channel, channel);
  assert.equal(failed.dataParsed.since, 1);
  assert.equal(failed.dataParsed.oldest, 4, 'the 5 newest of 8 are kept');
  assert.match(failed.dataParsed.reason, /no longer/);
  await sdk.trigger(channel, 'e', { i: 9 });
  const [live] = await events(conn, channel, 1);
  assert.equal(live.serial, 9);
  const order = conn.frames.filter((f) => f.channel === channel).map((f) => f.event);
  assert.deepEqual(order, ['pusher_internal:subscription_succeeded', 'pusher:recovery_failed', 'e']);

  // A channel without any history also fails explicitly, with oldest null.
  const empty = uniq('empty');
  await rawSubscribe(conn, empty, { since: 3 });
  const none = await conn.next((f) => f.event === 'pusher:recovery_failed' && f.channel === empty);
  assert.equal(none.dataParsed.oldest, null);
});

test('publishing during a recovering subscribe: no duplicate, no gap', T, async (t) => {
  const channel = uniq('race');
  const sdk = sdkOn(server, MAIN);
  await publish(sdk, channel, 1, 3);
  const total = 150;
  let published = 3;
  const publishing = (async () => {
    const inFlight = [];
    for (let worker = 0; worker < 4; worker += 1) {
      inFlight.push(
        (async () => {
          while (published < total) {
            published += 1;
            await sdk.trigger(channel, 'e', { i: published });
          }
        })(),
      );
    }
    await Promise.all(inFlight);
  })();
  await waitFor(() => published >= 20, 10000, 10, '20 events published');
  const conn = await rawOn(t, server, MAIN);
  const since = 2;
  const ok = await rawSubscribe(conn, channel, { since });
  assert.equal(ok.event, 'pusher_internal:subscription_succeeded');
  await publishing;
  const got = await events(conn, channel, total - since);
  assert.deepEqual(
    got.map((f) => f.serial),
    Array.from({ length: total - since }, (_, k) => since + 1 + k),
  );
  await conn.none((f) => f.event === 'e' && f.channel === channel, 300);
});

test('private channel recovery needs a valid signature: a bad one gets subscription_error and no replay', T, async (t) => {
  const channel = uniq('private-orders');
  const sdk = sdkOn(server, MAIN);
  await publish(sdk, channel, 1, 3);
  const bad = await rawOn(t, server, MAIN);
  const refused = await rawSubscribe(bad, channel, { since: 0, auth: `${MAIN.key}:${'0'.repeat(64)}` });
  assert.equal(refused.event, 'pusher:subscription_error');
  await bad.none((f) => f.channel === channel && (f.event === 'e' || f.event === 'pusher:recovery_failed'), 400);

  const good = await rawOn(t, server, MAIN);
  const auth = channelAuth(good.socketId, channel, undefined, MAIN);
  const ok = await rawSubscribe(good, channel, { since: 0, auth });
  assert.equal(ok.event, 'pusher_internal:subscription_succeeded');
  const replayed = await events(good, channel, 3);
  assert.deepEqual(
    replayed.map((f) => f.serial),
    [1, 2, 3],
  );
});

test('client events and batch events get serials too; the API names the sender of a client event', T, async (t) => {
  const channel = uniq('private-chat');
  const [a, b] = [await rawOn(t, server, MAIN), await rawOn(t, server, MAIN)];
  for (const conn of [a, b]) {
    const ok = await rawSubscribe(conn, channel, { auth: channelAuth(conn.socketId, channel, undefined, MAIN) });
    assert.equal(ok.event, 'pusher_internal:subscription_succeeded');
  }
  await sdkOn(server, MAIN).triggerBatch([{ channel, name: 'e', data: { i: 1 } }]);
  const [batched] = await events(b, channel, 1);
  assert.equal(batched.serial, 1);
  a.send({ event: 'client-typing', channel, data: { who: 'a' } });
  const typed = await b.next((f) => f.event === 'client-typing' && f.channel === channel);
  assert.equal(typed.serial, 2);
  const page = await history(MAIN, channel);
  assert.deepEqual(
    page.json.events.map((e) => [e.serial, e.event, e.socket_id]),
    [
      [1, 'e', undefined],
      [2, 'client-typing', a.socketId],
    ],
  );
});

test('history API: pages oldest first with next, 400 for bad paging, 404 without history', T, async () => {
  const channel = uniq('paged');
  await publish(sdkOn(server, MAIN), channel, 1, 7);
  const serials = (r) => r.json.events.map((e) => e.serial);
  const page1 = await history(MAIN, channel, { limit: 3 });
  assert.equal(page1.status, 200, page1.text);
  assert.deepEqual(serials(page1), [1, 2, 3]);
  assert.equal(page1.json.next, 3);
  assert.deepEqual([page1.json.oldest, page1.json.latest], [1, 7]);
  const event = page1.json.events[0];
  assert.equal(event.event, 'e');
  assert.deepEqual(JSON.parse(event.data), { i: 1 });
  assert.equal(typeof event.time_ms, 'number');
  const page2 = await history(MAIN, channel, { limit: 3, since: page1.json.next });
  assert.deepEqual(serials(page2), [4, 5, 6]);
  const page3 = await history(MAIN, channel, { limit: 3, since: page2.json.next });
  assert.deepEqual(serials(page3), [7]);
  assert.equal(page3.json.next, null);
  const all = await history(MAIN, channel);
  assert.deepEqual(serials(all), [1, 2, 3, 4, 5, 6, 7]);

  for (const params of [{ since: -1 }, { since: 'x' }, { limit: 0 }, { limit: 1001 }]) {
    const r = await history(MAIN, channel, params);
    assert.equal(r.status, 400, `${JSON.stringify(params)}: ${r.text}`);
  }
  const off = await history(NOHIST, 'news');
  assert.equal(off.status, 404);
  assert.match(off.json.error, /no history/);
  const unmatched = await history(TTL, 'news');
  assert.equal(unmatched.status, 404, 'history_channels = ["h-"] does not match');
  const unsigned = await api(server, 'GET', `/apps/${MAIN.appId}/channels/${channel}/history`, {
    app: MAIN,
    tamper: { signature: '0'.repeat(64) },
  });
  assert.equal(unsigned.status, 401);
});

test('events past history_ttl are gone from the API and from recovery', T, async (t) => {
  const channel = uniq('h-ticks');
  await publish(sdkOn(server, TTL), channel, 1, 3);
  const fresh = await history(TTL, channel);
  assert.equal(fresh.json.events.length, 3);
  await waitFor(async () => (await history(TTL, channel)).json.events.length === 0, 5000, 100, 'events expired');
  const expired = await history(TTL, channel);
  assert.deepEqual([expired.json.oldest, expired.json.latest], [null, 3]);
  const conn = await rawOn(t, server, TTL);
  await rawSubscribe(conn, channel, { since: 1 });
  const failed = await conn.next((f) => f.event === 'pusher:recovery_failed' && f.channel === channel);
  assert.equal(failed.dataParsed.oldest, null);
  // Up to date: nothing to replay, nothing failed.
  const current = uniq('h-current');
  await publish(sdkOn(server, TTL), current, 1, 2);
  const upToDate = await rawOn(t, server, TTL);
  await rawSubscribe(upToDate, current, { since: 2 });
  await upToDate.none((f) => f.channel === current && f.event !== 'pusher_internal:subscription_succeeded', 300);
});
