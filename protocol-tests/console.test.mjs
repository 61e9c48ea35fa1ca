// The console at /console (issue 15; src/console/): its API refuses anything
// without a session of the right app, and the page, in headless Chromium,
// shows a pusher-js client's connection, subscriptions, presence members and
// SDK events live, and sends a test event a pusher-js client receives.
//
// The suite spawns its own rusher (the fixture config with
// RUSHER_CONSOLE_ENABLED=true and an admin token); the shared server of
// protocol-tests/run runs the fixture config, which does not turn the console
// on, and so shows it off. The page's screenshot is saved as
// protocol-tests/output/console.png for a human to look at.
//
// Login refusals are rate limited per client address (5 at once, then one a
// second): the test that exhausts them runs last.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  APPS,
  HOST,
  PORT,
  CONFIG,
  collect,
  connectRaw,
  freePort,
  newPusherClient,
  serverSdk,
  tomlString,
  subscribeAndWait,
  uniqueChannel,
  waitFor,
} from './helpers.mjs';
import { authedClient } from './auth-helpers.mjs';
import { launchBrowser, OUTPUT_DIR } from './browser-helpers.mjs';
import { spawnRusher, startReceiver } from './webhook-helpers.mjs';

const ADMIN_TOKEN = 'console-suite-admin-token-0123456789';
/** An app whose webhooks go to a receiver that answers 200 and to a closed port. */
const HOOKS = { appId: 'console-hooks', key: 'console-hooks-key', secret: 'console-hooks-secret' };
let server;
let base;
let browser;
let receiver;

before(async () => {
  receiver = await startReceiver(() => 200);
  const closedPort = await freePort();
  const config = `${fs.readFileSync(CONFIG, 'utf8')}
[server.webhooks]
max_attempts = 1
batch_ms = 20

[console]
enabled = true
sample_interval_ms = 200

[admin]
token = ${tomlString(ADMIN_TOKEN)}

[[apps]]
id = ${tomlString(HOOKS.appId)}
key = ${tomlString(HOOKS.key)}
secret = ${tomlString(HOOKS.secret)}

[[apps.webhooks]]
url = "http://127.0.0.1:${receiver.port}/hooks"
event_types = ["channel_occupied"]

[[apps.webhooks]]
url = "http://127.0.0.1:${closedPort}/hooks"
event_types = ["channel_occupied"]
`;
  server = await spawnRusher(config);
  base = `http://127.0.0.1:${server.port}`;
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close().catch(() => {});
  await server?.kill();
  await receiver?.stop();
});

const at = () => ({ host: '127.0.0.1', port: server.port });
const sdkOf = (app) => serverSdk(app, '127.0.0.1', server.port);

/** POST /console/api/login; returns {status, body, cookie}. */
async function login(appId, secret, at = base) {
  const response = await fetch(`${at}/console/api/login`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ app_id: appId, secret }),
  });
  const setCookie = response.headers.get('set-cookie') || '';
  return {
    status: response.status,
    headers: response.headers,
    body: await response.json().catch(() => ({})),
    setCookie,
    cookie: setCookie.split(';')[0],
  };
}

/** GET (or POST with `body`) a console API path with `cookie`; {status, body}. */
async function consoleCall(pathname, cookie, body, at = base) {
  const response = await fetch(`${at}${pathname}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { ...(cookie ? { Cookie: cookie } : {}), 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let parsed = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    /* a stream or an empty body */
  }
  return { status: response.status, body: parsed };
}

const apiPaths = (appId) => [
  ['GET', `/console/api/apps/${appId}/overview`],
  ['GET', `/console/api/apps/${appId}/channels`],
  ['GET', `/console/api/apps/${appId}/channels/presence-x/members`],
  ['GET', `/console/api/apps/${appId}/live`],
  ['POST', `/console/api/apps/${appId}/events`],
];
const testEvent = { channel: 'console-api', event: 'nope', data: '{}' };

test('the console is off on a server whose config file does not turn it on: / and /console are 404', async () => {
  for (const p of ['/', '/console', '/console/api/session']) {
    const response = await fetch(`http://${HOST}:${PORT}${p}`, { redirect: 'manual' });
    assert.equal(response.status, 404, `${p} on the shared server`);
  }
  const root = await fetch(`${base}/`, { redirect: 'manual' });
  assert.equal(root.status, 302);
  assert.equal(root.headers.get('location'), '/console');
  const page = await fetch(`${base}/console`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-security-policy'), /default-src 'self'/);
  assert.match(await page.text(), /rusher console/);
  const script = await fetch(`${base}/console/console.js`);
  assert.match(script.headers.get('content-type'), /^text\/javascript/);
});

test('every console API call without a session, or with a forged cookie, is 401 and shows nothing', async () => {
  const forged = `rusher_console=${Buffer.from(APPS.main.appId).toString('base64url')}.9999999999.${'0'.repeat(64)}`;
  for (const cookie of [undefined, forged, 'rusher_console=garbage']) {
    for (const [method, p] of apiPaths(APPS.main.appId)) {
      const answer = await consoleCall(p, cookie, method === 'POST' ? testEvent : undefined);
      assert.equal(answer.status, 401, `${method} ${p} with cookie ${cookie}`);
      assert.ok(answer.body.error, `${method} ${p}: an error message`);
    }
  }
});

test('a wrong secret is 401 without a cookie; the right one sets an HttpOnly SameSite=Strict cookie', async () => {
  const wrong = await login(APPS.main.appId, 'not-the-secret');
  assert.equal(wrong.status, 401);
  assert.equal(wrong.setCookie, '');
  const right = await login(APPS.main.appId, APPS.main.secret);
  assert.equal(right.status, 200);
  assert.match(right.setCookie, /HttpOnly/);
  assert.match(right.setCookie, /SameSite=Strict/);
  assert.match(right.setCookie, /Path=\/console/);
  assert.ok(!right.setCookie.includes(APPS.main.secret), 'the cookie does not carry the secret');
  const overview = await consoleCall(`/console/api/apps/${APPS.main.appId}/overview`, right.cookie);
  assert.equal(overview.status, 200);
  assert.equal(overview.body.app_id, APPS.main.appId);
});

test('a session for app A cannot read or publish to app B', async (t) => {
  const a = await login(APPS.main.appId, APPS.main.secret);
  const b = await login(APPS.other.appId, APPS.other.secret);
  assert.equal(a.status, 200);
  assert.equal(b.status, 200);
  // Something in B to see.
  const client = await authedClient(t, { app: APPS.other, sdk: sdkOf(APPS.other), at: at() });
  const channel = uniqueChannel('console-b');
  await subscribeAndWait(client, channel);
  const bSees = await consoleCall(`/console/api/apps/${APPS.other.appId}/channels`, b.cookie);
  assert.ok(bSees.body.channels.some((c) => c.name === channel), 'B sees its own channel');
  for (const [method, p] of apiPaths(APPS.other.appId)) {
    const answer = await consoleCall(p, a.cookie, method === 'POST' ? testEvent : undefined);
    assert.equal(answer.status, 403, `${method} ${p} with A's session`);
    assert.ok(!JSON.stringify(answer.body).includes(channel), 'nothing of B leaks');
  }
  const aSees = await consoleCall(`/console/api/apps/${APPS.main.appId}/channels`, a.cookie);
  assert.ok(!aSees.body.channels.some((c) => c.name === channel), "A's list has none of B's channels");
  // The admin token opens any app.
  const admin = await login(APPS.other.appId, ADMIN_TOKEN);
  assert.equal(admin.status, 200);
  const adminSees = await consoleCall(`/console/api/apps/${APPS.other.appId}/channels`, admin.cookie);
  assert.ok(adminSees.body.channels.some((c) => c.name === channel));
});

test('a test event goes through the HTTP API checks: bad channel or data is 400', async () => {
  const a = await login(APPS.main.appId, APPS.main.secret);
  const p = `/console/api/apps/${APPS.main.appId}/events`;
  const badChannel = await consoleCall(p, a.cookie, { channel: 'has space', event: 'e', data: '{}' });
  assert.equal(badChannel.status, 400);
  assert.match(badChannel.body.error, /invalid channel/);
  const badData = await consoleCall(p, a.cookie, { channel: 'ok', event: 'e', data: '{not json' });
  assert.equal(badData.status, 400);
  const noName = await consoleCall(p, a.cookie, { channel: 'ok', event: '', data: '{}' });
  assert.equal(noName.status, 400);
});

test('the page shows a pusher-js client live and sends a test event it receives', async (t) => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
  t.after(() => context.close().catch(() => {}));
  const page = await context.newPage();
  await page.goto(`${base}/`);
  assert.equal(new URL(page.url()).pathname, '/console', '/ redirects to the console');
  await page.fill('#login-app', APPS.main.appId);
  await page.fill('#login-secret', APPS.main.secret);
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#console:not([hidden])', { timeout: 5000 });
  // The secret is gone from the page; the cookie is not readable by scripts.
  assert.equal(await page.inputValue('#login-secret'), '');
  assert.equal(await page.evaluate(() => document.cookie), '');

  const sdk = sdkOf(APPS.main);
  const client = await authedClient(t, {
    sdk,
    at: at(),
    presence: { user_id: 'console-alice', user_info: { name: 'Alice' } },
  });
  const socketId = client.connection.socket_id;
  const publicChannel = uniqueChannel('console');
  const presenceChannel = `presence-${uniqueChannel('console')}`;
  const subscribed = await subscribeAndWait(client, publicChannel);
  const presence = await subscribeAndWait(client, presenceChannel);

  // The connection appears: in the count, and as a log entry of its socket.
  await page.waitForFunction(() => Number(document.getElementById('connections').textContent) >= 1, null, {
    timeout: 3000,
  });
  await page.waitForSelector(`#log tr[data-kind="subscribed"][data-channel="${publicChannel}"]`, { timeout: 3000 });
  assert.ok((await page.textContent('#log')).includes(socketId), 'the log names the socket');
  // Its subscriptions are in the channel list, with counts.
  const row = `#channel-list tr[data-channel="${publicChannel}"]`;
  await page.waitForSelector(row, { timeout: 3000 });
  assert.equal(await page.textContent(`${row} .subscriptions`), '1');

  // An SDK-triggered event is in the log within a second.
  const started = Date.now();
  await sdk.trigger(publicChannel, 'sdk-event', { hello: 'from the SDK' });
  await page.waitForSelector(`#log tr[data-kind="api_event"][data-event="sdk-event"]`, { timeout: 1000 });
  assert.ok(Date.now() - started < 1000, `shown after ${Date.now() - started} ms`);
  assert.match(await page.textContent(`#log tr[data-event="sdk-event"]`), /from the SDK/);

  // Presence members of the chosen channel.
  await page.waitForSelector(`#channel-list tr[data-channel="${presenceChannel}"] button`, { timeout: 3000 });
  await page.click(`#channel-list tr[data-channel="${presenceChannel}"] button`);
  await page.waitForFunction(
    () => [...document.querySelectorAll('#members li')].some((li) => li.textContent === 'console-alice'),
    null,
    { timeout: 3000 },
  );

  // The log filters by channel.
  await page.fill('#filter-channel', presenceChannel);
  assert.equal(await page.locator(`#log tr[data-channel="${publicChannel}"]`).count(), 0);
  await page.fill('#filter-channel', '');

  // A refused test event says why, as the HTTP API would.
  await page.fill('#send-channel', 'not a channel');
  await page.fill('#send-event', 'from-console');
  await page.fill('#send-data', '{"sent": "from the page"}');
  await page.click('#send-form button[type=submit]');
  await page.waitForFunction(() => /invalid channel/.test(document.getElementById('send-result').textContent));
  // One sent from the page reaches the pusher-js client.
  const received = collect(subscribed, 'from-console');
  await page.fill('#send-channel', publicChannel);
  await page.click('#send-form button[type=submit]');
  assert.deepEqual(await received.next(3000), { sent: 'from the page' });
  await page.waitForFunction(() => document.getElementById('send-result').textContent === 'Sent.');
  await page.waitForSelector(`#log tr[data-event="from-console"]`, { timeout: 1000 });
  // A client event is in the log as one.
  presence.trigger('client-typing', { by: 'alice' });
  await page.waitForSelector(`#log tr[data-kind="client_event"][data-event="client-typing"]`, { timeout: 1000 });

  fs.mkdirSync(OUTPUT_DIR, { recursive: true });
  await page.screenshot({ path: path.join(OUTPUT_DIR, 'console.png'), fullPage: true });
});

/**
 * Log in to `app` and open its live stream, closed when the test ends.
 * Returns {text(), readUntil(pattern), logEvents(kind)}.
 */
async function openLive(t, app, secret = app.secret) {
  const session = await login(app.appId, secret);
  const controller = new AbortController();
  t.after(() => controller.abort());
  const response = await fetch(`${base}/console/api/apps/${app.appId}/live`, {
    headers: { Cookie: session.cookie },
    signal: controller.signal,
  });
  assert.equal(response.status, 200);
  assert.match(response.headers.get('content-type'), /^text\/event-stream/);
  const reader = response.body.getReader();
  let text = '';
  const live = {
    text: () => text,
    async readUntil(pattern) {
      const deadline = Date.now() + 5000;
      while (!pattern.test(text)) {
        if (Date.now() > deadline) throw new Error(`no ${pattern} in the stream: ${text}`);
        const { value, done } = await reader.read();
        if (done) throw new Error(`the stream ended: ${text}`);
        text += Buffer.from(value).toString('utf8');
      }
    },
    logEvents: (kind) =>
      text
        .split('\n')
        .filter((line) => line.startsWith(`data: {"kind":"${kind}"`))
        .map((line) => JSON.parse(line.slice(6))),
  };
  await live.readUntil(/event: stats/);
  return live;
}

test('the live stream carries refused handshakes as errors, and nothing of other apps', async (t) => {
  const live = await openLive(t, APPS.limited);
  // Something in another app is not in this stream.
  await sdkOf(APPS.main).trigger(uniqueChannel('console-elsewhere'), 'elsewhere', {});
  // limited-app allows one connection: the second is refused with 4004.
  const first = await newPusherClient(APPS.limited.key, {}, at());
  t.after(() => first.disconnect());
  const second = connectRaw(APPS.limited.key, undefined, undefined, {}, at());
  t.after(() => second.close());
  await live.readUntil(/"kind":"refused"/);
  const refused = live.logEvents('refused');
  assert.equal(refused[0].error, true);
  assert.match(refused[0].detail, /^4004 /);
  // A protocol version pusher-js would never send: refused before admission.
  const old = connectRaw(APPS.limited.key, 'protocol=3&client=js&version=1.0', undefined, {}, at());
  t.after(() => old.close());
  await live.readUntil(/"detail":"4007 /);
  assert.ok(!live.text().includes('elsewhere'), 'no event of another app');
});

test('the live stream shows webhooks sent, and failed ones as errors', async (t) => {
  const live = await openLive(t, HOOKS);
  const client = await newPusherClient(HOOKS.key, {}, at());
  t.after(() => client.disconnect());
  const channel = uniqueChannel('console-hooked');
  await subscribeAndWait(client, channel);
  await live.readUntil(/"kind":"webhook_failed"/);
  await live.readUntil(/"kind":"webhook_sent"/);
  const [sent] = live.logEvents('webhook_sent');
  assert.equal(sent.error, false);
  assert.match(sent.detail, new RegExp(`127\\.0\\.0\\.1:${receiver.port}/hooks`));
  assert.match(sent.data, /channel_occupied/);
  const [failed] = live.logEvents('webhook_failed');
  assert.equal(failed.error, true);
  assert.ok(!failed.detail.includes(`:${receiver.port}/`), 'the failed one is the closed port');
});

test("a session ends when the app's secret changes: a node restarted with a rotated secret refuses the old cookie", async (t) => {
  // Cookies outlive a restart when nodes share `session_secret`: the old
  // secret's session must not.
  const app = { appId: 'console-rotated', key: 'console-rotated-key' };
  const SESSION_SECRET = 'console-suite-session-secret-0123456789';
  const configWith = (secret) => `${fs.readFileSync(CONFIG, 'utf8')}
[console]
enabled = true
session_secret = ${tomlString(SESSION_SECRET)}

[admin]
token = ${tomlString(ADMIN_TOKEN)}

[[apps]]
id = ${tomlString(app.appId)}
key = ${tomlString(app.key)}
secret = ${tomlString(secret)}
`;
  let node = await spawnRusher(configWith('the-old-secret'));
  t.after(() => node?.kill());
  let at = `http://127.0.0.1:${node.port}`;
  const overview = `/console/api/apps/${app.appId}/overview`;
  const user = await login(app.appId, 'the-old-secret', at);
  const operator = await login(app.appId, ADMIN_TOKEN, at);
  assert.equal(user.status, 200);
  assert.equal(operator.status, 200);
  assert.equal((await consoleCall(overview, user.cookie, undefined, at)).status, 200);
  assert.ok(!user.setCookie.includes('the-old-secret'), 'the cookie does not carry the secret');

  await node.kill();
  node = await spawnRusher(configWith('the-new-secret'));
  at = `http://127.0.0.1:${node.port}`;
  for (const [method, p] of apiPaths(app.appId)) {
    const answer = await consoleCall(p, user.cookie, method === 'POST' ? testEvent : undefined, at);
    assert.equal(answer.status, 401, `${method} ${p} with the old secret's session`);
  }
  const session = await fetch(`${at}/console/api/session`, { headers: { Cookie: user.cookie } });
  assert.equal(session.status, 401, 'the page sees the session ended');
  // A session opened with the admin token is bound to the token, unchanged.
  assert.equal((await consoleCall(overview, operator.cookie, undefined, at)).status, 200);
  const again = await login(app.appId, 'the-new-secret', at);
  assert.equal(again.status, 200);
  assert.equal((await consoleCall(overview, again.cookie, undefined, at)).status, 200);
});

test('a new live stream starts with the connection history the node sampled', async (t) => {
  // The suite's server samples every 200 ms (sample_interval_ms).
  const client = await newPusherClient(APPS.other.key, {}, at());
  t.after(() => client.disconnect());
  await waitFor(() => client.connection.state === 'connected', 5000, 20, 'a connection of the other app');
  const live = await openLive(t, APPS.other);
  const history = () =>
    live
      .text()
      .split('\n\n')
      .filter((frame) => frame.startsWith('event: history\n'))
      .map((frame) => JSON.parse(frame.split('\ndata: ')[1]));
  await live.readUntil(/event: history\n/);
  const [first] = history();
  assert.equal(first.interval_ms, 200);
  assert.ok(Array.isArray(first.samples));
  // A stream opened after a sample of the connection holds it.
  await waitFor(
    async () => {
      const again = await openLive(t, APPS.other);
      await again.readUntil(/event: history\n/);
      const frame = again.text().split('\n\n').find((f) => f.startsWith('event: history\n'));
      const { samples } = JSON.parse(frame.split('\ndata: ')[1]);
      return samples.length > 0 && samples.at(-1)[1] >= 1 && samples.every(([time, count]) => time > 0 && count >= 0);
    },
    5000,
    100,
    'a history sample with the connection',
  );
  assert.ok(history().length === 1, 'history comes once, first');
  assert.ok(live.text().indexOf('event: history') < live.text().indexOf('event: stats'), 'before the first stats');
});

test('a wrong secret in the page shows an error and no data', async (t) => {
  const context = await browser.newContext();
  t.after(() => context.close().catch(() => {}));
  const page = await context.newPage();
  const answered = [];
  page.on('response', (response) => {
    if (new URL(response.url()).pathname.startsWith('/console/api/apps/')) answered.push(response.status());
  });
  await page.goto(`${base}/console`);
  await page.fill('#login-app', APPS.main.appId);
  await page.fill('#login-secret', 'wrong-secret');
  await page.click('#login-form button[type=submit]');
  await page.waitForFunction(() => document.getElementById('login-error').textContent.length > 0, null, {
    timeout: 3000,
  });
  assert.match(await page.textContent('#login-error'), /wrong app id or secret/);
  assert.equal(await page.isHidden('#console'), true);
  assert.equal(await page.locator('#channel-list tr').count(), 0);
  assert.equal(await page.locator('#log tr').count(), 0);
  assert.deepEqual(answered.filter((s) => s === 200), [], 'no app data was answered');
});

test('repeated wrong secrets from one address are rate limited: 429 with Retry-After, counted', async () => {
  let limited;
  for (let i = 0; i < 12 && !limited; i += 1) {
    const attempt = await login(APPS.main.appId, `wrong-${i}`);
    if (attempt.status === 429) limited = attempt;
    else assert.equal(attempt.status, 401);
  }
  assert.ok(limited, 'a 429 within 12 quick wrong logins');
  assert.ok(Number(limited.headers.get('retry-after')) >= 1);
  // Limited before the secret is looked at: even the right one waits.
  const right = await login(APPS.main.appId, APPS.main.secret);
  assert.equal(right.status, 429);
  const metrics = await (await fetch(`${base}/metrics`)).text();
  assert.match(metrics, /rusher_console_logins_total\{result="limited"\} [1-9]/);
  assert.match(metrics, /rusher_console_logins_total\{result="refused"\} [1-9]/);
  // And it recovers: one refusal's worth a second.
  await waitFor(async () => (await login(APPS.main.appId, APPS.main.secret)).status === 200, 5000, 250, 'login after the wait');
});
