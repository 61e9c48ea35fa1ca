// Abuse limits ([limits] and the per-app connection_rate / subscription_rate):
//   - new connections per second per client IP and per app: HTTP 429 with
//     Retry-After before any upgrade, for every transport's connection start
//     (WebSocket, xhr_streaming/xhr_polling session, SSE stream), never for
//     HTTP API calls; X-Forwarded-For only from trusted proxies;
//   - what pusher-js does with the 429 (falls back, comes back; never gives up);
//   - slowloris: the request header timeout and the half-open caps;
//   - subscribe floods: 4301, bounded work, counted in /metrics.
// Each test starts its own server (its own [limits]) on a free port.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { spawn } from 'node:child_process';
import WebSocket from 'ws';
import Pusher from 'pusher-js';
import {
  APPS,
  BIN,
  DEFAULT_QUERY,
  alive,
  captureOutput,
  exitOf,
  fixtureApps,
  freePort,
  serverSdk,
  parseData,
  sleep,
  stopChild,
  waitFor,
  waitReady,
  withTimeout,
  writeTempConfig,
} from './helpers.mjs';

const T = { timeout: 60000 };

/** Starts rusher with `limits` (lines of the [limits] section) and `apps` (more [[apps]]). */
async function start(t, { limits = '', apps = '', server = '' } = {}) {
  const port = await freePort();
  const section = limits ? `[limits]\n${limits}\n` : '';
  const text = `[server]\nhost = "127.0.0.1"\nlog_level = "warn"\n${server}\n${section}${fixtureApps()}\n${apps}\n`;
  const { dir, path } = writeTempConfig('rusher-abuse-', text);
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('RUSHER_') && k !== 'RUST_LOG'));
  const child = spawn(BIN, ['--config', path], {
    env: { ...env, RUSHER_PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log = captureOutput(child);
  const exited = exitOf(child);
  t.after(async () => {
    await stopChild(child);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const early = exited.then(({ code }) => {
    throw new Error(`rusher exited with ${code} before /ready\n${log.join('')}`);
  });
  early.catch(() => {});
  await Promise.race([waitReady(port, () => alive(child), 20, 'rusher /ready'), early]);
  return { port, log };
}

/**
 * A WebSocket to /app/{key} on `port` (from `localAddress` when given, with
 * `headers`): resolves {ok: true, ws, frames} once connection_established
 * arrives, or {ok: false, status, retryAfter} when the upgrade is answered
 * with plain HTTP.
 */
function ws(port, { key = APPS.main.key, headers = {}, localAddress } = {}) {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(`ws://127.0.0.1:${port}/app/${key}?${DEFAULT_QUERY}`, { headers, localAddress, handshakeTimeout: 5000 });
    const frames = [];
    socket.on('message', (b) => {
      const frame = JSON.parse(b.toString());
      frame.dataParsed = parseData(frame.data);
      frames.push(frame);
      if (frame.event === 'pusher:connection_established') resolve({ ok: true, ws: socket, frames });
    });
    socket.on('unexpected-response', (_req, res) => {
      res.resume();
      resolve({ ok: false, status: res.statusCode, retryAfter: res.headers['retry-after'] });
      socket.terminate();
    });
    socket.on('error', (e) => reject(e));
    socket.on('close', (code) => reject(new Error(`closed with ${code} before connection_established`)));
  });
}

// /metrics is read over one kept-alive connection from an address no test
// limits: a connection past its first request is not half-open, so it is
// served even while the half-open caps refuse new connections.
const metricsAgent = new http.Agent({ keepAlive: true, maxSockets: 1, localAddress: '127.0.0.9' });
after(() => metricsAgent.destroy());
const getText = (url) =>
  new Promise((resolve, reject) => {
    http
      .get(url, { agent: metricsAgent }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve(body));
      })
      .on('error', reject);
  });

/** The value of one series on /metrics (0 when it is not there yet). */
async function metric(port, series) {
  const text = await getText(`http://127.0.0.1:${port}/metrics`);
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.split(' ')[1]) : 0;
}
const refusals = (port, limit) => metric(port, `rusher_limit_refusals_total{limit="${limit}"}`);

const closeAll = (conns) => conns.forEach((c) => c.ok && c.ws.terminate());

test('connection-rate cap per IP: the burst passes, then 429 + Retry-After on every transport, not on the HTTP API; after the window it works again', T, async (t) => {
  const { port } = await start(t, { limits: 'connection_rate_per_ip = 1\nconnection_burst_per_ip = 3' });
  const conns = [];
  t.after(() => closeAll(conns));
  for (let i = 0; i < 3; i += 1) conns.push(await ws(port));
  assert.ok(conns.every((c) => c.ok), 'the burst of 3 connects');

  const refused = await ws(port);
  assert.deepEqual(refused, { ok: false, status: 429, retryAfter: '1' }, 'the 4th in the same second: 429 before the upgrade');
  // The HTTP fallbacks and SSE are connection starts too: refused the same way.
  const xhr = await fetch(`http://127.0.0.1:${port}/pusher/app/${APPS.main.key}/123/abcdefgh/xhr_streaming?${DEFAULT_QUERY}`, { method: 'POST' });
  assert.equal(xhr.status, 429, 'xhr_streaming session open');
  assert.equal(xhr.headers.get('retry-after'), '1');
  assert.match((await xhr.json()).error, /Too many new connections from this address/);
  const poll = await fetch(`http://127.0.0.1:${port}/pusher/app/${APPS.main.key}/124/abcdefgh/xhr?${DEFAULT_QUERY}`, { method: 'POST' });
  assert.equal(poll.status, 429, 'xhr_polling session open');
  await poll.text();
  const sse = await fetch(`http://127.0.0.1:${port}/apps/${APPS.main.appId}/events/stream?channels=abuse-sse`);
  assert.equal(sse.status, 429, 'SSE stream open');
  await sse.text();
  // Not the HTTP API: it has its own limit (max_api_requests_per_second).
  const sdk = serverSdk(APPS.main, '127.0.0.1', port);
  const triggered = await sdk.trigger('abuse-api', 'ev', {});
  assert.equal(triggered.status, 200, 'HTTP API calls are not connection starts');

  assert.equal(await refusals(port, 'connection_rate_ip'), 4);
  // A token flows in each second: the next connection is admitted.
  await sleep(1100);
  const again = await ws(port);
  conns.push(again);
  assert.ok(again.ok, 'admitted again after Retry-After');
});

test('connection-rate cap per app: the app gets 429, other apps from the same IP do not', T, async (t) => {
  const apps = '[[apps]]\nid = "rate-app"\nkey = "rate-key"\nsecret = "rate-secret"\nconnection_rate = 1\nconnection_burst = 2\n';
  const { port } = await start(t, { apps });
  const conns = [];
  t.after(() => closeAll(conns));
  conns.push(await ws(port, { key: 'rate-key' }), await ws(port, { key: 'rate-key' }));
  assert.ok(conns.every((c) => c.ok));
  const refused = await ws(port, { key: 'rate-key' });
  assert.equal(refused.status, 429);
  assert.equal(refused.retryAfter, '1');
  const other = await ws(port);
  conns.push(other);
  assert.ok(other.ok, 'another app is not limited by this one');
  assert.equal(await refusals(port, 'connection_rate_app'), 1);
  assert.equal(await refusals(port, 'connection_rate_ip'), 0, 'per IP is off by default');
});

test('X-Forwarded-For is ignored unless the peer is a trusted proxy; then the first untrusted hop from the right counts', T, async (t) => {
  const limits = 'connection_rate_per_ip = 1\nconnection_burst_per_ip = 1';
  const [direct, proxied] = await Promise.all([
    start(t, { limits }),
    start(t, { limits: `${limits}\ntrusted_proxies = ["127.0.0.1", "10.0.0.0/8"]` }),
  ]);
  const conns = [];
  t.after(() => closeAll(conns));
  const xff = (value) => ({ headers: { 'X-Forwarded-For': value } });

  // No trusted proxy: every header names a new "client", all are 127.0.0.1.
  conns.push(await ws(direct.port, xff('1.1.1.1')));
  assert.ok(conns[0].ok);
  assert.equal((await ws(direct.port, xff('2.2.2.2'))).status, 429, 'a spoofed header does not buy a new budget');

  // 127.0.0.1 trusted: the header names the client.
  const first = await ws(proxied.port, xff('1.1.1.1'));
  conns.push(first);
  assert.ok(first.ok);
  assert.equal((await ws(proxied.port, xff('1.1.1.1'))).status, 429, 'same client behind the proxy');
  // A client prepending an address of its choice: the proxy appended the real one.
  assert.equal((await ws(proxied.port, xff('9.9.9.9, 1.1.1.1'))).status, 429, 'the rightmost untrusted hop counts');
  assert.equal((await ws(proxied.port, xff('1.1.1.1, 10.0.0.5'))).status, 429, 'trusted hops are skipped');
  const other = await ws(proxied.port, xff('2.2.2.2'));
  conns.push(other);
  assert.ok(other.ok, 'another client behind the same proxy has its own budget');
});

test('pusher-js refused with 429 does not give up: it falls back to xhr_streaming (limited the same way) and connects once a token is free', T, async (t) => {
  const { port } = await start(t, { limits: 'connection_rate_per_ip = 1\nconnection_burst_per_ip = 1' });
  const first = await ws(port);
  t.after(() => first.ws.terminate());
  const states = [];
  const started = Date.now();
  const client = new Pusher(APPS.main.key, {
    cluster: 'mt1',
    wsHost: '127.0.0.1',
    wsPort: port,
    httpHost: '127.0.0.1',
    httpPort: port,
    forceTLS: false,
    disableStats: true,
  });
  t.after(() => client.disconnect());
  client.connection.bind('state_change', ({ current }) => states.push(current));
  await withTimeout(
    new Promise((resolve) => client.connection.bind('connected', resolve)),
    20000,
    'pusher-js connected after the 429',
  );
  const tookMs = Date.now() - started;
  assert.ok(!states.includes('failed') && !states.includes('disconnected'), `states: ${states}`);
  assert.ok(await refusals(port, 'connection_rate_ip') >= 1, 'its WebSocket was refused');
  // The WebSocket is tried again only after 15 s; the HTTP fallback starts 5 s in.
  assert.equal(await metric(port, 'rusher_transport_sessions{transport="xhr_streaming"}'), 1, `connected over xhr_streaming after ${tookMs} ms`);
  assert.ok(tookMs >= 4000, `the fallback waited its delay (${tookMs} ms)`);
});

/** A TCP socket from `localAddress` that sends part of a request head and nothing else. */
function slowloris(port, localAddress) {
  const socket = net.connect({ port, host: '127.0.0.1', localAddress });
  const opened = Date.now();
  const received = [];
  socket.on('data', (d) => received.push(d.toString()));
  socket.on('error', () => {});
  const closed = new Promise((resolve) => socket.on('close', () => resolve({ afterMs: Date.now() - opened, received: received.join('') })));
  socket.on('connect', () => socket.write(`GET /app/${APPS.main.key}?${DEFAULT_QUERY} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: web`));
  return { socket, closed };
}

test('slowloris: unfinished requests are closed after request_header_timeout_ms, over the half-open caps at once; others are served meanwhile', T, async (t) => {
  const { port } = await start(t, { limits: 'request_header_timeout_ms = 1500\nmax_half_open = 8\nmax_half_open_per_ip = 5' });
  const sockets = [];
  t.after(() => sockets.forEach((s) => s.socket.destroy()));
  for (let i = 0; i < 5; i += 1) sockets.push(slowloris(port, '127.0.0.1'));
  await waitFor(async () => (await metric(port, 'rusher_half_open_connections')) === 5, 3000, 20, '5 half-open');

  // The 6th from the same address: closed at accept, nothing read.
  const sixth = slowloris(port, '127.0.0.1');
  const six = await withTimeout(sixth.closed, 900, 'the 6th is closed before any timeout');
  assert.equal(six.received, '');
  // Another address is served meanwhile.
  const normal = await ws(port, { localAddress: '127.0.0.2' });
  assert.ok(normal.ok, 'a normal client connects while the slowloris holds its slots');
  normal.ws.terminate();
  // The node cap: 5 + 3 half-open, the next (any address) is closed at once.
  for (let i = 0; i < 3; i += 1) sockets.push(slowloris(port, '127.0.0.3'));
  await waitFor(async () => (await metric(port, 'rusher_half_open_connections')) === 8, 3000, 20, '8 half-open (read over a kept-alive connection)');
  const ninth = await withTimeout(slowloris(port, '127.0.0.4').closed, 900, 'the 9th is closed before any timeout');
  assert.equal(ninth.received, '');

  // Every unfinished request ends at the header timeout (408), not before
  // (actix reckons it on a clock that ticks every 500 ms: up to 0.5 s early).
  const ends = await Promise.all(sockets.map((s) => withTimeout(s.closed, 6000, 'closed by the header timeout')));
  for (const end of ends) {
    assert.ok(end.afterMs >= 900 && end.afterMs < 3500, `closed after ${end.afterMs} ms (timeout 1500 ms)`);
    assert.match(end.received, /^HTTP\/1\.1 408/, 'answered 408 Request Timeout');
  }
  const after = await ws(port, { localAddress: '127.0.0.4' });
  assert.ok(after.ok, 'served again once the slots are free');
  after.ws.terminate();
  assert.equal(await refusals(port, 'half_open_ip'), 1);
  assert.equal(await refusals(port, 'half_open'), 1);
  assert.equal(await refusals(port, 'request_header_timeout'), 8);
  await waitFor(async () => (await metric(port, 'rusher_half_open_connections')) === 0, 3000, 20, 'no half-open left');
});

test('slowloris on a kept-alive connection: a next request head left unfinished is closed after the keep-alive wait plus request_header_timeout_ms; an idle one by keep-alive alone', T, async (t) => {
  const { port } = await start(t, { limits: 'request_header_timeout_ms = 1000\nmax_half_open_per_ip = 2' });
  // Each connection sends one whole request (then no longer half-open),
  // reads its answer, and sends the first bytes of the next one.
  const open = (partial) =>
    new Promise((resolve, reject) => {
      const socket = net.connect({ port, host: '127.0.0.1', localAddress: '127.0.0.6' });
      let received = '';
      let sentAt = 0;
      socket.on('error', () => {});
      socket.on('close', () => sentAt || reject(new Error(`closed before its first answer: ${received}`)));
      socket.on('connect', () => socket.write('GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'));
      socket.on('data', (d) => {
        received += d.toString();
        if (!sentAt && received.includes('\r\n\r\n')) {
          sentAt = Date.now();
          if (partial) socket.write('GET /ready HTTP/1.1\r\nHost: 1');
          resolve({ socket, closed: new Promise((done) => socket.on('close', () => done(Date.now() - sentAt))) });
        }
      });
    });
  // One after the other: each is half-open only until its first request.
  const held = [];
  for (let i = 0; i < 5; i += 1) held.push(await open(true));
  const idle = await open(false);
  t.after(() => [...held, idle].forEach((c) => c.socket.destroy()));
  // More than max_half_open_per_ip from one address: each must still end.
  const ends = await Promise.all(held.map((c) => withTimeout(c.closed, 9000, 'an unfinished next head is closed')));
  for (const ms of ends) assert.ok(ms >= 5500 && ms < 7500, `closed ${ms} ms after its first answer (keep-alive 5 s + 1 s)`);
  const idleEnd = await withTimeout(idle.closed, 2000, 'the idle connection is closed by keep-alive');
  assert.ok(idleEnd >= 4500 && idleEnd < 6000, `idle closed after ${idleEnd} ms (keep-alive 5 s)`);
  assert.equal(await refusals(port, 'request_header_timeout'), 5, 'counted as header timeouts; the idle close is not');
});

test('subscribe flood: 10,000 pusher:subscribe in one burst get 4301 once a second, bounded work, counted in /metrics; the connection stays usable', T, async (t) => {
  // Defaults: subscription_rate 200, max_channels_per_connection 100.
  const { port } = await start(t);
  const conn = await ws(port);
  t.after(() => conn.ws.terminate());
  const started = Date.now();
  for (let i = 0; i < 10000; i += 1) {
    conn.ws.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: `flood-${i}` } }));
  }
  conn.ws.send(JSON.stringify({ event: 'pusher:ping', data: {} }));
  await waitFor(() => conn.frames.some((f) => f.event === 'pusher:pong'), 20000, 20, 'pong after the flood');
  const seconds = Math.ceil((Date.now() - started) / 1000);
  const refusedHere = (f) => f.event === 'pusher:subscription_error' && f.dataParsed.status === 429;
  const answered = conn.frames.filter((f) => f.event === 'pusher_internal:subscription_succeeded' || (f.event === 'pusher:subscription_error' && !refusedHere(f)));
  // Each refused subscribe is told on its channel (pusher-js then emits
  // pusher:subscription_error there instead of leaving it pending).
  const refusedFrames = conn.frames.filter(refusedHere);
  assert.equal(answered.length + refusedFrames.length, 10000, 'every subscribe is answered, handled or refused');
  assert.equal(refusedFrames[0].dataParsed.type, 'LimitReached');
  const limited = conn.frames.filter((f) => f.event === 'pusher:error' && f.dataParsed.code === 4301);
  assert.ok(limited.length >= 1, 'the flood is told 4301');
  assert.ok(limited.length <= seconds + 1, `one 4301 per window, not per frame: ${limited.length} in ${seconds} s`);
  assert.match(limited[0].dataParsed.message, /Subscription rejected: rate limit exceeded/);
  assert.ok(answered.length <= 200 * (seconds + 1), `${answered.length} subscribes handled in ${seconds} s`);
  assert.equal(answered.length + (await refusals(port, 'subscription_rate')), 10000, 'every refused frame is counted');
  // Unsubscribe frames count against the same budget; the next window is open again.
  await sleep(1100);
  conn.ws.send(JSON.stringify({ event: 'pusher:unsubscribe', data: { channel: 'flood-0' } }));
  conn.ws.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: 'after-flood' } }));
  await waitFor(
    () => conn.frames.some((f) => f.event === 'pusher_internal:subscription_succeeded' && f.channel === 'after-flood'),
    5000,
    20,
    'subscribed after the window',
  );
});

test('max_connections_per_worker: at the cap new connections wait in the backlog and are served once one closes', T, async (t) => {
  const { port } = await start(t, { server: 'workers = 1', limits: 'max_connections_per_worker = 2' });
  const first = await ws(port);
  const second = await ws(port);
  assert.ok(first.ok && second.ok, 'two connections served');
  t.after(() => {
    first.ws.terminate();
    second.ws.terminate();
  });
  const third = ws(port);
  const early = await Promise.race([third.then(() => 'served'), sleep(800).then(() => 'waiting')]);
  assert.equal(early, 'waiting', 'the third connection waits while the worker is at its cap');
  first.ws.terminate();
  const served = await withTimeout(third, 5000, 'the third connection was not served after one closed');
  assert.ok(served.ok, `served after a close: ${JSON.stringify({ status: served.status })}`);
  served.ws.terminate();
});
