// Web Push to followers (issue 16 item 4) end to end: a user registers a
// browser push subscription (POST /apps/{id}/notifications/subscribe with
// `web_push: {endpoint, p256dh, auth}`), follows a channel (POST
// /apps/{id}/subscribe), an event is triggered on it with the Node SDK, and
// the fake push service (python/fake_push_service.py: checks the VAPID JWT,
// decrypts with the subscription's private key) receives the plaintext.
// A 410 from the push service deletes the registration; a 500 is retried.
//
// PENDING until the notification routes and dispatch (helper D's part of
// issue 16) are merged: protocol-tests/run leaves this file out of its
// default list (PENDING_SUITES) until then.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { APPS, fixtureApps, waitFor } from './helpers.mjs';
import { RUN_ID, api, killAll, persistenceApi, sdkOn, startRusher } from './persistence-helpers.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PYTHON = path.join(HERE, '.venv', 'bin', 'python');
const T = { timeout: 30000 };
// RFC 8291 §5's sender key, used as the app's VAPID key; its public key:
const VAPID_PRIVATE = 'yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw';
const VAPID_PUBLIC = 'BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8';

let counter = 0;
const uniq = (prefix) => `${prefix}-${RUN_ID}-${(counter += 1)}`;

let push; // {child, origin}
let server;
let sdk;
let papi;

/** The fake push service as a child process; resolves with its origin. */
async function startFakePushService() {
  const child = spawn(PYTHON, [path.join(HERE, 'python', 'fake_push_service.py')], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const [line] = await Promise.race([
    readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]().next().then((r) => [r.value]),
    new Promise((_, reject) => child.once('exit', (code) => reject(new Error(`fake push service exited ${code}`)))),
  ]);
  return { child, origin: JSON.parse(line).origin };
}

const control = async (pathname, body) => {
  const res = await fetch(`${push.origin}${pathname}`, body === undefined
    ? {}
    : { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
  return res.json();
};
const newPushSubscription = () => control('/control/subscriptions', {});
const pushState = (id) => control(`/control/subscriptions/${id}`);
const program = (id, statuses) => control(`/control/subscriptions/${id}/answers`, { statuses });

/** Waits until the fake service has `count` accepted POSTs for `id`; returns them. */
async function messagesOf(id, count) {
  let state;
  await waitFor(async () => {
    state = await pushState(id);
    assert.deepEqual(state.rejected, [], 'the push service refused a request');
    return state.messages.length >= count;
  }, 15000, 100, `${count} push message(s) for ${id}`);
  return state.messages;
}

/** A metric's value on /metrics (0 when absent). */
async function metric(line) {
  const text = await (await fetch(`http://${server.host}:${server.port}/metrics`)).text();
  const found = text.split('\n').find((l) => l.startsWith(`${line} `));
  return found ? Number(found.split(' ').pop()) : 0;
}

const register = (userId, sub) =>
  api(server, 'POST', `/apps/${APPS.main.appId}/notifications/subscribe`, {
    body: { user_id: userId, web_push: { endpoint: sub.endpoint, p256dh: sub.p256dh, auth: sub.auth } },
  });
const registrations = (userId) =>
  api(server, 'GET', `/apps/${APPS.main.appId}/notifications`, { params: { user_id: userId } });

before(async () => {
  push = await startFakePushService();
  // The fixture's main app, with a VAPID key and subject.
  const apps = fixtureApps().replace(
    /^\[\[apps\]\]\n/m,
    `[[apps]]\nvapid_private_key = "${VAPID_PRIVATE}"\nvapid_subject = "mailto:ops@example.com"\nweb_push_ttl_secs = 600\n`,
  );
  server = await startRusher(`[server]
host = "127.0.0.1"
port = 6001
shutdown_grace = 1
log_level = "info"

[store]
backend = "memory"

${apps}`);
  sdk = sdkOn(server);
  papi = persistenceApi(server);
});

after(async () => {
  await killAll();
  push?.child.kill();
});

describe('Web Push to followers', () => {
  test('a followed event reaches the push service, encrypted and VAPID-signed', T, async () => {
    const user = uniq('u');
    const channel = uniq('news');
    const sub = await newPushSubscription();
    assert.equal((await register(user, sub)).status, 200);
    assert.equal((await papi.follow(user, channel)).status, 200);
    await sdk.trigger(channel, 'flash', { n: 1 });
    const [message] = await messagesOf(sub.id, 1);
    const plain = JSON.parse(message.plaintext);
    assert.equal(plain.channel, channel);
    assert.equal(plain.event, 'flash');
    assert.deepEqual(typeof plain.data === 'string' ? JSON.parse(plain.data) : plain.data, { n: 1 });
    assert.equal(message.k, VAPID_PUBLIC);
    assert.equal(message.sub, 'mailto:ops@example.com');
    assert.equal(message.ttl, '600');
  });

  test('a 410 from the push service deletes the registration', T, async () => {
    const user = uniq('u');
    const channel = uniq('news');
    const sub = await newPushSubscription();
    await program(sub.id, [410]);
    assert.equal((await register(user, sub)).status, 200);
    assert.match((await registrations(user)).text, new RegExp(sub.id));
    await papi.follow(user, channel);
    await sdk.trigger(channel, 'flash', 'gone');
    const [message] = await messagesOf(sub.id, 1);
    assert.equal(message.status, 410);
    await waitFor(async () => !(await registrations(user)).text.includes(sub.endpoint), 10000, 100,
      'the registration deleted after 410');
    // Nothing more is sent to it.
    await sdk.trigger(channel, 'flash', 'after');
    const other = await newPushSubscription();
    const otherUser = uniq('u');
    await register(otherUser, other);
    await papi.follow(otherUser, channel);
    await sdk.trigger(channel, 'flash', 'marker');
    await messagesOf(other.id, 1);
    assert.equal((await pushState(sub.id)).messages.length, 1);
  });

  test('a 500 from the push service is retried', T, async () => {
    const user = uniq('u');
    const channel = uniq('news');
    const sub = await newPushSubscription();
    await program(sub.id, [500]);
    await register(user, sub);
    await papi.follow(user, channel);
    await sdk.trigger(channel, 'flash', 'again');
    const [first, second] = await messagesOf(sub.id, 2);
    assert.equal(first.status, 500);
    assert.equal(second.status, 201);
    assert.equal(second.plaintext, first.plaintext);
  });

  test('a redirect from the push service is not followed: failed, not retried, the registration kept', T, async () => {
    const hits = [];
    const redirecting = http.createServer((req, res) => {
      hits.push(`${req.method} ${req.url}`);
      if (req.url === '/redir') res.writeHead(302, { location: '/ok' });
      else res.writeHead(200);
      res.end();
    });
    await new Promise((resolve) => redirecting.listen(0, '127.0.0.1', resolve));
    try {
      const user = uniq('u');
      const channel = uniq('news');
      const keys = await newPushSubscription();
      const sub = { ...keys, endpoint: `http://127.0.0.1:${redirecting.address().port}/redir` };
      assert.equal((await register(user, sub)).status, 200);
      await papi.follow(user, channel);
      const failed = await metric('rusher_notifications_failed_total{handler="web_push"}');
      const sent = await metric('rusher_notifications_sent_total{handler="web_push"}');
      await sdk.trigger(channel, 'flash', 'moved');
      await waitFor(async () => (await metric('rusher_notifications_failed_total{handler="web_push"}')) > failed, 10000, 50, 'counted as failed');
      assert.deepEqual(hits, ['POST /redir']);
      assert.equal(await metric('rusher_notifications_sent_total{handler="web_push"}'), sent);
      assert.match((await registrations(user)).text, /redir/);
    } finally {
      redirecting.close();
    }
  });

  test('a malformed subscription is refused with 400', T, async () => {
    const sub = await newPushSubscription();
    const res = await register(uniq('u'), { ...sub, p256dh: 'not-a-key' });
    assert.equal(res.status, 400);
    assert.match(res.text, /p256dh/);
  });
});
