// Shared helpers for the rusher protocol suites.
//
// The server under test is given by the environment (protocol-tests/run sets it):
//   RUSHER_HOST, RUSHER_PORT          where the server listens
//   RUSHER_BIN, RUSHER_CONFIG         used by suites that spawn their own server
//
// Everything opened here must be closed by the test that opened it (t.after or
// try/finally), otherwise node:test waits for the process forever.

import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import WebSocket from 'ws';
import Pusher from 'pusher-js';
import PusherServer from 'pusher';

export const HOST = process.env.RUSHER_HOST || '127.0.0.1';
export const PORT = Number(process.env.RUSHER_PORT || 6001);
export const BIN = process.env.RUSHER_BIN;
export const CONFIG = process.env.RUSHER_CONFIG;

export const DEFAULT_QUERY = 'protocol=7&client=js&version=8.4.0&flash=false';

/** The apps of fixtures/test-config.toml. */
export const APPS = {
  main: { appId: 'app-id', key: 'app-key', secret: 'app-secret' },
  other: { appId: 'other-app', key: 'other-key', secret: 'other-secret' },
  disabled: { appId: 'disabled-app', key: 'disabled-key', secret: 'disabled-secret' },
  limited: { appId: 'limited-app', key: 'limited-key', secret: 'limited-secret' },
  strict: { appId: 'strict-app', key: 'strict-key', secret: 'strict-secret' },
};

let uniqueCounter = 0;
const RUN_ID = `${process.pid.toString(36)}${Date.now().toString(36).slice(-4)}`;
/** A channel name nobody else in this run uses (valid chars only). */
export function uniqueChannel(prefix = 'ch') {
  uniqueCounter += 1;
  return `${prefix}-${RUN_ID}-${uniqueCounter}`;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Run `fn` with a deadline; reject with `message` if it does not settle in time. */
export function withTimeout(promise, ms, message) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${message} (timed out after ${ms} ms)`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Poll `fn` (sync or async) until it returns a truthy value; return that value. */
export async function waitFor(fn, timeoutMs = 5000, intervalMs = 50, what = 'condition') {
  const deadline = Date.now() + timeoutMs;
  let lastError;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`waitFor(${what}) timed out after ${timeoutMs} ms${lastError ? `: ${lastError.message}` : ''}`);
    }
    await sleep(intervalMs);
  }
}

/** A free TCP port on 127.0.0.1 (bind to 0, read, release). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Parse the `data` of a server frame: server→client data is a JSON string (§1). */
export function parseData(data) {
  if (typeof data !== 'string') return data;
  try {
    return JSON.parse(data);
  } catch {
    return data;
  }
}

// ---------------------------------------------------------------------------
// Raw WebSocket client
// ---------------------------------------------------------------------------

/**
 * Open a raw `ws` connection to /app/{key}?{query} (or to `path` when given),
 * on the test server or on `{host, port}` when given.
 *
 * Returns an object with:
 *   ws            the WebSocket
 *   frames        every frame received so far (parsed; `.dataParsed` holds decoded data)
 *   next(pred, timeoutMs)   the next not-yet-consumed frame matching pred
 *                 (an event name or a function of the frame); consumes it
 *   none(pred, ms) resolve true if no matching frame arrives within ms
 *   send(obj) / sendRaw(string)
 *   established() wait for pusher:connection_established, returns {socket_id, activity_timeout}
 *   closed        promise of {code, reason, httpStatus}; httpStatus set when the
 *                 upgrade was answered with a plain HTTP response
 *   close()       close (idempotent)
 */
export function connectRaw(key, query = DEFAULT_QUERY, path = undefined, wsOptions = {}, { host = HOST, port = PORT } = {}) {
  const p = path ?? `/app/${key}`;
  const url = `ws://${host}:${port}${p}${query === null || query === undefined || query === '' ? '' : `?${query}`}`;
  const ws = new WebSocket(url, { handshakeTimeout: 5000, ...wsOptions });
  const frames = [];
  const queue = [];
  const waiters = [];
  const nonJson = [];
  let closedInfo = null;
  let resolveClosed;
  const closed = new Promise((r) => {
    resolveClosed = r;
  });
  const finish = (info) => {
    if (closedInfo) return;
    closedInfo = info;
    resolveClosed(info);
    // Wake up waiters so they fail fast instead of waiting for their timeout.
    for (const w of waiters.splice(0)) w.onClose(info);
  };

  const matches = (pred, f) => (typeof pred === 'function' ? pred(f) : f.event === pred);

  ws.on('message', (buf, isBinary) => {
    const text = buf.toString('utf8');
    let f;
    try {
      f = JSON.parse(text);
    } catch {
      nonJson.push(text);
      return;
    }
    if (f && typeof f === 'object') {
      f.dataParsed = parseData(f.data);
      f.receivedAt = Date.now();
      f.binary = isBinary;
    }
    frames.push(f);
    const idx = waiters.findIndex((w) => matches(w.pred, f));
    if (idx >= 0) {
      const [w] = waiters.splice(idx, 1);
      w.resolve(f);
    } else {
      queue.push(f);
    }
  });
  ws.on('unexpected-response', (req, res) => {
    finish({ code: null, reason: '', httpStatus: res.statusCode });
    res.resume();
    req.destroy();
  });
  ws.on('error', (err) => {
    conn.error = err;
    // 'close' follows an error once the socket is gone; but if the connection
    // never opened there may be no close event.
    setTimeout(() => finish({ code: null, reason: String(err && err.message), httpStatus: null, error: err }), 200);
  });
  ws.on('close', (code, reason) => finish({ code, reason: reason.toString('utf8'), httpStatus: null }));

  const conn = {
    ws,
    url,
    frames,
    nonJson,
    closed,
    error: null,
    get isClosed() {
      return closedInfo !== null;
    },
    get closedInfo() {
      return closedInfo;
    },
    opened: new Promise((resolve) => {
      ws.once('open', () => resolve(true));
      closed.then(() => resolve(false));
    }),
    next(pred, timeoutMs = 3000) {
      const qi = queue.findIndex((f) => matches(pred, f));
      if (qi >= 0) return Promise.resolve(queue.splice(qi, 1)[0]);
      const desc = typeof pred === 'function' ? pred.toString().slice(0, 120) : JSON.stringify(pred);
      return new Promise((resolve, reject) => {
        const w = { pred, resolve: null, onClose: null };
        const timer = setTimeout(() => {
          const i = waiters.indexOf(w);
          if (i >= 0) waiters.splice(i, 1);
          reject(new Error(`no frame matching ${desc} within ${timeoutMs} ms; received: ${summarize(frames)}`));
        }, timeoutMs);
        w.resolve = (f) => {
          clearTimeout(timer);
          resolve(f);
        };
        w.onClose = (info) => {
          clearTimeout(timer);
          reject(new Error(`connection closed (${JSON.stringify(info)}) while waiting for ${desc}; received: ${summarize(frames)}`));
        };
        if (closedInfo) {
          w.onClose(closedInfo);
          return;
        }
        waiters.push(w);
      });
    },
    async none(pred, ms) {
      let f;
      try {
        f = await conn.next(pred, ms);
      } catch {
        return true;
      }
      throw new Error(`unexpected frame: ${JSON.stringify(f)}`);
    },
    send(obj) {
      ws.send(JSON.stringify(obj));
    },
    sendRaw(text) {
      ws.send(text);
    },
    async established(timeoutMs = 3000) {
      const f = await conn.next('pusher:connection_established', timeoutMs);
      return parseData(f.data);
    },
    async subscribe(channel, timeoutMs = 3000) {
      conn.send({ event: 'pusher:subscribe', data: { channel } });
      return conn.next(
        (f) =>
          (f.event === 'pusher_internal:subscription_succeeded' || f.event === 'pusher:subscription_error') &&
          f.channel === channel,
        timeoutMs,
      ).then((f) => {
        if (f.event !== 'pusher_internal:subscription_succeeded') {
          throw new Error(`subscription to ${channel} failed: ${JSON.stringify(f)}`);
        }
        return f;
      });
    },
    close() {
      if (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN) {
        try {
          ws.terminate();
        } catch {
          /* ignore */
        }
      }
    },
  };
  return conn;
}

function summarize(frames) {
  const s = JSON.stringify(frames.map(({ event, channel, data }) => ({ event, channel, data })));
  return s.length > 600 ? `${s.slice(0, 600)}…` : s;
}

/**
 * connectRaw + wait for connection_established; returns [conn, establishedData].
 * `at` = {host, port} of another server (default the test server).
 */
export async function connectEstablished(key = APPS.main.key, query = DEFAULT_QUERY, at = {}) {
  const conn = connectRaw(key, query, undefined, {}, at);
  try {
    const est = await conn.established(5000);
    return [conn, est];
  } catch (e) {
    conn.close();
    throw e;
  }
}

// ---------------------------------------------------------------------------
// pusher-js client
// ---------------------------------------------------------------------------

/**
 * A pusher-js (Node build) client on the test server (or on `at.host`:`at.port`);
 * resolves once connected, with `client.connection.socket_id` set.
 * `at.what` replaces the "did not connect" message of the timeout.
 */
export async function newPusherClient(key = APPS.main.key, opts = {}, at = {}) {
  const { host = HOST, port = PORT, what = `pusher-js client (${key}) did not connect` } = at;
  const client = new Pusher(key, {
    wsHost: host,
    wsPort: port,
    wssPort: port,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: 'mt1',
    disableStats: true,
    ...opts,
  });
  try {
    await withTimeout(
      new Promise((resolve, reject) => {
        if (client.connection.state === 'connected') return resolve();
        client.connection.bind('connected', () => resolve());
        client.connection.bind('failed', () => reject(new Error('pusher-js connection failed')));
        client.connection.bind('error', (err) => {
          // pusher:error with a 4000-4099 code means it will not connect.
          const code = err && err.error && err.error.data && err.error.data.code;
          if (code && code >= 4000 && code < 4100) reject(new Error(`pusher-js error ${JSON.stringify(err.error)}`));
        });
      }),
      8000,
      what,
    );
  } catch (e) {
    client.disconnect();
    throw e;
  }
  return client;
}

/** Subscribe a pusher-js client and wait for pusher:subscription_succeeded. */
export function subscribeAndWait(client, channelName, timeoutMs = 5000) {
  const channel = client.subscribe(channelName);
  return withTimeout(
    new Promise((resolve, reject) => {
      channel.bind('pusher:subscription_succeeded', (data) => resolve({ channel, data }));
      channel.bind('pusher:subscription_error', (err) =>
        reject(new Error(`subscription_error on ${channelName}: ${JSON.stringify(err)}`)),
      );
    }),
    timeoutMs,
    `subscription to ${channelName} did not succeed`,
  ).then(({ channel: ch }) => ch);
}

/**
 * Collect every `eventName` event a pusher-js channel receives.
 * Returns {events, next(timeoutMs)} where next() resolves with the next unseen event data.
 */
export function collect(channel, eventName) {
  const events = [];
  let cursor = 0;
  const waiters = [];
  channel.bind(eventName, (data) => {
    events.push(data);
    const w = waiters.shift();
    if (w) {
      cursor += 1;
      w(data);
    }
  });
  return {
    events,
    next(timeoutMs = 3000) {
      if (cursor < events.length) {
        const d = events[cursor];
        cursor += 1;
        return Promise.resolve(d);
      }
      return withTimeout(new Promise((r) => waiters.push(r)), timeoutMs, `no ${eventName} on ${channel.name}`);
    },
  };
}

// ---------------------------------------------------------------------------
// Official Node server SDK
// ---------------------------------------------------------------------------

export function newServerSdk(appId = APPS.main.appId, key = APPS.main.key, secret = APPS.main.secret) {
  return serverSdk({ appId, key, secret }, HOST, PORT);
}

/** The official Node server SDK for `app` ({appId, key, secret}) on host:port, plain HTTP. */
export function serverSdk(app, host, port, extra = {}) {
  return new PusherServer({
    appId: app.appId,
    key: app.key,
    secret: app.secret,
    host,
    port: String(port),
    useTLS: false,
    ...extra,
  });
}

// ---------------------------------------------------------------------------
// Raw signed HTTP (PROTOCOL.md §5)
// ---------------------------------------------------------------------------

export const md5 = (s) => crypto.createHash('md5').update(s, 'utf8').digest('hex');
export const hmacHex = (secret, s) => crypto.createHmac('sha256', secret).update(s, 'utf8').digest('hex');

/**
 * Send a signed (or deliberately badly signed) request to the HTTP API.
 *
 * options:
 *   body              object (JSON-encoded) or string (sent verbatim); none for GET
 *   params            extra query parameters (signed)
 *   key, secret       credentials used for auth_key and the signature (default: main app)
 *   timestampOverride auth_timestamp to use (unix seconds)
 *   style             'node'   : values raw in the URL, body_md5 only with a body
 *                                (what the official Node SDK does)
 *                     'python' : values percent-encoded in the URL, the signature over
 *                                the decoded values, body_md5 always present
 *                                (md5 of the empty body on GET)
 *   tamper            { signature: string  — replace auth_signature
 *                       sendBody: string   — send this body instead of the signed one
 *                       bodyMd5: string    — sign and send this body_md5
 *                       dropSignature: true
 *                       signPath, signMethod: sign for another path / method
 *                       authVersion: string }
 *
 * Resolves {status, text, json} (json null when the body is not JSON).
 */
export async function signedRequest(method, path, options = {}) {
  const {
    body,
    params = {},
    key = APPS.main.key,
    secret = APPS.main.secret,
    timestampOverride,
    style = 'node',
    tamper = {},
    headers = {},
  } = options;
  const M = method.toUpperCase();
  const bodyStr = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
  const q = {
    auth_key: key,
    auth_timestamp: String(timestampOverride ?? Math.floor(Date.now() / 1000)),
    auth_version: tamper.authVersion ?? '1.0',
    ...Object.fromEntries(Object.entries(params).map(([k, v]) => [k, String(v)])),
  };
  if (bodyStr !== undefined || style === 'python') q.body_md5 = md5(bodyStr ?? '');
  if (tamper.bodyMd5 !== undefined) q.body_md5 = tamper.bodyMd5;

  const keys = Object.keys(q).sort((a, b) => (a.toLowerCase() < b.toLowerCase() ? -1 : a.toLowerCase() > b.toLowerCase() ? 1 : 0));
  const toSign = keys.map((k) => `${k.toLowerCase()}=${q[k]}`).join('&');
  const signature =
    tamper.signature ?? hmacHex(secret, `${tamper.signMethod ?? M}\n${tamper.signPath ?? path}\n${toSign}`);
  const enc = style === 'python' ? encodeURIComponent : (v) => v;
  let qs = keys.map((k) => `${k}=${enc(q[k])}`).join('&');
  if (!tamper.dropSignature) qs += `&auth_signature=${signature}`;

  const sent = tamper.sendBody !== undefined ? tamper.sendBody : bodyStr;
  const res = await fetch(`http://${HOST}:${PORT}${path}?${qs}`, {
    method: M,
    body: sent,
    headers: { ...(sent !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
  });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.status, text, json, headers: res.headers };
}

/** Plain unsigned GET. */
export async function plainGet(path) {
  const res = await fetch(`http://${HOST}:${PORT}${path}`);
  return { status: res.status, text: await res.text() };
}

// ---------------------------------------------------------------------------
// Child processes and their configs (shutdown, webhook, cluster, persistence suites)
// ---------------------------------------------------------------------------

/** True while `child` has neither exited nor been killed. */
export const alive = (child) => Boolean(child) && child.exitCode === null && child.signalCode === null;

/** Send `signal` to `child` and wait for its exit; SIGKILL after `graceMs`. */
export async function stopChild(child, signal = 'SIGKILL', graceMs = 5000) {
  if (!alive(child)) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill(signal);
  const done = await Promise.race([exited.then(() => true), sleep(graceMs).then(() => false)]);
  if (!done && alive(child)) {
    child.kill('SIGKILL');
    await exited;
  }
}

/**
 * A registry of child processes: `track(child)` registers one (until it exits),
 * `killAll(graceMs)` stops them all; whatever is left is SIGKILLed when the Node
 * process exits, after which `onExit` runs (e.g. to remove temp dirs).
 */
export function childTracker(onExit = () => {}) {
  const children = new Set();
  process.on('exit', () => {
    for (const child of children) {
      try {
        child.kill('SIGKILL');
      } catch {
        /* already gone */
      }
    }
    onExit();
  });
  return {
    children,
    track(child) {
      children.add(child);
      child.once('exit', () => children.delete(child));
      return child;
    },
    async killAll(graceMs = 5000) {
      await Promise.all([...children].map((child) => stopChild(child, 'SIGKILL', graceMs)));
    },
  };
}

/** Append everything `child` writes on stdout and stderr to `log` (an array of strings); returns `log`. */
export function captureOutput(child, log = []) {
  child.stdout.on('data', (d) => log.push(d.toString()));
  child.stderr.on('data', (d) => log.push(d.toString()));
  return log;
}

/** Resolves with {code, signal} when `child` exits. */
export const exitOf = (child) => new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));

/**
 * Poll http://127.0.0.1:{port}/ready until it answers 200 (helpers.waitFor:
 * `timeoutMs`, every `intervalMs`); `check()` throws when the process is gone.
 */
export function waitReady(port, check, intervalMs, what, timeoutMs = 20000) {
  return waitFor(
    async () => {
      check();
      const res = await fetch(`http://127.0.0.1:${port}/ready`);
      await res.text();
      return res.status === 200;
    },
    timeoutMs,
    intervalMs,
    what,
  );
}

/** A TOML string literal. */
export const tomlString = (s) => JSON.stringify(String(s));

/** The `[[apps]]` part of fixtures/test-config.toml (RUSHER_CONFIG). */
export function fixtureApps() {
  if (!CONFIG) throw new Error('RUSHER_CONFIG must be set (fixtures/test-config.toml)');
  const fixture = fs.readFileSync(CONFIG, 'utf8');
  const at = fixture.search(/^\[\[apps\]\]/m);
  if (at < 0) throw new Error(`no [[apps]] in ${CONFIG}`);
  return fixture.slice(at);
}

/** Write `text` to {new temp dir named `prefix`...}/config.toml; returns {dir, path}. */
export function writeTempConfig(prefix, text) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const file = path.join(dir, 'config.toml');
  fs.writeFileSync(file, text);
  return { dir, path: file };
}

/** Spawn `RUSHER_BIN --config RUSHER_CONFIG` on a new free port; resolves when /ready is 200. */
export async function spawnServer(extraEnv = {}) {
  if (!BIN || !CONFIG) throw new Error('RUSHER_BIN and RUSHER_CONFIG must be set');
  const port = await freePort();
  const child = spawn(BIN, ['--config', CONFIG], {
    env: { ...process.env, RUSHER_PORT: String(port), ...extraEnv },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log = captureOutput(child);
  const exited = exitOf(child);
  const server = { child, port, log, exited, host: '127.0.0.1' };
  try {
    await waitReady(
      port,
      () => {
        if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}`);
      },
      100,
      'spawned server /ready',
    );
  } catch (e) {
    child.kill('SIGKILL');
    throw new Error(`${e.message}\nserver log:\n${log.join('')}`);
  }
  return server;
}
