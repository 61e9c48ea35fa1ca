// Server-Sent Events (README "Server-Sent Events"): GET
// /apps/{app_id}/events/stream?channels=a,b is a receive-only session. Each
// Pusher frame is one SSE event (event: the Pusher event name, data: the
// whole frame); channels with history give ids that one Last-Event-ID
// resumes; private, presence and user channels need a token the backend
// signs; the stream counts as a connection (presence, quota) and ends when
// the client goes away.
//
// The suite runs its own rusher (history on, a 1 s heartbeat, a short
// activity timeout the stream must survive) on a free port. The SSE client
// is a plain Node http.get reader that sends Last-Event-ID on a reconnect
// as EventSource does.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import { uniqueChannel, waitFor, withTimeout } from './helpers.mjs';
import { collectEvents, killAll, pusherOn, sdkOn, startRusher, subscribeOk } from './persistence-helpers.mjs';

const T = { timeout: 30000 };
const MAIN = { appId: 'app-id', key: 'app-key', secret: 'app-secret' };
const LIMITED = { appId: 'limited-app', key: 'limited-key', secret: 'limited-secret' };
const PLAIN = { appId: 'plain-app', key: 'plain-key', secret: 'plain-secret' };

const CONFIG = `[server]
host = "127.0.0.1"
port = 6001
# Shorter than the test's wait: an SSE stream cannot answer pusher:ping and
# must not be closed with 4201.
activity_timeout = 2
pong_timeout = 1
shutdown_grace = 1
log_level = "info"

[transports]
heartbeat = 1

# Every channel has history.
[[apps]]
id = "app-id"
key = "app-key"
secret = "app-secret"
history = true
max_channels_per_connection = 3

# One connection at most.
[[apps]]
id = "limited-app"
key = "limited-key"
secret = "limited-secret"
max_connections = 1

# No history: no ids. Also known by a numeric id, as SDKs that accept only
# digits (the Python one) name it.
[[apps]]
id = "plain-app"
id_aliases = ["4242"]
key = "plain-key"
secret = "plain-secret"
`;

let server;
before(async () => {
  server = await startRusher(CONFIG);
});
after(async () => {
  await killAll();
});

/** The README's token: auth, expires (and user_data), signed with the app secret. */
function token(app, channels, { expires = Math.floor(Date.now() / 1000) + 60, userData, secret = app.secret } = {}) {
  let toSign = `sse:${app.appId}:${channels}:${expires}`;
  if (userData !== undefined) toSign += `:${userData}`;
  const signature = crypto.createHmac('sha256', secret).update(toSign).digest('hex');
  const params = { auth: `${app.key}:${signature}`, expires: String(expires) };
  if (userData !== undefined) params.user_data = userData;
  return params;
}

/**
 * Opens a stream; resolves once the response head arrived with
 * {status, headers, events, comments, body (non-200), next(pred, ms), close()}.
 * An event is {event, id, data (the parsed frame)}; `lastId` is the id in force
 * (what EventSource sends as Last-Event-ID on a reconnect).
 */
function openStream(app, params = {}, headers = {}) {
  const query = new URLSearchParams(params).toString();
  const path = `/apps/${app.appId}/events/stream?${query}`;
  return new Promise((resolve, reject) => {
    const req = http.get({ host: server.host, port: server.port, path, headers }, (res) => {
      const stream = {
        status: res.statusCode,
        headers: res.headers,
        events: [],
        comments: [],
        lastId: '',
        ended: false,
        body: '',
        waiters: [],
        next(pred = () => true, ms = 5000, what = 'event') {
          const seen = this.events.find((e) => !e.taken && pred(e));
          if (seen) {
            seen.taken = true;
            return Promise.resolve(seen);
          }
          return withTimeout(
            new Promise((r) => this.waiters.push({ pred, r })),
            ms,
            `no ${what} on the stream within ${ms} ms; got ${JSON.stringify(this.events.map((e) => e.event))}`,
          );
        },
        close() {
          req.destroy();
        },
        res,
      };
      res.setEncoding('utf8');
      let buffer = '';
      res.on('data', (chunk) => {
        if (res.statusCode !== 200) {
          stream.body += chunk;
          return;
        }
        buffer += chunk;
        let at;
        while ((at = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, at);
          buffer = buffer.slice(at + 2);
          const fields = {};
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) {
              stream.comments.push(line.slice(1).trim());
              continue;
            }
            const colon = line.indexOf(':');
            const name = line.slice(0, colon);
            const value = line.slice(colon + 1).replace(/^ /, '');
            assert.ok(!(name in fields), `field ${name} twice in one event: ${block}`);
            fields[name] = value;
          }
          if (fields.data === undefined) continue;
          if (fields.id !== undefined) stream.lastId = fields.id;
          const event = { event: fields.event ?? 'message', id: fields.id, data: JSON.parse(fields.data) };
          const w = stream.waiters.findIndex((x) => x.pred(event));
          if (w >= 0) {
            event.taken = true;
            stream.waiters.splice(w, 1)[0].r(event);
          }
          stream.events.push(event);
        }
      });
      res.on('end', () => {
        stream.ended = true;
      });
      res.on('close', () => {
        stream.ended = true;
      });
      res.on('error', () => {});
      if (res.statusCode === 200) resolve(stream);
      else res.on('end', () => resolve({ ...stream, json: JSON.parse(stream.body) }));
    });
    req.on('error', reject);
  });
}

/** Opens a stream that must succeed; closed after the test. */
async function stream(t, app, params, headers) {
  const s = await openStream(app, params, headers);
  assert.equal(s.status, 200, s.body);
  t.after(() => s.close());
  await s.next((e) => e.event === 'pusher:connection_established', 5000, 'connection_established');
  return s;
}

const subscribed = (s, channel) =>
  s.next((e) => e.event === 'pusher_internal:subscription_succeeded' && e.data.channel === channel, 5000, `subscription to ${channel}`);

const onChannel = (channel, name = 'e') => (e) => e.event === name && e.data.channel === channel;

test('a public channel: connection_established, then an SDK event as one SSE event with the whole frame', T, async (t) => {
  const channel = uniqueChannel('sse-pub');
  const s = await openStream(PLAIN, { channels: channel }, { Origin: 'http://page.test' });
  t.after(() => s.close());
  assert.equal(s.status, 200);
  assert.match(s.headers['content-type'], /^text\/event-stream/);
  assert.equal(s.headers['access-control-allow-origin'], 'http://page.test');
  const established = await s.next();
  assert.equal(established.event, 'pusher:connection_established');
  assert.match(JSON.parse(established.data.data).socket_id, /^\d+\.\d+$/);
  await subscribed(s, channel);
  await sdkOn(server, PLAIN).trigger(channel, 'my-event', { hello: 'world' });
  const got = await s.next((e) => e.event === 'my-event');
  assert.equal(got.data.channel, channel);
  assert.deepEqual(JSON.parse(got.data.data), { hello: 'world' });
  assert.equal(got.id, undefined, 'no history, no id');
});

test('the stream outlives the activity timeout: heartbeats, no pusher:ping, no 4201', T, async (t) => {
  const s = await stream(t, PLAIN, { channels: uniqueChannel('sse-idle') });
  // activity_timeout 2 s + pong_timeout 1 s would close a silent WebSocket.
  await waitFor(() => s.comments.filter((c) => c === 'heartbeat').length >= 4, 8000, 50, '4 heartbeats');
  assert.equal(s.ended, false);
  assert.deepEqual(
    s.events.filter((e) => e.event === 'pusher:ping' || e.event === 'pusher:error'),
    [],
  );
});

test('history: ids, then a reconnect with Last-Event-ID gets exactly the missed events once, in order, then live', T, async (t) => {
  const channel = uniqueChannel('sse-hist');
  const sdk = sdkOn(server, MAIN);
  const first = await stream(t, MAIN, { channels: channel });
  const ok = await subscribed(first, channel);
  assert.equal(ok.id, `${channel}=0`, 'the success frame tells where the stream stands');
  for (const i of [1, 2]) await sdk.trigger(channel, 'e', { i });
  const second = await first.next(onChannel(channel));
  await first.next(onChannel(channel));
  assert.equal(second.id, `${channel}=1`);
  assert.equal(first.lastId, `${channel}=2`);
  const lastId = first.lastId;
  first.close();
  for (const i of [3, 4, 5]) await sdk.trigger(channel, 'e', { i });
  const again = await stream(t, MAIN, { channels: channel }, { 'Last-Event-ID': lastId });
  await subscribed(again, channel);
  const replayed = [];
  for (let k = 0; k < 3; k++) replayed.push(await again.next(onChannel(channel)));
  assert.deepEqual(replayed.map((e) => JSON.parse(e.data.data).i), [3, 4, 5]);
  assert.deepEqual(replayed.map((e) => e.id), [3, 4, 5].map((n) => `${channel}=${n}`));
  await sdk.trigger(channel, 'e', { i: 6 });
  const live = await again.next(onChannel(channel));
  assert.equal(JSON.parse(live.data.data).i, 6);
  assert.equal(again.events.filter(onChannel(channel)).length, 4, 'nothing twice');
  // A plain serial is accepted for a one-channel stream, in the query too.
  const plain = await stream(t, MAIN, { channels: channel, lastEventId: '4' });
  await subscribed(plain, channel);
  const after4 = [await plain.next(onChannel(channel)), await plain.next(onChannel(channel))];
  assert.deepEqual(after4.map((e) => e.data.serial), [5, 6]);
});

test('one id resumes every channel of the stream, names escaped; lastEventId in the query', T, async (t) => {
  const a = uniqueChannel('sse-a');
  const b = `${uniqueChannel("sse-b")}=x`;
  const sdk = sdkOn(server, MAIN);
  const channels = `${a},${b}`;
  const first = await stream(t, MAIN, { channels });
  await subscribed(first, a);
  await subscribed(first, b);
  await sdk.trigger(a, 'e', { on: 'a', i: 1 });
  await first.next(onChannel(a));
  assert.equal(first.lastId, `${a}=1,${b.replace('=', '%3D')}=0`);
  const lastId = first.lastId;
  first.close();
  await sdk.trigger(b, 'e', { on: 'b', i: 1 });
  await sdk.trigger(a, 'e', { on: 'a', i: 2 });
  await sdk.trigger(b, 'e', { on: 'b', i: 2 });
  const again = await stream(t, MAIN, { channels, lastEventId: lastId });
  const got = [];
  for (let k = 0; k < 3; k++) got.push(await again.next((e) => e.event === 'e'));
  const seen = got.map((e) => JSON.parse(e.data.data)).map((d) => `${d.on}${d.i}`).sort();
  assert.deepEqual(seen, ['a2', 'b1', 'b2']);
  assert.equal(again.lastId, `${a}=2,${b.replace('=', '%3D')}=2`);
  // A Last-Event-ID that is no id of ours is a 400 with a clear message.
  for (const bad of ['nonsense', `${a}=x`, '5']) {
    const refused = await openStream(MAIN, { channels }, { 'Last-Event-ID': bad });
    assert.equal(refused.status, 400, bad);
    assert.match(refused.json.error, /Last-Event-ID/);
  }
});

test('a position the history no longer covers surfaces pusher:recovery_failed', T, async (t) => {
  const channel = uniqueChannel('sse-gap');
  const s = await stream(t, MAIN, { channels: channel, lastEventId: `${channel}=99` });
  const failed = await s.next((e) => e.event === 'pusher:recovery_failed', 5000, 'recovery_failed');
  assert.equal(failed.data.channel, channel);
});

test('private channel: a valid token receives; bad signature 401, expired 403, missing 401, wrong key 401', T, async (t) => {
  const channel = uniqueChannel('private-sse');
  const s = await stream(t, PLAIN, { channels: channel, ...token(PLAIN, channel) });
  await subscribed(s, channel);
  await sdkOn(server, PLAIN).trigger(channel, 'secret-event', { x: 1 });
  assert.equal((await s.next((e) => e.event === 'secret-event')).data.channel, channel);

  const cases = [
    [{ ...token(PLAIN, channel, { secret: 'wrong' }) }, 401, /Invalid signature/],
    [{ ...token(PLAIN, channel, { expires: Math.floor(Date.now() / 1000) - 10 }) }, 403, /expired/],
    [{}, 401, new RegExp(channel)],
    [{ ...token(PLAIN, `${channel},other`) }, 401, /Invalid signature/],
    [{ ...token(PLAIN, channel), auth: `other-key:${token(PLAIN, channel).auth.split(':')[1]}` }, 401, /key/],
  ];
  for (const [params, status, message] of cases) {
    const refused = await openStream(PLAIN, { channels: channel, ...params }, { Origin: 'http://page.test' });
    assert.equal(refused.status, status, JSON.stringify(params));
    assert.match(refused.json.error, message);
    assert.equal(refused.headers['access-control-allow-origin'], 'http://page.test');
  }
});

test('an app reached by an id alias takes a token signed with that alias (or its id); a refusal names the string', T, async (t) => {
  const ALIAS = { ...PLAIN, appId: '4242' };
  const channel = uniqueChannel('private-alias');
  const byAlias = await stream(t, ALIAS, { channels: channel, ...token(ALIAS, channel) });
  await subscribed(byAlias, channel);
  const byId = await stream(t, ALIAS, { channels: channel, ...token(PLAIN, channel) });
  await subscribed(byId, channel);
  const refused = await openStream(ALIAS, { channels: channel, ...token(ALIAS, channel, { secret: 'wrong' }) });
  assert.equal(refused.status, 401);
  assert.match(refused.json.error, /sse:4242:<channels>:<expires>/);
});

test('bad requests: unknown app 404, no channels 400, bad name 400, too many 400, duplicates folded', T, async (t) => {
  assert.equal((await openStream({ appId: 'nope' }, { channels: 'a' })).status, 404);
  for (const params of [{}, { channels: '' }, { channels: 'a b' }, { channels: 'a,,b' }, { channels: 'a,b,c,d' }]) {
    const refused = await openStream(MAIN, params);
    assert.equal(refused.status, 400, JSON.stringify(params));
    assert.ok(refused.json.error.length > 0);
  }
  const folded = uniqueChannel('sse-dup');
  const s = await stream(t, MAIN, { channels: `${folded},${folded},b,c` });
  await subscribed(s, 'c');
  assert.equal(s.events.filter((e) => e.event === 'pusher_internal:subscription_succeeded' && e.data.channel === folded).length, 1);
});

test('the stream counts against max_connections: the second gets 429 with code 4004', T, async (t) => {
  await stream(t, LIMITED, { channels: 'a' });
  const refused = await openStream(LIMITED, { channels: 'a' });
  assert.equal(refused.status, 429);
  assert.equal(refused.json.code, 4004);
});

test('presence via token: a pusher-js member sees member_added, and member_removed soon after the stream closes', T, async (t) => {
  const channel = uniqueChannel('presence-sse');
  const watcher = await pusherOn(t, server, { presence: { user_id: 'ws-user', user_info: { name: 'WS' } } });
  t.after(() => watcher.disconnect());
  const { channel: ch } = await subscribeOk(watcher, channel);
  const added = collectEvents(ch, 'pusher:member_added');
  const removed = collectEvents(ch, 'pusher:member_removed');
  const userData = JSON.stringify({ id: 'sse-user', user_info: { name: 'SSE' } });
  const s = await stream(t, MAIN, { channels: channel, ...token(MAIN, channel, { userData }) });
  const ok = await subscribed(s, channel);
  assert.deepEqual(JSON.parse(ok.data.data).presence.ids.sort(), ['sse-user', 'ws-user']);
  const member = await added.next(5000);
  assert.deepEqual(member, { id: 'sse-user', info: { name: 'SSE' } });
  s.close();
  // Within a second: the server notices the closed response itself, not at
  // its next heartbeat write (1 s here, 25 s by default).
  const gone = await removed.next(1000);
  assert.equal(gone.id, 'sse-user');
  // Without user_data a presence channel is refused.
  const refused = await openStream(MAIN, { channels: channel, ...token(MAIN, channel) });
  assert.equal(refused.status, 401);
  assert.match(refused.json.error, /user_data/);
});

test('#server-to-user-{id} via token: sendToUser and terminate_connections reach the stream; another id is 403', T, async (t) => {
  const userData = JSON.stringify({ id: 'sse-u1' });
  const channel = '#server-to-user-sse-u1';
  const s = await stream(t, PLAIN, { channels: channel, ...token(PLAIN, channel, { userData }) });
  await s.next((e) => e.event === 'pusher:signin_success', 5000, 'signin_success');
  await subscribed(s, channel);
  await sdkOn(server, PLAIN).sendToUser('sse-u1', 'note', { hi: 1 });
  const note = await s.next((e) => e.event === 'note');
  assert.equal(note.data.channel, channel);
  assert.deepEqual(JSON.parse(note.data.data), { hi: 1 });
  // Signed in as the user: terminate_connections reaches the stream too.
  await sdkOn(server, PLAIN).terminateUserConnections('sse-u1');
  const terminated = await s.next((e) => e.event === 'pusher:error', 5000, 'pusher:error 4009');
  assert.equal(terminated.data.data.code, 4009);
  await waitFor(() => s.ended, 5000, 50, 'the terminated stream to end');
  const other = '#server-to-user-someone-else';
  const refused = await openStream(PLAIN, { channels: other, ...token(PLAIN, other, { userData }) });
  assert.equal(refused.status, 403);
  const unsigned = await openStream(PLAIN, { channels: channel });
  assert.equal(unsigned.status, 401);
});

test('a CORS preflight is answered and other methods get 405', T, async () => {
  const res = await fetch(`http://${server.host}:${server.port}/apps/${MAIN.appId}/events/stream`, {
    method: 'OPTIONS',
    headers: { Origin: 'http://page.test', 'Access-Control-Request-Method': 'GET', 'Access-Control-Request-Headers': 'last-event-id' },
  });
  assert.equal(res.status, 204);
  assert.equal(res.headers.get('access-control-allow-origin'), 'http://page.test');
  assert.equal(res.headers.get('access-control-allow-headers'), 'last-event-id');
  const post = await fetch(`http://${server.host}:${server.port}/apps/${MAIN.appId}/events/stream?channels=a`, { method: 'POST' });
  assert.equal(post.status, 405);
});

test('graceful shutdown reaches the stream: pusher:error 4200, then the response ends', T, async (t) => {
  const own = await startRusher(CONFIG);
  t.after(() => own.stop('SIGKILL'));
  const at = server;
  server = own;
  try {
    const s = await stream(t, PLAIN, { channels: 'a' });
    own.child.kill('SIGTERM');
    const closing = await s.next((e) => e.event === 'pusher:error', 5000, 'pusher:error');
    assert.equal(closing.data.data.code, 4200);
    await waitFor(() => s.ended, 5000, 50, 'the response to end');
  } finally {
    server = at;
  }
});

test('[transports] sse = false answers 404', T, async (t) => {
  const own = await startRusher(CONFIG.replace('heartbeat = 1', 'heartbeat = 1\nsse = false'));
  t.after(() => own.stop('SIGKILL'));
  const res = await fetch(`http://${own.host}:${own.port}/apps/${MAIN.appId}/events/stream?channels=a`);
  assert.equal(res.status, 404);
  assert.ok((await res.json()).error);
});

test('transports.max_sessions caps HTTP sessions: 503 with code 4100, and a closed stream frees its place', T, async (t) => {
  const own = await startRusher(CONFIG.replace('heartbeat = 1', 'heartbeat = 1\nmax_sessions = 1'));
  t.after(() => own.stop('SIGKILL'));
  const at = server;
  server = own;
  try {
    const first = await stream(t, PLAIN, { channels: 'a' });
    const refused = await openStream(PLAIN, { channels: 'a' });
    assert.equal(refused.status, 503);
    assert.equal(refused.json.code, 4100);
    assert.match(refused.json.error, /max_sessions/);
    first.close();
    await waitFor(
      async () => {
        const next = await openStream(PLAIN, { channels: 'a' });
        next.close();
        return next.status === 200;
      },
      5000,
      50,
      'a place under max_sessions after the first stream closed',
    );
  } finally {
    server = at;
  }
});

test('a stream that stops reading is ended (4100), not buffered: the server holds a bounded queue', T, async (t) => {
  const own = await startRusher(CONFIG.replace('log_level = "info"', 'log_level = "info"\noutgoing_queue = 64').replace('history = true', 'history = true\nhistory_size = 32'));
  t.after(() => own.stop('SIGKILL'));
  const at = server;
  server = own;
  try {
    const channel = uniqueChannel('sse-slow');
    const s = await stream(t, PLAIN, { channels: channel });
    await subscribed(s, channel);
    // The reader stops: TCP buffers fill, then the connection's queue and
    // the response body (64 frames each).
    s.res.pause();
    const rss = () => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${own.child.pid}/status`, 'utf8'))[1]);
    const before = rss();
    const sdk = sdkOn(own, PLAIN);
    const payload = 'x'.repeat(9000);
    const events = 1500; // ~13.5 MB towards the stream
    for (let i = 0; i < events; i += 10) {
      await Promise.all(Array.from({ length: 10 }, () => sdk.trigger(channel, 'big', payload)));
    }
    const grown = rss() - before;
    assert.ok(grown < 12 * 1024, `RSS grew ${grown} kB`);
    s.res.resume();
    await waitFor(() => s.ended, 10000, 50, 'the slow stream to end');
    const got = s.events.filter((e) => e.event === 'big').length;
    assert.ok(got < events, `the stream got ${got} of ${events}: it was cut off, not buffered`);
  } finally {
    server = at;
  }
});
