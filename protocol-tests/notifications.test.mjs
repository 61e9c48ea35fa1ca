// Notification handlers (README "Notifications"): registrations through the
// signed API (the Node SDK's pusher.post / pusher.get), HTTP callbacks to a
// real local receiver (signature checked with the app secret, a 500
// retried), e-mails to a real local SMTP server (Python aiosmtpd,
// python/smtp_sink.py), `offline` mode with a signed-in pusher-js client,
// routing through follows, unsubscribe, bad input, and an SMTP outage.
//
// Runs its own rusher (memory store) and servers on free ports.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { APPS, alive, fixtureApps, freePort, hmacHex, stopChild, tomlString as q, waitFor } from './helpers.mjs';
import { startReceiver } from './webhook-helpers.mjs';
import {
  RUN_ID,
  killAll,
  persistenceApi,
  pusherOn,
  sdkOn,
  signIn,
  startJongodb,
  startRusher,
  subscribeOk,
} from './persistence-helpers.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PYTHON = path.join(HERE, '.venv', 'bin', 'python');
const T = { timeout: 30000 };
const MAX_PER_CHANNEL = 3;

let counter = 0;
/** A name (user id or channel) nobody else in this run uses. */
const uniq = (prefix) => `${prefix}-${RUN_ID}-${(counter += 1)}`;

/**
 * python/smtp_sink.py on `port`: resolves once listening. `mails` collects
 * every message received ({from, to, subject, body}).
 */
async function startSmtp(port, mails) {
  const child = spawn(PYTHON, [path.join(HERE, 'python', 'smtp_sink.py'), String(port)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let ready = false;
  let buffered = '';
  const stderr = [];
  child.stderr.on('data', (c) => stderr.push(c.toString()));
  child.stdout.on('data', (chunk) => {
    buffered += chunk.toString();
    let nl;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      const message = JSON.parse(line);
      if (message.ready) ready = true;
      else mails.push(message);
    }
  });
  await waitFor(
    () => {
      if (!alive(child)) throw new Error(`smtp_sink exited: ${stderr.join('')}`);
      return ready;
    },
    15000,
    20,
    'SMTP sink listening',
  );
  return child;
}

let server;
let sdk;
let papi;
let receiver;
let smtp;
let smtpPort;
const mails = [];

/** A signed call through the official SDK; resolves {status, json} for any status. */
async function call(method, pathname, options = {}) {
  try {
    const res = method === 'GET' ? await sdk.get({ path: pathname, ...options }) : await sdk.post({ path: pathname, ...options });
    return { status: res.status, json: await res.json() };
  } catch (e) {
    if (e.status === undefined) throw e;
    let json = null;
    try {
      json = JSON.parse(e.body);
    } catch {
      /* not JSON */
    }
    return { status: e.status, json, text: e.body };
  }
}

const register = (body) => call('POST', '/notifications/subscribe', { body });
const unregister = (body) => call('POST', '/notifications/unsubscribe', { body });

/** An e-mail whose subject names `event`, once it arrived. */
const mailFor = (event, timeoutMs = 5000) =>
  waitFor(() => mails.find((m) => m.subject.includes(event)), timeoutMs, 20, `an e-mail for ${event}; got ${JSON.stringify(mails.map((m) => m.subject))}`);

/** The callback of `event`, once accepted. */
const callbackFor = (event, timeoutMs = 5000) =>
  waitFor(() => receiver.accepted().find((r) => r.json?.event === event), timeoutMs, 20, `a callback for ${event}`);

/** A metric's value on /metrics (0 when absent). */
async function metric(line) {
  const text = await (await fetch(`http://${server.host}:${server.port}/metrics`)).text();
  const found = text.split('\n').find((l) => l.startsWith(`${line} `));
  return found ? Number(found.split(' ').pop()) : 0;
}

/** Waits until `line`'s value is at least `min` (counted after the receiver answered). */
const metricAtLeast = (line, min) =>
  waitFor(async () => (await metric(line)) >= min, 5000, 20, `${line} >= ${min}`);

before(async () => {
  receiver = await startReceiver();
  smtpPort = await freePort();
  smtp = await startSmtp(smtpPort, mails);
  server = await startRusher(`[server]
host = "127.0.0.1"
port = 6001
log_level = "info"

# One job at a time per handler: a notification routed before another is
# handled before it, so "not sent" can be asserted once a later one arrived.
[notifications]
concurrency = 1
backoff_ms = 100
max_attempts = 12
timeout_ms = 2000
max_per_channel = ${MAX_PER_CHANNEL}

[notifications.smtp]
host = "127.0.0.1"
port = ${smtpPort}
tls = "none"
from = "rusher <rusher@example.com>"
subject = "[{app_id}] {event} on {channel} for {user_id}"

${fixtureApps()}`);
  sdk = sdkOn(server);
  papi = persistenceApi(server);
});

after(async () => {
  await stopChild(smtp);
  await receiver?.stop();
  await killAll();
});

describe('web callbacks', () => {
  test('a signed JSON POST, retried after a 500', T, async () => {
    const channel = uniq('news');
    let first = true;
    const flaky = await startReceiver(() => {
      if (first) {
        first = false;
        return 500;
      }
      return 200;
    });
    try {
      const res = await register({ channel, url: flaky.url });
      assert.deepEqual([res.status, res.json], [200, { subscribed: true, created: true }]);
      const again = await register({ channel, url: flaky.url });
      assert.deepEqual(again.json, { subscribed: true, created: false });
      await sdk.trigger(channel, 'update', { n: 1 });
      const ok = await waitFor(() => flaky.accepted()[0], 5000, 20, 'the retried callback');
      assert.equal(flaky.requests.length, 2, 'one 500, then the retry');
      assert.equal(flaky.requests[0].status, 500);
      assert.equal(ok.rawBody, flaky.requests[0].rawBody, 'the retry sends the same body');
      assert.equal(ok.headers['x-pusher-key'], APPS.main.key);
      assert.equal(ok.headers['x-pusher-signature'], hmacHex(APPS.main.secret, ok.rawBody));
      assert.equal(ok.headers['content-type'], 'application/json');
      const { time_ms, ...rest } = ok.json;
      assert.ok(time_ms > 0);
      assert.deepEqual(rest, {
        app_id: APPS.main.appId,
        channel,
        event: 'update',
        data: '{"n":1}',
        registered_channel: channel,
      });
      await metricAtLeast('rusher_notifications_sent_total{handler="web"}', 1);
    } finally {
      await flaky.stop();
    }
  });

  test('a redirect is the final answer: not followed (the POST would become a GET), counted as failed', T, async () => {
    const hits = [];
    const redirecting = http.createServer((req, res) => {
      hits.push(`${req.method} ${req.url}`);
      if (req.url === '/redir') res.writeHead(302, { location: '/ok' });
      else res.writeHead(200);
      res.end();
    });
    await new Promise((resolve) => redirecting.listen(0, '127.0.0.1', resolve));
    try {
      const channel = uniq('redirected');
      const url = `http://127.0.0.1:${redirecting.address().port}/redir`;
      assert.equal((await register({ channel, url })).status, 200);
      const [sent, failed] = [await metric('rusher_notifications_sent_total{handler="web"}'), await metric('rusher_notifications_failed_total{handler="web"}')];
      await sdk.trigger(channel, 'moved', {});
      await metricAtLeast('rusher_notifications_failed_total{handler="web"}', failed + 1);
      assert.deepEqual(hits, ['POST /redir']);
      assert.equal(await metric('rusher_notifications_sent_total{handler="web"}'), sent);
    } finally {
      redirecting.close();
    }
  });

  test('a user_id registration gets every channel the user follows; unsubscribe stops it', T, async () => {
    const user = uniq('u');
    const [a, b] = [uniq('a'), uniq('b')];
    assert.equal((await papi.follow(user, a)).status, 200);
    assert.equal((await papi.follow(user, b)).status, 200);
    // Registered twice (user and channel a): still one callback per event.
    assert.equal((await register({ user_id: user, url: receiver.url })).status, 200);
    assert.equal((await register({ channel: a, url: receiver.url })).status, 200);
    const listed = await call('GET', '/notifications', { params: { user_id: user } });
    assert.deepEqual(listed.json, { notifications: [{ channel: `personal-${user}`, kind: 'web', url: receiver.url }] });

    const [ea, eb] = [uniq('ea'), uniq('eb')];
    await sdk.trigger(a, ea, 'plain text');
    await sdk.trigger(b, eb, { x: 1 });
    const got = await callbackFor(eb);
    assert.deepEqual(
      [got.json.channel, got.json.user_id, got.json.registered_channel, got.json.data],
      [b, user, `personal-${user}`, '{"x":1}'],
    );
    const viaA = await callbackFor(ea);
    assert.equal(viaA.json.data, 'plain text');
    // Each target once per event.
    assert.equal(receiver.requests.filter((r) => r.json?.event === ea).length, 1);

    const gone = await unregister({ user_id: user, url: receiver.url });
    assert.deepEqual([gone.status, gone.json], [200, { subscribed: false, removed: true }]);
    assert.deepEqual((await unregister({ user_id: user, url: receiver.url })).json, { subscribed: false, removed: false });
    const [stopped, marker] = [uniq('stopped'), uniq('marker')];
    await sdk.trigger(b, stopped, {});
    // Routed after `stopped`: once it arrived, `stopped` would have too.
    await sdk.trigger(a, marker, {});
    await callbackFor(marker);
    assert.equal(receiver.requests.filter((r) => r.json?.event === stopped).length, 0);
  });
});

describe('client events', () => {
  test("routed like API events, never to the sender's own registrations", T, async (t) => {
    const [sender, other] = [uniq('sender'), uniq('other')];
    const channel = `presence-${uniq('chat')}`;
    for (const user of [sender, other]) {
      assert.equal((await papi.follow(user, channel)).status, 200);
      assert.equal((await register({ user_id: user, url: `${receiver.url}/${user}` })).status, 200);
    }
    const client = await pusherOn(t, server, { presence: { user_id: sender, user_info: {} } });
    const { channel: joined } = await subscribeOk(client, channel);
    const event = uniq('client-msg');
    joined.trigger(event, { text: 'hi' });
    const got = await waitFor(
      () => receiver.accepted().find((r) => r.json?.event === event),
      5000,
      20,
      'the client event callback',
    );
    assert.equal(got.url, `/hook/${other}`);
    assert.deepEqual([got.json.channel, got.json.user_id, got.json.data], [channel, other, '{"text":"hi"}']);
    // An API event after it reaches the sender's URL: the client event would have first.
    const marker = uniq('marker');
    await sdk.trigger(channel, marker, {});
    await waitFor(() => receiver.accepted().find((r) => r.json?.event === marker && r.url === `/hook/${sender}`), 5000, 20, 'marker');
    assert.deepEqual(
      receiver.requests.filter((r) => r.json?.event === event).map((r) => r.url),
      [`/hook/${other}`],
    );
  });
});

describe('e-mail', () => {
  test('offline mode: no e-mail while the user is signed in, one after it left', T, async (t) => {
    const user = uniq('mailer');
    const channel = uniq('inbox');
    const markerChannel = uniq('marker');
    assert.equal((await papi.follow(user, channel)).status, 200);
    assert.equal((await register({ user_id: user, email: `${user}@example.com` })).status, 200);
    assert.equal((await register({ channel: markerChannel, email: `marker-${user}@example.com` })).status, 200);
    const client = await pusherOn(t, server, { user: { id: user } });
    await signIn(client, user);

    const [seen, marker] = [uniq('seen'), uniq('marker')];
    await sdk.trigger(channel, seen, { hello: 1 });
    await sdk.trigger(markerChannel, marker, {});
    const markerMail = await mailFor(marker);
    assert.deepEqual(markerMail.to, [`marker-${user}@example.com`]);
    assert.equal(mails.filter((m) => m.subject.includes(seen)).length, 0, 'no e-mail while signed in');

    client.disconnect();
    // The server notices the close asynchronously: retry with new events until one is mailed.
    let missed;
    await waitFor(
      async () => {
        missed = uniq('missed');
        await sdk.trigger(channel, missed, { hello: 2 });
        return mails.find((m) => m.subject.includes(missed)) || (await mailFor(missed, 700).catch(() => null));
      },
      10000,
      50,
      'an e-mail once the user is offline',
    );
    const mail = mails.find((m) => m.subject.includes(missed));
    assert.deepEqual(mail.to, [`${user}@example.com`]);
    assert.equal(mail.from, 'rusher@example.com');
    assert.equal(mail.subject, `[${APPS.main.appId}] ${missed} on ${channel} for ${user}`);
    assert.match(mail.body, new RegExp(`Channel: ${channel}`));
    assert.match(mail.body, /"hello":2/);
    await metricAtLeast('rusher_notifications_sent_total{handler="email"}', 2);
  });

  test('SMTP server down: e-mails wait and are sent when it is back', T, async () => {
    const channel = uniq('outage');
    assert.equal((await register({ channel, email: 'outage@example.com' })).status, 200);
    await stopChild(smtp);
    const event = uniq('delayed');
    await sdk.trigger(channel, event, {});
    await waitFor(() => server.log.join('').includes('SMTP send failed; retrying'), 5000, 20, 'a failed SMTP attempt');
    smtp = await startSmtp(smtpPort, mails);
    const mail = await mailFor(event, 10000);
    assert.deepEqual(mail.to, ['outage@example.com']);
    assert.equal(await metric('rusher_notifications_failed_total{handler="email"}'), 0);
  });
});

describe('e-mail to an SMTP server that hangs', () => {
  test('an exchange is bounded by timeout_ms: retried, then failed and counted, the slot freed', T, async () => {
    // Accepts the TCP connection and never sends its greeting.
    const sockets = [];
    const hung = net.createServer((socket) => sockets.push(socket));
    await new Promise((resolve) => hung.listen(0, '127.0.0.1', resolve));
    const node = await startRusher(`[server]
host = "127.0.0.1"
port = 6001
log_level = "info"

[notifications]
concurrency = 1
timeout_ms = 300
max_attempts = 2
backoff_ms = 50

[notifications.smtp]
host = "127.0.0.1"
port = ${hung.address().port}
tls = "none"
from = "rusher <rusher@example.com>"

${fixtureApps()}`);
    try {
      const nodeSdk = sdkOn(node);
      const channel = uniq('hung');
      await nodeSdk.post({ path: '/notifications/subscribe', body: { channel, email: 'hung@example.com' } });
      // Two events, one slot: the second is tried only once the first gave up.
      await nodeSdk.trigger(channel, 'first', {});
      await nodeSdk.trigger(channel, 'second', {});
      const failed = async () => {
        const text = await (await fetch(`http://${node.host}:${node.port}/metrics`)).text();
        const line = text.split('\n').find((l) => l.startsWith('rusher_notifications_failed_total{handler="email"} '));
        return line ? Number(line.split(' ').pop()) : 0;
      };
      await waitFor(async () => (await failed()) >= 2, 8000, 50, 'both e-mails failed after their timeouts');
      assert.match(node.log.join(''), /did not answer within 300 ms/);
      assert.ok(node.running);
    } finally {
      for (const socket of sockets) socket.destroy();
      hung.close();
      await node.stop();
    }
  });
});

describe('registration API', () => {
  test('bad input is a 400 saying what is wrong; limits are counted', T, async () => {
    const channel = uniq('bad');
    const cases = [
      [{ url: receiver.url }, /missing `channel` or `user_id`/],
      [{ channel, user_id: 'u' }, /not both/],
      [{ channel }, /no targets given/],
      [{ channel, url: receiver.url, email: 'a@example.com' }, /several targets/],
      [{ channel, url: 'ftp://example.com/x' }, /http or https/],
      [{ channel, email: 'not-an-address' }, /not an e-mail address/],
      [{ channel: 'bad channel', url: receiver.url }, /invalid channel/],
      [{ channel, web_push: { endpoint: 'https://push.example/x', p256dh: 'AAAA', auth: 'AAAAAAAAAAAAAAAAAAAAAA' } }, /decodes to 3 bytes, expected 65/],
      [{ channel, web_push: { endpoint: 'https://push.example/x' } }, /needs `endpoint`, `p256dh` and `auth`/],
      [{ channel, uri: receiver.url }, /unknown field `uri`/],
      [{ channel, url: `${receiver.url}/${'a'.repeat(3000)}` }, /at most 2048/],
    ];
    for (const [body, message] of cases) {
      const res = await register(body);
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.match(res.json.error, message, JSON.stringify(body));
    }
    for (let i = 0; i < MAX_PER_CHANNEL; i += 1) {
      assert.equal((await register({ channel, url: `${receiver.url}/${i}` })).status, 200);
    }
    const over = await register({ channel, url: `${receiver.url}/over` });
    assert.equal(over.status, 400);
    assert.match(over.json.error, /max_per_channel/);
    // The same one again is not a new registration.
    assert.equal((await register({ channel, url: `${receiver.url}/0` })).status, 200);
    // Listing needs a channel.
    assert.equal((await call('GET', '/notifications')).status, 400);
  });
});

describe('MongoDB store', () => {
  test('registrations survive a restart; an outage is a 503 and loaded ones keep working', T, async () => {
    const mongo = await startJongodb();
    const node = await startRusher(`[server]
host = "127.0.0.1"
port = 6001
log_level = "info"

[store]
backend = "mongodb"
url = ${q(mongo.url)}
database = ${q(`rusher_notify_${RUN_ID}`)}
timeout_ms = 1000

${fixtureApps()}`);
    const nodeSdk = sdkOn(node);
    const post = async (body) => {
      try {
        const res = await nodeSdk.post({ path: '/notifications/subscribe', body });
        return { status: res.status, json: await res.json() };
      } catch (e) {
        return { status: e.status, json: JSON.parse(e.body) };
      }
    };
    const channel = uniq('durable');
    assert.deepEqual((await post({ channel, url: receiver.url })).json, { subscribed: true, created: true });
    await node.stop();
    await node.start();
    const afterRestart = uniq('restarted');
    await nodeSdk.trigger(channel, afterRestart, {});
    await callbackFor(afterRestart);

    await mongo.stop();
    const refused = await post({ channel: uniq('late'), url: receiver.url });
    assert.equal(refused.status, 503);
    assert.match(refused.json.error, /store unavailable/);
    const during = uniq('during');
    await nodeSdk.trigger(channel, during, {});
    const got = await callbackFor(during);
    assert.equal(got.json.channel, channel);
  });
});
