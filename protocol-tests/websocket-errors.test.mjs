// The WebSocket endpoint seen by a raw `ws` client: handshake errors,
// keep-alive, malformed frames. PROTOCOL.md §1–§3.

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import Pusher from 'pusher-js';
import {
  APPS,
  HOST,
  PORT,
  DEFAULT_QUERY,
  connectEstablished,
  connectRaw,
  newServerSdk,
  parseData,
  sleep,
  uniqueChannel,
  waitFor,
  withTimeout,
} from './helpers.mjs';

const T = { timeout: 30000 };
const sdk = newServerSdk();

/** Open a raw connection that is terminated after the test. */
function raw(t, ...args) {
  const c = connectRaw(...args);
  t.after(() => c.close());
  return c;
}

async function established(t, key = APPS.main.key, query = DEFAULT_QUERY) {
  const [c, est] = await connectEstablished(key, query);
  t.after(() => c.close());
  return [c, est];
}

/** Like established(), retried for a few seconds: the limited app's single slot
 * may still be held by a connection of the previous test that is closing. */
async function establishedRetry(t, key) {
  return waitFor(
    async () => {
      const c = connectRaw(key);
      t.after(() => c.close());
      try {
        return [c, await c.established(2000)];
      } catch {
        c.close();
        return null;
      }
    },
    6000,
    100,
    `a ${key} connection`,
  );
}

/** Expect a pusher:error with `code`, then a close with the same code. */
async function expectErrorThenClose(c, code) {
  const err = await c.next('pusher:error', 5000);
  const data = parseData(err.data);
  assert.equal(data.code, code, `pusher:error code (frame ${JSON.stringify(err)})`);
  assert.equal(typeof data.message, 'string');
  const closed = await withTimeout(c.closed, 5000, 'server did not close the connection');
  assert.equal(closed.code, code, `close code (${JSON.stringify(closed)})`);
  assert.ok(
    !c.frames.some((f) => f.event === 'pusher:connection_established'),
    'no connection_established before the error',
  );
}

/**
 * A raw TCP WebSocket client that writes frames as given (FIN, opcode,
 * payload; masked as a client must), for what `ws` will not send:
 * fragments, invalid UTF-8. Resolves once connection_established arrived.
 */
/** A masked client frame (RFC 6455 §5.2), as a client must send it. */
function encodeFrame(fin, opcode, payload) {
  const mask = Buffer.from([1, 2, 3, 4]);
  let header;
  if (payload.length < 126) {
    header = Buffer.from([(fin ? 0x80 : 0) | opcode, 0x80 | payload.length]);
  } else if (payload.length < 65536) {
    header = Buffer.alloc(4);
    header[0] = (fin ? 0x80 : 0) | opcode;
    header[1] = 0x80 | 126;
    header.writeUInt16BE(payload.length, 2);
  } else {
    header = Buffer.alloc(10);
    header[0] = (fin ? 0x80 : 0) | opcode;
    header[1] = 0x80 | 127;
    header.writeBigUInt64BE(BigInt(payload.length), 2);
  }
  const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]));
  return Buffer.concat([header, mask, masked]);
}

/** `early`: bytes sent in the same write as the handshake (frames a client
 * sends before it has read the 101); `key`: the app key in the path; with
 * `established` false, resolves without waiting for connection_established. */
/** A plain socket that sends `request` and collects what comes back as text. */
function rawHttp(t, request) {
  const sock = net.connect(PORT, HOST);
  t.after(() => sock.destroy());
  const c = { text: '' };
  sock.on('data', (d) => (c.text += d.toString('latin1')));
  sock.on('error', () => {});
  c.closed = new Promise((resolve) => sock.on('close', resolve));
  sock.write(request);
  return c;
}

async function rawFrames(t, early = Buffer.alloc(0), key = APPS.main.key, established = true) {
  const sock = net.connect(PORT, HOST);
  t.after(() => sock.destroy());
  const c = { frames: [], closeCode: null, waiters: [] };
  let buf = Buffer.alloc(0);
  let upgraded = false;
  let closedResolve;
  c.closed = new Promise((resolve) => (closedResolve = resolve));
  sock.on('error', () => {});
  sock.on('close', () => closedResolve(c.closeCode ?? 'socket closed'));
  sock.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    if (!upgraded) {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      assert.match(buf.subarray(0, end).toString(), /^HTTP\/1\.1 101/);
      buf = buf.subarray(end + 4);
      upgraded = true;
    }
    while (buf.length >= 2) {
      let len = buf[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (buf.length < 4) return;
        len = buf.readUInt16BE(2);
        off = 4;
      }
      if (buf.length < off + len) return;
      const opcode = buf[0] & 0x0f;
      const payload = buf.subarray(off, off + len);
      buf = buf.subarray(off + len);
      if (opcode === 1) {
        c.frames.push(JSON.parse(payload.toString()));
        c.waiters = c.waiters.filter((w) => !w());
      }
      if (opcode === 8) {
        c.closeCode = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
        closedResolve(c.closeCode);
      }
    }
  });
  c.frame = (fin, opcode, payload) => sock.write(encodeFrame(fin, opcode, payload));
  /** Writes bytes as they are (a frame header alone, say). */
  c.write = (bytes) => sock.write(bytes);
  /** The first frame (already received or coming) that `match` accepts. */
  c.next = (match, ms = 5000) => {
    const found = c.frames.find(match);
    if (found) return Promise.resolve(found);
    return withTimeout(
      new Promise((resolve) => {
        c.waiters.push(() => {
          const f = c.frames.find(match);
          if (f) resolve(f);
          return Boolean(f);
        });
      }),
      ms,
      'no matching frame',
    );
  };
  sock.write(
    Buffer.concat([
      Buffer.from(
        `GET /app/${key}?${DEFAULT_QUERY} HTTP/1.1\r\nHost: ${HOST}:${PORT}\r\n` +
          'Upgrade: websocket\r\nConnection: Upgrade\r\n' +
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
      ),
      early,
    ]),
  );
  if (established) await c.next((f) => f.event === 'pusher:connection_established');
  return c;
}

/** The connection can still subscribe to a fresh channel and receive an event triggered over HTTP. */
async function assertSubscribesAndReceives(c) {
  const name = uniqueChannel('alive');
  await c.subscribe(name, 5000);
  const res = await sdk.trigger(name, 'probe', { alive: name });
  assert.equal(res.status, 200);
  const f = await c.next((x) => x.event === 'probe' && x.channel === name, 5000);
  assert.deepEqual(parseData(f.data), { alive: name });
}

// ---------------------------------------------------------------------------
describe('handshake errors', () => {
  test('unknown app key gets pusher:error 4001 and close 4001', T, async (t) => {
    const c = raw(t, 'no-such-key');
    await expectErrorThenClose(c, 4001);
  });

  test('disabled app gets pusher:error 4003 and close 4003', T, async (t) => {
    const c = raw(t, APPS.disabled.key);
    await expectErrorThenClose(c, 4003);
  });

  test('limited app (max_connections=1): the second connection gets 4004, the first keeps working', T, async (t) => {
    const [first] = await establishedRetry(t, APPS.limited.key);
    const second = raw(t, APPS.limited.key);
    await expectErrorThenClose(second, 4004);
    assert.equal(first.isClosed, false, 'first connection still open');
    first.send({ event: 'pusher:ping', data: {} });
    await first.next('pusher:pong', 3000);
    const name = uniqueChannel('limited');
    await first.subscribe(name);
    const limitedSdk = newServerSdk(APPS.limited.appId, APPS.limited.key, APPS.limited.secret);
    await limitedSdk.trigger(name, 'ev', { ok: 1 });
    const f = await first.next('ev', 3000);
    assert.deepEqual(parseData(f.data), { ok: 1 });
  });

  test('limited app: closing the only connection frees the slot for a new one', T, async (t) => {
    const [first] = await establishedRetry(t, APPS.limited.key);
    first.ws.close(1000);
    await first.closed;
    const [, est] = await establishedRetry(t, APPS.limited.key);
    assert.match(est.socket_id, /^\d+\.\d+$/);
  });

  test('wrong path (/foo/{key}) never gets connection_established (close 4005 or HTTP 404)', T, async (t) => {
    const c = raw(t, APPS.main.key, DEFAULT_QUERY, `/foo/${APPS.main.key}`);
    const closed = await withTimeout(c.closed, 5000, 'wrong path: connection neither refused nor closed');
    assert.ok(
      closed.httpStatus === 404 || closed.code === 4005,
      `expected HTTP 404 or close 4005, got ${JSON.stringify(closed)}`,
    );
    assert.ok(!c.frames.some((f) => f.event === 'pusher:connection_established'));
  });

  test('missing protocol parameter gets 4008', T, async (t) => {
    const c = raw(t, APPS.main.key, 'client=js&version=8.4.0&flash=false');
    await expectErrorThenClose(c, 4008);
  });

  test('protocol=abc (not a number) gets 4006', T, async (t) => {
    const c = raw(t, APPS.main.key, 'protocol=abc&client=js&version=8.4.0');
    await expectErrorThenClose(c, 4006);
  });

  for (const v of ['4', '8']) {
    test(`unsupported protocol=${v} gets 4007`, T, async (t) => {
      const c = raw(t, APPS.main.key, `protocol=${v}&client=js&version=8.4.0`);
      await expectErrorThenClose(c, 4007);
    });
  }

  for (const [what, key, code] of [
    ['an unknown key', 'no-such-key', 4001],
    ['a disabled app', APPS.disabled.key, 4003],
  ]) {
    test(`pusher-js given ${what} reports error ${code} and does not retry (4000-4099: refused)`, T, async (t) => {
      const p = new Pusher(key, {
        wsHost: HOST,
        wsPort: PORT,
        wssPort: PORT,
        forceTLS: false,
        enabledTransports: ['ws'],
        cluster: 'mt1',
        disableStats: true,
      });
      t.after(() => p.disconnect());
      const errors = [];
      const states = [];
      p.connection.bind('error', (e) => errors.push(e));
      p.connection.bind('state_change', (s) => states.push(s.current));
      // pusher-js maps close codes 4000-4099 to 'refused': it disconnects for good.
      await waitFor(() => states.includes('disconnected'), 8000, 50, `pusher-js disconnected (states ${states})`);
      const codes = errors.map((e) => e && e.error && e.error.data && e.error.data.code);
      assert.ok(codes.includes(code), `pusher-js saw error ${code}: ${JSON.stringify(errors)}`);
      await sleep(1500);
      assert.equal(p.connection.state, 'disconnected', `states: ${states}`);
      assert.deepEqual(states, ['disconnected'], 'no reconnect attempt after a 40xx refusal');
    });
  }

  test('protocol 5, 6 and 7 are all accepted', T, async (t) => {
    for (const v of ['5', '6', '7']) {
      const [c, est] = await established(t, APPS.main.key, `protocol=${v}&client=js&version=8.4.0&flash=false`);
      assert.match(est.socket_id, /^\d+\.\d+$/);
      c.close();
    }
  });
});

// ---------------------------------------------------------------------------
describe('connection_established and keep-alive', () => {
  test('connection_established data is a JSON string with socket_id and activity_timeout 3', T, async (t) => {
    const c = raw(t, APPS.main.key);
    const f = await c.next('pusher:connection_established', 5000);
    assert.equal(c.frames[0].event, 'pusher:connection_established', 'it is the first frame');
    assert.equal(typeof f.data, 'string', 'data is double-encoded (a JSON string)');
    const d = JSON.parse(f.data);
    assert.match(d.socket_id, /^\d+\.\d+$/);
    assert.equal(d.activity_timeout, 3);
  });

  test('pusher:ping is answered with pusher:pong', T, async (t) => {
    const [c] = await established(t);
    c.send({ event: 'pusher:ping', data: {} });
    await c.next('pusher:pong', 3000);
    // data given as a string works too
    c.send({ event: 'pusher:ping', data: '{}' });
    await c.next('pusher:pong', 3000);
  });

  test('a silent client gets a server pusher:ping after activity_timeout, then close 4201', T, async (t) => {
    const start = Date.now();
    // autoPong off: the client does not even answer WebSocket-level pings.
    const c = raw(t, APPS.main.key, DEFAULT_QUERY, undefined, { autoPong: false });
    await c.established(5000);
    const ping = await c.next('pusher:ping', 6000);
    const pingAt = ping.receivedAt - start;
    assert.ok(pingAt >= 2500, `server ping came too early (${pingAt} ms; activity_timeout is 3 s)`);
    assert.ok(pingAt <= 4500, `server ping came after ${pingAt} ms (activity_timeout is 3 s)`);
    const closed = await withTimeout(c.closed, 8000, 'silent client was never closed');
    const closedAt = Date.now() - start;
    assert.equal(closed.code, 4201, `close code ${JSON.stringify(closed)}`);
    assert.ok(closedAt <= 7000, `closed after ${closedAt} ms (3 s + pong_timeout 2 s)`);
    assert.ok(closedAt - pingAt >= 1500, `closed ${closedAt - pingAt} ms after the ping (pong_timeout is 2 s)`);
  });

  test('a client that answers server pings with pusher:pong stays open past 7 s', T, async (t) => {
    const c = raw(t, APPS.main.key, DEFAULT_QUERY, undefined, { autoPong: false });
    await c.established(5000);
    let pings = 0;
    c.ws.on('message', (buf) => {
      try {
        if (JSON.parse(buf.toString()).event === 'pusher:ping') {
          pings += 1;
          c.send({ event: 'pusher:pong', data: {} });
        }
      } catch {
        /* ignore */
      }
    });
    await sleep(7500);
    assert.equal(c.isClosed, false, `closed: ${JSON.stringify(c.closedInfo)}`);
    assert.ok(pings >= 1, 'the server pinged the idle client');
    c.send({ event: 'pusher:ping', data: {} });
    await c.next('pusher:pong', 3000);
  });

  test('a client that keeps sending its own pings is never pinged or closed', T, async (t) => {
    const [c] = await established(t);
    for (let i = 0; i < 7; i++) {
      c.send({ event: 'pusher:ping', data: {} });
      await c.next('pusher:pong', 3000);
      await sleep(1000);
    }
    assert.equal(c.isClosed, false);
    assert.ok(!c.frames.some((f) => f.event === 'pusher:ping'), 'the server pinged a client that was not idle');
  });
});

// ---------------------------------------------------------------------------
describe('the upgraded socket', () => {
  // A client may send frames right behind its handshake, before it has read
  // the 101: they arrive in the same read as the request head and must
  // reach the session in order, not be lost with the HTTP layer's buffer.
  test('frames sent in the same write as the handshake are read, in order', T, async (t) => {
    const ping = Buffer.from(JSON.stringify({ event: 'pusher:ping', data: {} }));
    const channel = uniqueChannel('early');
    const subscribe = Buffer.from(JSON.stringify({ event: 'pusher:subscribe', data: { channel } }));
    const c = await rawFrames(t, Buffer.concat([encodeFrame(true, 1, ping), encodeFrame(true, 1, subscribe)]));
    await c.next((f) => f.event === 'pusher:pong');
    await c.next((f) => f.event === 'pusher_internal:subscription_succeeded' && f.channel === channel);
    const established = c.frames.findIndex((f) => f.event === 'pusher:connection_established');
    const pong = c.frames.findIndex((f) => f.event === 'pusher:pong');
    assert.ok(established < pong, 'connection_established comes first');
    const res = await sdk.trigger(channel, 'after-early', { n: 1 });
    assert.equal(res.status, 200);
    const got = await c.next((f) => f.event === 'after-early' && f.channel === channel);
    assert.deepEqual(parseData(got.data), { n: 1 });
  });

  // A WebSocket upgrade on a plain HTTP route (/ready) is answered as that
  // route answers, then the connection is closed (it cannot go back to
  // serving HTTP requests): it is never left hanging.
  test('a WebSocket upgrade on an HTTP route gets the route\'s answer, then the connection closes', T, async (t) => {
    const c = rawHttp(
      t,
      `GET /ready HTTP/1.1\r\nHost: ${HOST}:${PORT}\r\n` +
        'Upgrade: websocket\r\nConnection: Upgrade\r\n' +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    );
    await withTimeout(c.closed, 5000, 'the connection was left open');
    assert.match(c.text, /^HTTP\/1\.1 200/);
    assert.match(c.text, /\r\nconnection: close\r\n/i);
    assert.match(c.text, /\r\n\r\n\{"status":"ready"\}$/, 'the whole body, once');
  });

  // HTTP/1.1 pipelining: a request sent ahead of the upgrade in the same
  // write is answered first, then the upgrade (RFC 9112 §9.3.2).
  test('a request pipelined ahead of the upgrade is answered before the 101', T, async (t) => {
    const c = rawHttp(
      t,
      `GET /ready HTTP/1.1\r\nHost: ${HOST}:${PORT}\r\n\r\n` +
        `GET /app/${APPS.main.key}?${DEFAULT_QUERY} HTTP/1.1\r\nHost: ${HOST}:${PORT}\r\n` +
        'Upgrade: websocket\r\nConnection: Upgrade\r\n' +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    );
    await waitFor(() => c.text.includes('pusher:connection_established'), 5000, 50, 'connection_established');
    const text = c.text;
    const ready = text.indexOf('HTTP/1.1 200');
    const upgraded = text.indexOf('HTTP/1.1 101');
    assert.ok(ready === 0, `the 200 comes first: ${JSON.stringify(text.slice(0, 200))}`);
    assert.ok(upgraded > ready, 'then the 101');
    assert.ok(text.slice(ready, upgraded).includes('{"status":"ready"}'), 'with its body');
  });

  // actix-http hands a connection over only for `Upgrade: websocket`
  // exactly and no chunked body; the handshake check alone would take
  // `websocket, x` or a chunked request. Those get a 400 and a plain HTTP
  // connection, never a 101 with no session behind it.
  for (const [name, headers] of [
    ['an Upgrade listing more than websocket', 'Upgrade: websocket, x-other\r\nConnection: Upgrade\r\n'],
    ['a chunked body', 'Upgrade: websocket\r\nConnection: Upgrade\r\nTransfer-Encoding: chunked\r\n'],
  ]) {
    test(`a handshake with ${name} is refused with 400, not left without a session`, T, async (t) => {
      const c = rawHttp(
        t,
        `GET /app/${APPS.main.key}?${DEFAULT_QUERY} HTTP/1.1\r\nHost: ${HOST}:${PORT}\r\n` +
          headers +
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n' +
          (headers.includes('chunked') ? '0\r\n\r\n' : ''),
      );
      await waitFor(() => /\r\n\r\n/.test(c.text), 5000, 50, 'an answer');
      assert.match(c.text, /^HTTP\/1\.1 400/, JSON.stringify(c.text.slice(0, 120)));
      assert.doesNotMatch(c.text, /connection_established/);
    });
  }

  // The session's last frames (pusher:error, then the close frame) must
  // reach the client even when it keeps sending: closing a socket with
  // unread input would reset it and drop them.
  test('a client still sending when it is refused reads the error and the close code', T, async (t) => {
    const ping = encodeFrame(true, 1, Buffer.from(JSON.stringify({ event: 'pusher:ping', data: {} })));
    const pings = Buffer.concat(Array.from({ length: 200 }, () => ping));
    const c = await rawFrames(t, pings, 'no-such-key', false);
    const err = await c.next((f) => f.event === 'pusher:error');
    assert.equal(parseData(err.data).code, 4001);
    assert.equal(await withTimeout(c.closed, 5000, 'no close'), 4001, 'the close frame with 4001 was read');
  });
});

describe('malformed frames', () => {
  const longName = 'x'.repeat(165);
  const cases = [
    { name: 'a frame that is not JSON', send: 'this is not json {', accept: ['pusher:error'] },
    { name: 'a JSON array', send: '[1,2,3]', accept: ['pusher:error'] },
    { name: 'JSON without event', send: JSON.stringify({ data: { channel: 'x' } }), accept: ['pusher:error'] },
    { name: 'event that is not a string', send: JSON.stringify({ event: 42, data: {} }), accept: ['pusher:error'] },
    {
      name: 'subscribe with data a number',
      send: JSON.stringify({ event: 'pusher:subscribe', data: 7 }),
      accept: ['pusher:error', 'pusher:subscription_error'],
    },
    {
      name: 'subscribe without a channel',
      send: JSON.stringify({ event: 'pusher:subscribe', data: {} }),
      accept: ['pusher:error', 'pusher:subscription_error'],
    },
    {
      name: 'subscribe to a channel name with invalid characters',
      send: JSON.stringify({ event: 'pusher:subscribe', data: { channel: 'bad channel!' } }),
      accept: ['pusher:error', 'pusher:subscription_error'],
    },
    {
      name: 'subscribe to a channel name longer than 164 chars',
      send: JSON.stringify({ event: 'pusher:subscribe', data: { channel: longName } }),
      accept: ['pusher:error', 'pusher:subscription_error'],
    },
    {
      name: 'an oversized frame (> 65536 bytes)',
      send: JSON.stringify({ event: 'client-big', channel: 'private-x', data: 'y'.repeat(70000) }),
      accept: ['pusher:error'],
      mayClose: 1009,
    },
  ];

  for (const k of cases) {
    test(`${k.name} is answered with ${k.accept.join(' or ')}${k.mayClose ? ` (or close ${k.mayClose})` : ''}; the server keeps serving`, T, async (t) => {
      const [c] = await established(t);
      c.sendRaw(k.send);
      let outcome;
      try {
        outcome = await c.next((f) => k.accept.includes(f.event), 3000);
      } catch (e) {
        if (k.mayClose && c.isClosed) outcome = null;
        else throw e;
      }
      if (outcome === null) {
        assert.equal(c.closedInfo.code, k.mayClose, `closed with ${JSON.stringify(c.closedInfo)}`);
      } else {
        const d = parseData(outcome.data);
        assert.ok(d && typeof d === 'object', `error data is an object: ${JSON.stringify(outcome)}`);
        if (outcome.event === 'pusher:error') {
          assert.ok(typeof d.message === 'string' && d.message.length > 0, 'error has a message');
          // A malformed frame is not a reason to close (the only exception is the oversized frame)
          await sleep(k.mayClose ? 300 : 100);
          if (!k.mayClose) {
            assert.equal(c.isClosed, false, `connection closed: ${JSON.stringify(c.closedInfo)}`);
          } else if (c.isClosed) {
            // error frame then close: the close must be the "message too big" one
            assert.equal(c.closedInfo.code, k.mayClose, `closed with ${JSON.stringify(c.closedInfo)}`);
          }
        }
        if (!c.isClosed) await assertSubscribesAndReceives(c);
      }
      // A fresh connection works too.
      const [fresh] = await established(t);
      await assertSubscribesAndReceives(fresh);
    });
  }

  // A client declaring a huge frame must be refused at the header: the
  // server may not buffer the payload (up to 2^63 bytes) before checking
  // max_frame_bytes. Raw TCP, since `ws` cannot send a header alone.
  test('a frame declaring 1 GiB is refused at its header (pusher:error, close 1009) before its payload is sent', T, async (t) => {
    const c = await rawFrames(t);
    // Header only: FIN + text, masked, 64-bit length 2^30, mask key, then
    // 64 KiB of the payload.
    const header = Buffer.alloc(14);
    header[0] = 0x81;
    header[1] = 0x80 | 127;
    header.writeBigUInt64BE(1n << 30n, 2);
    c.write(Buffer.concat([header, Buffer.alloc(65536, 0x20)]));
    const code = await withTimeout(c.closed, 3000, 'no close within 3 s: the server waits for the declared 1 GiB');
    assert.equal(code, 1009, `close code (frames ${JSON.stringify(c.frames)})`);
    const errors = c.frames.filter((f) => f.event === 'pusher:error');
    assert.equal(errors.length, 1, JSON.stringify(c.frames));
    assert.match(parseData(errors[0].data).message, /larger than the server accepts/);
  });

  // RFC 6455 §5.4: a message may be sent in fragments (a first frame with
  // FIN clear, continuation frames, a last one with FIN set); clients and
  // proxies do split messages. Raw TCP, since `ws` does not fragment.
  test('a message sent in fragments is reassembled (a UTF-8 character split across fragments too)', T, async (t) => {
    const c = await rawFrames(t);
    const name = uniqueChannel('frag');
    const subscribe = Buffer.from(JSON.stringify({ event: 'pusher:subscribe', data: { channel: name } }));
    c.frame(false, 0x1, subscribe.subarray(0, 10));
    c.frame(false, 0x0, subscribe.subarray(10, 20));
    c.frame(true, 0x0, subscribe.subarray(20));
    await c.next((f) => f.event === 'pusher_internal:subscription_succeeded' && f.channel === name);
    const ping = Buffer.from(JSON.stringify({ event: 'pusher:ping', data: { word: 'café' } }));
    const split = ping.indexOf(Buffer.from('é')) + 1; // inside the two bytes of é
    c.frame(false, 0x1, ping.subarray(0, split));
    c.frame(true, 0x0, ping.subarray(split));
    await c.next((f) => f.event === 'pusher:pong');
    const res = await sdk.trigger(name, 'after-fragments', { ok: 1 });
    assert.equal(res.status, 200);
    await c.next((f) => f.event === 'after-fragments' && f.channel === name);
    assert.equal(c.closeCode, null, 'still open');
  });

  test('fragments adding up to more than max_frame_bytes are refused (pusher:error, close 1009)', T, async (t) => {
    const c = await rawFrames(t);
    const piece = Buffer.alloc(40000, 0x20);
    c.frame(false, 0x1, Buffer.concat([Buffer.from('{"event":"pusher:ping","data":"'), piece]));
    c.frame(false, 0x0, piece);
    c.frame(true, 0x0, Buffer.from('"}'));
    const code = await withTimeout(c.closed, 5000, 'no close for an oversized fragmented message');
    assert.equal(code, 1009);
    assert.ok(c.frames.some((f) => f.event === 'pusher:error'), JSON.stringify(c.frames));
  });

  test('a text frame that is not UTF-8 is closed with 1007 (RFC 6455 §7.4.1)', T, async (t) => {
    const c = await rawFrames(t);
    c.frame(true, 0x1, Buffer.from([0x7b, 0xff, 0xfe, 0x7d]));
    const code = await withTimeout(c.closed, 5000, 'no close for invalid UTF-8');
    assert.equal(code, 1007);
    // The server goes on serving others.
    const [fresh] = await established(t);
    await assertSubscribesAndReceives(fresh);
  });

  test('a frame of just under the limit is accepted', T, async (t) => {
    const [c] = await established(t);
    // ~60 KB ping: well-formed and below max_frame_bytes.
    c.send({ event: 'pusher:ping', data: { pad: 'p'.repeat(60000) } });
    await c.next('pusher:pong', 3000);
    assert.equal(c.isClosed, false);
  });
});

// ---------------------------------------------------------------------------
describe('subscriptions and unknown events', () => {
  test('subscribe data given as a JSON string is accepted', T, async (t) => {
    const [c] = await established(t);
    const name = uniqueChannel('strdata');
    c.send({ event: 'pusher:subscribe', data: JSON.stringify({ channel: name }) });
    const ok = await c.next((f) => f.channel === name, 3000);
    assert.equal(ok.event, 'pusher_internal:subscription_succeeded');
  });

  test('subscription_succeeded for a public channel names the channel and carries data as a string', T, async (t) => {
    const [c] = await established(t);
    const name = uniqueChannel('succ');
    const f = await c.subscribe(name);
    assert.equal(f.channel, name);
    assert.equal(typeof f.data, 'string');
  });

  test('subscribing twice answers success twice and still delivers each event once', T, async (t) => {
    const [c] = await established(t);
    const name = uniqueChannel('twice');
    await c.subscribe(name);
    await c.subscribe(name);
    const b = await (await sdk.get({ path: `/channels/${name}`, params: { info: 'subscription_count' } })).json();
    assert.equal(b.subscription_count, 1, 'one connection counts once');
    await sdk.trigger(name, 'once', { n: 1 });
    await c.next('once', 3000);
    await c.none('once', 400);
  });

  test('an unknown pusher:foo event does not close the connection', T, async (t) => {
    const [c] = await established(t);
    c.send({ event: 'pusher:foo', data: {} });
    const foo = await c.next('pusher:error', 3000);
    assert.equal(foo.dataParsed.message, 'Unsupported event: pusher:foo');
    c.send({ event: 'no-prefix-event', data: {} });
    // The likely mistake (a client event without its prefix) is named.
    const noPrefix = await c.next('pusher:error', 3000);
    assert.match(noPrefix.dataParsed.message, /no-prefix-event; events sent by clients must be named client-\*/);
    await sleep(200);
    assert.equal(c.isClosed, false);
    c.send({ event: 'pusher:ping', data: {} });
    await c.next('pusher:pong', 3000);
    await assertSubscribesAndReceives(c);
  });

  test('server events reach a raw client with data as a JSON string', T, async (t) => {
    const [c] = await established(t);
    const name = uniqueChannel('wire');
    await c.subscribe(name);
    await sdk.trigger(name, 'wire-ev', { a: [1, 'ü'] });
    const f = await c.next('wire-ev', 3000);
    assert.equal(f.channel, name);
    assert.equal(typeof f.data, 'string');
    assert.deepEqual(JSON.parse(f.data), { a: [1, 'ü'] });
  });

  test('client events on a public channel are not delivered to the other subscriber', T, async (t) => {
    const [a] = await established(t);
    const [b] = await established(t);
    const name = uniqueChannel('pubclient');
    await a.subscribe(name);
    await b.subscribe(name);
    a.send({ event: 'client-hi', channel: name, data: { x: 1 } });
    await b.none('client-hi', 500);
    assert.equal(a.isClosed, false);
  });
});
