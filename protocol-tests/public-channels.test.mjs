// Public channels with the real clients: pusher-js (Node build) subscribes,
// the official Node server SDK publishes and queries.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  APPS,
  collect,
  newPusherClient,
  newServerSdk,
  sleep,
  subscribeAndWait,
  uniqueChannel,
  waitFor,
} from './helpers.mjs';

const T = { timeout: 30000 };
const sdk = newServerSdk();

/** A connected pusher-js client, disconnected after the test. */
async function client(t, key = APPS.main.key) {
  const c = await newPusherClient(key);
  t.after(() => c.disconnect());
  return c;
}

test('pusher-js connects and gets a socket_id of two integers joined by a dot', T, async (t) => {
  const a = await client(t);
  const b = await client(t);
  assert.equal(a.connection.state, 'connected');
  assert.match(a.connection.socket_id, /^\d+\.\d+$/);
  assert.match(b.connection.socket_id, /^\d+\.\d+$/);
  assert.notEqual(a.connection.socket_id, b.connection.socket_id, 'socket_ids must be unique per connection');
});

test('pusher-js subscribes to a public channel and receives an event triggered by the Node SDK', T, async (t) => {
  const c = await client(t);
  const name = uniqueChannel('pub');
  const ch = await subscribeAndWait(c, name);
  const got = collect(ch, 'my-event');
  const res = await sdk.trigger(name, 'my-event', { message: 'hello', n: 42 });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), {});
  assert.deepEqual(await got.next(), { message: 'hello', n: 42 });
});

test('a trigger to several channels at once reaches the subscribers of each', T, async (t) => {
  const names = [uniqueChannel('multi'), uniqueChannel('multi'), uniqueChannel('multi')];
  const clients = await Promise.all(names.map(() => client(t)));
  const collectors = [];
  for (let i = 0; i < names.length; i++) {
    collectors.push(collect(await subscribeAndWait(clients[i], names[i]), 'fanout'));
  }
  // The first client also listens on the second channel: it must get that copy too.
  const extra = collect(await subscribeAndWait(clients[0], names[1]), 'fanout');
  const res = await sdk.trigger(names, 'fanout', { to: 'all' });
  assert.equal(res.status, 200);
  for (const c of collectors) assert.deepEqual(await c.next(), { to: 'all' });
  assert.deepEqual(await extra.next(), { to: 'all' });
  await sleep(300);
  for (const c of collectors) assert.equal(c.events.length, 1, 'each subscriber gets the event exactly once per channel');
});

test('triggerBatch delivers every event of the batch, in order', T, async (t) => {
  const c = await client(t);
  const a = uniqueChannel('batch');
  const b = uniqueChannel('batch');
  const chA = await subscribeAndWait(c, a);
  const chB = await subscribeAndWait(c, b);
  const order = [];
  chA.bind('step', (d) => order.push(`${a}:${d.i}`));
  chB.bind('step', (d) => order.push(`${b}:${d.i}`));
  const batch = [];
  for (let i = 0; i < 6; i++) batch.push({ channel: i % 2 ? b : a, name: 'step', data: JSON.stringify({ i }) });
  const res = await sdk.triggerBatch(batch);
  assert.equal(res.status, 200);
  await waitFor(() => order.length >= 6, 5000, 20, 'six batch events');
  assert.deepEqual(order, batch.map((e, i) => `${e.channel}:${i}`));
});

test('a trigger with socket_id excludes that socket while the other subscriber gets it', T, async (t) => {
  const sender = await client(t);
  const other = await client(t);
  const name = uniqueChannel('excl');
  const senderGot = collect(await subscribeAndWait(sender, name), 'ev');
  const otherGot = collect(await subscribeAndWait(other, name), 'ev');
  await sdk.trigger(name, 'ev', { n: 1 }, { socket_id: sender.connection.socket_id });
  assert.deepEqual(await otherGot.next(), { n: 1 });
  // A second, unexcluded event: the excluded socket's first event must be this one.
  await sdk.trigger(name, 'ev', { n: 2 });
  assert.deepEqual(await otherGot.next(), { n: 2 });
  assert.deepEqual(await senderGot.next(), { n: 2 });
  await sleep(200);
  assert.deepEqual(senderGot.events, [{ n: 2 }], 'the excluded socket never got event 1');
});

test("trigger with info 'subscription_count' answers channels[ch].subscription_count", T, async (t) => {
  const c1 = await client(t);
  const c2 = await client(t);
  const name = uniqueChannel('info');
  await subscribeAndWait(c1, name);
  await subscribeAndWait(c2, name);
  const res = await sdk.trigger(name, 'ev', {}, { info: 'subscription_count' });
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.ok(body.channels && body.channels[name], `response has channels.${name}: ${JSON.stringify(body)}`);
  assert.equal(body.channels[name].subscription_count, 2);
});

test('GET /channels lists occupied channels and filter_by_prefix filters them', T, async (t) => {
  const c = await client(t);
  const p1 = uniqueChannel('listA');
  const p2 = uniqueChannel('listB');
  await subscribeAndWait(c, p1);
  await subscribeAndWait(c, p2);
  const all = await (await sdk.get({ path: '/channels' })).json();
  assert.ok(all.channels, JSON.stringify(all));
  assert.ok(p1 in all.channels, `${p1} listed`);
  assert.ok(p2 in all.channels, `${p2} listed`);
  const never = uniqueChannel('never');
  assert.ok(!(never in all.channels), 'a channel nobody joined is not listed');

  const filtered = await (await sdk.get({ path: '/channels', params: { filter_by_prefix: p1 } })).json();
  assert.deepEqual(Object.keys(filtered.channels), [p1]);
  const prefixA = p1.slice(0, 'listA'.length);
  const byPrefix = await (await sdk.get({ path: '/channels', params: { filter_by_prefix: prefixA } })).json();
  assert.ok(p1 in byPrefix.channels);
  assert.ok(!(p2 in byPrefix.channels), 'filter_by_prefix excludes other prefixes');
  for (const n of Object.keys(byPrefix.channels)) assert.ok(n.startsWith(prefixA), `${n} starts with ${prefixA}`);
});

test('GET /channels/{name} with info subscription_count reports occupancy and the count', T, async (t) => {
  const c1 = await client(t);
  const c2 = await client(t);
  const c3 = await client(t);
  const name = uniqueChannel('occ');
  for (const c of [c1, c2, c3]) await subscribeAndWait(c, name);
  const res = await sdk.get({ path: `/channels/${name}`, params: { info: 'subscription_count' } });
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.occupied, true);
  assert.equal(body.subscription_count, 3);

  const empty = await (await sdk.get({ path: `/channels/${uniqueChannel('empty')}` })).json();
  assert.equal(empty.occupied, false);
});

test('the subscription count drops when a client disconnects', T, async (t) => {
  const c1 = await client(t);
  const c2 = await newPusherClient();
  const name = uniqueChannel('drop');
  await subscribeAndWait(c1, name);
  await subscribeAndWait(c2, name);
  c2.disconnect();
  await waitFor(
    async () => {
      const b = await (await sdk.get({ path: `/channels/${name}`, params: { info: 'subscription_count' } })).json();
      return b.subscription_count === 1 && b.occupied === true;
    },
    5000,
    100,
    'subscription_count back to 1',
  );
  c1.unsubscribe(name);
  await waitFor(
    async () => (await (await sdk.get({ path: `/channels/${name}` })).json()).occupied === false,
    5000,
    100,
    'channel vacated',
  );
});

test('unsubscribing stops delivery', T, async (t) => {
  const c = await client(t);
  const gone = uniqueChannel('unsub');
  const barrier = uniqueChannel('barrier');
  const goneGot = collect(await subscribeAndWait(c, gone), 'ev');
  const barrierGot = collect(await subscribeAndWait(c, barrier), 'ev');
  await sdk.trigger(gone, 'ev', { before: true });
  assert.deepEqual(await goneGot.next(), { before: true });
  c.unsubscribe(gone);
  // The unsubscribe has no reply: wait until the server shows the channel vacated.
  await waitFor(
    async () => (await (await sdk.get({ path: `/channels/${gone}` })).json()).occupied === false,
    5000,
    50,
    'channel vacated after unsubscribe',
  );
  // pusher-js drops events for channels it left, so watch the raw socket too.
  const raw = [];
  c.connection.bind('message', (m) => raw.push(m));
  await sdk.trigger(gone, 'ev', { after: true });
  await sdk.trigger(barrier, 'ev', { barrier: true });
  assert.deepEqual(await barrierGot.next(), { barrier: true });
  await sleep(200);
  assert.equal(goneGot.events.length, 1);
  assert.deepEqual(
    raw.filter((m) => m.channel === gone),
    [],
    'the server sent nothing on the unsubscribed channel',
  );
});

test('event data arrives intact: objects, plain strings, JSON strings and unicode', T, async (t) => {
  const c = await client(t);
  const name = uniqueChannel('data');
  const ch = await subscribeAndWait(c, name);
  const got = collect(ch, 'payload');
  const obj = {
    text: 'héllo wörld — 日本語 👋🏽',
    nested: { list: [1, 2.5, null, true, 'x'], empty: {} },
    quote: 'a "quoted" \\ back\\slash\nnewline\ttab',
  };
  await sdk.trigger(name, 'payload', obj);
  assert.deepEqual(await got.next(), obj);
  await sdk.trigger(name, 'payload', 'just a plain string ✓');
  assert.equal(await got.next(), 'just a plain string ✓');
  // A JSON-looking string is delivered as that JSON (pusher-js parses data strings).
  await sdk.trigger(name, 'payload', '{"already":"encoded"}');
  assert.deepEqual(await got.next(), { already: 'encoded' });

  // The connection-level message (what pusher-js decoded from the wire) carries it too.
  const raw = [];
  c.connection.bind('message', (m) => raw.push(m));
  await sdk.trigger(name, 'payload', { wire: 'ünï' });
  assert.deepEqual(await got.next(), { wire: 'ünï' });
  const f = raw.find((m) => m.event === 'payload');
  assert.ok(f, 'pusher-js saw the frame');
  assert.deepEqual(f.data, { wire: 'ünï' });
});

test('an event name with a dot and a colon is delivered under that exact name', T, async (t) => {
  const c = await client(t);
  const name = uniqueChannel('names');
  const ch = await subscribeAndWait(c, name);
  const got = collect(ch, 'App\\Events\\Order.created:v1');
  await sdk.trigger(name, 'App\\Events\\Order.created:v1', { id: 7 });
  assert.deepEqual(await got.next(), { id: 7 });
});

test('an idle pusher-js client stays connected past two activity timeouts (keep-alive pings answered)', T, async (t) => {
  const c = await client(t);
  const socketId = c.connection.socket_id;
  const states = [];
  c.connection.bind('state_change', (s) => states.push(`${s.previous}->${s.current}`));
  const received = [];
  // pusher-js pings after activity_timeout of silence (and answers server pings).
  c.connection.bind('message', (m) => received.push(m.event));
  await sleep(8000);
  assert.deepEqual(states, [], 'no state change while idle');
  assert.equal(c.connection.state, 'connected');
  assert.equal(c.connection.socket_id, socketId, 'same connection (no reconnect)');
  // Either side may have pinged; whoever pinged must have been answered.
  assert.ok(
    received.includes('pusher:pong') || received.includes('pusher:ping'),
    `a keep-alive exchange happened while idle (received ${received})`,
  );
  // Still delivers afterwards.
  const name = uniqueChannel('idle');
  const got = collect(await subscribeAndWait(c, name), 'ev');
  await sdk.trigger(name, 'ev', { awake: true });
  assert.deepEqual(await got.next(), { awake: true });
});
