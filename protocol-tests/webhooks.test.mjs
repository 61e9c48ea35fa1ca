// Webhooks (PROTOCOL.md §6): signed POSTs of batched events to each app's
// configured receivers, with type/prefix filters, retries, back-pressure that
// never slows delivery, and a flush on shutdown.
//
// This suite runs its own rusher processes (configs written to temp files)
// and real Node HTTP receivers; every request is verified with the official
// `pusher` SDK's webhook validation.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { isDeepStrictEqual } from 'node:util';
import { freePort, sleep, waitFor, withTimeout } from './helpers.mjs';
import {
  buildConfig,
  metric,
  plain,
  rssKb,
  sdkOn,
  spawnRusher,
  startReceiver,
  subscribeSigned,
  summarizeEvents,
  wsClient,
} from './webhook-helpers.mjs';

const T = { timeout: 20000 };

// Short settings so the suite is fast.
const FAST = { batch_ms: 50, backoff_ms: 100, timeout_ms: 1000, max_attempts: 5, member_removed_delay_ms: 300, channel_vacated_delay_ms: 300 };
const REMOVAL_DELAY = FAST.member_removed_delay_ms;
const VACATED_DELAY = FAST.channel_vacated_delay_ms;

const APP_A = { id: 'wh-a', key: 'wh-a-key', secret: 'wh-a-secret' };
const APP_B = { id: 'wh-b', key: 'wh-b-key', secret: 'wh-b-secret' };
const APP_RETRY = { id: 'wh-retry', key: 'wh-retry-key', secret: 'wh-retry-secret' };
const APP_ORDER = { id: 'wh-order', key: 'wh-order-key', secret: 'wh-order-secret' };
const EXTRA_HEADERS = { 'X-Custom-Token': 'tok-123', 'X-Deployment': 'webhooks-suite' };

let uid = 0;
const RUN = Date.now().toString(36).slice(-5);
const chan = (prefix) => `${prefix}-${RUN}-${(uid += 1)}`;

// Server A and its receivers, shared by the functional tests.
let server;
let rAll; // app A, every event type, extra headers
let rOccupied; // app A, event_types = ["channel_occupied"]
let rPresence; // app A, filter_prefix = "presence-"
let rB; // app B
let rRetry; // app retry: 500, 500, then 200
let rOrder; // app order: 500 for the first request, then 200
const cleanups = [];

/** Close everything a test opened, even when it failed. */
function track(t, client) {
  t.after(() => client.close());
  return client;
}

async function connect(t, app = APP_A, srv = server) {
  const c = track(t, wsClient(srv.port, app.key));
  await c.ready;
  return c;
}

before(async () => {
  rAll = await startReceiver();
  rOccupied = await startReceiver();
  rPresence = await startReceiver();
  rB = await startReceiver();
  rRetry = await startReceiver((index) => (index < 2 ? 500 : 200));
  rOrder = await startReceiver((index) => (index === 0 ? 500 : 200));
  cleanups.push(() => Promise.all([rAll, rOccupied, rPresence, rB, rRetry, rOrder].map((r) => r.stop())));
  server = await spawnRusher(
    buildConfig({
      webhooks: FAST,
      apps: [
        {
          ...APP_A,
          client_events: true,
          webhooks: [
            { url: rAll.url, headers: EXTRA_HEADERS },
            { url: rOccupied.url, event_types: ['channel_occupied'] },
            { url: rPresence.url, filter_prefix: 'presence-' },
          ],
        },
        { ...APP_B, webhooks: [{ url: rB.url }] },
        { ...APP_RETRY, webhooks: [{ url: rRetry.url, event_types: ['channel_occupied', 'channel_vacated'] }] },
        { ...APP_ORDER, webhooks: [{ url: rOrder.url, event_types: ['channel_occupied', 'channel_vacated'] }] },
      ],
    }),
  );
  cleanups.push(() => server.kill());
});

after(async () => {
  for (const fn of cleanups.reverse()) {
    try {
      await fn();
    } catch {
      /* keep cleaning */
    }
  }
});

/** Events of one receiver for one channel (and optionally one name). */
const eventsOf = (receiver, channel, name) =>
  receiver.events().filter((e) => e.channel === channel && (name === undefined || e.name === name));

/** A channel's occupied/vacated and member events at one receiver, in arrival order (no subscription_count). */
const lifecycle = (receiver, channel) => eventsOf(receiver, channel).filter((e) => e.name !== 'subscription_count');

/** Assert a webhook request verifies with the SDK of `app`, and a tampered copy does not. */
function assertSigned(request, app) {
  const sdk = sdkOn(server, app);
  const hook = sdk.webhook({ headers: request.headers, rawBody: request.rawBody });
  assert.equal(hook.isValid(), true, `SDK rejected the webhook: headers ${JSON.stringify(request.headers)} body ${request.rawBody}`);
  return hook;
}

// ---------------------------------------------------------------------------

test('every webhook request is signed for the SDK, carries X-Pusher-Key, time_ms, events and the configured headers', T, async (t) => {
  const channel = chan('sig');
  const c = await connect(t);
  const before = Date.now();
  await c.subscribe(channel);
  const ev = await rAll.waitEvent((e) => e.channel === channel && e.name === 'channel_occupied', 3000, `occupied ${channel}`);
  const req = ev._req;

  // The official SDK validates it (content type, key and HMAC of the raw body).
  const hook = assertSigned(req, APP_A);
  assert.equal(req.method, 'POST');
  assert.equal(req.headers['x-pusher-key'], APP_A.key);
  assert.match(req.headers['x-pusher-signature'], /^[0-9a-f]{64}$/);
  assert.equal(req.headers['content-type'], 'application/json');

  // Body: {time_ms, events}.
  assert.equal(typeof req.json.time_ms, 'number', `time_ms: ${req.rawBody}`);
  assert.ok(
    req.json.time_ms >= before - 5000 && req.json.time_ms <= Date.now() + 5000,
    `time_ms ${req.json.time_ms} is not now (${Date.now()})`,
  );
  assert.ok(Array.isArray(req.json.events) && req.json.events.length >= 1, `events: ${req.rawBody}`);
  assert.ok(hook.getEvents().some((e) => e.name === 'channel_occupied' && e.channel === channel));
  assert.equal(hook.getTime().getTime(), req.json.time_ms);

  // The configured extra headers arrive.
  assert.equal(req.headers['x-custom-token'], EXTRA_HEADERS['X-Custom-Token']);
  assert.equal(req.headers['x-deployment'], EXTRA_HEADERS['X-Deployment']);

  // The check is real: a tampered body, a wrong key or a wrong secret fail it.
  const sdk = sdkOn(server, APP_A);
  const tampered = req.rawBody.replace(channel, `${channel}x`);
  assert.notEqual(tampered, req.rawBody);
  assert.equal(sdk.webhook({ headers: req.headers, rawBody: tampered }).isValid(), false, 'tampered body accepted');
  assert.equal(
    sdk.webhook({ headers: { ...req.headers, 'x-pusher-key': APP_B.key }, rawBody: req.rawBody }).isValid(),
    false,
    'wrong key accepted',
  );
  assert.equal(sdkOn(server, { ...APP_A, secret: 'not-the-secret' }).webhook({ headers: req.headers, rawBody: req.rawBody }).isValid(), false);
});

test('first subscriber sends channel_occupied {name, channel}; only the last one leaving sends channel_vacated', T, async (t) => {
  const channel = chan('occ');
  const a = await connect(t);
  const b = await connect(t);
  await a.subscribe(channel);
  const occupied = await rAll.waitEvent((e) => e.channel === channel && e.name === 'channel_occupied');
  assert.deepEqual(plain(occupied), { name: 'channel_occupied', channel });

  await b.subscribe(channel); // second subscriber: no new occupied
  a.unsubscribe(channel); // one left: not vacated yet
  await sleep(300);
  assert.equal(eventsOf(rAll, channel, 'channel_occupied').length, 1, summarizeEvents(eventsOf(rAll, channel)));
  assert.equal(eventsOf(rAll, channel, 'channel_vacated').length, 0, 'vacated while a subscriber remains');

  b.close(); // last subscriber goes away (connection dropped)
  const vacated = await rAll.waitEvent((e) => e.channel === channel && e.name === 'channel_vacated');
  assert.deepEqual(plain(vacated), { name: 'channel_vacated', channel });
  await sleep(200);
  assert.equal(eventsOf(rAll, channel, 'channel_vacated').length, 1, summarizeEvents(eventsOf(rAll, channel)));
});

test('presence join and leave send member_added / member_removed with the user_id, once per user', T, async (t) => {
  const channel = chan('presence-members');
  const sdk = sdkOn(server, APP_A);
  const alice1 = await connect(t);
  const alice2 = await connect(t);
  await subscribeSigned(alice1, sdk, channel, { user_id: 'alice', user_info: { name: 'Alice' } });
  const added = await rAll.waitEvent((e) => e.channel === channel && e.name === 'member_added');
  assert.deepEqual(plain(added), { name: 'member_added', channel, user_id: 'alice' });

  // A second socket of the same user is not a new member; closing it is not a removal.
  await subscribeSigned(alice2, sdk, channel, { user_id: 'alice', user_info: { name: 'Alice' } });
  alice2.close();
  await sleep(REMOVAL_DELAY + 300);
  assert.equal(eventsOf(rAll, channel, 'member_added').length, 1, summarizeEvents(eventsOf(rAll, channel)));
  assert.equal(eventsOf(rAll, channel, 'member_removed').length, 0, summarizeEvents(eventsOf(rAll, channel)));

  // The user's last socket leaves: member_removed (after the hold-back delay).
  const left = Date.now();
  alice1.unsubscribe(channel);
  const removed = await rAll.waitEvent((e) => e.channel === channel && e.name === 'member_removed', 3000);
  assert.deepEqual(plain(removed), { name: 'member_removed', channel, user_id: 'alice' });
  assert.ok(removed._req.at - left >= REMOVAL_DELAY - 50, `member_removed after ${removed._req.at - left} ms, delay is ${REMOVAL_DELAY}`);
  // The presence-prefixed endpoint got them too.
  await rPresence.waitEvent((e) => e.channel === channel && e.name === 'member_removed' && e.user_id === 'alice');
});

test('a member who leaves and rejoins within member_removed_delay_ms produces neither member_removed nor a second member_added', T, async (t) => {
  const channel = chan('presence-rejoin');
  const sdk = sdkOn(server, APP_A);
  const keeper = await connect(t); // keeps the channel occupied
  await subscribeSigned(keeper, sdk, channel, { user_id: 'keeper' });
  const first = await connect(t);
  await subscribeSigned(first, sdk, channel, { user_id: 'bob' });
  await rAll.waitEvent((e) => e.channel === channel && e.name === 'member_added' && e.user_id === 'bob');

  first.close(); // bob drops: the server has processed it once the keeper hears member_removed ...
  const left = Date.now();
  await keeper.next((f) => f.event === 'pusher_internal:member_removed' && f.channel === channel && f.dataParsed.user_id === 'bob');
  const again = await connect(t); // ... and bob is back well within the delay
  await subscribeSigned(again, sdk, channel, { user_id: 'bob' });
  assert.ok(Date.now() - left < REMOVAL_DELAY - 100, `rejoin took ${Date.now() - left} ms: not within the delay`);
  await sleep(REMOVAL_DELAY + 500);
  const bob = eventsOf(rAll, channel).filter((e) => e.user_id === 'bob');
  assert.deepEqual(
    bob.map((e) => e.name),
    ['member_added'],
    `bob's events: ${summarizeEvents(bob)}`,
  );

  // Control: leaving for good does produce member_removed.
  again.close();
  await rAll.waitEvent((e) => e.channel === channel && e.name === 'member_removed' && e.user_id === 'bob', 3000);
});

test('the last member leaving a presence channel: member_removed arrives before channel_vacated, never after', T, async (t) => {
  const channel = chan('presence-last');
  const sdk = sdkOn(server, APP_A);
  const alice = await connect(t);
  await subscribeSigned(alice, sdk, channel, { user_id: 'alice' });
  await rAll.waitEvent((e) => e.channel === channel && e.name === 'member_added');
  await rAll.waitEvent((e) => e.channel === channel && e.name === 'channel_occupied');
  alice.unsubscribe(channel);
  await rAll.waitEvent((e) => e.channel === channel && e.name === 'channel_vacated', REMOVAL_DELAY + 3000);
  await rAll.waitEvent((e) => e.channel === channel && e.name === 'member_removed', 3000);
  // In arrival order (requests in the order received, events in batch order).
  const names = lifecycle(rAll, channel).map((e) => e.name);
  assert.deepEqual(names, ['member_added', 'channel_occupied', 'member_removed', 'channel_vacated'], summarizeEvents(eventsOf(rAll, channel)));
  // The presence-prefix endpoint sees the same order.
  await rPresence.waitEvent((e) => e.channel === channel && e.name === 'channel_vacated', 3000);
  assert.deepEqual(
    lifecycle(rPresence, channel).map((e) => e.name).slice(-2),
    ['member_removed', 'channel_vacated'],
    summarizeEvents(eventsOf(rPresence, channel)),
  );
});

test('the only member leaving and rejoining within the delay: no member_removed, channel_vacated or second channel_occupied', T, async (t) => {
  const channel = chan('presence-reload');
  const sdk = sdkOn(server, APP_A);
  const first = await connect(t);
  await subscribeSigned(first, sdk, channel, { user_id: 'erin' });
  await rAll.waitEvent((e) => e.channel === channel && e.name === 'channel_occupied');
  const left = Date.now();
  await first.end(); // a page reload: the socket goes, the channel is empty ...
  const again = await connect(t); // ... and the user is back within the delay
  await subscribeSigned(again, sdk, channel, { user_id: 'erin' });
  assert.ok(Date.now() - left < REMOVAL_DELAY - 100, `rejoin took ${Date.now() - left} ms: not within the delay`);
  await sleep(REMOVAL_DELAY + 500);
  assert.deepEqual(
    lifecycle(rAll, channel).map((e) => e.name),
    ['member_added', 'channel_occupied'],
    summarizeEvents(eventsOf(rAll, channel)),
  );
  // Control: leaving for good sends both, removal first.
  again.close();
  await rAll.waitEvent((e) => e.channel === channel && e.name === 'channel_vacated', REMOVAL_DELAY + 3000);
  assert.deepEqual(
    lifecycle(rAll, channel).map((e) => e.name).slice(2),
    ['member_removed', 'channel_vacated'],
    summarizeEvents(eventsOf(rAll, channel)),
  );
});

test('a page reload (socket closed, a new one joins a public and a presence channel again within the hold-back) sends no webhook for either; leaving for good sends one channel_vacated each, after the hold-back', T, async (t) => {
  const pub = chan('room');
  const pres = chan('presence-room');
  const sdk = sdkOn(server, APP_A);
  const first = await connect(t);
  await first.subscribe(pub);
  await subscribeSigned(first, sdk, pres, { user_id: 'reloader' });
  await rAll.waitEvent((e) => e.channel === pub && e.name === 'channel_occupied');
  await rAll.waitEvent((e) => e.channel === pres && e.name === 'channel_occupied');
  const left = Date.now();
  await first.end(); // the page unloads: both channels are empty ...
  const again = await connect(t); // ... and the reloaded page joins both again
  await again.subscribe(pub);
  await subscribeSigned(again, sdk, pres, { user_id: 'reloader' });
  assert.ok(Date.now() - left < VACATED_DELAY - 100, `rejoin took ${Date.now() - left} ms: not within the hold-back`);
  await sleep(Math.max(VACATED_DELAY, REMOVAL_DELAY) + 500);
  assert.deepEqual(lifecycle(rAll, pub).map((e) => e.name), ['channel_occupied'], summarizeEvents(eventsOf(rAll, pub)));
  assert.deepEqual(lifecycle(rAll, pres).map((e) => e.name), ['member_added', 'channel_occupied'], summarizeEvents(eventsOf(rAll, pres)));
  // The count never dips to 0 for the backend: the dip travels with the cancelled vacated.
  assert.deepEqual(eventsOf(rAll, pub, 'subscription_count').map((e) => e.subscription_count), [1, 1], summarizeEvents(eventsOf(rAll, pub)));

  // Leaving for good: exactly one channel_vacated per channel, once the hold-back passed.
  const gone = Date.now();
  again.close();
  const vacated = await rAll.waitEvent((e) => e.channel === pub && e.name === 'channel_vacated', VACATED_DELAY + 3000);
  await rAll.waitEvent((e) => e.channel === pres && e.name === 'channel_vacated', VACATED_DELAY + 3000);
  assert.ok(vacated._req.at - gone >= VACATED_DELAY - 50, `channel_vacated after ${vacated._req.at - gone} ms, hold-back is ${VACATED_DELAY}`);
  await sleep(300);
  assert.deepEqual(lifecycle(rAll, pub).map((e) => e.name), ['channel_occupied', 'channel_vacated'], summarizeEvents(eventsOf(rAll, pub)));
  assert.deepEqual(
    lifecycle(rAll, pres).map((e) => e.name),
    ['member_added', 'channel_occupied', 'member_removed', 'channel_vacated'],
    summarizeEvents(eventsOf(rAll, pres)),
  );
  assert.deepEqual(eventsOf(rAll, pub, 'subscription_count').map((e) => e.subscription_count), [1, 1, 0], summarizeEvents(eventsOf(rAll, pub)));
});

test('a batch the receiver refuses once is retried before any later batch is sent: batches arrive in order', T, async (t) => {
  const c = await connect(t, APP_ORDER);
  const first = chan('order');
  await c.subscribe(first);
  // The first batch (channel_occupied) is refused; newer events follow at once.
  await waitFor(() => rOrder.requests.length >= 1, 3000, 5, 'the first webhook request');
  c.unsubscribe(first);
  const later = [chan('order'), chan('order')];
  for (const ch of later) {
    await c.subscribe(ch);
    c.unsubscribe(ch);
  }
  // Vacated are held back (channel_vacated_delay_ms): every occupied first, then the vacated in order.
  const expected = [
    ...[first, ...later].map((channel) => ({ name: 'channel_occupied', channel })),
    ...[first, ...later].map((channel) => ({ name: 'channel_vacated', channel })),
  ];
  await waitFor(() => rOrder.events().length >= expected.length, 5000, 20, 'every event accepted').catch((e) => {
    throw new Error(`${e.message}; requests: ${JSON.stringify(rOrder.requests.map((r) => [r.status, r.rawBody]))}`);
  });
  assert.equal(rOrder.requests[0].status, 500);
  const accepted = rOrder.events().map(plain);
  assert.deepEqual(accepted, expected, `accepted in this order: ${summarizeEvents(accepted)}`);
  // time_ms never goes back from one accepted batch to the next.
  const times = rOrder.accepted().map((r) => r.json.time_ms);
  assert.deepEqual(times, [...times].sort((a, b) => a - b), `time_ms of the accepted batches: ${times}`);
});

test('a client event sends client_event with channel, event, data, socket_id (and user_id on presence)', T, async (t) => {
  const sdk = sdkOn(server, APP_A);
  // Private channel: no user_id.
  const priv = chan('private-ce');
  const sender = await connect(t);
  const peer = await connect(t);
  await subscribeSigned(sender, sdk, priv);
  await subscribeSigned(peer, sdk, priv);
  sender.send({ event: 'client-greet', channel: priv, data: { hello: 'world', n: 1 } });
  await peer.next((f) => f.event === 'client-greet' && f.channel === priv); // delivered to the peer
  const ce = await rAll.waitEvent((e) => e.channel === priv && e.name === 'client_event');
  assert.equal(ce.event, 'client-greet');
  assert.equal(ce.socket_id, sender.socketId);
  assert.equal(typeof ce.data, 'string', `data must be a string: ${JSON.stringify(ce.data)}`);
  assert.deepEqual(JSON.parse(ce.data), { hello: 'world', n: 1 });
  assert.equal('user_id' in ce, false, `user_id on a private channel: ${JSON.stringify(plain(ce))}`);

  // Presence channel: with the sender's user_id.
  const pres = chan('presence-ce');
  const carol = await connect(t);
  const dan = await connect(t);
  await subscribeSigned(carol, sdk, pres, { user_id: 'carol' });
  await subscribeSigned(dan, sdk, pres, { user_id: 'dan' });
  carol.send({ event: 'client-wave', channel: pres, data: 'just text' });
  const pe = await rAll.waitEvent((e) => e.channel === pres && e.name === 'client_event');
  assert.deepEqual(plain(pe), {
    name: 'client_event',
    channel: pres,
    event: 'client-wave',
    data: 'just text',
    socket_id: carol.socketId,
    user_id: 'carol',
  });
});

test('subscribing to an empty cache channel sends cache_miss; a filled one does not', T, async (t) => {
  const channel = chan('cache-wh');
  const first = await connect(t);
  await first.subscribe(channel);
  await first.next((f) => f.event === 'pusher:cache_miss' && f.channel === channel);
  const miss = await rAll.waitEvent((e) => e.channel === channel && e.name === 'cache_miss');
  assert.deepEqual(plain(miss), { name: 'cache_miss', channel });

  await sdkOn(server, APP_A).trigger(channel, 'fill', { v: 1 });
  await first.next((f) => f.event === 'fill' && f.channel === channel);
  const second = await connect(t);
  await second.subscribe(channel);
  await second.next((f) => f.event === 'fill' && f.channel === channel); // got the cached event
  await sleep(300);
  assert.equal(eventsOf(rAll, channel, 'cache_miss').length, 1, summarizeEvents(eventsOf(rAll, channel)));
});

test('a receiver answering 500 twice then 200 gets the same batch again and loses no event; rusher_webhooks_retried_total goes up', T, async (t) => {
  const retriedBefore = await metric(server, 'rusher_webhooks_retried_total');
  const channels = [chan('retry'), chan('retry'), chan('retry')];
  const c = await connect(t, APP_RETRY);
  for (const ch of channels) await c.subscribe(ch);
  for (const ch of channels) c.unsubscribe(ch);
  const sent = channels.flatMap((channel) => [
    { name: 'channel_occupied', channel },
    { name: 'channel_vacated', channel },
  ]);
  const key = (e) => `${e.name}|${e.channel}`;

  await waitFor(() => rRetry.events().length >= sent.length, 5000, 20, 'every event accepted by the retry receiver').catch((e) => {
    throw new Error(`${e.message}; requests: ${JSON.stringify(rRetry.requests.map((r) => [r.status, r.rawBody]))}`);
  });
  await sleep(500); // nothing else (no duplicates) may follow

  const failed = rRetry.requests.filter((r) => r.status === 500);
  assert.equal(failed.length, 2, 'the receiver refused exactly two requests');
  // The refused batches were sent again, byte for byte (same signature, same body).
  for (const f of failed) {
    assert.ok(
      rRetry.accepted().some((a) => a.rawBody === f.rawBody && a.headers['x-pusher-signature'] === f.headers['x-pusher-signature']),
      `refused batch never re-sent: ${f.rawBody}`,
    );
  }
  // Events accepted == events sent: none lost, none duplicated.
  const accepted = rRetry.events().map(plain);
  assert.deepEqual(accepted.map(key).sort(), sent.map(key).sort(), `accepted: ${summarizeEvents(accepted)}`);
  for (const r of rRetry.requests) assertSigned(r, APP_RETRY);

  const retriedAfter = await metric(server, 'rusher_webhooks_retried_total');
  assert.ok(retriedAfter - retriedBefore >= 2, `rusher_webhooks_retried_total ${retriedBefore} -> ${retriedAfter}`);
});

test('filters: event_types sends only the listed types, filter_prefix only matching channels, and an app never gets another app\'s events', T, async (t) => {
  const pub = chan('filt');
  const pres = chan('presence-filt');
  const sdk = sdkOn(server, APP_A);
  const a = await connect(t);
  await a.subscribe(pub);
  await subscribeSigned(a, sdk, pres, { user_id: 'erin' });
  const bClient = await connect(t, APP_B);
  const bChannel = chan('only-b');
  await bClient.subscribe(bChannel);
  a.unsubscribe(pub);
  a.unsubscribe(pres);
  bClient.unsubscribe(bChannel);
  // Wait until the all-events endpoints have seen everything, then a bit more.
  await rAll.waitEvent((e) => e.channel === pub && e.name === 'channel_vacated');
  await rAll.waitEvent((e) => e.channel === pres && e.name === 'member_removed', 3000);
  await rB.waitEvent((e) => e.channel === bChannel && e.name === 'channel_vacated');
  await sleep(300);

  // event_types = ["channel_occupied"]: occupied arrives, vacated and anything else never.
  await rOccupied.waitEvent((e) => e.channel === pub && e.name === 'channel_occupied');
  const otherTypes = rOccupied.events().filter((e) => e.name !== 'channel_occupied');
  assert.deepEqual(otherTypes.map(plain), [], 'event_types endpoint got other types');
  assert.ok(rOccupied.events().length > 0);

  // filter_prefix = "presence-": presence channels only.
  await rPresence.waitEvent((e) => e.channel === pres && e.name === 'channel_vacated');
  await rPresence.waitEvent((e) => e.channel === pres && e.name === 'member_added');
  const offPrefix = rPresence.events().filter((e) => !e.channel.startsWith('presence-'));
  assert.deepEqual(offPrefix.map(plain), [], 'filter_prefix endpoint got other channels');

  // App isolation: B's receiver only has B's channel, signed for B; A's receivers never see it.
  assert.ok(eventsOf(rB, bChannel, 'channel_occupied').length === 1);
  for (const r of [rAll, rOccupied, rPresence]) {
    assert.deepEqual(eventsOf(r, bChannel).map(plain), [], 'app A endpoint got app B events');
    for (const req of r.requests) assert.equal(req.headers['x-pusher-key'], APP_A.key);
  }
  assert.deepEqual(
    rB.events().filter((e) => !e.channel.startsWith('only-b-')).map(plain),
    [],
    'app B endpoint got app A events',
  );
  for (const req of rB.requests) {
    assert.equal(req.headers['x-pusher-key'], APP_B.key);
    assertSigned(req, APP_B);
    assert.equal(sdkOn(server, APP_A).webhook({ headers: req.headers, rawBody: req.rawBody }).isValid(), false);
  }
  // The extra headers belong to the endpoint that configured them.
  for (const req of [...rOccupied.requests, ...rB.requests]) assert.equal(req.headers['x-custom-token'], undefined);
});

test('every webhook request of app A\'s endpoints verifies with the SDK', T, async () => {
  const all = [...rAll.requests, ...rOccupied.requests, ...rPresence.requests];
  assert.ok(all.length >= 10, `only ${all.length} requests`);
  for (const req of all) assertSigned(req, APP_A);
  for (const req of rAll.requests) assert.equal(req.headers['x-custom-token'], EXTRA_HEADERS['X-Custom-Token']);
});

// ---------------------------------------------------------------------------
// A receiver that is down never slows delivery nor grows memory
// ---------------------------------------------------------------------------

const N_TRIGGERS = 500;

/** Subscribe/unsubscribe `cycles` times over 50 channels, in pipelined chunks (4 webhook events a cycle). */
async function churn(client, cycles, stop = () => false) {
  let done = 0;
  while (done < cycles && !stop()) {
    const n = Math.min(100, cycles - done);
    const target = client.count('pusher_internal:subscription_succeeded') + n;
    for (let i = 0; i < n; i += 1) {
      const ch = `churn-${(done + i) % 50}`;
      client.send({ event: 'pusher:subscribe', data: { channel: ch } });
      client.send({ event: 'pusher:unsubscribe', data: { channel: ch } });
    }
    await waitFor(() => client.count('pusher_internal:subscription_succeeded') >= target, 10000, 5, 'churn chunk');
    done += n;
  }
  return done;
}

/** N triggers (10 in flight) to one subscriber while churn runs on the same app; ms until all arrived. */
async function measureDelivery(t, srv, app) {
  const channel = chan('load');
  const sub = track(t, wsClient(srv.port, app.key));
  await sub.ready;
  await sub.subscribe(channel);
  const churner = track(t, wsClient(srv.port, app.key));
  await churner.ready;
  let stop = false;
  const churning = churn(churner, 1e9, () => stop);
  const sdk = sdkOn(srv, app);
  const t0 = Date.now();
  let nextI = 0;
  const worker = async () => {
    while (nextI < N_TRIGGERS) {
      const i = nextI;
      nextI += 1;
      const res = await sdk.trigger(channel, 'load', { i });
      if (res.status !== 200) throw new Error(`trigger ${i}: ${res.status}`);
    }
  };
  try {
    await Promise.all(Array.from({ length: 10 }, worker));
    await waitFor(() => sub.count('load') >= N_TRIGGERS, 15000, 5, `${N_TRIGGERS} messages on ${app.id}`).catch(() => {});
  } finally {
    stop = true;
  }
  const ms = Math.max(1, Date.now() - t0);
  const cycles = await churning;
  const got = sub.frames.filter((f) => f.event === 'load' && f.channel === channel).map((f) => f.dataParsed.i);
  return { ms, got, cycles, rate: (N_TRIGGERS * 1000) / ms };
}

test('a receiver that never answers (and one on a closed port) does not slow delivery, lose messages, or grow memory', { timeout: 45000 }, async (t) => {
  const hanging = await startReceiver(() => 'hang');
  t.after(() => hanging.stop());
  const closedPort = await freePort();
  const DOWN = { id: 'down-app', key: 'down-key', secret: 'down-secret' };
  const CALM = { id: 'calm-app', key: 'calm-key', secret: 'calm-secret' };
  const srv = await spawnRusher(
    buildConfig({
      webhooks: { ...FAST, max_attempts: 3 },
      apps: [
        // The churn is a deliberate subscribe/unsubscribe flood (the load
        // that makes webhooks): subscription_rate off, or it is refused.
        {
          ...DOWN,
          max_channels_per_connection: 200,
          subscription_rate: 0,
          webhooks: [{ url: hanging.url }, { url: `http://127.0.0.1:${closedPort}/hook` }],
        },
        { ...CALM, max_channels_per_connection: 200, subscription_rate: 0 },
      ],
    }),
  );
  t.after(() => srv.kill());

  // The same load (N triggers to one subscriber while another socket churns
  // subscriptions) on an app without webhooks and on the app whose receivers
  // are down; best of two rounds each, alternated, to damp machine noise.
  const calm = [await measureDelivery(t, srv, CALM)];
  const rssBefore = rssKb(srv.pid);

  // 20k webhook events (occupied, vacated, 2x subscription_count per cycle) to dead receivers.
  const churner = track(t, wsClient(srv.port, DOWN.key));
  await churner.ready;
  await churn(churner, 5000);

  const down = [await measureDelivery(t, srv, DOWN)];
  calm.push(await measureDelivery(t, srv, CALM));
  down.push(await measureDelivery(t, srv, DOWN));
  const rssAfter = rssKb(srv.pid);
  const best = (runs) => Math.max(...runs.map((r) => r.rate));
  const show = (runs) => runs.map((r) => `${r.ms} ms/${r.rate.toFixed(0)} per s/churn ${r.cycles}`).join(', ');
  const report = `calm [${show(calm)}], down [${show(down)}], RSS ${rssBefore} -> ${rssAfter} kB`;
  t.diagnostic(report);

  // No message lost (concurrent triggers may arrive in any order).
  const all = Array.from({ length: N_TRIGGERS }, (_, i) => i);
  for (const run of [...calm, ...down]) {
    assert.deepEqual([...run.got].sort((x, y) => x - y), all, `lost or duplicated messages; ${report}`);
  }
  // No slowdown.
  assert.ok(best(down) >= 0.5 * best(calm), `delivery slowed down with the receiver down: ${report}`);
  // Bounded memory.
  assert.ok(rssAfter - rssBefore < 50 * 1024, `RSS grew ${((rssAfter - rssBefore) / 1024).toFixed(1)} MB; ${report}`);

  // Webhooks were really attempted, and the losses are counted.
  assert.ok(hanging.requests.length > 0, 'the hanging receiver never got a request');
  const lost = await waitFor(
    async () => {
      const n = (await metric(srv, 'rusher_webhooks_dropped_total')) + (await metric(srv, 'rusher_webhooks_failed_total'));
      return n > 0 ? n : 0;
    },
    8000,
    200,
    'rusher_webhooks_dropped_total + rusher_webhooks_failed_total > 0',
  );
  assert.ok(lost > 0);
  t.diagnostic(
    `hanging receiver got ${hanging.requests.length} requests; dropped ${await metric(srv, 'rusher_webhooks_dropped_total')}, ` +
      `failed ${await metric(srv, 'rusher_webhooks_failed_total')}, retried ${await metric(srv, 'rusher_webhooks_retried_total')}`,
  );
  assert.equal(await metric(srv, 'rusher_webhooks_sent_total'), 0, 'a dead receiver cannot have accepted a batch');
});

// ---------------------------------------------------------------------------
// Shutdown flush
// ---------------------------------------------------------------------------

test('on SIGTERM pending webhooks (and those the closing sockets cause) arrive before the process exits 0', T, async (t) => {
  const receiver = await startReceiver();
  t.after(() => receiver.stop());
  const APP = { id: 'flush-app', key: 'flush-key', secret: 'flush-secret' };
  // Long batch interval and removal delay: nothing is sent by the timer before shutdown.
  const srv = await spawnRusher(
    buildConfig({
      server: { shutdown_grace: 3 },
      webhooks: { ...FAST, batch_ms: 5000, member_removed_delay_ms: 10000, channel_vacated_delay_ms: 10000 },
      apps: [{ ...APP, webhooks: [{ url: receiver.url }] }],
    }),
  );
  t.after(() => srv.kill());
  const pub = chan('flush');
  const pres = chan('presence-flush');
  const a = track(t, wsClient(srv.port, APP.key));
  const b = track(t, wsClient(srv.port, APP.key));
  await Promise.all([a.ready, b.ready]);
  await a.subscribe(pub);
  await subscribeSigned(b, sdkOn(srv, APP), pres, { user_id: 'frank' });

  const t0 = Date.now();
  srv.child.kill('SIGTERM');
  const exit = await withTimeout(srv.exited, 8000, 'server did not exit after SIGTERM');
  const log = srv.log.join('');
  assert.equal(exit.signal, null, `killed by ${exit.signal}\n${log}`);
  assert.equal(exit.code, 0, `exit code ${exit.code}\n${log}`);
  assert.ok(exit.at - t0 <= 6000, `exit took ${exit.at - t0} ms`);

  const got = receiver.events().map(plain);
  const expected = [
    { name: 'channel_occupied', channel: pub },
    { name: 'channel_vacated', channel: pub },
    { name: 'channel_occupied', channel: pres },
    { name: 'member_added', channel: pres, user_id: 'frank' },
    { name: 'member_removed', channel: pres, user_id: 'frank' },
    { name: 'channel_vacated', channel: pres },
  ];
  for (const e of expected) {
    assert.ok(
      got.some((g) => isDeepStrictEqual(g, e)),
      `missing ${JSON.stringify(e)} before exit; received ${summarizeEvents(got)}\n${log}`,
    );
  }
  for (const req of receiver.requests) {
    assert.ok(req.at <= exit.at, 'request after exit');
    assert.equal(sdkOn(srv, APP).webhook({ headers: req.headers, rawBody: req.rawBody }).isValid(), true);
  }
});
