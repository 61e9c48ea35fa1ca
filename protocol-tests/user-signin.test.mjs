// User authentication (PROTOCOL.md §4): pusher-js `signin()` with
// `userAuthentication.customHandler` backed by the official SDK's
// `authenticateUser`, `sendToUser`, watchlists and `terminateUserConnections`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { APPS, collect, newPusherClient, sleep, uniqueChannel, waitFor, withTimeout } from './helpers.mjs';
import { authedClient, rawClient, rawSignIn, rawSubscribe, recordMessages, sdkFor, startUserAuthEndpoint } from './auth-helpers.mjs';

const T = { timeout: 30000 };
const sdk = sdkFor(APPS.main);

/** A user id nobody else in this run uses. */
const uid = (p = 'user') => uniqueChannel(p);

/** A pusher-js client signed in as `user` ({id, watchlist?}); resolves once signin_success was handled. */
async function signedIn(t, user, { beforeSignin } = {}) {
  const client = await authedClient(t, { user });
  const messages = recordMessages(client);
  if (beforeSignin) beforeSignin(client);
  client.signin();
  await withTimeout(
    waitFor(() => client.user.user_data && client.user.user_data.id === user.id, 5000, 20, 'user_data'),
    6000,
    `sign-in of ${user.id}`,
  );
  return { client, messages };
}

/** Collect a pusher-js user/watchlist event source. */
function collectOn(source, event) {
  return collect(source, event);
}

test('pusher-js signin(): pusher:signin_success arrives with the signed user_data and pusher-js marks the user signed in', T, async (t) => {
  const id = uid();
  const user = { id, user_info: { name: 'Ann' }, watchlist: [] };
  const { client, messages } = await signedIn(t, user);
  const success = messages.find((m) => m.event === 'pusher:signin_success');
  assert.ok(success, 'pusher:signin_success frame received');
  assert.equal(typeof success.data.user_data, 'string', 'user_data is the signed JSON string');
  assert.deepEqual(JSON.parse(success.data.user_data), user);
  assert.deepEqual(client.user.user_data, user);
  assert.equal(client.user.serverToUserChannel.name, `#server-to-user-${id}`);
  assert.equal(client.connection.state, 'connected');
});

test('pusher-js\'s own subscribe to its #server-to-user- channel after sign-in is not refused', T, async (t) => {
  // pusher-js sends pusher:subscribe for #server-to-user-{id} right after
  // signin_success (src/core/user.ts _subscribeChannels); a real server
  // must not answer it with pusher:subscription_error.
  const id = uid();
  const { client, messages } = await signedIn(t, { id });
  await sleep(500);
  const userChannel = `#server-to-user-${id}`;
  const errors = messages.filter((m) => m.event === 'pusher:subscription_error' && m.channel === userChannel);
  assert.deepEqual(errors, [], 'no subscription_error on the user channel');
  assert.equal(client.user.serverToUserChannel.subscribed, true, 'pusher-js considers the user channel subscribed');
});

test('a socket cannot subscribe to another user\'s #server-to-user- channel, signed in or not', T, async (t) => {
  const victim = uid('victim');
  const anon = await rawClient(t);
  const answer = await rawSubscribe(anon, `#server-to-user-${victim}`);
  assert.equal(answer.event, 'pusher:subscription_error', JSON.stringify(answer));
  const other = await rawClient(t);
  await rawSignIn(other, sdk, { id: uid('intruder') });
  const answer2 = await rawSubscribe(other, `#server-to-user-${victim}`);
  assert.equal(answer2.event, 'pusher:subscription_error', JSON.stringify(answer2));
  assert.equal((await sdk.sendToUser(victim, 'private-note', { x: 1 })).status, 200);
  await anon.none('private-note', 300);
  await other.none('private-note', 100);
});

test('a pusher:signin with a bad signature gets pusher:error 4009 and close 4009', T, async (t) => {
  const conn = await rawClient(t);
  const good = sdk.authenticateUser(conn.socketId, { id: uid() });
  conn.send({ event: 'pusher:signin', data: { auth: `${APPS.main.key}:${'f'.repeat(64)}`, user_data: good.user_data } });
  const err = await conn.next('pusher:error');
  assert.equal(err.dataParsed.code, 4009);
  const closed = await withTimeout(conn.closed, 3000, 'close after bad signin');
  assert.equal(closed.code, 4009);
  assert.equal(conn.frames.some((f) => f.event === 'pusher:signin_success'), false);
});

test('a pusher:signin signed for another socket id (or with tampered user_data) is refused with 4009', T, async (t) => {
  const other = await rawClient(t);
  const a = await rawClient(t);
  a.send({ event: 'pusher:signin', data: sdk.authenticateUser(other.socketId, { id: uid() }) });
  assert.equal((await a.next('pusher:error')).dataParsed.code, 4009);
  assert.equal((await withTimeout(a.closed, 3000, 'close')).code, 4009);

  const b = await rawClient(t);
  const signed = sdk.authenticateUser(b.socketId, { id: 'honest' });
  b.send({ event: 'pusher:signin', data: { auth: signed.auth, user_data: JSON.stringify({ id: 'admin' }) } });
  assert.equal((await b.next('pusher:error')).dataParsed.code, 4009);
  assert.equal((await withTimeout(b.closed, 3000, 'close')).code, 4009);
  // The socket whose id was borrowed is untouched.
  assert.equal(other.isClosed, false);
});

test('sendToUser reaches both of the user\'s sockets and nobody else', T, async (t) => {
  const u1 = uid('u1');
  const u2 = uid('u2');
  const a1 = await signedIn(t, { id: u1 });
  const a2 = await signedIn(t, { id: u1 });
  const b = await signedIn(t, { id: u2 });
  const anonymous = await authedClient(t);
  const anonMessages = recordMessages(anonymous);
  const raw = await rawClient(t);
  await rawSignIn(raw, sdk, { id: u1 });

  const at1 = collectOn(a1.client.user, 'ev');
  const at2 = collectOn(a2.client.user, 'ev');
  const atB = collectOn(b.client.user, 'ev');
  const res = await sdk.sendToUser(u1, 'ev', { hello: 'u1' });
  assert.equal(res.status, 200);
  assert.deepEqual(await at1.next(), { hello: 'u1' });
  assert.deepEqual(await at2.next(), { hello: 'u1' });
  const rawEv = await raw.next('ev');
  assert.equal(rawEv.channel, `#server-to-user-${u1}`);
  assert.deepEqual(rawEv.dataParsed, { hello: 'u1' });
  await sleep(400);
  assert.equal(atB.events.length, 0, 'another user does not get it');
  assert.equal(anonMessages.some((m) => m.event === 'ev'), false, 'a socket that is not signed in does not get it');
  assert.equal(at1.events.length, 1, 'exactly once per socket');
  assert.equal(at2.events.length, 1);
});

test('watchlist: u1 watching u2 gets online when u2 signs in and offline only when u2\'s last socket leaves', T, async (t) => {
  const u1 = uid('u1');
  const u2 = uid('u2');
  let online;
  let offline;
  const a = await signedIn(t, { id: u1, watchlist: [u2] }, {
    beforeSignin: (c) => {
      online = collectOn(c.user.watchlist, 'online');
      offline = collectOn(c.user.watchlist, 'offline');
    },
  });
  await sleep(300);
  assert.equal(online.events.length, 0, 'u2 is not online yet');

  const b1 = await signedIn(t, { id: u2 });
  const ev = await online.next();
  assert.equal(ev.name, 'online');
  assert.deepEqual(ev.user_ids, [u2]);

  const b2 = await signedIn(t, { id: u2 });
  await sleep(400);
  assert.equal(online.events.length, 1, 'a second socket of u2 is not a new online');

  b1.client.disconnect();
  await sleep(500);
  assert.equal(offline.events.length, 0, 'u2 still has a socket: no offline');

  b2.client.disconnect();
  const off = await offline.next();
  assert.equal(off.name, 'offline');
  assert.deepEqual(off.user_ids, [u2]);
  assert.equal(a.client.connection.state, 'connected');
});

test('watchlist: signing in while a watched user is already online gives an immediate online event (raw pusher_internal:watchlist_events)', T, async (t) => {
  const u1 = uid('u1');
  const u2 = uid('u2');
  const u3 = uid('u3');
  const b = await rawClient(t);
  await rawSignIn(b, sdk, { id: u2 });
  const a = await rawClient(t);
  await rawSignIn(a, sdk, { id: u1, watchlist: [u2, u3] });
  const ev = await a.next('pusher_internal:watchlist_events');
  assert.deepEqual(ev.dataParsed, { events: [{ name: 'online', user_ids: [u2] }] }, 'only the watched users that are online');
  // A user who watches nobody gets no watchlist events when others come and go.
  const c = await rawClient(t);
  await rawSignIn(c, sdk, { id: uid('u4') });
  const d = await rawClient(t);
  await rawSignIn(d, sdk, { id: u3 });
  const ev3 = await a.next('pusher_internal:watchlist_events');
  assert.deepEqual(ev3.dataParsed.events, [{ name: 'online', user_ids: [u3] }]);
  await c.none('pusher_internal:watchlist_events', 300);
});

test('terminateUserConnections closes every socket of the user with 4009 and leaves other users connected', T, async (t) => {
  const u1 = uid('u1');
  const u2 = uid('u2');
  const s1 = await rawClient(t);
  const s2 = await rawClient(t);
  const other = await rawClient(t);
  await rawSignIn(s1, sdk, { id: u1 });
  await rawSignIn(s2, sdk, { id: u1 });
  await rawSignIn(other, sdk, { id: u2 });
  // A pusher-js socket of u1 too.
  const pj = await signedIn(t, { id: u1 });
  const pjErrors = [];
  pj.client.connection.bind('error', (e) => pjErrors.push(e));
  // pusher-js answers a 40xx close by closing its (already closed) faye socket,
  // which arms a 30 s close timer nobody clears; clear it so the process exits.
  const fayeSocket = pj.client.connection.connection?.transport?.socket;
  t.after(() => fayeSocket && clearTimeout(fayeSocket._closeTimer));

  const res = await sdk.terminateUserConnections(u1);
  assert.equal(res.status, 200);
  const [c1, c2] = await withTimeout(Promise.all([s1.closed, s2.closed]), 3000, 'u1 sockets closed');
  assert.equal(c1.code, 4009);
  assert.equal(c2.code, 4009);
  assert.equal(s1.frames.find((f) => f.event === 'pusher:error')?.dataParsed.code, 4009);
  await waitFor(() => pj.client.connection.state !== 'connected', 3000, 50, 'pusher-js u1 disconnected');
  await sleep(1000);
  assert.notEqual(pj.client.connection.state, 'connected', 'pusher-js does not reconnect after 4009');
  assert.ok(pjErrors.some((e) => e?.error?.data?.code === 4009), `pusher-js saw error 4009: ${JSON.stringify(pjErrors)}`);

  assert.equal(other.isClosed, false, 'u2 stays connected');
  other.send({ event: 'pusher:ping', data: {} });
  await other.next('pusher:pong');
  // u2 is still reachable; u1 is gone.
  await sdk.sendToUser(u2, 'still', { ok: true });
  assert.deepEqual((await other.next('still')).dataParsed, { ok: true });
});

// terminate_connections closes presence members as well as signed-in
// sockets (README "HTTP API"): a presence member's user_id is signed by the
// backend as a sign-in is. Other servers left such sockets open silently
// (soketi #727, Laravel Reverb #399: a socket subscribed to a public channel
// before the presence one).
test('terminateUserConnections also closes sockets that are presence members of the user without a sign-in, whatever they subscribed first', T, async (t) => {
  const u1 = uid('pm1');
  const u2 = uid('pm2');
  const room = uniqueChannel('presence-room');
  const otherRoom = uniqueChannel('presence-other');
  const join = async (conn, channel, userId) => {
    const channelData = { user_id: userId };
    const signed = sdk.authorizeChannel(conn.socketId, channel, channelData);
    const answer = await rawSubscribe(conn, channel, signed);
    assert.equal(answer.event, 'pusher_internal:subscription_succeeded', JSON.stringify(answer));
  };
  // A public channel first, then the presence channel: never signed in.
  const memberOnly = await rawClient(t);
  await rawSubscribe(memberOnly, uniqueChannel('public-first'));
  await join(memberOnly, room, u1);
  // A member of another presence channel of the same user.
  const elsewhere = await rawClient(t);
  await join(elsewhere, otherRoom, u1);
  // Signed in as the user, no presence channel.
  const signedInOnly = await rawClient(t);
  await rawSignIn(signedInOnly, sdk, { id: u1 });
  // Other users' sockets: a member of the same channel, and a signed-in one.
  const otherMember = await rawClient(t);
  await join(otherMember, room, u2);
  const otherSignedIn = await rawClient(t);
  await rawSignIn(otherSignedIn, sdk, { id: u2 });
  // pusher-js, a presence member only (channel authorization, no signin()).
  const pj = await authedClient(t, { presence: { user_id: u1, user_info: {} } });
  const fayeSocket = pj.connection.connection?.transport?.socket;
  t.after(() => fayeSocket && clearTimeout(fayeSocket._closeTimer));
  await withTimeout(
    new Promise((resolve, reject) => {
      const channel = pj.subscribe(room);
      channel.bind('pusher:subscription_succeeded', resolve);
      channel.bind('pusher:subscription_error', reject);
    }),
    5000,
    'pusher-js presence subscription',
  );

  const res = await sdk.terminateUserConnections(u1);
  assert.equal(res.status, 200);
  for (const [what, conn] of [
    ['presence member, public channel first', memberOnly],
    ['member of another presence channel', elsewhere],
    ['signed in', signedInOnly],
  ]) {
    const closed = await withTimeout(conn.closed, 3000, `${what} closed`);
    assert.equal(closed.code, 4009, what);
  }
  await waitFor(() => pj.connection.state !== 'connected', 3000, 50, 'pusher-js member disconnected');
  // The other user's member socket hears u1 leave, and stays.
  await otherMember.next((f) => f.event === 'pusher_internal:member_removed' && f.dataParsed.user_id === u1, 3000);
  for (const [what, conn] of [
    ['another member', otherMember],
    ['another signed-in user', otherSignedIn],
  ]) {
    assert.equal(conn.isClosed, false, `${what} stays`);
    conn.send({ event: 'pusher:ping', data: {} });
    await conn.next('pusher:pong');
  }
  assert.notEqual(pj.connection.state, 'connected', 'pusher-js did not reconnect');
});

// personal-{user} with pusher-js as the README shows it: signin() and
// subscribe() one after the other. pusher-js sends the subscribe at once and
// the signin only when its HTTP call to the userAuthentication endpoint
// returns (and again after every reconnect), so the server lets the
// subscription wait for the sign-in (server.subscribe_wait_ms, 1500 in the
// fixture).
const SUBSCRIBE_WAIT_MS = 1500;

test('personal-{user} with unmodified pusher-js and a userAuthentication endpoint: subscribed, live events, and again after a reconnect', T, async (t) => {
  const user = uid('pu');
  const followed = uniqueChannel('followed');
  const endpoint = await startUserAuthEndpoint(sdk, () => ({ id: user }));
  t.after(() => endpoint.stop());
  const pusher = await newPusherClient(APPS.main.key, { userAuthentication: { endpoint: endpoint.url } });
  t.after(() => pusher.disconnect());
  const messages = recordMessages(pusher);

  // The README snippet.
  pusher.signin();
  const personal = pusher.subscribe(`personal-${user}`);
  const outcomes = [];
  personal.bind('pusher:subscription_succeeded', (data) => outcomes.push({ ok: true, data }));
  personal.bind('pusher:subscription_error', (error) => outcomes.push({ ok: false, error }));
  const live = collect(personal, 'article');

  await waitFor(() => outcomes.length >= 1, 5000, 20, `personal-${user} subscription outcome`);
  assert.deepEqual(outcomes[0], { ok: true, data: { messages: [] } }, JSON.stringify(messages.map((m) => m.event)));
  // The subscribe really did go out before the sign-in (the case this covers).
  assert.equal(endpoint.calls.length, 1, 'one call to the userAuthentication endpoint');

  const res = await sdk.post({ path: '/subscribe', body: { user_id: user, event: followed } });
  assert.equal(res.status, 200);
  await sdk.trigger(followed, 'article', { title: 'first' });
  assert.deepEqual(await live.next(3000), { title: 'first' });

  // Reconnect: pusher-js subscribes again at once and signs in again over HTTP.
  const socketBefore = pusher.connection.socket_id;
  pusher.disconnect();
  await waitFor(() => pusher.connection.state === 'disconnected', 3000, 10, 'disconnected');
  pusher.connect();
  await waitFor(() => outcomes.length >= 2, 6000, 20, `personal-${user} subscription outcome after reconnect`);
  assert.notEqual(pusher.connection.socket_id, socketBefore, 'a new connection');
  assert.equal(outcomes[1].ok, true, JSON.stringify(outcomes[1]));
  // With the catch-up, as any personal subscription: what was stored for the user.
  assert.deepEqual(
    outcomes[1].data.messages.map((m) => [m.channel, m.event, JSON.parse(m.data)]),
    [[followed, 'article', { title: 'first' }]],
  );
  assert.equal(endpoint.calls.length, 2, 'signed in again over HTTP');
  assert.equal(personal.subscribed, true);
  await sdk.trigger(followed, 'article', { title: 'second' });
  assert.deepEqual(await live.next(3000), { title: 'second' });
  assert.equal(messages.filter((m) => m.event === 'pusher:subscription_error').length, 0, 'no subscription_error at all');
});

/** The subscription outcome frame of `channel` on a raw connection. */
const outcomeOf = (conn, channel, timeoutMs) =>
  conn.next(
    (f) => f.channel === channel && (f.event === 'pusher_internal:subscription_succeeded' || f.event === 'pusher:subscription_error'),
    timeoutMs,
  );

test('an unsigned personal-{user} waiting for the sign-in: signed in as another user -> refused then; never signed in -> refused after the wait', T, async (t) => {
  const u1 = uid('u1');
  const other = await rawClient(t);
  other.send({ event: 'pusher:subscribe', data: { channel: `personal-${u1}` } });
  await rawSignIn(other, sdk, { id: uid('u2') });
  const refused = await outcomeOf(other, `personal-${u1}`, 1000);
  assert.equal(refused.event, 'pusher:subscription_error');
  assert.equal(refused.dataParsed.type, 'AuthError', JSON.stringify(refused));
  assert.equal(refused.dataParsed.status, 401);
  const order = other.frames.map((f) => f.event).filter((e) => e === 'pusher:signin_success' || e === 'pusher:subscription_error');
  assert.deepEqual(order, ['pusher:signin_success', 'pusher:subscription_error'], 'refused when the sign-in came, not before');

  const anon = await rawClient(t);
  const asked = Date.now();
  anon.send({ event: 'pusher:subscribe', data: { channel: `personal-${u1}` } });
  const late = await outcomeOf(anon, `personal-${u1}`, SUBSCRIBE_WAIT_MS + 2000);
  const waited = Date.now() - asked;
  assert.equal(late.event, 'pusher:subscription_error');
  assert.deepEqual(late.dataParsed, refused.dataParsed, 'the same refusal as without the wait');
  assert.ok(waited >= SUBSCRIBE_WAIT_MS - 100, `refused after ${waited} ms, the wait is ${SUBSCRIBE_WAIT_MS}`);
});

test('an unsigned personal-{user} unsubscribed while waiting is forgotten: no answer, not joined by the later sign-in', T, async (t) => {
  const u1 = uid('u1');
  const conn = await rawClient(t);
  conn.send({ event: 'pusher:subscribe', data: { channel: `personal-${u1}` } });
  conn.send({ event: 'pusher:unsubscribe', data: { channel: `personal-${u1}` } });
  await rawSignIn(conn, sdk, { id: u1 });
  await conn.none((f) => f.channel === `personal-${u1}`, SUBSCRIBE_WAIT_MS + 300);
  // Not subscribed: a message for u1's personal channel does not reach it.
  const followed = uniqueChannel('followed');
  assert.equal((await sdk.post({ path: '/subscribe', body: { user_id: u1, event: followed } })).status, 200);
  await sdk.trigger(followed, 'article', { n: 1 });
  await conn.none((f) => f.event === 'article', 500);
  // Subscribing again now (signed in) works at once.
  const ok = await rawSubscribe(conn, `personal-${u1}`, {}, 1000);
  assert.equal(ok.event, 'pusher_internal:subscription_succeeded', JSON.stringify(ok));
});

test('a pusher:signin with a bad signature refuses the personal-{user} subscription waiting for it, then closes 4009', T, async (t) => {
  const u1 = uid('u1');
  const conn = await rawClient(t);
  conn.send({ event: 'pusher:subscribe', data: { channel: `personal-${u1}` } });
  const good = sdk.authenticateUser(conn.socketId, { id: u1 });
  conn.send({ event: 'pusher:signin', data: { ...good, auth: `${APPS.main.key}:${'0'.repeat(64)}` } });
  const refused = await outcomeOf(conn, `personal-${u1}`, 1000);
  assert.equal(refused.event, 'pusher:subscription_error');
  const closed = await withTimeout(conn.closed, 2000, 'close after the bad sign-in');
  assert.equal(closed.code, 4009);
});
