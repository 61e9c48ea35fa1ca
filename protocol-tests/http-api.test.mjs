// The HTTP API (PROTOCOL.md §5) with hand-signed requests, so that the tests
// can also send requests no SDK would send.

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  APPS,
  HOST,
  PORT,
  connectEstablished,
  plainGet,
  signedRequest,
  uniqueChannel,
} from './helpers.mjs';

const T = { timeout: 20000 };
const main = APPS.main;
const strict = APPS.strict;
const EVENTS = `/apps/${main.appId}/events`;
const STRICT_EVENTS = `/apps/${strict.appId}/events`;
const STRICT_BATCH = `/apps/${strict.appId}/batch_events`;

const event = (over = {}) => ({ name: 'ev', data: '{"x":1}', channels: [uniqueChannel('http')], ...over });
const strictOpts = { key: strict.key, secret: strict.secret };

/** Status is `status` and the body is JSON with a non-empty `error` string. */
function assertError(res, status) {
  assert.equal(res.status, status, `status (body: ${res.text})`);
  assert.ok(res.json && typeof res.json === 'object', `error body is JSON: ${res.text}`);
  assert.equal(typeof res.json.error, 'string', `error body has an error string: ${res.text}`);
  assert.ok(res.json.error.length > 0, 'error message is not empty');
}

/** A raw client subscribed to a fresh channel of `app`. */
async function subscriber(t, app = main) {
  const [c] = await connectEstablished(app.key);
  t.after(() => c.close());
  const name = uniqueChannel('sig');
  await c.subscribe(name);
  return [c, name];
}

/** An unsigned request with `method` to `path`: {status, text, headers}. */
async function plain(method, path) {
  const res = await fetch(`http://${HOST}:${PORT}${path}`, { method });
  return { status: res.status, text: await res.text(), headers: res.headers };
}

describe('probes', () => {
  test('GET /health answers 200', T, async () => {
    assert.equal((await plainGet('/health')).status, 200);
  });
  test('GET /ready answers 200', T, async () => {
    assert.equal((await plainGet('/ready')).status, 200);
  });
  for (const path of ['/health', '/ready', '/metrics']) {
    test(`HEAD ${path} answers like GET, without a body (load balancers probe with HEAD)`, T, async () => {
      const get = await plain('GET', path);
      const head = await plain('HEAD', path);
      assert.equal(get.status, 200, get.text);
      assert.equal(head.status, 200, `HEAD ${path}: ${head.status} ${head.text}`);
      assert.equal(head.text, '', 'HEAD has no body');
      assert.equal(head.headers.get('content-type'), get.headers.get('content-type'));
    });
  }
  test('a wrong method on a probe answers 405 with Allow: GET, HEAD and a JSON error', T, async () => {
    const res = await plain('POST', '/health');
    assertError({ ...res, json: JSON.parse(res.text || 'null') }, 405);
    assert.equal(res.headers.get('allow'), 'GET, HEAD');
  });
});

describe('authentication', () => {
  test('a correctly signed trigger answers 200 {} and is delivered', T, async (t) => {
    const [c, name] = await subscriber(t);
    const res = await signedRequest('POST', EVENTS, { body: { name: 'signed', data: '{"ok":true}', channels: [name] } });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json, {});
    const f = await c.next('signed', 3000);
    assert.equal(f.channel, name);
    assert.deepEqual(JSON.parse(f.data), { ok: true });
  });

  test('the single "channel" form of the events body is accepted', T, async (t) => {
    const [c, name] = await subscriber(t);
    const res = await signedRequest('POST', EVENTS, { body: { name: 'single', data: 'plain', channel: name } });
    assert.equal(res.status, 200, res.text);
    const f = await c.next('single', 3000);
    assert.equal(f.data, 'plain');
  });

  test('a wrong auth_key answers 401', T, async () => {
    assertError(await signedRequest('POST', EVENTS, { body: event(), key: 'not-the-key' }), 401);
  });

  test('the key of another app answers 401', T, async () => {
    const res = await signedRequest('POST', EVENTS, { body: event(), key: APPS.other.key, secret: APPS.other.secret });
    assertError(res, 401);
  });

  test('a bad signature answers 401', T, async () => {
    assertError(await signedRequest('POST', EVENTS, { body: event(), tamper: { signature: 'ab'.repeat(32) } }), 401);
  });

  test('a signature made with the wrong secret answers 401', T, async () => {
    assertError(await signedRequest('POST', EVENTS, { body: event(), secret: 'wrong-secret' }), 401);
  });

  test('a missing auth_signature answers 401', T, async () => {
    assertError(await signedRequest('POST', EVENTS, { body: event(), tamper: { dropSignature: true } }), 401);
  });

  test('a signature made for another path answers 401', T, async () => {
    const res = await signedRequest('POST', EVENTS, {
      body: event(),
      tamper: { signPath: `/apps/${main.appId}/batch_events` },
    });
    assertError(res, 401);
  });

  test('a signature made for another method answers 401', T, async () => {
    const res = await signedRequest('GET', `/apps/${main.appId}/channels`, { tamper: { signMethod: 'POST' } });
    assertError(res, 401);
  });

  test('an auth_timestamp 700 s old answers 401', T, async () => {
    const ts = Math.floor(Date.now() / 1000) - 700;
    assertError(await signedRequest('POST', EVENTS, { body: event(), timestampOverride: ts }), 401);
  });

  test('an auth_timestamp 700 s in the future answers 401', T, async () => {
    const ts = Math.floor(Date.now() / 1000) + 700;
    assertError(await signedRequest('POST', EVENTS, { body: event(), timestampOverride: ts }), 401);
  });

  test('an auth_timestamp 500 s old is still accepted', T, async () => {
    const ts = Math.floor(Date.now() / 1000) - 500;
    const res = await signedRequest('POST', EVENTS, { body: event(), timestampOverride: ts });
    assert.equal(res.status, 200, res.text);
  });

  test('a body that does not match body_md5 answers 401', T, async () => {
    const signed = JSON.stringify(event());
    const sent = JSON.stringify(event({ name: 'swapped' }));
    assertError(await signedRequest('POST', EVENTS, { body: signed, tamper: { sendBody: sent } }), 401);
  });

  test('a POST body without body_md5 answers 401', T, async () => {
    // body_md5 is required when there is a body: drop it and sign without it.
    const body = JSON.stringify(event());
    const res = await signedRequest('POST', EVENTS, { body: undefined, tamper: { sendBody: body } });
    assertError(res, 401);
  });

  test('the query signed as the Node SDK does (raw values, no body_md5 on GET) is accepted', T, async (t) => {
    const [, name] = await subscriber(t);
    // A channel whose name holds characters that URL-encoding would change.
    const odd = `n=${name.slice(0, 40)}@x`;
    const [c2] = await connectEstablished(main.key);
    t.after(() => c2.close());
    await c2.subscribe(odd);
    const res = await signedRequest('GET', `/apps/${main.appId}/channels`, {
      params: { filter_by_prefix: 'n=' },
      style: 'node',
    });
    assert.equal(res.status, 200, res.text);
    assert.ok(odd in res.json.channels, `${odd} listed: ${res.text}`);
    const one = await signedRequest('GET', `/apps/${main.appId}/channels/${name}`, {
      params: { info: 'subscription_count' },
      style: 'node',
    });
    assert.equal(one.status, 200, one.text);
    assert.deepEqual(one.json, { occupied: true, subscription_count: 1 });
  });

  test('the query signed as the Python SDK does (url-encoded values, body_md5 on GET) is accepted', T, async (t) => {
    const [, name] = await subscriber(t);
    const odd = `p=${name.slice(0, 40)}@x,y;z`;
    const [c2] = await connectEstablished(main.key);
    t.after(() => c2.close());
    await c2.subscribe(odd);
    const res = await signedRequest('GET', `/apps/${main.appId}/channels`, {
      params: { filter_by_prefix: 'p=' },
      style: 'python',
    });
    assert.equal(res.status, 200, res.text);
    assert.ok(odd in res.json.channels, `${odd} listed: ${res.text}`);
    const one = await signedRequest('GET', `/apps/${main.appId}/channels/${name}`, {
      params: { info: 'subscription_count' },
      style: 'python',
    });
    assert.equal(one.status, 200, one.text);
    assert.deepEqual(one.json, { occupied: true, subscription_count: 1 });
    const post = await signedRequest('POST', EVENTS, { body: event({ channels: [name] }), style: 'python' });
    assert.equal(post.status, 200, post.text);
  });
});

describe('routing and app state', () => {
  test('an unknown app id answers 404', T, async () => {
    assertError(await signedRequest('POST', '/apps/no-such-app/events', { body: event() }), 404);
  });

  test('an unknown route under a known app answers 404', T, async () => {
    const res = await signedRequest('GET', `/apps/${main.appId}/no-such-route`, {});
    assert.equal(res.status, 404, res.text);
  });

  test('a known route with the wrong method answers 405 with Allow, before any signature check', T, async () => {
    const get = await signedRequest('GET', EVENTS, {});
    assertError(get, 405);
    assert.equal(get.headers.get('allow'), 'POST');
    const post = await signedRequest('POST', `/apps/${main.appId}/channels`, { body: {} });
    assertError(post, 405);
    assert.equal(post.headers.get('allow'), 'GET, HEAD');
  });

  test('a signed HEAD on a GET API route answers like the GET, without a body', T, async (t) => {
    const [, name] = await subscriber(t);
    const head = await signedRequest('HEAD', `/apps/${main.appId}/channels/${name}`, {});
    assert.equal(head.status, 200, head.text);
    assert.equal(head.text, '');
    // Signed for GET, sent as HEAD: the method is part of the signature.
    const wrong = await signedRequest('HEAD', `/apps/${main.appId}/channels/${name}`, { tamper: { signMethod: 'GET' } });
    assert.equal(wrong.status, 401);
  });

  test('a disabled app answers 403', T, async () => {
    const d = APPS.disabled;
    const res = await signedRequest('POST', `/apps/${d.appId}/events`, { body: event(), key: d.key, secret: d.secret });
    assertError(res, 403);
  });
});

describe('bad requests', () => {
  test('an invalid JSON body answers 400', T, async () => {
    assertError(await signedRequest('POST', EVENTS, { body: '{"name": "ev", "data": ' }), 400);
  });

  test('a trigger without a body answers 400 saying what body is expected', T, async () => {
    for (const path of [EVENTS, `/apps/${main.appId}/batch_events`]) {
      const res = await signedRequest('POST', path, {});
      assertError(res, 400);
      assert.match(res.json.error, /expected a JSON body/, res.text);
    }
  });

  test('a missing event name answers 400', T, async () => {
    const body = event();
    delete body.name;
    assertError(await signedRequest('POST', EVENTS, { body }), 400);
  });

  test('missing channels answer 400', T, async () => {
    const body = event();
    delete body.channels;
    assertError(await signedRequest('POST', EVENTS, { body }), 400);
  });

  test('an invalid channel name in a trigger answers 400', T, async () => {
    assertError(await signedRequest('POST', EVENTS, { body: event({ channels: ['bad channel!'] }) }), 400);
  });

  test('a malformed socket_id answers 400', T, async () => {
    assertError(await signedRequest('POST', EVENTS, { body: event({ socket_id: 'not-a-socket' }) }), 400);
  });

  test('a batch without a batch array answers 400', T, async () => {
    assertError(await signedRequest('POST', `/apps/${main.appId}/batch_events`, { body: { nope: [] } }), 400);
  });
});

describe('limits (strict-app)', () => {
  test('a trigger to 3 channels is accepted (max_channels_per_event=3)', T, async () => {
    const channels = [1, 2, 3].map(() => uniqueChannel('s'));
    const res = await signedRequest('POST', STRICT_EVENTS, { body: event({ channels }), ...strictOpts });
    assert.equal(res.status, 200, res.text);
  });

  test('a trigger to 4 channels answers 400', T, async () => {
    const channels = [1, 2, 3, 4].map(() => uniqueChannel('s'));
    assertError(await signedRequest('POST', STRICT_EVENTS, { body: event({ channels }), ...strictOpts }), 400);
  });

  test('event data of 1024 bytes is accepted and 1025 bytes answers 413', T, async () => {
    const ok = await signedRequest('POST', STRICT_EVENTS, { body: event({ data: 'd'.repeat(1024) }), ...strictOpts });
    assert.equal(ok.status, 200, ok.text);
    const big = await signedRequest('POST', STRICT_EVENTS, { body: event({ data: 'd'.repeat(1025) }), ...strictOpts });
    assertError(big, 413);
  });

  test('event data is measured in bytes, not characters', T, async () => {
    // 600 × 'é' = 600 chars but 1200 UTF-8 bytes
    const res = await signedRequest('POST', STRICT_EVENTS, { body: event({ data: 'é'.repeat(600) }), ...strictOpts });
    assertError(res, 413);
  });

  test('an event name of 20 chars is accepted and 21 chars answers 400', T, async () => {
    const ok = await signedRequest('POST', STRICT_EVENTS, { body: event({ name: 'e'.repeat(20) }), ...strictOpts });
    assert.equal(ok.status, 200, ok.text);
    const long = await signedRequest('POST', STRICT_EVENTS, { body: event({ name: 'e'.repeat(21) }), ...strictOpts });
    assertError(long, 400);
  });

  test('a channel name over max_channel_name_length (30) answers 400', T, async () => {
    const res = await signedRequest('POST', STRICT_EVENTS, { body: event({ channels: ['c'.repeat(31)] }), ...strictOpts });
    assertError(res, 400);
  });

  test('a batch of 2 is accepted and a batch of 3 answers 400 (max_batch_events=2)', T, async () => {
    const item = () => ({ channel: uniqueChannel('b'), name: 'ev', data: '{}' });
    const ok = await signedRequest('POST', STRICT_BATCH, { body: { batch: [item(), item()] }, ...strictOpts });
    assert.equal(ok.status, 200, ok.text);
    assert.deepEqual(ok.json, {});
    const over = await signedRequest('POST', STRICT_BATCH, { body: { batch: [item(), item(), item()] }, ...strictOpts });
    assertError(over, 400);
  });

  test('a batch item over the data limit answers 413', T, async () => {
    const batch = [{ channel: uniqueChannel('b'), name: 'ev', data: 'd'.repeat(2000) }];
    assertError(await signedRequest('POST', STRICT_BATCH, { body: { batch }, ...strictOpts }), 413);
  });
});

describe('info on triggers', () => {
  test('batch_events with info answers a batch array of per-event info', T, async (t) => {
    const [, name] = await subscriber(t);
    const res = await signedRequest('POST', `/apps/${main.appId}/batch_events`, {
      body: { batch: [{ channel: name, name: 'ev', data: '{}', info: 'subscription_count' }] },
    });
    assert.equal(res.status, 200, res.text);
    assert.ok(Array.isArray(res.json.batch), res.text);
    assert.equal(res.json.batch[0].subscription_count, 1);
  });
});
