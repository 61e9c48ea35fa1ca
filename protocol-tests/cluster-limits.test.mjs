// App and abuse limits hold for the whole deployment, not per node (issue
// 14): two rusher nodes sharing one Redis (adapter = "redis") count each
// other's usage, shared over the bus every redis.usage_interval_ms:
//   - an app's max_connections (4004) and max_unauthorized_connections (4100);
//   - an app's connection_rate and [limits] connection_rate_per_ip (HTTP 429
//     with Retry-After);
//   - an app's max_api_requests_per_second (HTTP 429);
//   - a node killed with -9 stops counting after node_timeout_secs.
// Nodes learn of each other's usage within one report interval, so a test
// waits for a report (the rusher_usage_* metrics) or retries within a
// deadline rather than sleeping.
//
// The suite runs its own redis-server on a free port; each test starts its
// own two nodes under a prefix of its own (so no test sees another's usage).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import WebSocket from 'ws';
import Pusher from 'pusher';
import { DEFAULT_QUERY, parseData, sleep, tomlString as q, waitFor } from './helpers.mjs';
import { killAll, spawnNode, startRedis, writeConfig } from './cluster-helpers.mjs';

const T = { timeout: 40000 };
const RUN = `${process.pid.toString(36)}${Date.now().toString(36).slice(-5)}`;
let clusters = 0;
let redis;

before(async () => {
  redis = await startRedis();
});
after(async () => {
  await killAll();
});

/** An [[apps]] entry with `extra` option lines. */
const app = (id, extra = '') => ({
  appId: id,
  key: `${id}-key`,
  secret: `${id}-secret`,
  toml: `[[apps]]\nid = ${q(id)}\nkey = ${q(`${id}-key`)}\nsecret = ${q(`${id}-secret`)}\n${extra}\n`,
});

/** Two nodes of a cluster of their own serving `apps`, with `limits` ([limits] lines). */
async function startCluster(t, { apps, limits = '' }) {
  clusters += 1;
  const text = `adapter = "redis"

[server]
host = "127.0.0.1"
log_level = "warn"
shutdown_grace = 1

${limits ? `[limits]\n${limits}\n` : ''}
[redis]
url = ${q(redis.url)}
prefix = ${q(`limits-${RUN}-${clusters}`)}
heartbeat_secs = 1
node_timeout_secs = 3
operation_timeout_ms = 500

${apps.map((a) => a.toml).join('\n')}`;
  const { dir, path } = writeConfig(text);
  const nodes = await Promise.all([spawnNode('1', path), spawnNode('2', path)]);
  t.after(async () => {
    await Promise.all(nodes.map((n) => n.kill('SIGTERM')));
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return nodes;
}

/**
 * A WebSocket to `node` for `key`: resolves {ok: true, ws} once
 * connection_established arrives; {ok: false, status, retryAfter} when the
 * upgrade is answered with plain HTTP; {ok: false, close, error} when the
 * server closes it first (error: the pusher:error code).
 */
function ws(node, key, headers = {}) {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(`ws://127.0.0.1:${node.port}/app/${key}?${DEFAULT_QUERY}`, { headers, handshakeTimeout: 5000 });
    let error = null;
    socket.on('message', (b) => {
      const frame = JSON.parse(b.toString());
      if (frame.event === 'pusher:error') error = parseData(frame.data)?.code ?? null;
      if (frame.event === 'pusher:connection_established') resolve({ ok: true, ws: socket });
    });
    socket.on('unexpected-response', (_req, res) => {
      res.resume();
      resolve({ ok: false, status: res.statusCode, retryAfter: Number(res.headers['retry-after']) });
      socket.terminate();
    });
    socket.on('error', (e) => reject(e));
    socket.on('close', (close) => resolve({ ok: false, close, error }));
  });
}

/** Opens a connection that must be admitted; closed after the test. */
async function open(t, node, key, headers) {
  const c = await ws(node, key, headers);
  assert.equal(c.ok, true, `a connection on node ${node.name} refused: ${JSON.stringify(c)}`);
  t.after(() => c.ws.terminate());
  return c;
}

/** Closes `c` and waits until its node saw it go. */
function closeConn(c) {
  return new Promise((resolve) => {
    c.ws.once('close', resolve);
    c.ws.close();
  });
}

/**
 * Tries connections on `node` until one is refused (one admitted before the
 * nodes heard of each other is closed again): resolves the refusal, rejects
 * when every attempt within `ms` was admitted.
 */
async function refusedSoon(node, key, ms = 3000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const c = await ws(node, key);
    if (!c.ok) return c;
    await closeConn(c);
    if (Date.now() > deadline) throw new Error(`node ${node.name} still admits connections to ${key} after ${ms} ms`);
    await sleep(50);
  }
}

/** Tries connections on `node` until one is admitted (kept open until the test ends). */
async function admittedSoon(t, node, key, ms) {
  return waitFor(
    async () => {
      const c = await ws(node, key);
      if (c.ok) t.after(() => c.ws.terminate());
      return c.ok ? c : null;
    },
    ms,
    100,
    `a connection to ${key} admitted on node ${node.name}`,
  );
}

const getText = (url) =>
  new Promise((resolve, reject) => {
    http
      .get(url, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve(body));
      })
      .on('error', reject);
  });

/** One series of a node's /metrics (0 while absent). */
async function metric(node, series) {
  const text = await getText(`http://127.0.0.1:${node.port}/metrics`);
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.split(' ')[1]) : 0;
}

/**
 * Waits (at most `ms`) until `node` counted at least `n` of `kind` the other
 * node admitted. It does not throw: the limit is what the test asserts next.
 */
async function counted(node, kind, n, ms = 2000) {
  const series = `rusher_usage_remote_admitted_total{kind="${kind}"}`;
  await waitFor(async () => (await metric(node, series)) >= n, ms, 20, series).catch(() => {});
}

const sdkOn = (node, a) =>
  new Pusher({ appId: a.appId, key: a.key, secret: a.secret, host: '127.0.0.1', port: String(node.port), useTLS: false });

/** Triggers `count` events at once on `node`; resolves their statuses. */
function triggers(node, a, count) {
  const sdk = sdkOn(node, a);
  return Promise.all(
    Array.from({ length: count }, (_, i) =>
      sdk.trigger(`api-${RUN}`, 'ev', { i }).then(
        (res) => res.status,
        (e) => e.status ?? String(e),
      ),
    ),
  );
}

const ok = (statuses) => statuses.filter((s) => s === 200).length;

test('max_connections counts both nodes: 2 + 1 fill 3, the next is 4004 on either node; a close frees a place for the other', T, async (t) => {
  const limited = app(`max-${RUN}`, 'max_connections = 3');
  const [n1, n2] = await startCluster(t, { apps: [limited] });
  const first = await open(t, n1, limited.key);
  await open(t, n1, limited.key);
  await open(t, n2, limited.key);
  // Node 2 refuses once node 1's report arrived (per node it had room for 2 more).
  const refused = await refusedSoon(n2, limited.key);
  assert.deepEqual({ close: refused.close, error: refused.error }, { close: 4004, error: 4004 });
  // Node 1 knows node 2's connection too.
  const refusedOn1 = await refusedSoon(n1, limited.key);
  assert.deepEqual({ close: refusedOn1.close, error: refusedOn1.error }, { close: 4004, error: 4004 });
  // A close on node 1 frees a place on node 2.
  await closeConn(first);
  await admittedSoon(t, n2, limited.key, 3000);
  const full = await refusedSoon(n1, limited.key);
  assert.equal(full.close, 4004, 'full again');
});

test('max_unauthorized_connections counts both nodes (4100)', T, async (t) => {
  const limited = app(`unauth-${RUN}`, 'authorized_connections = true\nmax_unauthorized_connections = 2');
  const [n1, n2] = await startCluster(t, { apps: [limited] });
  await open(t, n1, limited.key);
  await open(t, n2, limited.key);
  const refused = await refusedSoon(n1, limited.key);
  assert.deepEqual({ close: refused.close, error: refused.error }, { close: 4100, error: 4100 });
  const refusedOn2 = await refusedSoon(n2, limited.key);
  assert.equal(refusedOn2.close, 4100);
});

test("an app's connection_rate holds for the deployment: burst 4 = 2 via node 1 + 2 via node 2, then 429 + Retry-After on both", T, async (t) => {
  const limited = app(`rate-${RUN}`, 'connection_rate = 1\nconnection_burst = 4');
  const [n1, n2] = await startCluster(t, { apps: [limited] });
  for (const node of [n1, n1, n2, n2]) await open(t, node, limited.key);
  await Promise.all([counted(n1, 'connections', 2), counted(n2, 'connections', 2)]);
  for (const node of [n1, n2]) {
    const refused = await ws(node, limited.key);
    if (refused.ok) refused.ws.terminate();
    assert.equal(refused.status, 429, `node ${node.name} admitted it`);
    assert.ok(refused.retryAfter >= 1, `Retry-After ${refused.retryAfter}`);
  }
  // The tokens refill at the rate: a connection is admitted again later.
  await admittedSoon(t, n2, limited.key, 8000);
});

test('[limits] connection_rate_per_ip holds for the deployment; other addresses are not affected', T, async (t) => {
  const plain = app(`ip-${RUN}`);
  const [n1, n2] = await startCluster(t, {
    apps: [plain],
    limits: 'connection_rate_per_ip = 1\nconnection_burst_per_ip = 4\ntrusted_proxies = ["127.0.0.1"]',
  });
  const from = (ip) => ({ 'X-Forwarded-For': ip });
  for (const node of [n1, n2, n1, n2]) await open(t, node, plain.key, from('203.0.113.7'));
  await Promise.all([counted(n1, 'ip_connections', 2), counted(n2, 'ip_connections', 2)]);
  for (const node of [n1, n2]) {
    const refused = await ws(node, plain.key, from('203.0.113.7'));
    if (refused.ok) refused.ws.terminate();
    assert.equal(refused.status, 429, `node ${node.name} admitted it`);
    assert.ok(refused.retryAfter >= 1);
    await open(t, node, plain.key, from('203.0.113.8'));
  }
});

test('max_api_requests_per_second holds for the deployment: node 1 uses the second, node 2 answers 429', T, async (t) => {
  const limited = app(`api-${RUN}`, 'max_api_requests_per_second = 10');
  const [n1, n2] = await startCluster(t, { apps: [limited] });
  const first = await triggers(n1, limited, 10);
  assert.equal(ok(first), 10, JSON.stringify(first));
  await counted(n2, 'api_requests', 10, 500);
  const second = await triggers(n2, limited, 5);
  assert.deepEqual(second, [429, 429, 429, 429, 429], 'node 2 learned node 1 used the whole second');
  // The next second both nodes admit again, and the sum stays at the cap:
  // at most what each admits within one report interval beyond it.
  await sleep(1300);
  const both = await Promise.all([triggers(n1, limited, 8), triggers(n2, limited, 8)]);
  assert.ok(ok(both[0]) + ok(both[1]) >= 10, `the cap is available again: ${JSON.stringify(both)}`);
  await counted(n1, 'api_requests', ok(both[1]), 500);
  await counted(n2, 'api_requests', 10 + ok(both[0]), 500);
  const after = await Promise.all([triggers(n1, limited, 3), triggers(n2, limited, 3)]);
  assert.equal(ok(after[0]) + ok(after[1]), 0, `the second is used up on both nodes: ${JSON.stringify(after)}`);
});

test("a node killed with -9 stops counting after node_timeout_secs: its connections no longer take the app's places", T, async (t) => {
  const limited = app(`dead-${RUN}`, 'max_connections = 3');
  const [n1, n2] = await startCluster(t, { apps: [limited] });
  for (let i = 0; i < 3; i += 1) await open(t, n1, limited.key);
  const refused = await refusedSoon(n2, limited.key);
  assert.equal(refused.close, 4004);
  await n1.kill('SIGKILL');
  const killedAt = Date.now();
  // Right after the kill node 2 still counts them...
  assert.equal((await ws(n2, limited.key)).close, 4004);
  // ...and within node_timeout_secs (3 s) plus a report interval it no longer does.
  await admittedSoon(t, n2, limited.key, 8000);
  const waited = Date.now() - killedAt;
  assert.ok(waited < 7000, `forgotten after ${waited} ms`);
  assert.equal(await metric(n2, 'rusher_usage_nodes'), 0);
});
