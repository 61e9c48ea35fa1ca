// Persistence extensions (PROTOCOL.md §7) with the MongoDB store:
// offline subscriptions (POST /apps/{id}/subscribe, /unsubscribe), stored
// messages (GET /apps/{id}/users/{user}/messages), catch-up on
// `personal-{user}` channels for pusher-js clients signed in with
// `pusher.signin()`, retention, restarts, MongoDB outages, and peer channels.
//
// The suite runs its own MongoDB-wire server (jongodb, in memory; or the real
// MongoDB named by RUSHER_TEST_MONGODB_URL, with a database of its own) and
// its own rusher processes on free ports; RUSHER_PORT's shared server is not used.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseData, sleep, waitFor } from './helpers.mjs';
import {
  RUN_ID,
  api,
  channelAuth,
  collectEvents,
  killAll,
  persistenceApi,
  pusherOn,
  rawOn,
  rawSubscribe,
  sdkOn,
  signIn,
  startJongodb,
  startRusher,
  storeConfig,
  subscribeOk,
  suiteMongo,
  trySubscribe,
} from './persistence-helpers.mjs';

const T = { timeout: 30000 };
const MAX_PER_CHANNEL = 5;
const DATABASE = `rusher_persist_${RUN_ID}`;

let counter = 0;
/** A name (user id or channel) nobody else in this run uses. */
const uniq = (prefix) => `${prefix}-${RUN_ID}-${(counter += 1)}`;

let mongo;
let server; // the main rusher: max_messages_per_channel = 5
let sdk;
let papi;

before(async () => {
  mongo = await suiteMongo();
  server = await startRusher(
    storeConfig({ url: mongo.url, database: DATABASE, store: { max_messages_per_channel: MAX_PER_CHANNEL } }),
  );
  sdk = sdkOn(server);
  papi = persistenceApi(server);
});

after(async () => {
  await killAll();
});

/** GET messages until it lists `count` messages (writes are asynchronous); returns them. */
async function storedMessages(userId, count, params = {}, timeoutMs = 5000) {
  let last;
  await waitFor(
    async () => {
      last = await papi.messages(userId, params);
      assert.equal(last.status, 200, last.text);
      return last.json.messages.length >= count;
    },
    timeoutMs,
    50,
    `${count} stored messages for ${userId} (last: ${last && last.text})`,
  );
  return last.json.messages;
}

async function follow(userId, channel) {
  const res = await papi.follow(userId, channel);
  assert.equal(res.status, 200, res.text);
  assert.equal(res.json.subscribed, true, res.text);
}

/** A pusher-js client signed in as `userId`, subscribed to personal-{userId}; returns {client, channel, data}. */
async function personalClient(t, userId) {
  const client = await pusherOn(t, server, { user: { id: userId } });
  await signIn(client, userId);
  const { channel, data } = await subscribeOk(client, `personal-${userId}`);
  return { client, channel, data };
}

/** The catch-up messages of a subscription_succeeded data, with their data decoded. */
const decoded = (messages) => messages.map((m) => ({ ...m, data: parseData(m.data) }));

function assertApiError(res, status) {
  assert.equal(res.status, status, `expected ${status}, got ${res.status}: ${res.text}`);
  assert.ok(res.json && typeof res.json.error === 'string' && res.json.error.length > 0, `JSON error message: ${res.text}`);
}

describe('offline subscriptions and personal channels', () => {
  test('messages published while the user was offline arrive in order in personal-{user} subscription_succeeded, then live events follow with source_channel and seq', T, async (t) => {
    const user = uniq('u1');
    const [chA, chB] = [uniq('news'), uniq('sports')];
    await follow(user, chA);
    await follow(user, chB);
    const subs = await papi.subscriptions(user);
    assert.equal(subs.status, 200, subs.text);
    assert.deepEqual([...subs.json.subscriptions].sort(), [chA, chB].sort());

    await sdk.trigger(chA, 'ev-1', { n: 1 });
    await sdk.trigger(chB, 'ev-2', { n: 2 });
    await sdk.trigger(chA, 'ev-3', { n: 3 });
    await storedMessages(user, 3);

    const { client, channel, data } = await personalClient(t, user);
    assert.ok(data && Array.isArray(data.messages), `subscription_succeeded data has messages: ${JSON.stringify(data)}`);
    const caught = decoded(data.messages);
    assert.deepEqual(
      caught.map(({ channel: c, event, data: d }) => ({ channel: c, event, data: d })),
      [
        { channel: chA, event: 'ev-1', data: { n: 1 } },
        { channel: chB, event: 'ev-2', data: { n: 2 } },
        { channel: chA, event: 'ev-3', data: { n: 3 } },
      ],
    );
    const seqs = caught.map((m) => m.seq);
    assert.ok(seqs.every((s) => Number.isInteger(s) && s > 0), `integer seqs: ${seqs}`);
    assert.ok(seqs[0] < seqs[1] && seqs[1] < seqs[2], `increasing seqs: ${seqs}`);

    const live4 = collectEvents(channel, 'ev-4');
    const live5 = collectEvents(channel, 'ev-5');
    await sdk.trigger(chB, 'ev-4', { n: 4 });
    await sdk.trigger(chA, 'ev-5', { n: 5 });
    assert.deepEqual(await live4.next(3000), { n: 4 });
    assert.deepEqual(await live5.next(3000), { n: 5 });

    const raw = client.rawFrames.filter((f) => f.channel === `personal-${user}` && f.event.startsWith('ev-'));
    assert.deepEqual(
      raw.map((f) => [f.event, f.source_channel]),
      [
        ['ev-4', chB],
        ['ev-5', chA],
      ],
    );
    assert.ok(raw[0].seq > seqs[2] && raw[1].seq > raw[0].seq, `live seqs continue: ${raw.map((f) => f.seq)}`);
    assert.deepEqual(parseData(raw[0].data), { n: 4 });
  });

  test('two devices signed in as the same user both receive live events on personal-{user}', T, async (t) => {
    const user = uniq('u');
    const ch = uniq('feed');
    // Followed through the official SDK's generic post()/get().
    const followed = await sdk.post({ path: '/subscribe', body: { user_id: user, event: ch } });
    assert.equal(followed.status, 200);
    const listed = await sdk.get({ path: `/users/${user}/subscriptions` });
    assert.deepEqual((await listed.json()).subscriptions, [ch]);
    const a = await personalClient(t, user);
    const b = await personalClient(t, user);
    const onA = collectEvents(a.channel, 'update');
    const onB = collectEvents(b.channel, 'update');
    await sdk.trigger(ch, 'update', { v: 1 });
    await sdk.trigger(ch, 'update', { v: 2 });
    assert.deepEqual([await onA.next(), await onA.next()], [{ v: 1 }, { v: 2 }]);
    assert.deepEqual([await onB.next(), await onB.next()], [{ v: 1 }, { v: 2 }]);
  });

  test('unsubscribe stops both storing and live delivery (a direct subscriber still gets the event)', T, async (t) => {
    const user = uniq('u');
    const ch = uniq('feed');
    await follow(user, ch);
    const { channel } = await personalClient(t, user);
    const personal = collectEvents(channel, 'tick');
    const watcher = await pusherOn(t, server);
    const direct = collectEvents(await subscribeOk(watcher, ch).then((r) => r.channel), 'tick');

    await sdk.trigger(ch, 'tick', { i: 1 });
    assert.deepEqual(await personal.next(), { i: 1 });
    assert.deepEqual(await direct.next(), { i: 1 });
    const before1 = await storedMessages(user, 1);
    assert.equal(before1.length, 1);

    const res = await papi.unfollow(user, ch);
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.subscribed, false, res.text);
    const subs = await papi.subscriptions(user);
    assert.deepEqual(subs.json.subscriptions, [], subs.text);

    await sdk.trigger(ch, 'tick', { i: 2 });
    assert.deepEqual(await direct.next(), { i: 2 }, 'the event was published');
    await sleep(600);
    assert.deepEqual(personal.events, [{ i: 1 }], 'no live event after unsubscribe');
    const after1 = await papi.messages(user);
    assert.equal(after1.status, 200, after1.text);
    assert.deepEqual(
      decoded(after1.json.messages).filter((m) => m.data.i !== 1),
      [],
      'nothing published after the unsubscribe is stored for the user',
    );

    // Following again does not bring back what was published in between;
    // what is published from then on is stored and delivered again.
    await follow(user, ch);
    await sdk.trigger(ch, 'tick', { i: 3 });
    assert.deepEqual(await personal.next(), { i: 3 }, 'live delivery resumes after following again');
    const again = await storedMessages(user, 1);
    assert.deepEqual(decoded(again).map((m) => m.data.i), [3], 'only the message after re-following is the user\'s');
  });

  test('since: GET messages?since=N and a signed {"since":N} channel_data return only newer messages, without duplicates', T, async (t) => {
    const user = uniq('u');
    const ch = uniq('feed');
    await follow(user, ch);
    for (let i = 1; i <= 4; i += 1) await sdk.trigger(ch, 'msg', { i });
    const all = await storedMessages(user, 4);
    assert.deepEqual(decoded(all).map((m) => m.data.i), [1, 2, 3, 4]);
    const cut = all[1].seq;

    const newer = await papi.messages(user, { since: cut });
    assert.equal(newer.status, 200, newer.text);
    assert.deepEqual(newer.json.messages.map((m) => m.seq), [all[2].seq, all[3].seq]);
    const none = await papi.messages(user, { since: all[3].seq });
    assert.deepEqual(none.json.messages, [], none.text);
    const limited = await papi.messages(user, { limit: 2 });
    assert.deepEqual(limited.json.messages.map((m) => m.seq), [all[2].seq, all[3].seq], 'limit keeps the newest');

    // A socket that is not signed in, authorised by a private-style signature over {"since":N}.
    const conn = await rawOn(t, server);
    const channelData = JSON.stringify({ since: cut });
    const personal = `personal-${user}`;
    const ok = await rawSubscribe(conn, personal, {
      auth: channelAuth(conn.socketId, personal, channelData),
      channel_data: channelData,
    });
    assert.equal(ok.event, 'pusher_internal:subscription_succeeded', JSON.stringify(ok));
    const caught = ok.dataParsed.messages;
    assert.deepEqual(caught.map((m) => m.seq), [all[2].seq, all[3].seq]);
    assert.deepEqual(caught.map((m) => parseData(m.data).i), [3, 4]);

    // Live events after the catch-up are new ones only.
    await sdk.trigger(ch, 'msg', { i: 5 });
    const live = await conn.next((f) => f.channel === personal && f.event === 'msg');
    assert.deepEqual(parseData(live.data), { i: 5 });
    assert.equal(live.source_channel, ch);
    assert.ok(live.seq > all[3].seq, `live seq ${live.seq} after ${all[3].seq}`);
    await sleep(300);
    assert.equal(conn.frames.filter((f) => f.channel === personal && f.event === 'msg').length, 1, 'no duplicate delivery');
  });

  test('personal channel auth: a socket neither signed in nor signed is refused, and a socket signed in as u2 cannot join personal-u1', T, async (t) => {
    const u1 = uniq('u1');
    const u2 = uniq('u2');
    const anonymous = await pusherOn(t, server);
    const refused = await trySubscribe(anonymous, `personal-${u1}`);
    assert.equal(refused.ok, false, 'anonymous subscription refused');
    assert.equal(refused.error.type, 'AuthError', JSON.stringify(refused.error));

    const other = await pusherOn(t, server, { user: { id: u2 } });
    await signIn(other, u2);
    const wrongUser = await trySubscribe(other, `personal-${u1}`);
    assert.equal(wrongUser.ok, false, 'u2 may not subscribe personal-u1');
    const own = await trySubscribe(other, `personal-${u2}`);
    assert.equal(own.ok, true, `u2 may subscribe personal-u2: ${JSON.stringify(own.error)}`);

    const raw = await rawOn(t, server);
    const forged = await rawSubscribe(raw, `personal-${u1}`, { auth: `app-key:${'f'.repeat(64)}` });
    assert.equal(forged.event, 'pusher:subscription_error', 'a bad signature is refused');
  });
});

describe('durability and retention', () => {
  test('restarting rusher on the same MongoDB loses nothing published before the restart, and sequences keep increasing', T, async (t) => {
    const user = uniq('u');
    const [chA, chB] = [uniq('a'), uniq('b')];
    await follow(user, chA);
    await follow(user, chB);
    await sdk.trigger(chA, 'before', { k: 1 });
    await sdk.trigger(chB, 'before', { k: 2 });
    await sdk.trigger(chA, 'before', { k: 3 });
    // Graceful stop right after the publishes were acknowledged.
    await server.stop('SIGTERM');
    await server.start();

    const subs = await papi.subscriptions(user);
    assert.equal(subs.status, 200, subs.text);
    assert.deepEqual([...subs.json.subscriptions].sort(), [chA, chB].sort(), 'follows survive the restart');

    const { channel, data } = await personalClient(t, user);
    const caught = decoded(data.messages);
    assert.deepEqual(caught.map((m) => m.data.k), [1, 2, 3], `catch-up after restart: ${JSON.stringify(data)}`);
    const maxBefore = Math.max(...caught.map((m) => m.seq));

    const live = collectEvents(channel, 'after');
    await sdk.trigger(chB, 'after', { k: 4 });
    assert.deepEqual(await live.next(), { k: 4 }, 'the follow index was reloaded: live delivery after restart');
    const stored = await storedMessages(user, 4);
    assert.deepEqual(decoded(stored).map((m) => m.data.k), [1, 2, 3, 4]);
    assert.ok(stored[3].seq > maxBefore, `seq after restart ${stored[3].seq} > ${maxBefore}`);
  });

  test(`retention: with max_messages_per_channel = ${MAX_PER_CHANNEL}, 8 published messages keep the newest ${MAX_PER_CHANNEL}`, T, async (t) => {
    const user = uniq('u');
    const ch = uniq('busy');
    await follow(user, ch);
    for (let i = 1; i <= 8; i += 1) await sdk.trigger(ch, 'n', { i });
    // Wait until the 8th is stored, then check what is kept.
    await waitFor(
      async () => {
        const r = await papi.messages(user);
        return r.json.messages.some((m) => parseData(m.data).i === 8);
      },
      5000,
      50,
      'the 8th message stored',
    );
    const res = await papi.messages(user, { limit: 100 });
    assert.deepEqual(decoded(res.json.messages).map((m) => m.data.i), [4, 5, 6, 7, 8]);
    const { data } = await personalClient(t, user);
    assert.deepEqual(decoded(data.messages).map((m) => m.data.i), [4, 5, 6, 7, 8], 'catch-up keeps the newest 5');
  });

  test('retention: with message_ttl_secs = 2, messages disappear from GET messages once expired', T, async (t) => {
    const ttlServer = await startRusher(
      storeConfig({ url: mongo.url, database: `${DATABASE}_ttl`, store: { message_ttl_secs: 2 } }),
    );
    t.after(() => ttlServer.stop('SIGKILL'));
    const ttlApi = persistenceApi(ttlServer);
    const ttlSdk = sdkOn(ttlServer);
    const user = uniq('u');
    const ch = uniq('ephemeral');
    assert.equal((await ttlApi.follow(user, ch)).status, 200);
    await ttlSdk.trigger(ch, 'old', { i: 1 });
    const seen = await waitFor(
      async () => {
        const r = await ttlApi.messages(user);
        return r.json.messages.length === 1 && r.json.messages;
      },
      1500,
      20,
      'the message stored before it expires',
    );
    assert.deepEqual(parseData(seen[0].data), { i: 1 });
    const t0 = Date.now();
    await waitFor(
      async () => {
        const r = await ttlApi.messages(user);
        return r.status === 200 && r.json.messages.length === 0;
      },
      6000,
      200,
      'the expired message gone',
    );
    assert.ok(Date.now() - t0 >= 500, 'the message lived for a while before expiring');
    await ttlSdk.trigger(ch, 'fresh', { i: 2 });
    const fresh = await waitFor(async () => {
      const r = await ttlApi.messages(user);
      return r.json.messages.length === 1 && r.json.messages;
    }, 1500, 20, 'a fresh message stored');
    assert.equal(fresh[0].event, 'fresh');
  });
});

describe('peer channels', () => {
  test('two peer members of presence-{base} get pusher:peer_added, exchange client events on the peer channel, and pusher:peer_removed when one leaves', T, async (t) => {
    const base = uniq('room');
    const presence = `presence-${base}`;
    const [ua, ub] = [uniq('pa'), uniq('pb')];
    const peerName = `peer-${base}:${[ua, ub].sort().join('&')}`;

    const a = await pusherOn(t, server, { presence: { user_id: ua, user_info: { name: 'A' }, peer: true } });
    const b = await pusherOn(t, server, { presence: { user_id: ub, user_info: { name: 'B' }, peer: true } });
    const presA = a.subscribe(presence);
    const addedA = collectEvents(presA, 'pusher:peer_added');
    const removedA = collectEvents(presA, 'pusher:peer_removed');
    await subscribeOk(a, presence);
    const presB = b.subscribe(presence);
    const addedB = collectEvents(presB, 'pusher:peer_added');
    await subscribeOk(b, presence);

    const forA = await addedA.next(3000);
    const forB = await addedB.next(3000);
    assert.equal(forA.channel, peerName, JSON.stringify(forA));
    assert.equal(forB.channel, peerName, JSON.stringify(forB));
    assert.equal(forA.user_id, ub);
    assert.equal(forB.user_id, ua);

    const peerA = (await subscribeOk(a, peerName)).channel;
    const peerB = (await subscribeOk(b, peerName)).channel;
    const atB = collectEvents(peerB, 'client-hello');
    const atA = collectEvents(peerA, 'client-reply');
    peerA.trigger('client-hello', { from: ua });
    assert.deepEqual(await atB.next(3000), { from: ua });
    peerB.trigger('client-reply', { from: ub });
    assert.deepEqual(await atA.next(3000), { from: ub });

    // A third member (not one of the two) cannot join their peer channel.
    const c = await pusherOn(t, server, { presence: { user_id: uniq('pc'), peer: true } });
    await subscribeOk(c, presence);
    const intruder = await trySubscribe(c, peerName);
    assert.equal(intruder.ok, false, 'a third member is refused the peer channel');

    b.disconnect();
    const removed = await removedA.next(5000);
    assert.equal(removed.channel, peerName, JSON.stringify(removed));
    assert.equal(removed.user_id, ub);
  });

  test('a peer channel subscribed before its presence channel (as pusher-js does after a reconnect) waits for the membership and then succeeds', T, async (t) => {
    const base = uniq('room');
    const presence = `presence-${base}`;
    const [ua, ub] = [uniq('pa'), uniq('pb')];
    const peerName = `peer-${base}:${[ua, ub].sort().join('&')}`;
    const join = (conn, user) => {
      const data = JSON.stringify({ user_id: user, peer: true });
      return rawSubscribe(conn, presence, { auth: channelAuth(conn.socketId, presence, data), channel_data: data });
    };
    const a = await rawOn(t, server);
    assert.equal((await join(a, ua)).event, 'pusher_internal:subscription_succeeded');
    const b = await rawOn(t, server);
    // The peer subscription first (pusher-js sends no auth for peer-), the signed presence one after.
    b.send({ event: 'pusher:subscribe', data: { channel: peerName, auth: '' } });
    assert.equal((await join(b, ub)).event, 'pusher_internal:subscription_succeeded');
    const peer = await b.next((f) => f.channel === peerName && f.event.includes('subscription'), 2000);
    assert.equal(peer.event, 'pusher_internal:subscription_succeeded', JSON.stringify(peer));
    // A socket that never joins the presence channel is refused after the wait (1 s in this suite).
    const c = await rawOn(t, server);
    const refused = await rawSubscribe(c, peerName, {}, 3000);
    assert.equal(refused.event, 'pusher:subscription_error', JSON.stringify(refused));
  });
});

describe('follow API with the Node SDK as the README shows (fields in the query string)', () => {
  test('pusher.post({path: "/subscribe", params}) follows, the next trigger is stored, and /unsubscribe with params unfollows', T, async () => {
    const user = uniq('quser');
    const channel = uniq('qnews');
    const subscribed = await sdk.post({ path: '/subscribe', params: { user_id: user, event: channel } });
    assert.deepEqual(await subscribed.json(), { subscribed: true, created: true });
    const subs = await papi.subscriptions(user);
    assert.deepEqual(subs.json, { subscriptions: [channel] }, subs.text);
    await sdk.trigger(channel, 'article', { title: 'hello' });
    const [stored] = await storedMessages(user, 1);
    assert.equal(stored.channel, channel);
    // As the README's snippet reads them back.
    const res = await sdk.get({ path: `/users/${user}/messages`, params: { since: 0 } });
    assert.equal((await res.json()).messages.length, 1);
    const unsubscribed = await sdk.post({ path: '/unsubscribe', params: { user_id: user, event: channel } });
    assert.deepEqual(await unsubscribed.json(), { subscribed: false, removed: true });
    assert.deepEqual((await papi.subscriptions(user)).json, { subscriptions: [] });
  });

  test('a read of the messages right after publishing finds every message (the write queue is awaited), 10 rounds', T, async () => {
    const user = uniq('ryw');
    for (let round = 1; round <= 10; round += 1) {
      const channel = uniq('rywnews');
      await sdk.post({ path: '/subscribe', params: { user_id: user, event: channel } });
      // Concurrent publishes, so some are still queued for the store when the read comes.
      await Promise.all(Array.from({ length: MAX_PER_CHANNEL }, (_, i) => sdk.trigger(channel, 'article', { i })));
      const res = await sdk.get({ path: `/users/${user}/messages`, params: { since: 0 } });
      const mine = (await res.json()).messages.filter((m) => m.channel === channel);
      assert.equal(mine.length, MAX_PER_CHANNEL, `round ${round}: ${JSON.stringify(mine)}`);
    }
  });

  test('fields split between the JSON body and the query string are combined; the same field in both must agree', T, async () => {
    const path = '/apps/app-id/subscribe';
    const user = uniq('suser');
    const channel = uniq('split');
    const split = await api(server, 'POST', path, { body: { user_id: user }, params: { event: channel } });
    assert.equal(split.status, 200, split.text);
    assert.deepEqual((await papi.subscriptions(user)).json, { subscriptions: [channel] });
    const same = await api(server, 'POST', path, { body: { user_id: user, event: channel }, params: { user_id: user } });
    assert.equal(same.status, 200, same.text);
    const conflict = await api(server, 'POST', path, { body: { user_id: user, event: channel }, params: { user_id: 'someone-else' } });
    assertApiError(conflict, 400);
    assert.match(conflict.json.error, /user_id/, conflict.text);
  });

  test('neither a body nor query fields: 400 saying what is expected and where', T, async () => {
    for (const route of ['subscribe', 'unsubscribe']) {
      const res = await api(server, 'POST', `/apps/app-id/${route}`, {});
      assertApiError(res, 400);
      assert.match(res.json.error, /expected user_id and event, in a JSON body or in the query string/, res.text);
    }
    const viaSdk = await sdk.post({ path: '/subscribe' }).catch((e) => e);
    assert.equal(viaSdk.status, 400, String(viaSdk));
    assert.match(viaSdk.body, /expected user_id and event/, viaSdk.body);
  });
});

describe('persistence API input checks', () => {
  test('missing user_id, invalid channel, following a personal- channel, unsigned call, bad signature, oversized body → 400/400/400/401/401/413 with a JSON error', T, async () => {
    const path = '/apps/app-id/subscribe';
    const ch = uniq('valid');
    assertApiError(await api(server, 'POST', path, { body: { event: ch } }), 400);
    assertApiError(await api(server, 'POST', path, { body: { user_id: 'u', event: 'bad channel!' } }), 400);
    assertApiError(await api(server, 'POST', path, { body: { user_id: 'u', event: 'personal-u2' } }), 400);
    assertApiError(await api(server, 'POST', path, { body: { user_id: 'u', event: ch }, tamper: { dropAuth: true } }), 401);
    assertApiError(await api(server, 'POST', path, { body: { user_id: 'u', event: ch }, tamper: { signature: 'f'.repeat(64) } }), 401);
    const big = JSON.stringify({ user_id: 'u', event: ch, pad: 'x'.repeat(1024 * 1024 + 16) });
    assertApiError(await api(server, 'POST', path, { body: big }), 413);
    // None of the refused calls recorded a follow.
    const subs = await papi.subscriptions('u');
    assert.equal(subs.status, 200, subs.text);
    assert.ok(!subs.json.subscriptions.includes(ch), subs.text);
    assertApiError(await papi.messages('u', { since: 'abc' }), 400);
  });
});

describe('MongoDB outage', () => {
  test('with MongoDB killed, live events are still delivered and the API answers 503; after MongoDB restarts the API recovers without restarting rusher', { timeout: 45000 }, async (t) => {
    const own = await startJongodb();
    t.after(() => own.stop());
    const node = await startRusher(storeConfig({ url: own.url, database: `${DATABASE}_outage` }));
    t.after(() => node.stop('SIGKILL'));
    const nodeApi = persistenceApi(node);
    const nodeSdk = sdkOn(node);
    const user = uniq('u');
    const followed = uniq('followed');
    const plain = uniq('plain');
    assert.equal((await nodeApi.follow(user, followed)).status, 200);

    const client = await pusherOn(t, node);
    const onFollowed = collectEvents((await subscribeOk(client, followed)).channel, 'ev');
    const onPlain = collectEvents((await subscribeOk(client, plain)).channel, 'ev');

    await own.stop('SIGKILL');
    const started = Date.now();
    await nodeSdk.trigger(plain, 'ev', { during: 'outage' });
    await nodeSdk.trigger(followed, 'ev', { during: 'outage' });
    assert.deepEqual(await onPlain.next(3000), { during: 'outage' });
    assert.deepEqual(await onFollowed.next(3000), { during: 'outage' });
    assert.ok(Date.now() - started < 2500, 'live delivery did not wait for MongoDB');

    const down = await nodeApi.subscriptions(user);
    assertApiError(down, 503);
    assertApiError(await nodeApi.follow(user, uniq('x')), 503);
    assertApiError(await nodeApi.messages(user), 503);

    await own.start();
    const restartedAt = Date.now();
    const recoveredAt = await waitFor(
      async () => {
        const r = await nodeApi.subscriptions(user);
        return r.status === 200 && Date.now();
      },
      15000,
      250,
      'persistence API back to 200',
    );
    t.diagnostic(`API recovered ${recoveredAt - restartedAt} ms after restart`);
    assert.equal((await nodeApi.follow(user, uniq('again'))).status, 200, 'follows work again');
    assert.ok(node.running, 'rusher kept running');
  });
});
