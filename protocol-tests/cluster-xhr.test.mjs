// pusher-js's HTTP fallback transports (xhr_polling, xhr_streaming) behind a
// load balancer WITHOUT sticky routing, in front of two rusher nodes sharing a
// Redis (adapter = "redis"): every poll, reopened stream and xhr_send is a new
// HTTP request, and the balancer here sends each to the other node than the
// previous one of its kind. A session lives on the node that opened it; the
// other node relays its requests over the Redis bus.
//
// The suite runs its own redis-server on a free port, two nodes (A, B) and a
// round-robin HTTP proxy (node:http) in front of them; everything is stopped
// at the end, also on failure.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { APPS, collect, newPusherClient, sleep, subscribeAndWait, uniqueChannel, waitFor } from './helpers.mjs';
import { memberIds, sdkAuthOptions, sdkFor } from './auth-helpers.mjs';
import { clusterConfig, killAll, pusherOn, sdkOn, spawnNode, startRedis, waitBus, writeConfig } from './cluster-helpers.mjs';
import { XhrSession } from './xhr-helpers.mjs';

const T = { timeout: 40000 };
const sdk = sdkFor(APPS.main);

let redis;
let A;
let B;
let proxy;

/**
 * A round-robin reverse proxy: each request goes to the node after the one the
 * previous request of its kind (receive: `xhr`/`xhr_streaming`; send:
 * `xhr_send`; other) went to, whatever session it belongs to. A client that
 * drops its request has the upstream request dropped too, as a balancer does.
 * `counts[node][kind]` counts the session requests each node got.
 */
async function roundRobin(nodes) {
  const next = new Map();
  const counts = Object.fromEntries(nodes.map((n) => [n.name, { receive: 0, send: 0 }]));
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  const server = http.createServer((req, res) => {
    const kind = /\/xhr_send(\?|$)/.test(req.url) ? 'send' : /\/xhr(_streaming)?(\?|$)/.test(req.url) ? 'receive' : 'other';
    const turn = next.get(kind) ?? 0;
    next.set(kind, turn + 1);
    const node = nodes[turn % nodes.length];
    if (kind !== 'other') counts[node.name][kind] += 1;
    const upstream = http.request(
      { host: '127.0.0.1', port: node.port, method: req.method, path: req.url, headers: req.headers, agent },
      (answer) => {
        res.writeHead(answer.statusCode, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', (e) => {
      if (!res.headersSent) res.writeHead(502);
      res.end(String(e));
    });
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: server.address().port,
    counts,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      agent.destroy();
    },
  };
}

before(async () => {
  redis = await startRedis();
  const text = clusterConfig({
    redisUrl: redis.url,
    prefix: `xhr-${process.pid}-${Date.now().toString(36)}`,
    webhookUrl: 'http://127.0.0.1:9/unused',
  }).replace('shutdown_grace = 1', 'shutdown_grace = 1\nactivity_timeout = 3');
  const { path } = writeConfig(text);
  [A, B] = await Promise.all([spawnNode('A', path), spawnNode('B', path)]);
  await waitBus([A, B], uniqueChannel('xhr-bus-probe'));
  proxy = await roundRobin([A, B]);
});

after(async () => {
  await proxy?.close();
  await killAll();
});

/** pusher-js limited to `transport`, through the round-robin proxy. */
async function balancedClient(t, transport, options) {
  const client = await newPusherClient(
    APPS.main.key,
    { httpHost: '127.0.0.1', httpPort: proxy.port, enabledTransports: [transport], ...sdkAuthOptions(sdk, options) },
    { what: `pusher-js did not connect over ${transport} through the round-robin proxy` },
  );
  t.after(() => client.disconnect());
  assert.equal(client.connection.connection.transport.name, transport);
  return client;
}

/** Session requests of `kind` each node got since `before` (a copy of proxy.counts). */
function landed(before, kind) {
  return Object.fromEntries(Object.entries(proxy.counts).map(([name, c]) => [name, c[kind] - before[name][kind]]));
}

const snapshot = () => JSON.parse(JSON.stringify(proxy.counts));

for (const transport of ['xhr_polling', 'xhr_streaming']) {
  test(`${transport} through a round-robin balancer: channels, events from either node, client events, presence, many requests, disconnect`, T, async (t) => {
    const start = snapshot();
    const userId = `balanced-${transport}`;
    const client = await balancedClient(t, transport, { presence: { user_id: userId, user_info: { via: transport } } });
    const priv = await subscribeAndWait(client, uniqueChannel('private-xhr'));
    const presName = uniqueChannel('presence-xhr');
    const pres = await subscribeAndWait(client, presName);
    assert.deepEqual(memberIds(pres), [userId]);

    // Events published through the SDK on either node reach the session.
    for (const channel of [priv, pres]) {
      const got = collect(channel, 'news');
      for (const node of [A, B]) {
        assert.equal((await sdkOn(node).trigger(channel.name, 'news', { via: node.name })).status, 200);
        assert.deepEqual(await got.next(5000), { via: node.name }, `${channel.name}: event published on ${node.name}`);
      }
    }

    // A WebSocket member on each node: it sees the HTTP member, gets its
    // client events, and the HTTP client gets theirs.
    const added = collect(pres, 'pusher:member_added');
    const ws = {};
    for (const node of [A, B]) {
      const client = await pusherOn(t, node, { presence: { user_id: `ws-${node.name}` } });
      ws[node.name] = await subscribeAndWait(client, presName);
      assert.equal((await added.next(5000)).id, `ws-${node.name}`);
    }
    assert.deepEqual(memberIds(ws.B), [userId, 'ws-A', 'ws-B'].sort());
    const atWs = { A: collect(ws.A, 'client-ping'), B: collect(ws.B, 'client-ping') };
    const atHttp = collect(pres, 'client-pong');
    // Pusher's client event rate limit is 10 per second per connection.
    const rounds = 8;
    for (let n = 0; n < rounds; n += 1) {
      assert.ok(pres.trigger('client-ping', { n }), 'pusher-js accepted the client event');
      for (const name of ['A', 'B']) assert.deepEqual(await atWs[name].next(5000), { n }, `client event ${n} at ws-${name}`);
      ws[n % 2 ? 'A' : 'B'].trigger('client-pong', { n });
      assert.deepEqual(await atHttp.next(5000), { n }, `client event ${n} from a WebSocket member`);
    }

    if (transport === 'xhr_streaming') {
      // pusher-js drops a stream past 256 KiB and opens the next one, on the
      // other node this time: nothing is lost or repeated across reopens.
      const got = [];
      priv.bind('seq', (data) => got.push(data.n));
      const total = 300;
      const pad = 'x'.repeat(2000);
      for (let n = 0; n < total; n += 10) {
        const batch = [];
        for (let i = n; i < n + 10; i += 1) batch.push({ channel: priv.name, name: 'seq', data: { n: i, pad } });
        // One publishing node: two nodes' publishes have no order between them.
        assert.equal((await sdkOn(A).triggerBatch(batch)).status, 200);
      }
      await waitFor(() => got.length >= total, 15000, 50, `${total} events over reopened streams (got ${got.length})`).catch(() => {});
      assert.deepEqual(got, [...Array(total).keys()], 'every event once, in order, across reopened streams');
    } else {
      // Idle polls end with a heartbeat and come back: still connected.
      await sleep(1600);
    }
    assert.equal(client.connection.state, 'connected');
    assert.equal(client.connection.connection.transport.name, transport);

    // Requests did spread over both nodes.
    const receives = landed(start, 'receive');
    const sends = landed(start, 'send');
    // Polls: one per answer. Streams: the first and at least two reopens.
    const least = transport === 'xhr_polling' ? 8 : 1;
    assert.ok(receives.A + receives.B >= (transport === 'xhr_polling' ? 16 : 3), `receive requests: ${JSON.stringify(receives)}`);
    for (const name of ['A', 'B']) {
      assert.ok(receives[name] >= least, `receive requests on ${name}: ${JSON.stringify(receives)}`);
      assert.ok(sends[name] >= 5, `xhr_send requests on ${name}: ${JSON.stringify(sends)}`);
    }

    // The HTTP client leaves: the WebSocket members on both nodes see it go.
    const removed = { A: collect(ws.A, 'pusher:member_removed'), B: collect(ws.B, 'pusher:member_removed') };
    client.disconnect();
    for (const name of ['A', 'B']) assert.equal((await removed[name].next(8000)).id, userId, `member_removed at ws-${name}`);
  });
}

/** `session` (opened on `from`) addressed through `to` instead. */
function through(session, from, to) {
  const other = new XhrSession();
  other.base = session.base.replace(`:${from.port}/`, `:${to.port}/`);
  return other;
}

test('a session opened on one node answers on the other: xhr_send, polls of the wrong kind, close codes', T, async () => {
  const session = new XhrSession({ host: '127.0.0.1', port: A.port });
  await session.stream();
  await session.socketId();
  const viaB = through(session, A, B);
  // A send through B reaches the session on A; its answer comes on A's stream.
  assert.equal((await viaB.send([{ event: 'pusher:ping', data: {} }])).status, 204);
  await session.frame('pusher:pong');
  // A bad body is refused by the node it reached, as on one node.
  const bad = await fetch(`${viaB.base}/xhr_send`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
  assert.equal(bad.status, 400);
  // A poll of a streaming session through B: the 400 A would give.
  const wrong = await fetch(`${viaB.base}/xhr?protocol=7`, { method: 'POST' });
  assert.equal(wrong.status, 400);
  assert.match((await wrong.json()).error, /does not use xhr_polling/);

  // Closed by A (a forged sign-in: 4009): B tells the close code too.
  await session.send([{ event: 'pusher:signin', data: { auth: 'app-key:bad', user_data: '{"id":"x"}' } }]);
  await session.until((s) => s.lines.find((l) => l.type === 'c'), 5000, 'close line');
  const { lines } = await through(session, A, B).poll();
  assert.deepEqual(lines.map((l) => [l.type, l.close?.[0]]), [['c', 4009]]);
  const late = await viaB.send([]);
  assert.equal(late.status, 404);
  session.close();
});

test('an unknown session gets the answer of one node, through either node, and is then reachable through both', T, async () => {
  for (const node of [A, B]) {
    const unknown = new XhrSession({ host: '127.0.0.1', port: node.port });
    const started = Date.now();
    const res = await unknown.send([]);
    assert.equal(res.status, 404, `xhr_send of an unknown session on ${node.name}`);
    assert.match((await res.json()).error, /no such session/);
    assert.ok(Date.now() - started < 400, 'answered at once, without waiting for another node');
    // A receive request of an unknown session opens it, on the node it reached.
    const fresh = new XhrSession({ host: '127.0.0.1', port: node.port });
    const { status, lines } = await fresh.poll();
    assert.equal(status, 200);
    assert.equal(lines[0].type, 'o');
    // ...and is then reachable through the other node: the same session
    // (no second `o`), which answers a ping sent through it.
    const other = node === A ? B : A;
    const viaOther = through(fresh, node, other);
    assert.equal((await viaOther.send([{ event: 'pusher:ping', data: {} }])).status, 204, `xhr_send through ${other.name}`);
    const seen = [];
    const ponged = () => fresh.frames().some((f) => f.event === 'pusher:pong');
    for (let n = 0; n < 3 && !ponged(); n += 1) {
      for (const line of (await viaOther.poll()).lines) {
        seen.push(line.type);
        fresh.push(line);
      }
    }
    assert.ok(!seen.includes('o'), `the same session, not a new one on ${other.name}: ${seen}`);
    assert.ok(ponged(), `pusher:pong through ${other.name}`);
    assert.equal(fresh.frames()[0]?.event, 'pusher:connection_established');
    fresh.close();
  }
});
