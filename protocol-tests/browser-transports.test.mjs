// The real pusher-js WEB build in headless Chromium against rusher
// (browser-helpers.mjs): the page comes from another origin than rusher (CORS),
// channel and user auth go through the page server's endpoints signed by the
// official Node SDK, and a Node pusher-js client is the other end of client
// events.
//
// Over ws the harness itself is checked; over xhr_streaming / xhr_polling, the
// automatic fallback behind a proxy that refuses WebSockets, and EventSource
// need rusher's HTTP transports (issue 13).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { APPS, DEFAULT_QUERY, HOST, PORT, collect, connectRaw, parseData, serverSdk, sleep, subscribeAndWait, uniqueChannel, waitFor, withTimeout } from './helpers.mjs';
import { cuttableProxy } from './proxy-helpers.mjs';
import { spawnRusher } from './webhook-helpers.mjs';
import { authedClient, sdkFor } from './auth-helpers.mjs';
import { launchBrowser, startPageServer, withBrowserPage, wsBlockingProxy } from './browser-helpers.mjs';

const T = { timeout: 30000 };
const sdk = sdkFor(APPS.main);

let browser;
let pageServer;
before(async () => {
  [browser, pageServer] = await Promise.all([launchBrowser(), startPageServer(sdk)]);
});
after(async () => {
  await Promise.all([browser?.close(), pageServer?.close()]);
});

/**
 * The whole client story over `transports` (pusher-js enabledTransports):
 * connect on that transport, subscribe public + private + presence (auth by
 * the page server), receive an SDK-triggered event on each, exchange client
 * events both ways with a Node pusher-js client, see it join the presence
 * channel, sign in and receive a sendToUser event.
 */
async function fullScenario(t, bp, transports) {
  const browserUser = uniqueChannel('browser-user');
  const nodeUser = uniqueChannel('node-user');
  const params = { user_id: browserUser, user_info: JSON.stringify({ name: 'Ann' }) };
  await bp.connect('b', APPS.main.key, {
    enabledTransports: transports,
    channelAuthorization: { endpoint: `${pageServer.origin}/pusher/auth`, transport: 'ajax', params },
    userAuthentication: { endpoint: `${pageServer.origin}/pusher/user-auth`, transport: 'ajax', params },
  });
  assert.equal(await bp.call('transport', 'b'), transports[0], 'pusher-js uses the transport it was asked for');
  const socketId = await bp.call('socketId', 'b');
  assert.match(socketId, /^\d+\.\d+$/);

  const pub = uniqueChannel('pub');
  const priv = uniqueChannel('private-browser');
  const pres = uniqueChannel('presence-browser');
  for (const channel of [pub, priv, pres]) {
    await bp.call('subscribe', 'b', channel);
    await bp.waitFor({ source: 'b', kind: 'event', channel, event: 'pusher:subscription_succeeded' }, 5000, `subscription to ${channel}`);
  }
  const authed = pageServer.authCalls.filter((c) => c.path === '/pusher/auth' && c.params.socket_id === socketId);
  assert.deepEqual(authed.map((c) => c.params.channel_name).sort(), [priv, pres].sort(), 'the page server signed private and presence');
  assert.deepEqual(await bp.call('memberIds', 'b', pres), [browserUser]);

  // Server → browser on every channel kind.
  const res = await sdk.trigger([pub, priv, pres], 'sdk-event', { from: 'sdk', n: 1 });
  assert.equal(res.status, 200);
  for (const channel of [pub, priv, pres]) {
    const got = await bp.waitFor({ source: 'b', kind: 'event', channel, event: 'sdk-event' }, 5000, `sdk-event on ${channel}`);
    assert.deepEqual(got.data, { from: 'sdk', n: 1 });
  }

  // A Node pusher-js client joins: the browser sees the member, then client events both ways.
  const node = await authedClient(t, { sdk, presence: { user_id: nodeUser, user_info: { name: 'Bob' } } });
  const nodePriv = await subscribeAndWait(node, priv);
  const mark = await bp.mark();
  await subscribeAndWait(node, pres);
  const added = await bp.waitFor({ since: mark, source: 'b', kind: 'event', channel: pres, event: 'pusher:member_added' });
  assert.deepEqual(added.data, { id: nodeUser, info: { name: 'Bob' } });

  const fromBrowser = collect(nodePriv, 'client-from-browser');
  assert.equal(await bp.call('trigger', 'b', priv, 'client-from-browser', { hello: 'node' }), true);
  assert.deepEqual(await fromBrowser.next(5000), { hello: 'node' });

  assert.equal(nodePriv.trigger('client-from-node', { hello: 'browser' }), true);
  const fromNode = await bp.waitFor({ source: 'b', kind: 'event', channel: priv, event: 'client-from-node' });
  assert.deepEqual(fromNode.data, { hello: 'browser' });

  // Sign-in through the page server's user-auth endpoint, then an event to the user.
  await bp.call('signin', 'b');
  await bp.page.waitForFunction((id) => window.rt.userData('b')?.id === id, browserUser, { timeout: 5000, polling: 50 });
  const toUser = await sdk.sendToUser(browserUser, 'user-event', { for: browserUser });
  assert.equal(toUser.status, 200);
  const userEvent = await bp.waitFor({ source: 'b', kind: 'user', event: 'user-event' });
  assert.deepEqual(userEvent.data, { for: browserUser });

  await bp.call('closeAll');
}

test('harness: pusher-js web build in Chromium over ws — public, private, presence, SDK events, client events both ways, sign-in', T, async (t) => {
  await withBrowserPage(t, browser, pageServer, (bp) => fullScenario(t, bp, ['ws']));
});

test('harness: the WebSocket-blocking proxy answers an upgrade with 403 and streams a plain response as it arrives', T, async (t) => {
  // Upstream: one chunk at once, the rest only when the test says so.
  let finish;
  const upstream = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('first\n');
    finish = () => res.end('last\n');
  });
  await new Promise((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    upstream.closeAllConnections();
    upstream.close();
  });
  const proxy = await wsBlockingProxy(t, { host: '127.0.0.1', port: upstream.address().port });

  const res = await fetch(`http://127.0.0.1:${proxy.port}/stream`);
  assert.equal(res.status, 200);
  const reader = res.body.getReader();
  const first = await withTimeout(reader.read(), 3000, 'first chunk through the proxy before the upstream ended');
  assert.equal(Buffer.from(first.value).toString(), 'first\n');
  finish();
  const rest = [];
  for (let r = await reader.read(); !r.done; r = await reader.read()) rest.push(Buffer.from(r.value).toString());
  assert.equal(rest.join(''), 'last\n');

  // A WebSocket to rusher through the proxy: refused with 403, counted.
  const ws = await wsBlockingProxy(t);
  const conn = connectRaw(APPS.main.key, DEFAULT_QUERY, undefined, {}, { port: ws.port });
  t.after(() => conn.close());
  assert.equal((await conn.closed).httpStatus, 403);
  assert.equal(ws.upgradesRefused, 1);
});

for (const transport of ['xhr_streaming', 'xhr_polling']) {
  test(`pusher-js web build in Chromium over ${transport} only — the same scenario, cross-origin`, T, async (t) => {
    await withBrowserPage(t, browser, pageServer, (bp) => fullScenario(t, bp, [transport]));
  });
}

test('default transports behind a proxy that refuses WebSockets: pusher-js falls back to xhr_streaming by itself and receives an SDK event', T, async (t) => {
  const proxy = await wsBlockingProxy(t);
  await withBrowserPage(t, browser, pageServer, async (bp) => {
    // No enabledTransports: pusher-js tries ws (refused), then HTTP after its
    // 5 s delay (forceTLS false), through the proxy.
    const viaProxy = { wsHost: HOST, wsPort: proxy.port, wssPort: proxy.port, httpHost: HOST, httpPort: proxy.port };
    await bp.connect('b', APPS.main.key, viaProxy, 12000);
    assert.ok(proxy.upgradesRefused >= 1, `pusher-js tried a WebSocket first (refused upgrades: ${proxy.upgradesRefused})`);
    assert.equal(await bp.call('transport', 'b'), 'xhr_streaming');

    const channel = uniqueChannel('fallback');
    await bp.call('subscribe', 'b', channel);
    await bp.waitFor({ source: 'b', kind: 'event', channel, event: 'pusher:subscription_succeeded' }, 5000, `subscription to ${channel}`);
    const res = await sdk.trigger(channel, 'after-fallback', { via: 'xhr_streaming' });
    assert.equal(res.status, 200);
    const got = await bp.waitFor({ source: 'b', kind: 'event', channel, event: 'after-fallback' });
    assert.deepEqual(got.data, { via: 'xhr_streaming' });
    await bp.call('closeAll');
  });
});

test('EventSource in Chromium on /apps/{id}/events/stream: each Pusher frame is one SSE event named after it, an SDK event arrives', T, async (t) => {
  const channel = uniqueChannel('sse');
  await withBrowserPage(t, browser, pageServer, async (bp) => {
    const url = `http://${HOST}:${PORT}/apps/${APPS.main.appId}/events/stream?channels=${encodeURIComponent(channel)}`;
    await bp.call('eventSource', 'es', url, [
      'pusher:connection_established',
      'pusher_internal:subscription_succeeded',
      'sse-event',
    ]);
    const est = await bp.waitFor({ source: 'es', kind: 'sse', event: 'pusher:connection_established' }, 5000, 'SSE pusher:connection_established');
    assert.equal(est.frame.event, 'pusher:connection_established');
    assert.match(parseData(est.frame.data).socket_id, /^\d+\.\d+$/);
    const sub = await bp.waitFor({ source: 'es', kind: 'sse', event: 'pusher_internal:subscription_succeeded' }, 5000, 'SSE subscription_succeeded');
    assert.equal(sub.frame.channel, channel);

    const res = await sdk.trigger(channel, 'sse-event', { over: 'sse', n: 7 });
    assert.equal(res.status, 200);
    const got = await bp.waitFor({ source: 'es', kind: 'sse', event: 'sse-event' }, 5000, 'SSE sse-event');
    assert.equal(got.frame.event, 'sse-event');
    assert.equal(got.frame.channel, channel);
    assert.deepEqual(parseData(got.frame.data), { over: 'sse', n: 7 });
    await bp.call('closeAll');
  });
});

test('EventSource in Chromium reconnects by itself with Last-Event-ID and gets the events it missed, once, in order', { timeout: 45000 }, async (t) => {
  // A rusher of its own with history (serials give the SSE ids), reached
  // through a proxy the test cuts as a network would.
  const server = await spawnRusher(`[server]
host = "127.0.0.1"
log_level = "warn"

[[apps]]
id = "app-id"
key = "app-key"
secret = "app-secret"
history = true
`);
  t.after(() => server.kill());
  const proxy = await cuttableProxy(t, { port: server.port });
  const own = serverSdk(APPS.main, '127.0.0.1', server.port);
  const channel = uniqueChannel('sse-resume');
  const seqEvents = (bp) =>
    bp.page.evaluate(() => window.rt.log.filter((r) => r.source === 'es' && r.kind === 'sse' && r.event === 'seq'));
  await withBrowserPage(t, browser, pageServer, async (bp) => {
    const url = `http://127.0.0.1:${proxy.port}/apps/${APPS.main.appId}/events/stream?channels=${encodeURIComponent(channel)}`;
    await bp.call('eventSource', 'es', url, ['pusher_internal:subscription_succeeded', 'seq']);
    await bp.waitFor({ source: 'es', kind: 'sse', event: 'pusher_internal:subscription_succeeded' }, 5000, 'SSE subscribed');
    for (let n = 1; n <= 2; n += 1) assert.equal((await own.trigger(channel, 'seq', { n })).status, 200);
    await waitFor(async () => (await seqEvents(bp)).length === 2, 5000, 50, 'two live events');
    const seen = await seqEvents(bp);
    assert.ok(seen[1].lastEventId, 'events carry an id');

    // The network drops; three events are published meanwhile.
    proxy.cut('close');
    await bp.waitFor({ source: 'es', kind: 'error' }, 5000, 'EventSource noticed the cut');
    for (let n = 3; n <= 5; n += 1) assert.equal((await own.trigger(channel, 'seq', { n })).status, 200);
    // Back: Chromium reconnects by itself (its retry delay), sending the
    // last id it saw; rusher replays what it missed, then live events.
    proxy.resume();
    await waitFor(async () => (await seqEvents(bp)).length >= 5, 15000, 100, 'the missed events after the reconnect');
    assert.equal((await own.trigger(channel, 'seq', { n: 6 })).status, 200);
    await waitFor(async () => (await seqEvents(bp)).length >= 6, 5000, 50, 'a live event after the replay');
    await sleep(300);
    const all = await seqEvents(bp);
    assert.deepEqual(all.map((r) => parseData(r.frame.data).n), [1, 2, 3, 4, 5, 6], 'every event once, in order');
    await bp.call('closeAll');
  });
});
