// pushi's WebSocket dialect (README "pushi's WebSocket dialect"): pushi.js
// clients connect to `/{app_key}` and get pushi's frames through the same hub
// as pusher-js clients. A raw `ws` client speaks pushi.js's frames
// (src/extras/js/pushi.js in hivesolutions/pushi); the expected answers come
// from pushi-service 0.6.10 (pushi/net/server.py, pushi/base/state.py), the
// line each follows is named beside it.
//
// The suite runs its own rusher (history on for app-id, a 1 s activity
// timeout to see the keep-alive); RUSHER_PORT's shared server is not used.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { connectRaw, parseData, waitFor } from './helpers.mjs';
import { channelAuth, killAll, pusherOn, sdkOn, startRusher } from './persistence-helpers.mjs';
import { collect } from './helpers.mjs';

const T = { timeout: 30000 };
const MAIN = { appId: 'app-id', key: 'app-key', secret: 'app-secret' };

const CONFIG = `[server]
host = "127.0.0.1"
port = 6001
activity_timeout = 1
pong_timeout = 1
shutdown_grace = 1
log_level = "info"

[[apps]]
id = "app-id"
key = "app-key"
secret = "app-secret"
client_events = true
history = true
`;

let server;
let seq = 0;
const unique = (prefix) => `${prefix}-${process.pid}-${Date.now().toString(36)}-${++seq}`;

before(async () => {
  server = await startRusher(CONFIG);
});
after(killAll);

/** A pushi.js-style client: `ws://host/{key}`, no query (pushi.js `config`: url = baseUrl + appKey). */
async function pushiOn(t, key = MAIN.key) {
  const conn = connectRaw(key, '', `/${key}`, {}, { host: server.host, port: server.port });
  t.after(() => conn.close());
  const established = await conn.next('pusher:connection_established', 5000);
  conn.socketId = parseData(established.data).socket_id;
  conn.established = established;
  return conn;
}

/** pushi.js `subscribePublic` / `subscribePrivate`: resolves with the subscription_succeeded frame. */
async function pushiSubscribe(conn, channel, fields = {}) {
  conn.send({ event: 'pusher:subscribe', data: { channel, ...fields } });
  return conn.next((f) => f.channel === channel && /subscription_(succeeded|error)/.test(f.event), 4000);
}

const isMid = (mid) => typeof mid === 'string' && mid.length > 0;

test('connection_established carries only socket_id, as pushi (server.py on_handshake)', T, async (t) => {
  const conn = await pushiOn(t);
  const data = parseData(conn.established.data);
  assert.deepEqual(Object.keys(data), ['socket_id']);
  assert.equal(typeof data.socket_id, 'string');
});

test('subscribe answers pushi channel data; an SDK event arrives with mid and timestamp, pusher-js gets it unchanged', T, async (t) => {
  const channel = unique('pushi-pub');
  const conn = await pushiOn(t);
  const ok = await pushiSubscribe(conn, channel);
  // server.py handle_pusher_subscribe: data = json.dumps(get_channel(...)).
  assert.equal(ok.event, 'pusher_internal:subscription_succeeded');
  assert.deepEqual(parseData(ok.data), { name: channel, members: {}, alias: [], events: [] });

  const js = await pusherOn(t, server);
  const jsChannel = js.subscribe(channel);
  await new Promise((resolve) => jsChannel.bind('pusher:subscription_succeeded', resolve));
  const jsEvents = collect(jsChannel, 'greet');

  await sdkOn(server).trigger(channel, 'greet', { hello: 'pushi' });
  // state.py trigger_c: json_d = {channel, event, data (a string)} + mid, timestamp.
  const frame = await conn.next('greet', 4000);
  assert.equal(frame.channel, channel);
  assert.equal(typeof frame.data, 'string');
  assert.deepEqual(JSON.parse(frame.data), { hello: 'pushi' });
  assert.ok(isMid(frame.mid), `mid: ${frame.mid}`);
  assert.equal(typeof frame.timestamp, 'number');
  assert.ok(Math.abs(frame.timestamp - Date.now() / 1000) < 60, `timestamp ${frame.timestamp}`);

  const seen = await jsEvents.next(4000);
  assert.deepEqual(seen, { hello: 'pushi' });
  const raw = js.rawFrames.find((f) => f.event === 'greet');
  assert.equal(raw.mid, undefined, 'Pusher frames carry no mid');
  assert.equal(raw.timestamp, undefined);

  // server.py handle_pusher_unsubscribe: pusher_internal:unsubscription_succeeded.
  conn.send({ event: 'pusher:unsubscribe', data: { channel } });
  const gone = await conn.next('pusher_internal:unsubscription_succeeded', 4000);
  assert.equal(gone.channel, channel);
  assert.equal(parseData(gone.data).name, channel);
});

test('pusher:latest returns stored events newest first with skip/count; bad input is refused', T, async (t) => {
  const channel = unique('pushi-latest');
  const conn = await pushiOn(t);
  await pushiSubscribe(conn, channel);
  const sdk = sdkOn(server);
  for (let i = 0; i < 5; i += 1) {
    await sdk.trigger(channel, `e${i}`, `data-${i}`);
  }
  const live = [];
  for (let i = 0; i < 5; i += 1) live.push(await conn.next(`e${i}`, 4000));

  // server.py handle_pusher_latest: get_channel(skip, count) -> events newest first (sort id -1).
  conn.send({ event: 'pusher:latest', data: { channel, skip: 1, count: 2 } });
  const answer = await conn.next('pusher_internal:latest', 4000);
  assert.equal(answer.channel, channel);
  const body = parseData(answer.data);
  assert.equal(body.name, channel);
  assert.deepEqual(
    body.events.map((e) => e.data.event),
    ['e3', 'e2'],
  );
  const e3 = body.events[0];
  assert.equal(e3.channel, channel);
  assert.equal(e3.data.data, 'data-3');
  assert.equal(e3.data.channel, channel);
  assert.equal(typeof e3.timestamp, 'number');
  // The live frame and the stored event name the event with the same mid.
  assert.equal(e3.mid, live[3].mid);

  // pushi.js defaults: skip 0, count 10.
  conn.send({ event: 'pusher:latest', data: { channel } });
  const all = parseData((await conn.next('pusher_internal:latest', 4000)).data);
  assert.deepEqual(all.events.map((e) => e.data.event), ['e4', 'e3', 'e2', 'e1', 'e0']);

  for (const [data, word] of [
    [{ channel, count: 0 }, 'count'],
    [{ channel, count: 101 }, 'count'],
    [{ channel, skip: -1 }, 'skip'],
    [{ channel, skip: 'x' }, 'skip'],
    [{ skip: 1 }, 'channel'],
  ]) {
    conn.send({ event: 'pusher:latest', data });
    const error = await conn.next('pusher:error', 4000);
    assert.match(parseData(error.data).message, new RegExp(word), JSON.stringify(data));
  }
  // state.py validate: only for a channel the socket is subscribed to.
  conn.send({ event: 'pusher:latest', data: { channel: unique('other') } });
  const refused = await conn.next('pusher:error', 4000);
  assert.match(parseData(refused.data).message, /not subscribed/);
});

test('presence: a pushi client and a pusher-js client see each other; member frames in pushi shape', T, async (t) => {
  const channel = unique('presence-pushi');
  const conn = await pushiOn(t);
  const channelData = JSON.stringify({ user_id: 'pushi-user', user_info: { name: 'P' } });
  const ok = await pushiSubscribe(conn, channel, {
    auth: channelAuth(conn.socketId, channel, channelData),
    channel_data: channelData,
  });
  assert.equal(ok.event, 'pusher_internal:subscription_succeeded');
  assert.deepEqual(parseData(ok.data).members, { 'pushi-user': { user_id: 'pushi-user', user_info: { name: 'P' } } });

  const js = await pusherOn(t, server, { presence: { user_id: 'js-user', user_info: { name: 'J' } } });
  const jsChannel = js.subscribe(channel);
  await new Promise((resolve) => jsChannel.bind('pusher:subscription_succeeded', resolve));
  assert.deepEqual(jsChannel.members.get('pushi-user')?.info, { name: 'P' });

  // state.py subscribe: {event: "pusher:member_added", member: json.dumps(channel_data), channel}.
  const added = await conn.next('pusher:member_added', 4000);
  assert.equal(added.channel, channel);
  assert.equal(added.data, undefined);
  assert.deepEqual(JSON.parse(added.member), { user_id: 'js-user', user_info: { name: 'J' } });

  js.disconnect();
  // state.py unsubscribe: pusher:member_removed with member.
  const removed = await conn.next('pusher:member_removed', 6000);
  assert.equal(JSON.parse(removed.member).user_id, 'js-user');
});

test('client events: echo returns to the sender, others get mid/timestamp, pusher-js gets the event', T, async (t) => {
  const channel = unique('private-pushi');
  const sender = await pushiOn(t);
  const peer = await pushiOn(t);
  for (const conn of [sender, peer]) {
    const ok = await pushiSubscribe(conn, channel, { auth: channelAuth(conn.socketId, channel) });
    assert.equal(ok.event, 'pusher_internal:subscription_succeeded');
  }
  const js = await pusherOn(t, server);
  const jsChannel = js.subscribe(channel);
  await new Promise((resolve) => jsChannel.bind('pusher:subscription_succeeded', resolve));
  const jsEvents = collect(jsChannel, 'message');

  // pushi.js sendChannel: {event, data, channel, echo, persist}.
  sender.send({ event: 'message', data: { text: 'hi' }, channel, echo: true, persist: true });
  for (const conn of [sender, peer]) {
    const frame = await conn.next('message', 4000);
    // state.py trigger_c: data as a string (json.dumps).
    assert.deepEqual(JSON.parse(frame.data), { text: 'hi' });
    assert.ok(isMid(frame.mid));
    assert.equal(typeof frame.timestamp, 'number');
  }
  assert.deepEqual(await jsEvents.next(4000), { text: 'hi' });

  // echo false (pushi.js's default): the sender does not get it back.
  sender.send({ event: 'message', data: 'quiet', channel, echo: false });
  assert.equal((await peer.next('message', 4000)).data, 'quiet');
  assert.ok(await sender.none('message', 500), 'no echo without echo: true');

  // The app's client-event rules apply: not on a public channel.
  const open = unique('pushi-open');
  await pushiSubscribe(sender, open);
  sender.send({ event: 'message', data: 'x', channel: open });
  const error = await sender.next('pusher:error', 4000);
  assert.match(parseData(error.data).message, /private|presence/i);
  sender.send({ event: 'message', data: 'x', channel, echo: 'yes' });
  assert.match(parseData((await sender.next('pusher:error', 4000)).data).message, /echo/);
});

test('keep-alive: pushi.js never answers pusher:ping, so the server pings at the WebSocket level', T, async (t) => {
  const conn = await pushiOn(t);
  let pings = 0;
  conn.ws.on('ping', () => {
    pings += 1;
  });
  // activity_timeout 1 s, pong_timeout 1 s: a pusher:ping left unanswered would close 4201.
  await waitFor(() => pings >= 2, 8000, 50, 'two WebSocket pings');
  assert.equal(conn.ws.readyState, 1, 'still open');
  assert.equal(conn.frames.filter((f) => f.event === 'pusher:ping').length, 0);
});

test('/{key} takes only a WebSocket upgrade for a known key; everything else keeps its answer', T, async (t) => {
  // Unknown key: the upgrade is answered as on any unknown path (4005).
  const unknown = connectRaw('nope', '', '/nope', {}, { host: server.host, port: server.port });
  t.after(() => unknown.close());
  assert.equal((await unknown.closed).code, 4005);
  const base = `http://${server.host}:${server.port}`;
  for (const [path, status] of [
    [`/${MAIN.key}`, 404],
    ['/nope', 404],
    ['/ready', 200],
    ['/health', 200],
  ]) {
    const res = await fetch(base + path);
    await res.text();
    assert.equal(res.status, status, path);
  }
});
