// pusher-js's HTTP fallback transports (xhr_streaming, xhr_polling) against
// rusher: the unmodified pusher-js (Node build, which has both transports)
// limited to one of them, next to WebSocket clients, and a raw client for
// the lines themselves (xhr-helpers.mjs). The web build in Chromium is
// covered by browser-transports.test.mjs.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  APPS,
  HOST,
  PORT,
  collect,
  newPusherClient,
  sleep,
  subscribeAndWait,
  uniqueChannel,
  waitFor,
} from './helpers.mjs';
import { channelAuth, memberIds, sdkAuthOptions, sdkFor } from './auth-helpers.mjs';
import { spawnRusher } from './webhook-helpers.mjs';
import { fixtureApps } from './helpers.mjs';
import { XhrSession, parseLine } from './xhr-helpers.mjs';
import http from 'node:http';

const T = { timeout: 40000 };
const sdk = sdkFor(APPS.main);

/** pusher-js limited to `transport`, with in-process auth by the SDK. */
async function httpClient(t, transport, options = {}, at = {}) {
  const { host = HOST, port = PORT } = at;
  const client = await newPusherClient(
    APPS.main.key,
    {
      httpHost: host,
      httpPort: port,
      enabledTransports: [transport],
      ...sdkAuthOptions(sdk, options),
    },
    at,
  );
  t.after(() => client.disconnect());
  assert.equal(client.connection.connection.transport.name, transport, `pusher-js connected over ${transport}`);
  return client;
}

/** A pusher-js WebSocket client with the same auth. */
async function wsClient(t, options = {}) {
  const client = await newPusherClient(APPS.main.key, sdkAuthOptions(sdk, options));
  t.after(() => client.disconnect());
  return client;
}

for (const transport of ['xhr_streaming', 'xhr_polling']) {
  test(`${transport}: unmodified pusher-js subscribes to public, private and presence channels and receives SDK events`, T, async (t) => {
    const client = await httpClient(t, transport, { presence: { user_id: `http-${transport}`, user_info: { via: transport } } });
    const names = [uniqueChannel('pub'), uniqueChannel('private'), uniqueChannel('presence')];
    for (const name of names) {
      const channel = await subscribeAndWait(client, name);
      const got = collect(channel, 'news');
      const res = await sdk.trigger(name, 'news', { on: name });
      assert.equal(res.status, 200);
      assert.deepEqual(await got.next(), { on: name }, `event on ${name} arrived over ${transport}`);
    }
    const presence = client.channel(names[2]);
    assert.deepEqual(memberIds(presence), [`http-${transport}`]);
    assert.equal(presence.members.me.info.via, transport);
    // The HTTP API sees the session as a connection like any other.
    const users = await (await sdk.get({ path: `/channels/${names[2]}/users` })).json();
    assert.deepEqual(users.users, [{ id: `http-${transport}` }]);
  });

  test(`${transport}: client events flow between an HTTP client and a WebSocket client, both ways, with presence membership`, T, async (t) => {
    const name = uniqueChannel('presence');
    const http = await httpClient(t, transport, { presence: { user_id: 'over-http' } });
    const ws = await wsClient(t, { presence: { user_id: 'over-ws' } });
    const httpChannel = await subscribeAndWait(http, name);
    const added = new Promise((resolve) => httpChannel.bind('pusher:member_added', resolve));
    const wsChannel = await subscribeAndWait(ws, name);
    assert.equal((await added).id, 'over-ws', 'the HTTP client saw the WebSocket member arrive');
    assert.deepEqual(memberIds(wsChannel), ['over-http', 'over-ws']);

    const atWs = collect(wsChannel, 'client-hello');
    assert.ok(httpChannel.trigger('client-hello', { from: 'http' }), 'pusher-js accepted the client event');
    assert.deepEqual(await atWs.next(), { from: 'http' });

    const atHttp = collect(httpChannel, 'client-hello');
    wsChannel.trigger('client-hello', { from: 'ws' });
    assert.deepEqual(await atHttp.next(), { from: 'ws' });

    // The HTTP client leaves (pusher-js only drops its request): the
    // WebSocket member sees it go. A dropped stream ends the session after
    // the 2 s grace; a poller may be between polls (nothing to drop), then
    // it is the activity timeout (3 s) and a liveness tick (1.5 s).
    const removed = new Promise((resolve) => wsChannel.bind('pusher:member_removed', resolve));
    const left = Date.now();
    http.disconnect();
    assert.equal((await removed).id, 'over-http');
    const took = Date.now() - left;
    const most = transport === 'xhr_streaming' ? 3500 : 6000;
    assert.ok(took >= 1500 && took < most, `member_removed ${took} ms after pusher-js disconnected`);
  });

  test(`${transport}: a signed-in pusher-js client receives sendToUser`, T, async (t) => {
    const userId = uniqueChannel('user');
    const client = await httpClient(t, transport, { user: { id: userId } });
    client.signin();
    await waitFor(() => client.user.user_data?.id === userId, 5000, 20, 'signed in');
    const got = new Promise((resolve) => client.user.bind('personal', resolve));
    // pusher-js subscribes to its user channel after signin_success: wait for it.
    await waitFor(() => client.user.serverToUserChannel?.subscribed, 5000, 20, 'user channel subscribed');
    assert.equal((await sdk.sendToUser(userId, 'personal', { n: 7 })).status, 200);
    assert.deepEqual(await got, { n: 7 });
  });
}

test('xhr_streaming: pusher-js reopening a long stream (256 KiB) loses no event', T, async (t) => {
  // pusher-js drops a streaming response whose text passed 256 KiB, once it
  // has read all of it, and opens the next one: what the server wrote to
  // the old one after that point never reached the client.
  const client = await httpClient(t, 'xhr_streaming');
  const name = uniqueChannel('long-stream');
  const channel = await subscribeAndWait(client, name);
  const got = [];
  channel.bind('seq', (data) => got.push(data.n));
  const total = 600; // about 1.2 MB of frames: four or five streams
  const pad = 'x'.repeat(2000);
  for (let n = 0; n < total; n += 10) {
    const batch = [];
    for (let i = n; i < n + 10; i += 1) batch.push({ channel: name, name: 'seq', data: { n: i, pad } });
    assert.equal((await sdk.triggerBatch(batch)).status, 200);
  }
  await waitFor(() => got.length >= total, 10000, 50, `${total} events (got ${got.length})`).catch(() => {});
  const missing = [...Array(total).keys()].filter((n) => !got.includes(n));
  assert.deepEqual(missing, [], `every event arrives (${missing.length} lost)`);
  assert.deepEqual(got, [...Array(total).keys()], 'once each, in order');
  assert.equal(client.connection.state, 'connected');
});

test('raw session: open line, established frame, CORS on every answer, preflight', T, async () => {
  const origin = 'http://page.example';
  const session = new XhrSession({ origin });
  const res = await session.stream();
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('access-control-allow-origin'), origin);
  await session.socketId();
  assert.equal(session.lines[0].type, 'o', 'the first line opens the session');
  assert.equal(session.lines.filter((l) => l.type === 'o').length, 1);
  const sent = await session.send([{ event: 'pusher:ping', data: {} }]);
  assert.equal(sent.status, 204);
  assert.equal(sent.headers.get('access-control-allow-origin'), origin);
  await session.frame('pusher:pong');

  const preflight = await fetch(`${session.base}/xhr_send`, {
    method: 'OPTIONS',
    headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
  });
  assert.equal(preflight.status, 204);
  assert.equal(preflight.headers.get('access-control-allow-origin'), origin);
  assert.match(preflight.headers.get('access-control-allow-methods'), /POST/);
  assert.match(preflight.headers.get('access-control-allow-headers'), /content-type/i);
  session.close();
});

test('raw session: refusals carry the Pusher code as the WebSocket handshake does', T, async () => {
  const cases = [
    { key: 'no-such-key', query: 'protocol=7', code: 4001 },
    { key: APPS.disabled.key, query: 'protocol=7', code: 4003 },
    { key: APPS.main.key, query: 'client=js', code: 4008 },
    { key: APPS.main.key, query: 'protocol=99', code: 4007 },
  ];
  for (const { key, query, code } of cases) {
    const session = new XhrSession({ key, query });
    const { status, lines } = await session.poll();
    assert.equal(status, 200, `${key} ${query}`);
    assert.deepEqual(lines.map((l) => l.type), ['o', 'a', 'c'], `${key} ${query}`);
    assert.equal(lines[1].frames[0].event, 'pusher:error');
    assert.equal(lines[1].frames[0].data.code, code, `${key} ${query}: pusher:error code`);
    assert.equal(lines[2].close[0], code, `${key} ${query}: close code`);
  }
});

test('raw session: xhr_send refuses what is not a session or not frames, with a clear status', T, async () => {
  const unknown = new XhrSession();
  const res = await unknown.send([]);
  assert.equal(res.status, 404);
  assert.match((await res.json()).error, /no such session/);

  const session = new XhrSession();
  await session.stream();
  await session.socketId();
  for (const [body, status] of [['{}', 400], ['not json', 400], ['[1,2]', 400]]) {
    const bad = await fetch(`${session.base}/xhr_send`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    assert.equal(bad.status, status, body);
    assert.match((await bad.json()).error, /JSON array of strings/);
  }
  const huge = await session.send([JSON.stringify({ event: 'client-x', channel: 'c', data: 'x'.repeat(70000) })]);
  assert.equal(huge.status, 413);
  // A malformed frame inside a good body gets pusher:error, the session stays.
  assert.equal((await session.send(['{not json'])).status, 204);
  const error = await session.frame('pusher:error');
  assert.match(error.data.message, /Invalid frame/);
  assert.equal((await session.send([{ event: 'pusher:ping', data: {} }])).status, 204);
  await session.frame('pusher:pong');
  // Unknown paths under the prefix are not sessions.
  const odd = await fetch(`http://${HOST}:${PORT}/pusher/app/app-key/1/bad!id/xhr`, { method: 'POST' });
  assert.equal(odd.status, 404);
  session.close();
});

test('raw session: another method on a session path is a JSON 405 with CORS, naming POST', T, async () => {
  const origin = 'http://page.example';
  const session = new XhrSession({ origin });
  for (const [method, path] of [['GET', 'xhr'], ['PUT', 'xhr_streaming'], ['DELETE', 'xhr_send']]) {
    const res = await fetch(`${session.base}/${path}?protocol=7`, { method, headers: { origin } });
    assert.equal(res.status, 405, `${method} ${path}`);
    assert.equal(res.headers.get('access-control-allow-origin'), origin, `${method} ${path}: CORS`);
    assert.match(res.headers.get('allow') ?? '', /POST/, `${method} ${path}: Allow`);
    assert.match((await res.json()).error, new RegExp(`${method} .*${path} is not served; use POST`));
  }
});

test('concurrent first requests of one session id share one session, which stays reachable', T, async () => {
  // pusher-js never does this, but a client retrying or a proxy duplicating
  // a request must not leave a session nobody can reach (it held a slot,
  // a connection and presence until the activity timeout).
  // Each request on a connection of its own, so the server's workers take
  // them at the same time (a pooled connection would serialize them).
  const freshPoll = (session) => new Promise((resolve, reject) => {
    const req = http.request(`${session.base}/xhr?${session.query}`, { method: 'POST', agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => { text += chunk; });
      res.on('end', () => {
        for (const line of text.split('\n').filter(Boolean)) session.push(line.startsWith('{') ? { type: 'refusal', text: line } : parseLine(line));
        resolve({ status: res.statusCode, text });
      });
    });
    req.on('error', reject);
    req.setTimeout(15000, () => req.destroy(new Error('poll timed out')));
    req.end();
  });
  for (let round = 0; round < 10; round += 1) {
    const session = new XhrSession();
    const polls = [0, 1, 2, 3].map(() => freshPoll(session));
    const settled = Promise.allSettled(polls);
    let done = false;
    settled.then(() => { done = true; });
    await session.until((s) => s.lines.some((l) => l.type === 'o'), 5000, 'the open line');
    // Each ping's pong ends whichever poll is attached; the others were
    // answered (empty) when a newer one took their place.
    while (!done) {
      const res = await session.send([{ event: 'pusher:ping', data: {} }]);
      assert.equal(res.status, 204, `round ${round}: the session is reachable (${res.status})`);
      await Promise.race([settled, sleep(100)]);
    }
    const results = await settled;
    for (const result of results) {
      assert.equal(result.status, 'fulfilled', `round ${round}: ${result.reason}`);
      assert.equal(result.value.status, 200, `round ${round}: every request is answered as the session's: ${result.value.text}`);
    }
    assert.equal(session.lines.filter((l) => l.type === 'o').length, 1, `round ${round}: one session opened`);
    const established = session.frames().filter((f) => f.event === 'pusher:connection_established');
    assert.equal(established.length, 1, `round ${round}: one connection`);
    session.close();
  }
});

test('long poll: answers at once when frames wait, else waits and answers with a heartbeat', T, async () => {
  const session = new XhrSession();
  const first = await session.poll();
  assert.deepEqual(first.lines.map((l) => l.type), ['o', 'a']);
  assert.equal(first.lines[1].frames[0].event, 'pusher:connection_established');
  const channel = uniqueChannel('poll');
  assert.equal((await session.send([{ event: 'pusher:subscribe', data: { channel } }])).status, 204);
  const second = await session.poll();
  assert.equal(second.lines[0].frames[0].event, 'pusher_internal:subscription_succeeded');
  // Nothing waits: the poll hangs for long_poll_timeout (the test server's
  // activity_timeout is 3 s, so half of it: 1.5 s), then answers `h`.
  const started = Date.now();
  const empty = await session.poll();
  const waited = Date.now() - started;
  assert.deepEqual(empty.lines.map((l) => l.type), ['h']);
  assert.ok(waited >= 1000, `the poll waited (${waited} ms)`);
  // An event published while a poll hangs ends it at once.
  const pending = session.poll();
  await sleep(200);
  await sdk.trigger(channel, 'live', { n: 1 });
  const live = await pending;
  assert.equal(live.lines[0].frames[0].event, 'live');
  session.close();
});

test('a polling presence member that stops polling is removed like a dead socket', T, async (t) => {
  const name = uniqueChannel('presence');
  const ws = await wsClient(t, { presence: { user_id: 'watcher' } });
  const wsChannel = await subscribeAndWait(ws, name);
  const session = new XhrSession();
  await session.poll();
  const socketId = await session.socketId();
  const channelData = JSON.stringify({ user_id: 'vanishing' });
  await session.send([
    { event: 'pusher:subscribe', data: { channel: name, auth: channelAuth(APPS.main, socketId, name, channelData), channel_data: channelData } },
  ]);
  await session.poll();
  await session.frame('pusher_internal:subscription_succeeded', name);
  await waitFor(() => memberIds(wsChannel).includes('vanishing'), 3000, 50, 'member added');
  // The client stops polling: after activity_timeout (3 s) without a request
  // the session is closed and the member removed.
  const removed = new Promise((resolve) => wsChannel.bind('pusher:member_removed', resolve));
  const started = Date.now();
  assert.equal((await removed).id, 'vanishing');
  const took = Date.now() - started;
  assert.ok(took < 9000, `removed after ${took} ms`);
  // The next request learns the close code (4201, as a silent WebSocket).
  const after = await session.poll();
  assert.deepEqual(after.lines.map((l) => l.type), ['c']);
  assert.equal(after.lines[0].close[0], 4201);
});

test('a session closed by the server tells its close code to the next request', T, async () => {
  const session = new XhrSession();
  await session.stream();
  await session.socketId();
  // A forged sign-in closes the connection with 4009, as over a WebSocket.
  await session.send([{ event: 'pusher:signin', data: { auth: 'app-key:bad', user_data: '{"id":"x"}' } }]);
  await session.until((s) => s.lines.find((l) => l.type === 'c'), 5000, 'close line');
  const close = session.lines.find((l) => l.type === 'c');
  assert.equal(close.close[0], 4009);
  assert.ok(session.frames().some((f) => f.event === 'pusher:error' && f.data.code === 4009));
  const again = new XhrSession();
  again.base = session.base;
  const { lines } = await again.poll();
  assert.deepEqual(lines.map((l) => [l.type, l.close?.[0]]), [['c', 4009]]);
  session.close();
});

test('batch size, transports turned off, metrics and graceful shutdown on a server of its own', T, async (t) => {
  const server = await spawnRusher(`[server]
host = "127.0.0.1"
activity_timeout = 20
shutdown_grace = 3

[transports]
xhr_streaming = false
max_batch_size = 2
long_poll_timeout = 5

${fixtureApps()}`);
  t.after(() => server.kill());
  const at = { port: server.port };
  // xhr_streaming is off: 404, and pusher-js limited to it cannot connect.
  const off = new XhrSession(at);
  const refused = await fetch(`${off.base}/xhr_streaming?protocol=7`, { method: 'POST' });
  assert.equal(refused.status, 404);
  assert.match((await refused.json()).error, /xhr_streaming transport is turned off/);

  const session = new XhrSession(at);
  await session.poll();
  const channel = uniqueChannel('batch');
  await session.send([{ event: 'pusher:subscribe', data: { channel } }]);
  await session.poll();
  const local = sdkFor(APPS.main);
  local.config.port = server.port;
  const serverSdk = (await import('./helpers.mjs')).serverSdk(APPS.main, '127.0.0.1', server.port);
  for (let n = 0; n < 5; n += 1) assert.equal((await serverSdk.trigger(channel, 'seq', { n })).status, 200);
  const got = [];
  while (got.length < 5) {
    const { lines } = await session.poll();
    for (const line of lines) {
      assert.equal(line.type, 'a');
      assert.ok(line.frames.length <= 2, `at most max_batch_size frames per poll (${line.frames.length})`);
      got.push(...line.frames.map((f) => JSON.parse(f.data).n));
    }
  }
  assert.deepEqual(got, [0, 1, 2, 3, 4], 'every event once, in order');

  const metrics = await (await fetch(`http://127.0.0.1:${server.port}/metrics`)).text();
  assert.match(metrics, /rusher_transport_sessions\{transport="xhr_polling"\} 1/);

  // Graceful shutdown: a hanging poll is answered with the 4200 close.
  const hanging = session.poll();
  await sleep(200);
  server.child.kill('SIGTERM');
  const { lines } = await hanging;
  const close = lines.find((l) => l.type === 'c');
  assert.ok(close, `a close line on shutdown: ${JSON.stringify(lines)}`);
  assert.equal(close.close[0], 4200);
  assert.equal((await server.exited).code, 0);
});
