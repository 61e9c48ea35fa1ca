// Watchlists and peer channels span the nodes of a Redis deployment
// (adapter = "redis"): a watched user is `online` while signed in on any node
// and `offline` once their last socket anywhere closed (also when that node
// is killed -9 and reaped); two peer members of a presence channel on
// different nodes are offered their peer channel, may subscribe to it and
// exchange client events both ways, and hear `pusher:peer_removed` when the
// other leaves (or its node dies).
//
// Run by cluster-users.test.mjs on one redis-server and by
// redis-cluster-users.test.mjs on a Redis Cluster of three masters (the
// users' sign-in hashes spread over its slots). The suite runs its own Redis
// on free ports and two nodes (N1, N2) with one config written to a temp
// dir; the kill -9 tests add a node D each. Every process is killed at the
// end, also on failure.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { collect, waitFor, withTimeout } from './helpers.mjs';
import {
  clusterConfig,
  killAll,
  listen,
  pusherOn,
  spawnNode,
  startRedis,
  subscribed,
  waitBus,
  writeConfig,
} from './cluster-helpers.mjs';
import { startRedisCluster } from './redis-cluster-helpers.mjs';

/**
 * Registers the watchlist and peer-channel cases. `redisKind`: 'single' (one
 * redis-server) or 'cluster' (three masters).
 */
export function usersSuite({ redisKind }) {
  const single = redisKind === 'single';
  const T = { timeout: 30000 };
  const RUN = `${process.pid.toString(36)}${Date.now().toString(36).slice(-5)}`;
  let counter = 0;
  const uid = (prefix) => `${prefix}-${RUN}-${(counter += 1)}`;

  let redis;
  let config;
  let N1;
  let N2;

  before(async () => {
    redis = single ? await startRedis() : await startRedisCluster();
    // The webhook app's receiver is never used here: nothing listens there.
    config = writeConfig(
      clusterConfig({ redisUrl: redis.url, prefix: `rusher-users-${RUN}`, webhookUrl: 'http://127.0.0.1:9/', cluster: !single }),
    );
    [N1, N2] = await Promise.all([spawnNode('N1', config.path), spawnNode('N2', config.path)]);
    await waitBus([N1, N2], `users-probe-${RUN}`);
  });

  after(async () => {
    await killAll();
    if (!single && redis) await redis.shutdown();
    if (config) fs.rmSync(config.dir, { recursive: true, force: true });
  });

  /**
   * A pusher-js client on `node` signed in as `user` ({id, watchlist?}), with
   * its watchlist's `online` and `offline` events collected from before the
   * sign-in; resolves once signin_success was handled.
   */
  async function signedIn(t, node, user) {
    const client = await pusherOn(t, node, { user });
    const online = collect(client.user.watchlist, 'online');
    const offline = collect(client.user.watchlist, 'offline');
    client.signin();
    await withTimeout(
      waitFor(() => client.user.user_data && client.user.user_data.id === user.id, 5000, 20, 'user_data'),
      6000,
      `sign-in of ${user.id} on ${node.name}`,
    );
    return { client, online, offline };
  }

  /** Nothing more than `count` events arrives on a collected source within `ms`. */
  async function stays(source, count, ms, what) {
    await new Promise((r) => setTimeout(r, ms));
    assert.equal(source.events.length, count, `${what}: ${JSON.stringify(source.events)}`);
  }

  test('watchlist across nodes: online when the watched user signs in on the other node, offline only when their last socket anywhere closes; a late watcher hears online at sign-in', T, async (t) => {
    const [watcherId, userId] = [uid('watcher'), uid('watched')];
    const w = await signedIn(t, N1, { id: watcherId, watchlist: [userId] });
    await stays(w.online, 0, 300, 'not online yet');

    const onN2 = await signedIn(t, N2, { id: userId });
    assert.deepEqual((await w.online.next(5000)).user_ids, [userId], 'online from a sign-in on N2');

    const onN1 = await signedIn(t, N1, { id: userId });
    await stays(w.online, 1, 400, 'a second socket (on N1) is not a new online');
    onN2.client.disconnect();
    await stays(w.offline, 0, 600, 'a socket on N1 remains: no offline');

    onN1.client.disconnect();
    assert.deepEqual((await w.offline.next(5000)).user_ids, [userId], 'offline with the last socket');
    await stays(w.offline, 1, 400, 'offline once');

    // Signed in on N2 again: a watcher signing in on N1 hears it at once.
    await signedIn(t, N2, { id: userId });
    assert.deepEqual((await w.online.next(5000)).user_ids, [userId]);
    const late = await signedIn(t, N1, { id: uid('late'), watchlist: [userId, uid('nobody')] });
    assert.deepEqual((await late.online.next(5000)).user_ids, [userId], 'online at sign-in for a user on N2');
    await stays(late.online, 1, 300, 'one online at sign-in');
  });

  test('watchlist across nodes: a node killed (-9) with a signed-in user is reaped and the watcher hears offline once', T, async (t) => {
    const D = await spawnNode('D', config.path);
    t.after(() => D.kill());
    await waitBus([N1, D], `users-probe-d-${RUN}`);
    const userId = uid('victim');
    const w = await signedIn(t, N1, { id: uid('watcher'), watchlist: [userId] });
    await signedIn(t, D, { id: userId });
    assert.deepEqual((await w.online.next(5000)).user_ids, [userId]);
    await D.kill('SIGKILL');
    // node_timeout_secs = 3, heartbeat 1 s: reaped within a few seconds.
    assert.deepEqual((await w.offline.next(10000)).user_ids, [userId], 'offline after the reaping');
    await stays(w.offline, 1, 500, 'offline once');
  });

  /** A peer member of `presence` on `node`, its peer_added / peer_removed streams. */
  async function peerMember(t, node, presence, userId) {
    const client = await pusherOn(t, node, { presence: { user_id: userId, user_info: { on: node.name }, peer: true } });
    const channel = client.subscribe(presence);
    const added = listen(channel, 'pusher:peer_added');
    const removed = listen(channel, 'pusher:peer_removed');
    await subscribed(client, presence);
    return { client, added, removed };
  }

  test('peer channels across nodes: peer members on N1 and N2 are offered their channel, exchange client events both ways, and hear peer_removed when one leaves', T, async (t) => {
    const base = uid('room');
    const presence = `presence-${base}`;
    const [ua, ub] = [uid('pa'), uid('pb')];
    const peerName = `peer-${base}:${[ua, ub].sort().join('&')}`;
    const a = await peerMember(t, N1, presence, ua);
    const b = await peerMember(t, N2, presence, ub);

    const forA = (await a.added.next(5000)).data;
    const forB = (await b.added.next(5000)).data;
    assert.deepEqual([forA.channel, forA.user_id], [peerName, ub], JSON.stringify(forA));
    assert.deepEqual([forB.channel, forB.user_id], [peerName, ua], JSON.stringify(forB));

    const peerA = await subscribed(a.client, peerName);
    const peerB = await subscribed(b.client, peerName);
    const atB = listen(peerB, 'client-hello');
    const atA = listen(peerA, 'client-reply');
    peerA.trigger('client-hello', { from: ua });
    assert.deepEqual((await atB.next(5000)).data, { from: ua });
    peerB.trigger('client-reply', { from: ub });
    assert.deepEqual((await atA.next(5000)).data, { from: ub });

    b.client.disconnect();
    const removed = (await a.removed.next(5000)).data;
    assert.deepEqual([removed.channel, removed.user_id], [peerName, ub], JSON.stringify(removed));
    await a.removed.none(300);
  });

  test('peer channels across nodes: the peer member on a node killed (-9) is removed for the other once reaped', T, async (t) => {
    const D = await spawnNode('D', config.path);
    t.after(() => D.kill());
    await waitBus([N1, D], `users-probe-p-${RUN}`);
    const base = uid('room');
    const presence = `presence-${base}`;
    const [ua, ud] = [uid('pa'), uid('pd')];
    const peerName = `peer-${base}:${[ua, ud].sort().join('&')}`;
    const a = await peerMember(t, N1, presence, ua);
    const d = await peerMember(t, D, presence, ud);
    assert.equal((await a.added.next(5000)).data.user_id, ud);
    assert.equal((await d.added.next(5000)).data.user_id, ua);
    await D.kill('SIGKILL');
    const removed = (await a.removed.next(10000)).data;
    assert.deepEqual([removed.channel, removed.user_id], [peerName, ud], JSON.stringify(removed));
    await a.removed.none(500);
  });
}
