// Private and presence channels with the real clients: pusher-js (Node build)
// authorized in-process by the official Node SDK (`authorizeChannel`), raw `ws`
// for hand-made bad signatures, and the SDK's HTTP queries for presence state.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { APPS, collect, sleep, subscribeAndWait, uniqueChannel, waitFor } from './helpers.mjs';
import {
  authedClient,
  channelAuth,
  memberIds,
  nextEvent,
  rawClient,
  rawSubscribe,
  sdkFor,
  sorted,
  trySubscribe,
} from './auth-helpers.mjs';

const T = { timeout: 30000 };
const sdk = sdkFor(APPS.main);
const strictSdk = sdkFor(APPS.strict);

/** A pusher-js client that is presence member `user_id` (with `user_info`). */
const member = (t, user_id, user_info = { name: `name of ${user_id}` }, app = APPS.main) =>
  authedClient(t, { app, sdk: app === APPS.strict ? strictSdk : sdk, presence: { user_id, user_info } });

async function getJson(sdkInstance, path, params) {
  const res = await sdkInstance.get({ path, params });
  assert.equal(res.status, 200, `GET ${path}`);
  return res.json();
}

// ---------------------------------------------------------------------------
// Private channels
// ---------------------------------------------------------------------------

test('pusher-js subscribes to a private channel with an SDK signature and receives an SDK-triggered event', T, async (t) => {
  const authCalls = [];
  const c = await authedClient(t, { authCalls });
  const name = uniqueChannel('private');
  const ch = await subscribeAndWait(c, name);
  assert.equal(ch.subscribed, true);
  assert.deepEqual(authCalls, [{ socketId: c.connection.socket_id, channelName: name }], 'the customHandler was asked for this socket and channel');
  const got = collect(ch, 'secret-news');
  const res = await sdk.trigger(name, 'secret-news', { n: 1, text: 'only for members' });
  assert.equal(res.status, 200);
  assert.deepEqual(await got.next(), { n: 1, text: 'only for members' });
});

/**
 * The refusal cases share a shape: a raw socket sends `fields` for a private
 * channel and must get subscription_error 401; then the same socket must still
 * work (public subscribe + event) and must not receive the private channel's events.
 */
async function refusedThenStillUsable(t, makeFields) {
  const conn = await rawClient(t);
  const priv = uniqueChannel('private');
  const fields = await makeFields(conn.socketId, priv);
  const answer = await rawSubscribe(conn, priv, fields);
  assert.equal(answer.event, 'pusher:subscription_error', `expected subscription_error, got ${JSON.stringify(answer)}`);
  assert.equal(answer.channel, priv);
  const err = answer.dataParsed;
  assert.equal(err.status, 401, `status 401 in ${JSON.stringify(err)}`);
  assert.equal(err.type, 'AuthError');
  assert.equal(conn.isClosed, false, 'a refused subscription does not close the socket');

  // The refused channel is not subscribed: its events do not arrive.
  await sdk.trigger(priv, 'leak', { should: 'not arrive' });
  // The socket is still usable.
  const pub = uniqueChannel('pub-after-refusal');
  await conn.subscribe(pub);
  const res = await sdk.trigger(pub, 'after', { ok: true });
  assert.equal(res.status, 200);
  const ev = await conn.next((f) => f.event === 'after' && f.channel === pub);
  assert.deepEqual(ev.dataParsed, { ok: true });
  assert.equal(conn.frames.some((f) => f.event === 'leak'), false, 'no event of the refused private channel arrived');
}

test('a forged private-channel signature gets subscription_error 401 and the socket keeps working', T, async (t) => {
  await refusedThenStillUsable(t, async () => ({ auth: `${APPS.main.key}:${'0'.repeat(64)}` }));
});

test('a signature made for another socket id gets subscription_error 401 and the socket keeps working', T, async (t) => {
  const other = await rawClient(t);
  await refusedThenStillUsable(t, async (_mine, channel) => {
    // A genuine SDK signature, but for the other connection's socket id.
    const { auth } = sdk.authorizeChannel(other.socketId, channel);
    return { auth };
  });
});

test('a signature made for another channel gets subscription_error 401 and the socket keeps working', T, async (t) => {
  await refusedThenStillUsable(t, async (socketId) => {
    const { auth } = sdk.authorizeChannel(socketId, uniqueChannel('private-other'));
    return { auth };
  });
});

test('a private subscribe without auth gets subscription_error 401 and the socket keeps working', T, async (t) => {
  await refusedThenStillUsable(t, async () => ({}));
});

test('a signature made with another app\'s secret gets subscription_error 401', T, async (t) => {
  await refusedThenStillUsable(t, async (socketId, channel) => ({
    auth: channelAuth({ key: APPS.main.key, secret: APPS.other.secret }, socketId, channel),
  }));
});

test('a presence signature over different channel_data than sent (forged user_id) gets subscription_error 401', T, async (t) => {
  const conn = await rawClient(t);
  const name = uniqueChannel('presence');
  const signed = sdk.authorizeChannel(conn.socketId, name, { user_id: 'alice' });
  const answer = await rawSubscribe(conn, name, { auth: signed.auth, channel_data: JSON.stringify({ user_id: 'admin' }) });
  assert.equal(answer.event, 'pusher:subscription_error');
  assert.equal(answer.dataParsed.status, 401);
  // A presence signature covers channel_data: the error must not send the user to sign socket_id:channel only.
  assert.match(answer.dataParsed.error, /socket_id:channel:channel_data/, JSON.stringify(answer.dataParsed));
  // The genuine pair works on the same socket.
  const ok = await rawSubscribe(conn, name, signed);
  assert.equal(ok.event, 'pusher_internal:subscription_succeeded');
  assert.deepEqual(ok.dataParsed.presence.ids, ['alice']);
});

// ---------------------------------------------------------------------------
// Presence channels
// ---------------------------------------------------------------------------

test('presence with 2 then 3 clients: subscription_succeeded members (count, ids, me) and member_added/removed for the others', T, async (t) => {
  const name = uniqueChannel('presence');
  const a = await member(t, 'u1', { name: 'Ann' });
  const chA = await subscribeAndWait(a, name);
  assert.equal(chA.members.count, 1);
  assert.deepEqual(chA.members.me, { id: 'u1', info: { name: 'Ann' } });

  const addedAtA = collect(chA, 'pusher:member_added');
  const b = await member(t, 'u2', { name: 'Bob' });
  const chB = await subscribeAndWait(b, name);
  assert.equal(chB.members.count, 2);
  assert.deepEqual(memberIds(chB), ['u1', 'u2']);
  assert.deepEqual(chB.members.me, { id: 'u2', info: { name: 'Bob' } });
  assert.deepEqual(chB.members.get('u1'), { id: 'u1', info: { name: 'Ann' } }, 'the subscriber gets the other members\' info');
  assert.deepEqual(await addedAtA.next(), { id: 'u2', info: { name: 'Bob' } });
  assert.equal(chA.members.count, 2);

  const addedAtB = collect(chB, 'pusher:member_added');
  const c = await member(t, 'u3', { name: 'Cid' });
  const chC = await subscribeAndWait(c, name);
  assert.equal(chC.members.count, 3);
  assert.deepEqual(memberIds(chC), ['u1', 'u2', 'u3']);
  assert.equal(chC.members.me.id, 'u3');
  assert.deepEqual(await addedAtA.next(), { id: 'u3', info: { name: 'Cid' } });
  assert.deepEqual(await addedAtB.next(), { id: 'u3', info: { name: 'Cid' } });
  assert.equal(chA.members.count, 3);
  assert.equal(chB.members.count, 3);

  const removedAtA = collect(chA, 'pusher:member_removed');
  const removedAtB = collect(chB, 'pusher:member_removed');
  c.disconnect();
  assert.equal((await removedAtA.next()).id, 'u3');
  assert.equal((await removedAtB.next()).id, 'u3');
  assert.deepEqual(memberIds(chA), ['u1', 'u2']);

  // Unsubscribing (not disconnecting) also removes the member.
  b.unsubscribe(name);
  assert.equal((await removedAtA.next()).id, 'u2');
  assert.deepEqual(memberIds(chA), ['u1']);
  await sleep(200);
  assert.equal(addedAtA.events.length, 2, 'member_added came once per new user');
  assert.equal(addedAtB.events.length, 1);
});

test('the same user_id on two sockets is one member; member_removed only when both sockets left', T, async (t) => {
  const name = uniqueChannel('presence');
  const a = await member(t, 'u1');
  const chA = await subscribeAndWait(a, name);
  const added = collect(chA, 'pusher:member_added');
  const removed = collect(chA, 'pusher:member_removed');

  const b1 = await member(t, 'u2', { tab: 1 });
  await subscribeAndWait(b1, name);
  assert.equal((await added.next()).id, 'u2');
  const b2 = await member(t, 'u2', { tab: 1 });
  const chB2 = await subscribeAndWait(b2, name);
  assert.equal(chB2.members.count, 2, 'u2 counts once although two sockets joined');
  assert.deepEqual(memberIds(chB2), ['u1', 'u2']);
  await sleep(300);
  assert.equal(added.events.length, 1, 'no second member_added for the second socket of u2');
  assert.equal(chA.members.count, 2);

  const users = await getJson(sdk, `/channels/${name}/users`);
  assert.deepEqual(sorted(users.users.map((u) => u.id)), ['u1', 'u2'], 'HTTP users lists each user once');
  const info = await getJson(sdk, `/channels/${name}`, { info: 'user_count,subscription_count' });
  assert.equal(info.user_count, 2);
  assert.equal(info.subscription_count, 3);

  b1.disconnect();
  await sleep(500);
  assert.equal(removed.events.length, 0, 'no member_removed while u2 still has a socket');
  assert.equal(chA.members.count, 2);

  b2.disconnect();
  assert.equal((await removed.next()).id, 'u2', 'member_removed once u2\'s last socket left');
  assert.equal(chA.members.count, 1);
  await waitFor(async () => (await getJson(sdk, `/channels/${name}`, { info: 'user_count' })).user_count === 1, 3000, 100, 'user_count back to 1');
});

test('SDK get /channels/presence-x/users lists the members and /channels/presence-x returns user_count and subscription_count', T, async (t) => {
  const name = uniqueChannel('presence');
  for (const id of ['alpha', 'beta', 'gamma']) {
    await subscribeAndWait(await member(t, id), name);
  }
  const users = await getJson(sdk, `/channels/${name}/users`);
  assert.deepEqual(sorted(users.users.map((u) => u.id)), ['alpha', 'beta', 'gamma']);
  for (const u of users.users) assert.deepEqual(Object.keys(u), ['id'], 'each user is {"id": ..}');

  const info = await getJson(sdk, `/channels/${name}`, { info: 'user_count,subscription_count' });
  assert.equal(info.occupied, true);
  assert.equal(info.user_count, 3);
  assert.equal(info.subscription_count, 3);

  const empty = await getJson(sdk, `/channels/${uniqueChannel('presence-empty')}`, { info: 'user_count' });
  assert.equal(empty.occupied, false);
  assert.equal(empty.user_count ?? 0, 0);
  const emptyUsers = await getJson(sdk, `/channels/${uniqueChannel('presence-empty')}/users`);
  assert.deepEqual(emptyUsers, { users: [] });
});

test('SDK get /channels with filter_by_prefix=presence- and info=user_count lists occupied presence channels with their user counts', T, async (t) => {
  const p1 = uniqueChannel('presence');
  const p2 = uniqueChannel('presence');
  const priv = uniqueChannel('private');
  const pub = uniqueChannel('pub');
  const a = await member(t, 'u1');
  const b = await member(t, 'u2');
  const b2 = await member(t, 'u2');
  await subscribeAndWait(a, p1);
  await subscribeAndWait(b, p1);
  await subscribeAndWait(b2, p1);
  await subscribeAndWait(a, p2);
  await subscribeAndWait(a, priv);
  await subscribeAndWait(a, pub);

  const body = await getJson(sdk, '/channels', { filter_by_prefix: 'presence-', info: 'user_count' });
  assert.ok(body.channels && typeof body.channels === 'object', JSON.stringify(body));
  assert.deepEqual(body.channels[p1], { user_count: 2 });
  assert.deepEqual(body.channels[p2], { user_count: 1 });
  for (const n of Object.keys(body.channels)) assert.ok(n.startsWith('presence-'), `${n} does not match the prefix`);
  assert.equal(body.channels[priv], undefined);
  assert.equal(body.channels[pub], undefined);

  // Once its members leave, a presence channel is no longer listed.
  a.unsubscribe(p2);
  await waitFor(async () => {
    const again = await getJson(sdk, '/channels', { filter_by_prefix: 'presence-', info: 'user_count' });
    return again.channels[p2] === undefined && again.channels[p1]?.user_count === 2;
  }, 3000, 100, 'p2 vacated');
});

test('strict-app: a 3rd distinct user gets subscription_error (member limit 2); the members already in are unaffected', T, async (t) => {
  const name = uniqueChannel('presence');
  assert.ok(name.length <= 30, 'strict-app limits channel names to 30 chars');
  const a = await member(t, 's1', { n: 1 }, APPS.strict);
  const b = await member(t, 's2', { n: 2 }, APPS.strict);
  const chA = await subscribeAndWait(a, name);
  const addedAtA = collect(chA, 'pusher:member_added');
  const removedAtA = collect(chA, 'pusher:member_removed');
  const chB = await subscribeAndWait(b, name);
  assert.equal((await addedAtA.next()).id, 's2');

  const c = await member(t, 's3', { n: 3 }, APPS.strict);
  const outcome = await trySubscribe(c, name);
  assert.equal(outcome.ok, false, 'the 3rd distinct user must be refused');
  assert.equal(typeof outcome.error.status, 'number', JSON.stringify(outcome.error));
  assert.ok(outcome.error.status >= 400 && outcome.error.status < 500, JSON.stringify(outcome.error));
  assert.equal(c.connection.state, 'connected', 'the refused client stays connected');

  // A second socket of a user already in is not a new member: allowed.
  const a2 = await member(t, 's1', { n: 1 }, APPS.strict);
  const chA2 = await subscribeAndWait(a2, name);
  assert.equal(chA2.members.count, 2);

  await sleep(300);
  assert.deepEqual(addedAtA.events.map((m) => m.id), ['s2'], 'no member_added for the refused user (nor for s1\'s second socket)');
  assert.equal(removedAtA.events.length, 0);
  assert.equal(chA.members.count, 2);
  assert.deepEqual(memberIds(chB), ['s1', 's2']);

  const users = await getJson(strictSdk, `/channels/${name}/users`);
  assert.deepEqual(sorted(users.users.map((u) => u.id)), ['s1', 's2']);
  const got = collect(chB, 'still-here');
  assert.equal((await strictSdk.trigger(name, 'still-here', { ok: 1 })).status, 200);
  assert.deepEqual(await got.next(), { ok: 1 });
  assert.equal(outcome.channel.subscribed, false);

  // When a member leaves, the refused user may join.
  b.disconnect();
  assert.equal((await removedAtA.next()).id, 's2');
  const retry = await trySubscribe(await member(t, 's3', { n: 3 }, APPS.strict), name);
  assert.equal(retry.ok, true, `after s2 left, s3 fits: ${JSON.stringify(retry.error)}`);
});

test('strict-app: user_info over 64 bytes gets subscription_error; 64 bytes or less is accepted', T, async (t) => {
  const name = uniqueChannel('presence');
  const small = await member(t, 'ok-user', { n: 'x'.repeat(10) }, APPS.strict);
  const chSmall = await subscribeAndWait(small, name);
  const added = collect(chSmall, 'pusher:member_added');

  const bigInfo = { bio: 'y'.repeat(80) };
  assert.ok(JSON.stringify(bigInfo).length > 64);
  const big = await member(t, 'big-user', bigInfo, APPS.strict);
  const outcome = await trySubscribe(big, name);
  assert.equal(outcome.ok, false, 'user_info over the limit must be refused');
  assert.ok(outcome.error.status >= 400 && outcome.error.status < 500, JSON.stringify(outcome.error));
  assert.equal(big.connection.state, 'connected');
  await sleep(300);
  assert.equal(added.events.length, 0, 'the refused member is never announced');
  assert.deepEqual(memberIds(chSmall), ['ok-user']);

  // Exactly at the limit is fine (64 bytes of JSON).
  const exact = { b: 'z'.repeat(64 - JSON.stringify({ b: '' }).length) };
  assert.equal(JSON.stringify(exact).length, 64);
  const fits = await trySubscribe(await member(t, 'edge-user', exact, APPS.strict), name);
  assert.equal(fits.ok, true, `64-byte user_info refused: ${JSON.stringify(fits.error)}`);
  assert.deepEqual((await added.next()).info, exact);
});
