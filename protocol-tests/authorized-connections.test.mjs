// Authorized connections (README "Authorized connections"): an app with
// `authorized_connections = true` closes, with `pusher:error` 4009 and close
// code 4009, a connection that has neither signed in nor been granted a
// channel that needs a signature (private-, private-encrypted-, presence-)
// within `authorization_timeout`; pusher-js then does not reconnect. Such
// connections do not count against `max_connections` until they authorize
// (then over quota: 4004), and `max_unauthorized_connections` caps them (4100).
// Every transport is covered: WebSocket, xhr_streaming, xhr_polling, SSE.
//
// The suite runs its own rusher (adapter = "local") with a short timeout, and
// for the shared counts two nodes on its own redis-server.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import {
  DEFAULT_QUERY,
  connectRaw,
  newPusherClient,
  serverSdk,
  sleep,
  tomlString as q,
  uniqueChannel,
  waitFor,
  withTimeout,
} from './helpers.mjs';
import { channelAuth, rawClient, rawSignIn, rawSubscribe, sdkAuthOptions } from './auth-helpers.mjs';
import { killAll, startRusher } from './persistence-helpers.mjs';
import { killAll as killCluster, spawnNode, startRedis, writeConfig } from './cluster-helpers.mjs';
import { XhrSession } from './xhr-helpers.mjs';

const T = { timeout: 30000 };
const TIMEOUT_S = 0.8;
const AUTHZ = { appId: 'authz-app', key: 'authz-key', secret: 'authz-secret' };
const QUOTA = { appId: 'quota-app', key: 'quota-key', secret: 'quota-secret' };
const OPEN = { appId: 'open-app', key: 'open-key', secret: 'open-secret' };

const APPS_TOML = `[[apps]]
id = "authz-app"
key = "authz-key"
secret = "authz-secret"
authorized_connections = true
authorization_timeout = ${TIMEOUT_S}

# One authorized connection at most, two unauthorized ones.
[[apps]]
id = "quota-app"
key = "quota-key"
secret = "quota-secret"
authorized_connections = true
authorization_timeout = 20
max_connections = 1
max_unauthorized_connections = 2
`;

const CONFIG = `[server]
host = "127.0.0.1"
port = 6001
activity_timeout = 30
shutdown_grace = 1
log_level = "info"

${APPS_TOML}
# Without the option: an unsigned socket stays.
[[apps]]
id = "open-app"
key = "open-key"
secret = "open-secret"
`;

let server;
let at;

before(async () => {
  server = await startRusher(CONFIG);
  at = { host: server.host, port: server.port };
});

after(async () => {
  await killAll();
  await killCluster();
});

/** The value of a plain metric on `port`, 0 when absent. */
async function metric(name, port = server.port) {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const m = text.match(new RegExp(`^${name} ([0-9.e+]+)$`, 'm'));
  return m ? Number(m[1]) : 0;
}

/** A raw socket of `app` (answers pings, closed after the test). */
const raw = (t, app = AUTHZ) => rawClient(t, app.key, at);

/** Subscribes a raw socket to a signed channel (presence with `userId`); asserts success. */
async function subscribeSigned(conn, app, channel, userId) {
  const data = userId === undefined ? undefined : JSON.stringify({ user_id: userId });
  const fields = { auth: channelAuth(app, conn.socketId, channel, data) };
  if (data !== undefined) fields.channel_data = data;
  const answer = await rawSubscribe(conn, channel, fields);
  assert.equal(answer.event, 'pusher_internal:subscription_succeeded', JSON.stringify(answer));
}

/** Resolves with the close of a raw socket, or fails after `ms`. */
const closeOf = (conn, ms = 5000, what = 'socket') => withTimeout(conn.closed, ms, `${what} not closed`);

/** The README's SSE token: auth, expires (and user_data), signed with the app secret. */
function sseToken(app, channels, userData) {
  const expires = Math.floor(Date.now() / 1000) + 60;
  let toSign = `sse:${app.appId}:${channels}:${expires}`;
  if (userData !== undefined) toSign += `:${userData}`;
  const signature = crypto.createHmac('sha256', app.secret).update(toSign).digest('hex');
  const params = { auth: `${app.key}:${signature}`, expires: String(expires) };
  if (userData !== undefined) params.user_data = userData;
  return params;
}

/** Opens an SSE stream; `text` grows as it reads, `ended` resolves when the server ends it. */
async function sseStream(t, app, params) {
  const controller = new AbortController();
  t.after(() => controller.abort());
  const query = new URLSearchParams(params).toString();
  const res = await fetch(`http://127.0.0.1:${server.port}/apps/${app.appId}/events/stream?${query}`, {
    signal: controller.signal,
  });
  assert.equal(res.status, 200);
  const stream = { text: '', done: false };
  const decoder = new TextDecoder();
  stream.ended = (async () => {
    try {
      for await (const chunk of res.body) stream.text += decoder.decode(chunk, { stream: true });
    } catch {
      /* aborted by the test */
    }
    stream.done = true;
  })();
  await waitFor(() => stream.text.includes('pusher:connection_established'), 5000, 20, 'SSE connection_established');
  return stream;
}

test('unauthorized sockets are closed with pusher:error 4009 after authorization_timeout: idle, on a public or public cache channel, after a refused private signature', T, async (t) => {
  const timeoutsBefore = await metric('rusher_authorization_timeouts_total');
  const started = Date.now();
  const idle = await raw(t);
  const onPublic = await raw(t);
  assert.equal((await rawSubscribe(onPublic, uniqueChannel('pub'))).event, 'pusher_internal:subscription_succeeded');
  const onCache = await raw(t);
  assert.equal((await rawSubscribe(onCache, uniqueChannel('cache-pub'))).event, 'pusher_internal:subscription_succeeded');
  const forged = await raw(t);
  const refused = await rawSubscribe(forged, uniqueChannel('private-x'), { auth: `${AUTHZ.key}:${'0'.repeat(64)}` });
  assert.equal(refused.event, 'pusher:subscription_error', 'a bad signature does not authorize');

  for (const [what, conn] of [
    ['idle', idle],
    ['public', onPublic],
    ['cache', onCache],
    ['forged', forged],
  ]) {
    const closed = await closeOf(conn, 5000, what);
    assert.equal(closed.code, 4009, what);
    const error = conn.frames.find((f) => f.event === 'pusher:error');
    assert.equal(error?.dataParsed.code, 4009, `${what}: pusher:error 4009 before the close`);
    assert.match(error.dataParsed.message, /not authorized within/);
  }
  assert.ok(Date.now() - started >= TIMEOUT_S * 1000 - 50, 'not before the timeout');
  assert.equal(await metric('rusher_authorization_timeouts_total'), timeoutsBefore + 4);
});

test('signed-in, private, private-encrypted, presence and private cache sockets stay open; so does an unsigned socket of an app without the option', T, async (t) => {
  const sdk = serverSdk(AUTHZ, at.host, at.port);
  const signedIn = await raw(t);
  await rawSignIn(signedIn, sdk, { id: uniqueChannel('u') });
  const kept = [['signed-in', signedIn]];
  for (const [what, channel, userId] of [
    ['private', uniqueChannel('private-a')],
    ['private-encrypted', uniqueChannel('private-encrypted-a')],
    ['presence', uniqueChannel('presence-a'), 'member-1'],
    ['private cache', uniqueChannel('private-cache-a')],
  ]) {
    const conn = await raw(t);
    // A public channel first: it does not authorize, the signed one does.
    await rawSubscribe(conn, uniqueChannel('first'));
    await subscribeSigned(conn, AUTHZ, channel, userId);
    kept.push([what, conn]);
  }
  kept.push(['other app', await raw(t, OPEN)]);
  // Opened last: once it is closed, every socket above is past its timeout.
  const control = await raw(t);
  assert.equal((await closeOf(control)).code, 4009);
  for (const [what, conn] of kept) {
    assert.equal(conn.isClosed, false, `${what} stays open`);
    conn.send({ event: 'pusher:ping', data: {} });
    await conn.next('pusher:pong', 3000);
  }
});

test('pusher-js: an unauthorized client ends disconnected and never reconnects; one with a private channel stays connected', T, async (t) => {
  const sdk = serverSdk(AUTHZ, at.host, at.port);
  const authed = await newPusherClient(AUTHZ.key, sdkAuthOptions(sdk), at);
  t.after(() => authed.disconnect());
  await withTimeout(
    new Promise((resolve, reject) => {
      const channel = authed.subscribe(uniqueChannel('private-pj'));
      channel.bind('pusher:subscription_succeeded', resolve);
      channel.bind('pusher:subscription_error', reject);
    }),
    5000,
    'private subscription',
  );

  const client = await newPusherClient(AUTHZ.key, {}, at);
  t.after(() => client.disconnect());
  // pusher-js answers a 40xx close by closing its (already closed) faye
  // socket, which arms a 30 s timer nobody clears: clear it so Node exits.
  const faye = client.connection.connection?.transport?.socket;
  t.after(() => faye && clearTimeout(faye._closeTimer));
  const states = [];
  const errors = [];
  client.connection.bind('state_change', ({ current }) => states.push(current));
  client.connection.bind('error', (e) => errors.push(e));
  await waitFor(() => ['disconnected', 'failed'].includes(client.connection.state), 5000, 20, 'pusher-js closed');
  const accepted = await metric('rusher_connections_total');
  // Long enough for pusher-js's first retry (it would reconnect at once on
  // 4200-4299 and after about 1 s on 4100-4199).
  await sleep(1500);
  assert.ok(['disconnected', 'failed'].includes(client.connection.state), client.connection.state);
  assert.ok(!states.includes('connecting'), `no reconnect attempt: ${states.join(' → ')}`);
  assert.equal(await metric('rusher_connections_total'), accepted, 'no new connection reached the server');
  assert.ok(errors.some((e) => e?.error?.data?.code === 4009), `pusher-js saw 4009: ${JSON.stringify(errors)}`);
  assert.equal(authed.connection.state, 'connected', 'the authorized client stays');
});

test('every transport: xhr_streaming, xhr_polling and a public SSE stream are closed with 4009; SSE with a signed token is authorized from the start', T, async (t) => {
  const streaming = new XhrSession({ key: AUTHZ.key, host: at.host, port: at.port, query: DEFAULT_QUERY });
  t.after(() => streaming.controller.abort());
  await streaming.stream();
  const closeLine = await streaming.until((s) => s.lines.find((l) => l.type === 'c'), 5000, 'xhr_streaming close');
  assert.equal(closeLine.close[0], 4009);
  const error = streaming.frames().find((f) => f.event === 'pusher:error');
  const data = typeof error.data === 'string' ? JSON.parse(error.data) : error.data;
  assert.equal(data.code, 4009, 'pusher:error 4009 before the close line');

  const polling = new XhrSession({ key: AUTHZ.key, host: at.host, port: at.port, query: DEFAULT_QUERY });
  t.after(() => polling.controller.abort());
  const polled = await withTimeout(
    (async () => {
      for (;;) {
        const { lines } = await polling.poll();
        const close = lines.find((l) => l.type === 'c');
        if (close) return close;
      }
    })(),
    8000,
    'xhr_polling close',
  );
  assert.equal(polled.close[0], 4009);

  const privateChannel = uniqueChannel('private-sse');
  const signed = await sseStream(t, AUTHZ, { channels: privateChannel, ...sseToken(AUTHZ, privateChannel) });
  // A token with user_data signs the stream in, even on public channels only.
  const userChannel = uniqueChannel('pub');
  const user = JSON.stringify({ id: 'sse-user' });
  const signedIn = await sseStream(t, AUTHZ, { channels: userChannel, ...sseToken(AUTHZ, userChannel, user) });
  const publicStream = await sseStream(t, AUTHZ, { channels: uniqueChannel('pub') });
  await withTimeout(publicStream.ended, 5000, 'public SSE stream ended');
  assert.match(publicStream.text, /"code":4009/);
  assert.equal(signed.done, false, 'the signed SSE stream stays');
  assert.ok(signed.text.includes(`pusher_internal:subscription_succeeded`), signed.text);
  assert.equal(signedIn.done, false, 'the signed-in SSE stream stays');
});

test('max_connections counts authorized connections only; authorizing over it closes with 4004; max_unauthorized_connections refuses with 4100; the gauge follows', T, async (t) => {
  await waitFor(async () => (await metric('rusher_unauthorized_connections')) === 0, 5000, 50, 'earlier sockets gone');
  const sdk = serverSdk(QUOTA, at.host, at.port);
  const first = await raw(t, QUOTA);
  const second = await raw(t, QUOTA);
  assert.equal(await metric('rusher_unauthorized_connections'), 2);
  await subscribeSigned(first, QUOTA, uniqueChannel('private-q'));
  assert.equal(await metric('rusher_unauthorized_connections'), 1);
  // The app is at max_connections: an unauthorized one is still admitted.
  const third = await raw(t, QUOTA);
  // Two unauthorized already: the next is refused as over capacity.
  const fourth = connectRaw(QUOTA.key, DEFAULT_QUERY, undefined, {}, at);
  t.after(() => fourth.close());
  assert.equal((await closeOf(fourth)).code, 4100, 'the fourth connection is refused as over capacity');
  const refusedTotal = async (code) => {
    const text = await (await fetch(`http://127.0.0.1:${server.port}/metrics`)).text();
    const m = text.match(new RegExp(`^rusher_connections_refused_total\\{code="${code}"\\} ([0-9]+)$`, 'm'));
    return m ? Number(m[1]) : 0;
  };
  assert.ok((await refusedTotal(4100)) >= 1);

  // Authorizing over max_connections: closed with 4004, joined nothing.
  const channel = uniqueChannel('private-q');
  second.send({ event: 'pusher:subscribe', data: { channel, auth: channelAuth(QUOTA, second.socketId, channel) } });
  assert.equal((await closeOf(second)).code, 4004);
  assert.equal(second.frames.find((f) => f.event === 'pusher:error')?.dataParsed.code, 4004);
  assert.ok(!second.frames.some((f) => f.event === 'pusher_internal:subscription_succeeded'));
  const info = await (await sdk.get({ path: `/channels/${channel}`, params: { info: 'subscription_count' } })).json();
  assert.equal(info.subscription_count ?? 0, 0, 'the refused socket is not subscribed');
  // The same through a sign-in.
  third.send({ event: 'pusher:signin', data: sdk.authenticateUser(third.socketId, { id: 'over' }) });
  assert.equal((await closeOf(third)).code, 4004);
  assert.ok(!third.frames.some((f) => f.event === 'pusher:signin_success'));
  await waitFor(async () => (await metric('rusher_unauthorized_connections')) === 0, 3000, 50, 'gauge back to 0');
  // The places are back: a new unauthorized connection is admitted.
  const fifth = await raw(t, QUOTA);
  assert.equal(fifth.isClosed, false);
  assert.equal(await metric('rusher_unauthorized_connections'), 1);
});

test('with Redis: an unauthorized socket closed with 4009 leaves the shared subscription count; an authorized one stays counted', T, async (t) => {
  const redis = await startRedis();
  const config = writeConfig(`adapter = "redis"

[server]
host = "127.0.0.1"
port = 6001
log_level = "info"
shutdown_grace = 1

[redis]
url = ${q(redis.url)}
prefix = ${q(`rusher-authz-${process.pid}`)}
heartbeat_secs = 1
node_timeout_secs = 3

${APPS_TOML}`);
  const [A, B] = await Promise.all([spawnNode('A', config.path), spawnNode('B', config.path)]);
  const onB = { host: '127.0.0.1', port: B.port };
  const channel = uniqueChannel('shared');
  const unauthorized = await rawClient(t, AUTHZ.key, onB);
  await rawSubscribe(unauthorized, channel);
  const authorized = await rawClient(t, AUTHZ.key, onB);
  await subscribeSigned(authorized, AUTHZ, uniqueChannel('private-r'));
  await rawSubscribe(authorized, channel);
  const count = async () => {
    const res = await serverSdk(AUTHZ, '127.0.0.1', A.port).get({
      path: `/channels/${channel}`,
      params: { info: 'subscription_count' },
    });
    return (await res.json()).subscription_count ?? 0;
  };
  await waitFor(async () => (await count()) === 2, 5000, 50, 'both counted on A');
  assert.equal((await closeOf(unauthorized)).code, 4009);
  await waitFor(async () => (await count()) === 1, 5000, 50, 'the closed socket left the shared count');
  assert.equal(authorized.isClosed, false);
  assert.equal(await metric('rusher_unauthorized_connections', B.port), 0);
});
