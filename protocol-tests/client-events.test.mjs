// Client events (PROTOCOL.md §3): pusher-js `channel.trigger('client-…')`
// between real clients, and raw `ws` sockets for the refusals and the rate limit.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { APPS, collect, sleep, subscribeAndWait, uniqueChannel } from './helpers.mjs';
import { authedClient, nextEvent, rawClient, rawSubscribe, sdkFor } from './auth-helpers.mjs';

const T = { timeout: 30000 };
const sdk = sdkFor(APPS.main);
const strictSdk = sdkFor(APPS.strict);

/** Raw socket subscribed to `channel`, signing with `signer` when the channel needs it. */
async function rawSubscribed(t, channel, { app = APPS.main, signer = sdk, presence } = {}) {
  const conn = await rawClient(t, app.key);
  const fields = channel.startsWith('private-') || channel.startsWith('presence-')
    ? signer.authorizeChannel(conn.socketId, channel, presence)
    : {};
  const answer = await rawSubscribe(conn, channel, fields);
  assert.equal(answer.event, 'pusher_internal:subscription_succeeded', `subscribe ${channel}: ${JSON.stringify(answer)}`);
  return conn;
}

const isError = (f) => f.event === 'pusher:error';

/** Sender sends `client-…` on `channel`: it must get pusher:error and the receiver nothing. */
async function refused(sender, receiver, channel, event = 'client-nope') {
  sender.send({ event, channel, data: { secret: 1 } });
  const err = await sender.next(isError);
  assert.equal(typeof err.dataParsed.message, 'string');
  assert.notEqual(err.dataParsed.code, 4301, 'not a rate-limit error');
  await receiver.none((f) => f.event === event, 400);
  assert.equal(sender.isClosed, false, 'a refused client event does not close the socket');
  // The sender is still served: a ping is answered.
  sender.send({ event: 'pusher:ping', data: {} });
  await sender.next('pusher:pong');
  return err;
}

test('a client event on a private channel reaches the other subscriber and is not echoed to the sender', T, async (t) => {
  const name = uniqueChannel('private');
  const a = await authedClient(t);
  const b = await authedClient(t);
  const c = await authedClient(t);
  const chA = await subscribeAndWait(a, name);
  const chB = await subscribeAndWait(b, name);
  const chC = await subscribeAndWait(c, name);
  const atA = collect(chA, 'client-typing');
  const atB = collect(chB, 'client-typing');
  const atC = collect(chC, 'client-typing');
  assert.equal(chA.trigger('client-typing', { who: 'a', n: 1 }), true);
  assert.deepEqual(await atB.next(), { who: 'a', n: 1 });
  assert.deepEqual(await atC.next(), { who: 'a', n: 1 });
  await sleep(400);
  assert.equal(atA.events.length, 0, 'the sender must not get its own client event');
  assert.equal(atB.events.length, 1, 'delivered exactly once');
});

test('a client event relayed on a private channel carries no user_id and keeps its data', T, async (t) => {
  const name = uniqueChannel('private');
  const sender = await rawSubscribed(t, name);
  const receiver = await rawSubscribed(t, name);
  sender.send({ event: 'client-raw', channel: name, data: { nested: { a: [1, 2] }, s: 'é' } });
  const f = await receiver.next('client-raw');
  assert.equal(f.channel, name);
  assert.deepEqual(f.dataParsed, { nested: { a: [1, 2] }, s: 'é' });
  assert.equal(f.user_id, undefined);
  await sender.none('client-raw', 300);
});

test('on a presence channel the receiver gets the sender\'s user_id (pusher-js metadata.user_id)', T, async (t) => {
  const name = uniqueChannel('presence');
  const a = await authedClient(t, { presence: { user_id: 'sender-1', user_info: {} } });
  const b = await authedClient(t, { presence: { user_id: 'receiver-2', user_info: {} } });
  const chA = await subscribeAndWait(a, name);
  const chB = await subscribeAndWait(b, name);
  const echoed = collect(chA, 'client-hello');
  const got = nextEvent(chB, 'client-hello');
  chA.trigger('client-hello', { text: 'hi' });
  const { data, meta } = await got;
  assert.deepEqual(data, { text: 'hi' });
  assert.equal(meta && meta.user_id, 'sender-1');
  await sleep(300);
  assert.equal(echoed.events.length, 0);
});

test('a presence client event frame carries "user_id" of the sender on the wire', T, async (t) => {
  const name = uniqueChannel('presence');
  const sender = await rawSubscribed(t, name, { presence: { user_id: 'wire-u1' } });
  const receiver = await rawSubscribed(t, name, { presence: { user_id: 'wire-u2' } });
  sender.send({ event: 'client-wire', channel: name, data: { x: 1 } });
  const f = await receiver.next('client-wire');
  assert.equal(f.user_id, 'wire-u1');
  assert.deepEqual(f.dataParsed, { x: 1 });
});

test('a client event on a public channel is refused with pusher:error and not delivered', T, async (t) => {
  const name = uniqueChannel('pub');
  const sender = await rawSubscribed(t, name);
  const receiver = await rawSubscribed(t, name);
  const err = await refused(sender, receiver, name);
  assert.match(err.dataParsed.message, /only allowed on private, presence and peer channels/, err.data);
});

test('a client event on a cache- (public) channel is refused', T, async (t) => {
  const name = uniqueChannel('cache');
  const sender = await rawSubscribed(t, name);
  const receiver = await rawSubscribed(t, name);
  await refused(sender, receiver, name);
});

test('a client event on a private-encrypted- channel is refused with pusher:error and not delivered', T, async (t) => {
  const encSdk = sdkFor(APPS.main, { encryptionMasterKeyBase64: Buffer.alloc(32, 7).toString('base64') });
  const name = uniqueChannel('private-encrypted');
  const sender = await rawSubscribed(t, name, { signer: encSdk });
  const receiver = await rawSubscribed(t, name, { signer: encSdk });
  const err = await refused(sender, receiver, name);
  // It is a private channel: the refusal must say why encrypted ones are different.
  assert.match(err.dataParsed.message, /end-to-end encrypted/, err.data);
  assert.doesNotMatch(err.dataParsed.message, /only allowed on private/, err.data);
});

test('a client event over the app limits is refused with a message naming the limit', T, async (t) => {
  const name = uniqueChannel('private');
  const sender = await rawSubscribed(t, name, { app: APPS.main });
  const receiver = await rawSubscribed(t, name, { app: APPS.main });
  const longName = `client-${'x'.repeat(200)}`;
  const tooLong = await refused(sender, receiver, name, longName);
  assert.match(tooLong.dataParsed.message, /longer than 200 characters/, tooLong.data);
  sender.send({ event: 'client-big', channel: name, data: { pad: 'x'.repeat(10240) } });
  const tooBig = await sender.next(isError);
  assert.match(tooBig.dataParsed.message, /larger than 10240 bytes/, tooBig.data);
  await receiver.none((f) => f.event === 'client-big', 300);
});

test('a client event on a private channel the sender is not subscribed to is refused and not delivered', T, async (t) => {
  const name = uniqueChannel('private');
  const receiver = await rawSubscribed(t, name);
  const outsider = await rawClient(t);
  await refused(outsider, receiver, name);
  // A socket that unsubscribed is an outsider again.
  const leaver = await rawSubscribed(t, name);
  leaver.send({ event: 'pusher:unsubscribe', data: { channel: name } });
  await sleep(100);
  await refused(leaver, receiver, name);
});

test('strict-app (client_events = false): a client event on a private channel is refused and not delivered', T, async (t) => {
  const name = uniqueChannel('private');
  const sender = await rawSubscribed(t, name, { app: APPS.strict, signer: strictSdk });
  const receiver = await rawSubscribed(t, name, { app: APPS.strict, signer: strictSdk });
  await refused(sender, receiver, name, 'client-x');
  // Also on presence channels.
  const p = uniqueChannel('presence');
  const ps = await rawSubscribed(t, p, { app: APPS.strict, signer: strictSdk, presence: { user_id: 'a' } });
  const pr = await rawSubscribed(t, p, { app: APPS.strict, signer: strictSdk, presence: { user_id: 'b' } });
  await refused(ps, pr, p, 'client-x');
});

test('rate limit: 15 client events at once → at most 10 delivered, pusher:error 4301, and the socket stays open', T, async (t) => {
  const name = uniqueChannel('private');
  const sender = await rawSubscribed(t, name);
  const receiver = await rawSubscribed(t, name);
  for (let i = 0; i < 15; i++) sender.send({ event: 'client-burst', channel: name, data: { i } });
  const err = await sender.next((f) => f.event === 'pusher:error' && f.dataParsed && f.dataParsed.code === 4301);
  assert.equal(err.dataParsed.code, 4301);
  await sleep(600);
  const delivered = receiver.frames.filter((f) => f.event === 'client-burst').map((f) => f.dataParsed.i);
  assert.ok(delivered.length >= 1, 'events under the limit are delivered');
  assert.ok(delivered.length <= 10, `at most 10 delivered, got ${delivered.length}`);
  assert.deepEqual(delivered, [...delivered].sort((x, y) => x - y), 'delivered in order');
  const errors = sender.frames.filter((f) => f.event === 'pusher:error' && f.dataParsed.code === 4301).length;
  assert.equal(delivered.length + errors, 15, `each event is either delivered or refused with 4301 (delivered ${delivered.length}, errors ${errors})`);

  assert.equal(sender.isClosed, false, 'over the rate limit the socket stays open');
  // After the window, client events flow again from the same socket.
  await sleep(1100);
  sender.send({ event: 'client-after', channel: name, data: { later: true } });
  const later = await receiver.next('client-after');
  assert.deepEqual(later.dataParsed, { later: true });
  assert.equal(sender.isClosed, false);
});
