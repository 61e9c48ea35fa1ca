// The cluster cases, run by cluster.test.mjs on one redis-server and by
// redis-cluster.test.mjs on a Redis Cluster of three masters: several rusher
// nodes sharing one Redis (adapter = "redis") behave as one
// Pusher deployment: fan-out, socket exclusion, presence, HTTP queries,
// client events, terminate_connections, cache channels and webhooks span the
// nodes; a dead node's members vanish; a Redis outage keeps local delivery and
// the cluster heals when Redis returns (delivery, then the shared counts the
// nodes re-announce to a Redis that restarted empty).
//
// The suite runs its own redis-server (REDIS_SERVER_BIN or `redis-server` on
// PATH) on a free port and three nodes (A, B, C) with one config written to a
// temp dir; the kill -9 test adds a fourth node D. Every process is killed at
// the end, also on failure.

// On a Redis Cluster the two tests that stop and restart "the" Redis are
// left out (redis-cluster.test.mjs stops one shard instead).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { APPS, sleep, waitFor } from './helpers.mjs';
import { metric, startReceiver, summarizeEvents } from './webhook-helpers.mjs';
import {
  WEBHOOK_APP,
  adapterLogs,
  busSpy,
  clusterConfig,
  frames,
  getJson,
  killAll,
  listen,
  pusherOn,
  rawOn,
  sdkOn,
  spawnNode,
  startRedis,
  subscribed,
  writeConfig,
} from './cluster-helpers.mjs';
import { startRedisCluster } from './redis-cluster-helpers.mjs';

/**
 * Registers the cluster cases. `redisKind`: 'single' (one redis-server) or
 * 'cluster' (three masters). Returns getters for suites adding their own cases.
 */
export function clusterSuite({ redisKind }) {
  const single = redisKind === 'single';
  const T = { timeout: 25000 };
  const RUN = `${process.pid.toString(36)}${Date.now().toString(36).slice(-5)}`;
  let uid = 0;
  const chan = (prefix) => `${prefix}-${RUN}-${(uid += 1)}`;

  let redis;
  let receiver;
  let allEvents; // WEBHOOK_APP's receiver of every event type
  let config;
  let A;
  let B;
  let C;

  /** Every node has joined the bus: an event triggered on each reaches a subscriber on each other. */
  async function waitClusterReady(nodes) {
    const probe = `cluster-probe-${RUN}`;
    const clients = [];
    const fake = { after: (fn) => clients.push(fn) };
    try {
      const subs = [];
      for (const node of nodes) {
        const c = await rawOn(fake, node);
        await c.subscribe(probe);
        subs.push(c);
      }
      for (const [i, node] of nodes.entries()) {
        const sdk = sdkOn(node);
        const marker = `from-${node.name}`;
        await waitFor(
          async () => {
            await sdk.trigger(probe, 'probe', marker);
            await sleep(150);
            return subs.every((c, j) => j === i || c.frames.some((f) => f.event === 'probe' && f.dataParsed === marker));
          },
          15000,
          100,
          `node ${node.name} reaching every other node`,
        );
      }
    } finally {
      for (const fn of clients) fn();
    }
  }

  before(async () => {
    redis = single ? await startRedis() : await startRedisCluster();
    receiver = await startReceiver();
    allEvents = await startReceiver();
    config = writeConfig(
      clusterConfig({
        redisUrl: redis.url,
        prefix: `rusher-test-${RUN}`,
        webhookUrl: receiver.url,
        allEventsUrl: allEvents.url,
        cluster: !single,
      }),
    );
    [A, B, C] = await Promise.all([spawnNode('A', config.path), spawnNode('B', config.path), spawnNode('C', config.path)]);
    await waitClusterReady([A, B, C]);
  });

  after(async () => {
    await killAll();
    if (!single && redis) await redis.shutdown();
    if (receiver) await receiver.stop();
    if (allEvents) await allEvents.stop();
    if (config) fs.rmSync(config.dir, { recursive: true, force: true });
  });

  /** The Redis adapter's log lines and every warning/error of some nodes, for failure messages. */
  const logsOf = (...nodes) => adapterLogs(nodes);

  test('an event triggered through the SDK on node A reaches pusher-js subscribers on A, B and C', T, async (t) => {
    const name = chan('fanout');
    const clients = await Promise.all([A, B, C].map((n) => pusherOn(t, n)));
    const streams = [];
    for (const client of clients) streams.push(listen(await subscribed(client, name), 'greet'));
    await sdkOn(A).trigger(name, 'greet', { hello: 'cluster' });
    for (const [i, s] of streams.entries()) {
      const { data } = await s.next(3000).catch((e) => {
        throw new Error(`client on node ${'ABC'[i]}: ${e.message}`);
      });
      assert.deepEqual(data, { hello: 'cluster' });
    }
    // Exactly once each: the bus does not echo the publish back to A nor duplicate it.
    await sleep(300);
    assert.deepEqual(
      streams.map((s) => s.events.length),
      [1, 1, 1],
    );
  });

  test('socket_id exclusion works across nodes: the excluded socket on B gets nothing, a socket on C gets it', T, async (t) => {
    const name = chan('exclude');
    const onB = await pusherOn(t, B);
    const onC = await pusherOn(t, C);
    const sB = listen(await subscribed(onB, name), 'news');
    const sC = listen(await subscribed(onC, name), 'news');
    await sdkOn(A).trigger(name, 'news', 'first', { socket_id: onB.connection.socket_id });
    assert.equal((await sC.next()).data, 'first');
    await sB.none(500);
    // B was listening all along: an event without exclusion reaches it.
    await sdkOn(A).trigger(name, 'news', 'second');
    assert.equal((await sB.next()).data, 'second');
    assert.equal((await sC.next()).data, 'second');
    assert.deepEqual(
      sB.events.map((e) => e.data),
      ['second'],
    );
  });

  test('presence across nodes: one user on A and B is one member; leaving the last node removes it', T, async (t) => {
    const name = `presence-${chan('members')}`;
    // The observer on C.
    const observer = await pusherOn(t, C, { presence: { user_id: 'observer', user_info: { role: 'watch' } } });
    const observerFrames = frames(observer);
    const obsChannel = await subscribed(observer, name);
    const added = listen(obsChannel, 'pusher:member_added');
    const removed = listen(obsChannel, 'pusher:member_removed');
    assert.equal(obsChannel.members.count, 1);

    const shared = { user_id: 'shared-user', user_info: { name: 'Ada' } };
    const onA = await pusherOn(t, A, { presence: shared });
    const onB = await pusherOn(t, B, { presence: shared });

    await subscribed(onA, name);
    const first = await added.next(3000);
    assert.equal(first.data.id, 'shared-user');
    assert.deepEqual(first.data.info, { name: 'Ada' });

    const chB = await subscribed(onB, name);
    // The second socket of the same user (on another node) is not a new member.
    await added.none(500);
    assert.equal(obsChannel.members.count, 2, 'observer counts the user once');
    assert.equal(chB.members.count, 2, 'the joiner on B sees observer + itself, members from every node');
    assert.deepEqual(Object.keys(chB.members.members).sort(), ['observer', 'shared-user']);
    assert.deepEqual(chB.members.members['shared-user'], { name: 'Ada' });
    for (const node of [A, B, C]) {
      const info = await getJson(node, `/channels/${name}`, { info: 'user_count,subscription_count' });
      assert.equal(info.user_count, 2, `user_count via node ${node.name}`);
      assert.equal(info.subscription_count, 3, `subscription_count via node ${node.name}`);
    }
    assert.equal(
      observerFrames.filter((f) => f.event === 'pusher_internal:member_added' && f.channel === name).length,
      1,
      'member_added frame delivered once to the observer',
    );

    // Leaving on A: the user is still on B, still a member.
    onA.disconnect();
    await removed.none(700);
    assert.equal(obsChannel.members.count, 2);
    await waitFor(async () => (await getJson(B, `/channels/${name}`, { info: 'subscription_count' })).subscription_count === 2, 3000, 50, 'subscription_count 2 after A left');
    assert.equal((await getJson(A, `/channels/${name}`, { info: 'user_count' })).user_count, 2);

    // Leaving on B too: now the member is gone for everybody.
    onB.unsubscribe(name);
    const gone = await removed.next(3000);
    assert.equal(gone.data.id, 'shared-user');
    assert.equal(obsChannel.members.count, 1);
    for (const node of [A, B, C]) {
      assert.equal((await getJson(node, `/channels/${name}`, { info: 'user_count' })).user_count, 1, `user_count via node ${node.name}`);
    }
    await removed.none(300);
    assert.equal(added.events.length, 1, 'member_added seen once for the whole join');
  });

  test('HTTP channel and user queries agree on every node', T, async (t) => {
    const base = chan('q');
    const pub = `${base}-pub`;
    const pres = `presence-${base}`;
    const a1 = await pusherOn(t, A);
    const b1 = await pusherOn(t, B);
    const b2 = await pusherOn(t, B);
    await Promise.all([subscribed(a1, pub), subscribed(b1, pub), subscribed(b2, pub)]);
    const pa = await pusherOn(t, A, { presence: { user_id: 'qa', user_info: {} } });
    const pc = await pusherOn(t, C, { presence: { user_id: 'qc', user_info: {} } });
    const pc2 = await pusherOn(t, C, { presence: { user_id: 'qa', user_info: {} } });
    await subscribed(pa, pres);
    await subscribed(pc, pres);
    await subscribed(pc2, pres);

    const views = [];
    for (const node of [A, B, C]) {
      views.push({
        node: node.name,
        list: await getJson(node, '/channels', { filter_by_prefix: base, info: 'subscription_count' }),
        presenceList: await getJson(node, '/channels', { filter_by_prefix: 'presence-', info: 'user_count' }),
        pub: await getJson(node, `/channels/${pub}`, { info: 'subscription_count' }),
        pres: await getJson(node, `/channels/${pres}`, { info: 'subscription_count,user_count' }),
        users: (await getJson(node, `/channels/${pres}/users`)).users.map((u) => u.id).sort(),
      });
    }
    for (const v of views) {
      assert.deepEqual(v.list.channels, { [pub]: { subscription_count: 3 } }, `GET /channels on ${v.node}`);
      assert.deepEqual(v.presenceList.channels[pres], { user_count: 2 }, `GET /channels presence on ${v.node}`);
      assert.equal(v.pub.occupied, true);
      assert.equal(v.pub.subscription_count, 3, `subscription_count of ${pub} on ${v.node}`);
      assert.equal(v.pres.subscription_count, 3, `subscription_count of ${pres} on ${v.node}`);
      assert.equal(v.pres.user_count, 2, `user_count of ${pres} on ${v.node}`);
      assert.deepEqual(v.users, ['qa', 'qc'], `/users on ${v.node}`);
    }

    // A change on one node shows everywhere.
    b2.unsubscribe(pub);
    for (const node of [A, B, C]) {
      await waitFor(
        async () => (await getJson(node, `/channels/${pub}`, { info: 'subscription_count' })).subscription_count === 2,
        3000,
        50,
        `subscription_count 2 on ${node.name}`,
      );
    }
  });

  test('an app with no occupied channel lists {"channels":{}} on every poll without a Redis error, and the cluster stays whole', T, async (t) => {
    // APPS.other: nobody subscribes to it in this suite, so its channel set in Redis is empty.
    const app = APPS.other;
    const errorsBefore = await Promise.all([A, B].map((n) => metric(n, 'rusher_redis_errors_total')));
    const logFrom = [A, B].map((n) => n.log.length);
    for (let i = 0; i < 10; i += 1) {
      for (const node of [A, B]) {
        assert.deepEqual(await getJson(node, '/channels', {}, app), { channels: {} }, `poll ${i} on ${node.name}`);
        assert.deepEqual(
          await getJson(node, '/channels', { filter_by_prefix: 'presence-', info: 'user_count' }, app),
          { channels: {} },
          `presence poll ${i} on ${node.name}`,
        );
      }
    }
    const errorsAfter = await Promise.all([A, B].map((n) => metric(n, 'rusher_redis_errors_total')));
    assert.deepEqual(errorsAfter, errorsBefore, `rusher_redis_errors_total moved:\n${logsOf(A, B)}`);
    for (const [i, node] of [A, B].entries()) {
      assert.doesNotMatch(node.log.slice(logFrom[i]).join(''), /redis unreachable/, `node ${node.name} went into its Redis-outage mode`);
    }
    // Still one cluster right after: a trigger on A reaches a subscriber of the app on B.
    const name = chan('after-empty-list');
    const onB = await rawOn(t, B, app);
    await onB.subscribe(name);
    await sdkOn(A, app).trigger(name, 'ping', 'cross-node');
    const f = await onB.next((x) => x.event === 'ping' && x.channel === name, 3000);
    assert.equal(f.dataParsed, 'cross-node');
  });

  test('client events from a client on A reach a client on B and are not echoed', T, async (t) => {
    const name = `private-${chan('chat')}`;
    const onA = await pusherOn(t, A);
    const onB = await pusherOn(t, B);
    const onC = await pusherOn(t, C);
    const chA = await subscribed(onA, name);
    const sA = listen(chA, 'client-typing');
    const sB = listen(await subscribed(onB, name), 'client-typing');
    const sC = listen(await subscribed(onC, name), 'client-typing');
    assert.equal(chA.trigger('client-typing', { who: 'a' }), true);
    assert.deepEqual((await sB.next()).data, { who: 'a' });
    assert.deepEqual((await sC.next()).data, { who: 'a' });
    await sA.none(500);
    assert.equal(sB.events.length, 1);
  });

  test('terminate_connections on node A closes the user\'s sockets on B (4009) and no others', T, async (t) => {
    const sdk = sdkOn(A);
    const signIn = async (client, id) => {
      client.send({ event: 'pusher:signin', data: sdk.authenticateUser(client.socketId, { id }) });
      await client.next((f) => f.event === 'pusher:signin_success');
    };
    const target = `doomed-${RUN}`;
    const bystander = `bystander-${RUN}`;
    const targetOnB = await rawOn(t, B);
    const targetOnC = await rawOn(t, C);
    const otherOnB = await rawOn(t, B);
    const anonOnB = await rawOn(t, B);
    await signIn(targetOnB, target);
    await signIn(targetOnC, target);
    await signIn(otherOnB, bystander);

    await sdk.terminateUserConnections(target);
    const closes = await Promise.all(
      [targetOnB, targetOnC].map((c) =>
        Promise.race([c.closed, sleep(3000).then(() => ({ code: 'still open after 3 s' }))]),
      ),
    );
    assert.equal(closes[0].code, 4009, 'the user\'s socket on B');
    assert.equal(closes[1].code, 4009, 'the user\'s socket on C');
    await sleep(300);
    for (const [what, c] of [
      ['another user on B', otherOnB],
      ['an anonymous socket on B', anonOnB],
    ]) {
      assert.equal(c.ws.readyState, 1, `${what} stays open`);
    }
    // ...and still works.
    const name = chan('after-terminate');
    await otherOnB.subscribe(name);
    await sdk.trigger(name, 'still-here', 'yes');
    await otherOnB.next((f) => f.event === 'still-here' && f.channel === name);
  });

  test('terminate_connections on node A also closes a presence member of the user on B that never signed in, and no other member', T, async (t) => {
    const sdk = sdkOn(A);
    const target = `member-${RUN}`;
    const bystander = `member-bystander-${RUN}`;
    const room = `presence-${chan('terminate')}`;
    const join = async (client, userId) => {
      const signed = sdk.authorizeChannel(client.socketId, room, { user_id: userId });
      await client.subscribe(room, signed);
    };
    // A public channel first, then the presence channel: no sign-in.
    const targetOnB = await rawOn(t, B);
    await targetOnB.subscribe(chan('public-first'));
    await join(targetOnB, target);
    const otherOnB = await rawOn(t, B);
    await join(otherOnB, bystander);

    await sdk.terminateUserConnections(target);
    const closed = await Promise.race([targetOnB.closed, sleep(3000).then(() => ({ code: 'still open after 3 s' }))]);
    assert.equal(closed.code, 4009, 'the presence member on B');
    await otherOnB.next((f) => f.event === 'pusher_internal:member_removed' && f.channel === room);
    assert.equal(otherOnB.ws.readyState, 1, 'the other member stays open');
    const members = await getJson(A, `/channels/${room}/users`);
    assert.deepEqual(members.users.map((u) => u.id), [bystander]);
  });

  test('a cache channel event published through A is served to a new subscriber on B', T, async (t) => {
    const name = `cache-${chan('last')}`;
    // An early subscriber on B sees a cache miss: nothing was published yet.
    const early = await pusherOn(t, B);
    const earlyMiss = listen(early.subscribe(name), 'pusher:cache_miss');
    await earlyMiss.next(3000);

    await sdkOn(A).trigger(name, 'price', { value: 1 });
    await sdkOn(A).trigger(name, 'price', { value: 2 });
    await sleep(100);

    const late = await pusherOn(t, B);
    const ch = late.subscribe(name);
    const price = listen(ch, 'price');
    const miss = listen(ch, 'pusher:cache_miss');
    assert.deepEqual((await price.next(3000)).data, { value: 2 }, 'the last event published on A');
    await price.none(300);
    assert.equal(miss.events.length, 0, 'no cache_miss');

    // The same on C, through the cache recorded in Redis.
    const third = await pusherOn(t, C);
    assert.deepEqual((await listen(third.subscribe(name), 'price').next(3000)).data, { value: 2 });
  });

  test('channel_occupied and channel_vacated are sent once per cluster when first and last subscribers are on different nodes', T, async (t) => {
    const name = chan('occupancy');
    const onA = await rawOn(t, A, WEBHOOK_APP);
    const onB = await rawOn(t, B, WEBHOOK_APP);
    const onC = await rawOn(t, C, WEBHOOK_APP);
    const ofChannel = (kind) => () => receiver.events().filter((e) => e.channel === name && e.name === kind);

    await onA.subscribe(name);
    await receiver.waitEvent((e) => e.channel === name && e.name === 'channel_occupied', 3000, 'channel_occupied');
    await onB.subscribe(name);
    await onC.subscribe(name);
    onA.unsubscribe(name);
    onC.unsubscribe(name);
    // B still holds the channel: not vacated.
    await sleep(600);
    assert.deepEqual(ofChannel('channel_vacated')(), [], 'vacated while a subscriber remains on B');

    onB.unsubscribe(name);
    await receiver.waitEvent((e) => e.channel === name && e.name === 'channel_vacated', 3000, 'channel_vacated');
    await sleep(500);
    const events = receiver.events().filter((e) => e.channel === name);
    assert.equal(ofChannel('channel_occupied')().length, 1, `occupied once: ${summarizeEvents(events)}`);
    assert.equal(ofChannel('channel_vacated')().length, 1, `vacated once: ${summarizeEvents(events)}`);
    assert.deepEqual(
      events.map((e) => e.name),
      ['channel_occupied', 'channel_vacated'],
    );
    // Every request is signed for the app.
    for (const e of events) assert.equal(e._req.headers['x-pusher-key'], WEBHOOK_APP.key);
  });

  test('a page reload that lands on another node (left A, rejoined on B within the hold-back) sends no webhook; leaving for good sends one channel_vacated per channel', T, async (t) => {
    const pub = chan('reload');
    const pres = `presence-${chan('reload')}`;
    const of = (channel) => allEvents.events().filter((e) => e.channel === channel && e.name !== 'subscription_count').map((e) => e.name);
    const first = await rawOn(t, A, WEBHOOK_APP);
    await first.subscribe(pub);
    await first.subscribe(pres, sdkOn(A, WEBHOOK_APP).authorizeChannel(first.socketId, pres, { user_id: 'reloader' }));
    await allEvents.waitEvent((e) => e.channel === pres && e.name === 'channel_occupied', 3000);
    await allEvents.waitEvent((e) => e.channel === pub && e.name === 'channel_occupied', 3000);
    const left = Date.now();
    await first.end();
    const again = await rawOn(t, B, WEBHOOK_APP);
    await again.subscribe(pub);
    await again.subscribe(pres, sdkOn(B, WEBHOOK_APP).authorizeChannel(again.socketId, pres, { user_id: 'reloader' }));
    assert.ok(Date.now() - left < 150, `rejoin took ${Date.now() - left} ms: not within the 200 ms hold-back`);
    await sleep(800);
    assert.deepEqual(of(pub), ['channel_occupied'], summarizeEvents(allEvents.events().filter((e) => e.channel === pub)));
    assert.deepEqual(of(pres), ['member_added', 'channel_occupied'], summarizeEvents(allEvents.events().filter((e) => e.channel === pres)));

    again.close();
    await allEvents.waitEvent((e) => e.channel === pub && e.name === 'channel_vacated', 3000);
    await allEvents.waitEvent((e) => e.channel === pres && e.name === 'channel_vacated', 3000);
    await sleep(500);
    assert.deepEqual(of(pub), ['channel_occupied', 'channel_vacated']);
    assert.deepEqual(of(pres), ['member_added', 'channel_occupied', 'member_removed', 'channel_vacated']);
  });

  test('a node killed (-9) while the cluster holds its channel_vacated: another node sends it, once', { timeout: 30000 }, async (t) => {
    const D = await spawnNode('D', config.path);
    t.after(() => D.kill());
    await waitClusterReady([A, D]);
    const name = chan('held-by-dead');
    const onD = await rawOn(t, D, WEBHOOK_APP);
    await onD.subscribe(name);
    await receiver.waitEvent((e) => e.channel === name && e.name === 'channel_occupied', 3000, 'channel_occupied');
    onD.unsubscribe(name);
    await waitFor(async () => (await getJson(A, `/channels/${name}`, {}, WEBHOOK_APP)).occupied === false, 3000, 10, 'left on D');
    await D.kill('SIGKILL'); // within the 200 ms hold-back, as a rule
    await receiver.waitEvent((e) => e.channel === name && e.name === 'channel_vacated', 5000, 'channel_vacated');
    await sleep(1500);
    const events = receiver.events().filter((e) => e.channel === name).map((e) => e.name);
    assert.deepEqual(events, ['channel_occupied', 'channel_vacated']);
  });

  test('subscription counting across two nodes: pusher-js on A and B see the cluster-wide count, coalesced, ending on the true count', T, async (t) => {
    const name = chan('counted');
    const onA = await subscribed(await pusherOn(t, A, { app: WEBHOOK_APP }), name);
    const clientB = await pusherOn(t, B, { app: WEBHOOK_APP });
    const onB = await subscribed(clientB, name);
    await waitFor(() => onA.subscriptionCount === 2 && onB.subscriptionCount === 2, 2000, 10, 'both see 2');
    const seenA = [];
    onA.bind('pusher:subscription_count', (d) => seenA.push(d.subscription_count));
    // A burst on B: 6 joins, 2 leaves, then the pusher-js client on B leaves.
    const raws = [];
    for (let i = 0; i < 6; i += 1) {
      const c = await rawOn(t, B, WEBHOOK_APP);
      await c.subscribe(name);
      raws.push(c);
    }
    raws[0].unsubscribe(name);
    raws[1].unsubscribe(name);
    clientB.unsubscribe(name);
    // 2 + 6 - 2 - 1 = 5, on A (told by B's node through Redis) and on B's raw clients.
    await waitFor(() => onA.subscriptionCount === 5, 2000, 10, `A sees 5 (seen ${seenA})`);
    await waitFor(
      () => raws.slice(2).every((c) => JSON.parse(c.frames.filter((f) => f.event === 'pusher_internal:subscription_count').at(-1)?.data ?? '{}').subscription_count === 5),
      2000,
      10,
      'B\'s subscribers see 5',
    );
    await sleep(700);
    assert.equal(seenA.at(-1), 5, `seen on A: ${seenA}`);
    assert.ok(seenA.length <= 4, `not coalesced: ${seenA}`);
    assert.equal((await getJson(A, `/channels/${name}`, { info: 'subscription_count' }, WEBHOOK_APP)).subscription_count, 5);
  });

  test('kill -9 of a node: its presence members and subscriptions vanish from the others within the timeout', { timeout: 30000 }, async (t) => {
    const D = await spawnNode('D', config.path);
    t.after(() => D.kill());
    await waitClusterReady([A, D]);
    const pres = `presence-${chan('crash')}`;
    const pub = chan('crash-pub');

    const observer = await pusherOn(t, A, { presence: { user_id: 'survivor', user_info: {} } });
    const obs = await subscribed(observer, pres);
    const removed = listen(obs, 'pusher:member_removed');
    await subscribed(observer, pub);
    const sdkD = sdkOn(D);
    const victim = await rawOn(t, D);
    await victim.subscribe(pres, sdkD.authorizeChannel(victim.socketId, pres, { user_id: 'victim', user_info: {} }));
    const victimPub = await rawOn(t, D);
    await victimPub.subscribe(pub);
    await waitFor(() => obs.members.count === 2, 3000, 20, 'observer sees the victim');
    assert.equal((await getJson(B, `/channels/${pres}`, { info: 'user_count' })).user_count, 2);
    assert.equal((await getJson(B, `/channels/${pub}`, { info: 'subscription_count' })).subscription_count, 2);

    const killedAt = Date.now();
    await D.kill('SIGKILL');
    const gone = await removed.next(10000).catch((e) => {
      throw new Error(`${e.message}\n${logsOf(A, B, C)}`);
    });
    assert.equal(gone.data.id, 'victim');
    const elapsed = Date.now() - killedAt;
    assert.ok(elapsed <= 10000, `member_removed after ${elapsed} ms`);
    assert.equal(obs.members.count, 1);
    await waitFor(
      async () => (await getJson(B, `/channels/${pres}`, { info: 'user_count,subscription_count' })).user_count === 1,
      Math.max(10000 - (Date.now() - killedAt), 500),
      100,
      'user_count 1 on B',
    );
    const presInfo = await getJson(C, `/channels/${pres}`, { info: 'user_count,subscription_count' });
    assert.deepEqual([presInfo.user_count, presInfo.subscription_count], [1, 1], 'presence counts on C');
    assert.deepEqual((await getJson(C, `/channels/${pres}/users`)).users, [{ id: 'survivor' }]);
    await waitFor(
      async () => (await getJson(B, `/channels/${pub}`, { info: 'subscription_count' })).subscription_count === 1,
      Math.max(10000 - (Date.now() - killedAt), 500),
      100,
      'subscription_count 1 on B',
    );
    await removed.none(300);
    assert.equal(removed.events.length, 1, 'member_removed once');
  });

  if (single) {
  // A pattern spy sees plain pub/sub only (not a cluster's sharded channels).
  /** The bus messages a Redis message carries: itself, or a batch's members (`B SEP` then `len SEP member`…). */
  function busMembers(payload) {
    const SEP = 0x1f;
    if (!(payload[0] === 0x42 && payload[1] === SEP)) return [payload.toString()];
    const members = [];
    let at = 2;
    while (at < payload.length) {
      const sep = payload.indexOf(SEP, at);
      assert.ok(sep > at, `batch length at byte ${at}`);
      const len = Number(payload.toString('latin1', at, sep));
      assert.ok(Number.isInteger(len) && sep + 1 + len <= payload.length, `batch member length ${len}`);
      members.push(payload.toString('utf8', sep + 1, sep + 1 + len));
      at = sep + 1 + len;
    }
    return members;
  }

  test('a burst of triggers through A reaches B and C whole and in order, several bus messages to a Redis message', T, async (t) => {
    const name = chan('burst');
    const spy = await busSpy(redis.port, `{rusher-test-${RUN}:*`);
    t.after(() => spy.close());
    const clients = [await rawOn(t, B), await rawOn(t, C)];
    for (const c of clients) await c.subscribe(name);
    const sdk = sdkOn(A);
    const REQUESTS = 30;
    const PER = 10;
    await Promise.all(
      Array.from({ length: REQUESTS }, (_, r) =>
        sdk.triggerBatch(Array.from({ length: PER }, (_, i) => ({ channel: name, name: 'burst', data: `${r}:${i}` }))),
      ),
    );
    for (const [n, c] of clients.entries()) {
      await waitFor(() => c.count('burst') >= REQUESTS * PER, 10000, 20, `all ${REQUESTS * PER} events on node ${'BC'[n]}`);
      const got = c.frames.filter((f) => f.event === 'burst').map((f) => f.data);
      assert.equal(new Set(got).size, REQUESTS * PER, `each event once on node ${'BC'[n]}`);
      // The events of one batch request keep their order on every node.
      const last = new Map();
      for (const data of got) {
        const [r, i] = data.split(':').map(Number);
        assert.ok((last.get(r) ?? -1) < i, `node ${'BC'[n]}: ${data} after ${r}:${last.get(r)}`);
        last.set(r, i);
      }
    }
    await sleep(100);
    // On the bus: every event once, fewer Redis messages than events.
    const carrying = spy.messages.filter((m) => busMembers(m.payload).some((x) => x.includes(name)));
    const published = carrying.flatMap((m) => busMembers(m.payload)).filter((x) => x.startsWith('P\x1f') && x.includes(name));
    assert.equal(published.length, REQUESTS * PER);
    t.diagnostic(`${REQUESTS * PER} events in ${carrying.length} Redis messages`);
    assert.ok(
      carrying.some((m) => m.payload[0] === 0x42) && carrying.length < REQUESTS * PER,
      `${REQUESTS * PER} events in ${carrying.length} Redis messages, none of them a batch`,
    );
  });

  test('Redis stopped: local delivery continues on every node; Redis restarted: cross-node delivery resumes without restarting rusher', { timeout: 40000 }, async (t) => {
    const name = chan('outage');
    const onA = await pusherOn(t, A);
    const onB = await pusherOn(t, B);
    const sA = listen(await subscribed(onA, name), 'tick');
    const sB = listen(await subscribed(onB, name), 'tick');
    const sdkA = sdkOn(A);
    const sdkB = sdkOn(B);
    // Cluster working before the outage.
    await sdkA.trigger(name, 'tick', 'before');
    assert.equal((await sB.next()).data, 'before');
    assert.equal((await sA.next()).data, 'before');

    await redis.stop('SIGTERM');
    assert.equal(redis.running, false);

    // Local delivery on each node does not depend on Redis, nor does the API
    // wait for it: the message for the other nodes is queued, and dropped
    // (and counted) once Redis fails, after operation_timeout_ms (500).
    const droppedBefore = await metric(A, 'rusher_redis_bus_dropped_total');
    const began = Date.now();
    await sdkA.trigger(name, 'tick', 'down-from-A');
    const took = Date.now() - began;
    assert.ok(took < 400, `a trigger while Redis is down answered in ${took} ms, as if it waited on Redis`);
    assert.equal((await sA.next(3000)).data, 'down-from-A', 'client on A gets A\'s event while Redis is down');
    await waitFor(
      async () => (await metric(A, 'rusher_redis_bus_dropped_total')) > droppedBefore,
      5000,
      100,
      'the bus message A could not send counted as dropped',
    );
    await sdkB.trigger(name, 'tick', 'down-from-B');
    assert.equal((await sB.next(3000)).data, 'down-from-B', 'client on B gets B\'s event while Redis is down');
    // A socket joining during the outage is served locally too.
    const lateA = await pusherOn(t, A);
    const sLate = listen(await subscribed(lateA, name), 'tick');
    await sdkA.trigger(name, 'tick', 'down-late');
    assert.equal((await sLate.next(3000)).data, 'down-late');
    await sleep(1500);

    await redis.start();
    const restartedAt = Date.now();
    let n = 0;
    await waitFor(
      async () => {
        n += 1;
        await sdkA.trigger(name, 'tick', `after-${n}`);
        await sleep(200);
        return sB.events.some((e) => String(e.data).startsWith('after-'));
      },
      10000,
      100,
      'an event triggered on A reaching the client on B after Redis came back',
    ).catch((e) => {
      throw new Error(`${e.message}\n${logsOf(A, B)}`);
    });
    t.diagnostic(`cross-node delivery back ${Date.now() - restartedAt} ms after the restart`);

    // And the other direction works too.
    await sdkB.trigger(name, 'tick', 'back-from-B');
    await waitFor(() => sA.events.some((e) => e.data === 'back-from-B'), 3000, 20, 'B → A after the restart');
    await waitFor(() => sLate.events.some((e) => e.data === 'back-from-B'), 3000, 20, 'B → late client on A');
  });

  /**
   * Stop Redis (SIGTERM) for `downMs` while events keep being triggered on A and B
   * (traffic does not pause for an outage), start it again (empty) and wait until
   * A reaches `listener` on B again.
   */
  async function bounceRedis(name, listener, downMs) {
    const sdkA = sdkOn(A);
    const sdkB = sdkOn(B);
    await redis.stop('SIGTERM');
    const until = Date.now() + downMs;
    while (Date.now() < until) {
      await Promise.all([sdkA.trigger(name, 'during-outage', 'a'), sdkB.trigger(name, 'during-outage', 'b')]);
      await sleep(250);
    }
    await redis.start();
    let n = 0;
    await waitFor(
      async () => {
        n += 1;
        await sdkA.trigger(name, 'probe', `probe-${n}`);
        await sleep(200);
        return listener.events.length > 0;
      },
      10000,
      100,
      'cross-node delivery after the Redis restart',
    );
  }

  test('after Redis restarts empty, the nodes re-announce their subscribers and presence members', { timeout: 60000 }, async (t) => {
    const pub = chan('reannounce');
    const pres = `presence-${chan('reannounce')}`;
    const onA = await pusherOn(t, A, { presence: { user_id: 'ra', user_info: { at: 'A' } } });
    const onB = await pusherOn(t, B, { presence: { user_id: 'rb', user_info: { at: 'B' } } });
    await subscribed(onA, pub);
    const probe = listen(await subscribed(onB, pub), 'probe');
    await subscribed(onA, pres);
    await subscribed(onB, pres);
    const before = await getJson(C, `/channels/${pres}`, { info: 'user_count,subscription_count' });
    assert.deepEqual([before.user_count, before.subscription_count], [2, 2], 'presence counts before the restart');

    // Outages of different lengths: each lets the nodes' connections come back in a different order.
    for (const downMs of [2000, 5000]) {
      probe.events.length = 0;
      await bounceRedis(pub, probe, downMs);
      let seen;
      await waitFor(
        async () => {
          seen = {
            pub: await getJson(C, `/channels/${pub}`, { info: 'subscription_count' }),
            pres: await getJson(C, `/channels/${pres}`, { info: 'user_count,subscription_count' }),
          };
          return seen.pub.subscription_count === 2 && seen.pres.user_count === 2 && seen.pres.subscription_count === 2;
        },
        10000,
        200,
        `counts re-announced after a ${downMs} ms outage (2 subscribers of the public channel, 2 presence members)`,
      ).catch((e) => {
        throw new Error(`${e.message}; last answers on C ${JSON.stringify(seen)}\n${logsOf(A, B)}`);
      });
    }
    // A newcomer on C sees every member, with the info of each.
    const newcomer = await pusherOn(t, C, { presence: { user_id: 'rc', user_info: { at: 'C' } } });
    const ch = await subscribed(newcomer, pres);
    assert.deepEqual(ch.members.members, { ra: { at: 'A' }, rb: { at: 'B' }, rc: { at: 'C' } });
  });
  }

  return {
    get nodes() {
      return { A, B, C };
    },
    get redis() {
      return redis;
    },
    prefix: () => `rusher-test-${RUN}`,
    chan,
    logsOf,
  };
}
