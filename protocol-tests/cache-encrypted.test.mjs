// Cache channels (PROTOCOL.md §2 "Cache channels") and end-to-end encrypted
// channels (`private-encrypted-`): pusher-js (Node build, which bundles
// tweetnacl — the `pusher-js/with-encryption` path is the web build) with the
// official Node SDK encrypting on trigger; raw `ws` to see what the server routes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { APPS, collect, newPusherClient, sleep, subscribeAndWait, uniqueChannel } from './helpers.mjs';
import {
  authedClient,
  randomMasterKey,
  rawClient,
  rawSubscribe,
  sdkFor,
  trySubscribe,
} from './auth-helpers.mjs';

const T = { timeout: 30000 };
const sdk = sdkFor(APPS.main);

/** Subscribe with pusher-js, listening for cache_miss and `event` from the very first frame. */
async function subscribeWatching(client, name, event) {
  const channel = client.subscribe(name);
  const misses = collect(channel, 'pusher:cache_miss');
  const events = collect(channel, event);
  const all = [];
  channel.bind_global((name, data) => {
    if (!name.startsWith('pusher')) all.push({ name, data });
  });
  const outcome = await new Promise((resolve) => {
    channel.bind('pusher:subscription_succeeded', () => resolve({ ok: true }));
    channel.bind('pusher:subscription_error', (error) => resolve({ ok: false, error }));
  });
  assert.equal(outcome.ok, true, `subscribe ${name}: ${JSON.stringify(outcome.error)}`);
  return { channel, misses, events, all };
}

// ---------------------------------------------------------------------------
// Cache channels
// ---------------------------------------------------------------------------

test('a subscriber to an empty cache channel gets pusher:cache_miss right after subscription_succeeded', T, async (t) => {
  const name = uniqueChannel('cache');
  const conn = await rawClient(t);
  const ok = await rawSubscribe(conn, name);
  assert.equal(ok.event, 'pusher_internal:subscription_succeeded');
  const miss = await conn.next((f) => f.event === 'pusher:cache_miss');
  assert.equal(miss.channel, name);
  const iSucceeded = conn.frames.indexOf(ok);
  assert.ok(conn.frames.indexOf(miss) > iSucceeded, 'cache_miss comes after subscription_succeeded');

  // pusher-js surfaces it on the channel.
  const c = await newPusherClient();
  t.after(() => c.disconnect());
  const { misses, events } = await subscribeWatching(c, name, 'cached');
  await misses.next();
  assert.equal(events.events.length, 0);
});

test('a public (non-cache) channel sends no cache_miss', T, async (t) => {
  const conn = await rawClient(t);
  await conn.subscribe(uniqueChannel('pub'));
  await conn.none('pusher:cache_miss', 400);
});

test('after an SDK trigger, a new cache-channel subscriber immediately receives the last event (not a cache_miss)', T, async (t) => {
  const name = uniqueChannel('cache');
  assert.equal((await sdk.trigger(name, 'cached', { v: 1 })).status, 200);
  assert.equal((await sdk.trigger(name, 'cached', { v: 2 })).status, 200);
  assert.equal((await sdk.trigger(name, 'other-name', { v: 3 })).status, 200);
  await sleep(100);

  const c = await newPusherClient();
  t.after(() => c.disconnect());
  const { misses, events, all } = await subscribeWatching(c, name, 'other-name');
  assert.deepEqual(await events.next(2000), { v: 3 }, 'the last event published, whatever its name');
  await sleep(300);
  assert.equal(misses.events.length, 0, 'no cache_miss when an event is cached');
  assert.deepEqual(all, [{ name: 'other-name', data: { v: 3 } }], 'only the last event is replayed');

  // On the wire: exactly one cached event right after subscription_succeeded.
  const conn = await rawClient(t);
  const ok = await rawSubscribe(conn, name);
  assert.equal(ok.event, 'pusher_internal:subscription_succeeded');
  const cached = await conn.next((f) => f.channel === name && !f.event.startsWith('pusher'), 1000);
  assert.equal(cached.event, 'other-name');
  assert.deepEqual(cached.dataParsed, { v: 3 });
  await sleep(200);
  assert.equal(conn.frames.filter((f) => f.channel === name && !f.event.startsWith('pusher')).length, 1, 'only the last event is replayed');
});

test('private-cache- channels need auth and replay the last event to an authorized subscriber', T, async (t) => {
  const name = uniqueChannel('private-cache');
  // Without auth: 401.
  const raw = await rawClient(t);
  const refused = await rawSubscribe(raw, name);
  assert.equal(refused.event, 'pusher:subscription_error');
  assert.equal(refused.dataParsed.status, 401);

  // Authorized, empty: cache_miss.
  const first = await authedClient(t);
  const w1 = await subscribeWatching(first, name, 'pc-event');
  await w1.misses.next();

  assert.equal((await sdk.trigger(name, 'pc-event', { secret: 'kept' })).status, 200);
  assert.deepEqual(await w1.events.next(), { secret: 'kept' }, 'live subscribers get it as usual');

  const second = await authedClient(t);
  const w2 = await subscribeWatching(second, name, 'pc-event');
  assert.deepEqual(await w2.events.next(2000), { secret: 'kept' }, 'a new subscriber gets the cached event');
  assert.equal(w2.misses.events.length, 0);
  // The refused raw socket never got it.
  assert.equal(raw.frames.some((f) => f.event === 'pc-event'), false);
});

test('SDK get /channels/cache-x with info=cache returns a cache object (ttl) after a publish', T, async (t) => {
  const name = uniqueChannel('cache');
  const c = await newPusherClient();
  t.after(() => c.disconnect());
  await subscribeAndWait(c, name);

  const before = await (await sdk.get({ path: `/channels/${name}`, params: { info: 'cache' } })).json();
  assert.equal(before.occupied, true);
  assert.equal(before.cache, undefined, `no cache object before any publish: ${JSON.stringify(before)}`);

  assert.equal((await sdk.trigger(name, 'cached', { v: 1 })).status, 200);
  const res = await sdk.get({ path: `/channels/${name}`, params: { info: 'cache,subscription_count' } });
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.occupied, true);
  assert.equal(body.subscription_count, 1);
  assert.equal(typeof body.cache, 'object', JSON.stringify(body));
  assert.notEqual(body.cache, null);
  assert.equal(typeof body.cache.ttl, 'number', JSON.stringify(body));
  assert.ok(body.cache.ttl > 0 && body.cache.ttl <= 1800, `ttl within 30 minutes: ${body.cache.ttl}`);
});

// ---------------------------------------------------------------------------
// End-to-end encrypted channels
// ---------------------------------------------------------------------------

test('encrypted round trip: the SDK encrypts on private-encrypted-, pusher-js decrypts with the shared_secret from authorizeChannel', T, async (t) => {
  const encSdk = sdkFor(APPS.main, { encryptionMasterKeyBase64: randomMasterKey() });
  const name = uniqueChannel('private-encrypted');
  const authResults = [];
  const client = await authedClient(t, {
    sdk: {
      authorizeChannel: (socketId, channel, data) => {
        const r = encSdk.authorizeChannel(socketId, channel, data);
        // pusher-js deletes shared_secret from the object it is given: keep a copy.
        authResults.push({ ...r });
        return r;
      },
    },
  });
  assert.ok(client.config.nacl, 'the pusher-js Node build carries a nacl implementation');
  const channel = await subscribeAndWait(client, name);
  assert.equal(authResults.length, 1);
  assert.equal(typeof authResults[0].shared_secret, 'string', 'authorizeChannel returns shared_secret for encrypted channels');

  const got = collect(channel, 'secret-message');
  const payload = { text: 'top secret', n: 42, list: ['a', 'ü'] };
  assert.equal((await encSdk.trigger(name, 'secret-message', payload)).status, 200);
  assert.deepEqual(await got.next(), payload, 'pusher-js decrypted the plaintext');
});

test('the server only routes encrypted events: a raw subscriber sees nonce and ciphertext, not the plaintext', T, async (t) => {
  const encSdk = sdkFor(APPS.main, { encryptionMasterKeyBase64: randomMasterKey() });
  const name = uniqueChannel('private-encrypted');
  const conn = await rawClient(t);
  const signed = encSdk.authorizeChannel(conn.socketId, name);
  // The server needs only `auth`; the shared_secret stays on the client side.
  const ok = await rawSubscribe(conn, name, { auth: signed.auth });
  assert.equal(ok.event, 'pusher_internal:subscription_succeeded', JSON.stringify(ok));

  // A pusher-js subscriber on the same channel decrypts the same event.
  const pj = await authedClient(t, { sdk: encSdk });
  const pjCh = await subscribeAndWait(pj, name);
  const pjGot = collect(pjCh, 'enc');

  const secret = 'PLAINTEXT-MARKER-1234';
  assert.equal((await encSdk.trigger(name, 'enc', { secret })).status, 200);
  const f = await conn.next('enc');
  assert.equal(typeof f.data, 'string', 'data is still a JSON string on the wire');
  const data = f.dataParsed;
  assert.equal(typeof data.nonce, 'string');
  assert.equal(typeof data.ciphertext, 'string');
  assert.ok(Buffer.from(data.nonce, 'base64').length === 24, 'nonce is 24 bytes (secretbox)');
  assert.ok(Buffer.from(data.ciphertext, 'base64').length > secret.length, 'ciphertext includes the MAC');
  assert.equal(JSON.stringify(f).includes(secret), false, 'the plaintext never crosses the server');
  assert.deepEqual(await pjGot.next(), { secret });
});

test('a private-encrypted- subscribe without a valid signature is refused with 401', T, async (t) => {
  const encSdk = sdkFor(APPS.main, { encryptionMasterKeyBase64: randomMasterKey() });
  const name = uniqueChannel('private-encrypted');
  const conn = await rawClient(t);
  const missing = await rawSubscribe(conn, name);
  assert.equal(missing.event, 'pusher:subscription_error');
  assert.equal(missing.dataParsed.status, 401);
  const other = await rawClient(t);
  const wrongSocket = await rawSubscribe(conn, name, { auth: encSdk.authorizeChannel(other.socketId, name).auth });
  assert.equal(wrongSocket.event, 'pusher:subscription_error');
  assert.equal(wrongSocket.dataParsed.status, 401);
});

test('private-encrypted-cache-: a new pusher-js subscriber gets the last encrypted event and decrypts it', T, async (t) => {
  const encSdk = sdkFor(APPS.main, { encryptionMasterKeyBase64: randomMasterKey() });
  const name = uniqueChannel('private-encrypted-cache');
  assert.equal((await encSdk.trigger(name, 'enc-cached', { v: 'remembered' })).status, 200);
  const client = await authedClient(t, { sdk: encSdk });
  const w = await subscribeWatching(client, name, 'enc-cached');
  assert.deepEqual(await w.events.next(2000), { v: 'remembered' });
  assert.equal(w.misses.events.length, 0);
  const outcome = await trySubscribe(await authedClient(t, { sdk: encSdk }), uniqueChannel('private-encrypted-cache'));
  assert.equal(outcome.ok, true);
});
