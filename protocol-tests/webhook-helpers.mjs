// Helpers for webhooks.test.mjs: a real HTTP receiver for rusher's webhooks,
// a rusher process spawned with its own config, and a raw ws client for it.
//
// Everything started here must be stopped by the suite (after hooks).

import fs from 'node:fs';
import http from 'node:http';
import { spawn } from 'node:child_process';
import WebSocket from 'ws';
import {
  BIN,
  DEFAULT_QUERY,
  captureOutput,
  freePort,
  parseData,
  serverSdk,
  sleep,
  tomlString as q,
  waitFor,
  waitReady,
  writeTempConfig,
} from './helpers.mjs';

// ---------------------------------------------------------------------------
// Webhook receiver
// ---------------------------------------------------------------------------

/**
 * An HTTP server on 127.0.0.1:{free port} recording every request.
 *
 * `respond(index, request)` picks the answer of the index-th request (0-based):
 * a status number, or 'hang' to never answer. Default: 200.
 *
 * Each record: {index, at, method, url, headers (lower-case), rawBody, json, status}.
 */
export async function startReceiver(respond = () => 200) {
  const requests = [];
  const listeners = new Set();
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const rawBody = Buffer.concat(chunks).toString('utf8');
      let json = null;
      try {
        json = JSON.parse(rawBody);
      } catch {
        /* recorded as is */
      }
      const record = {
        index: requests.length,
        at: Date.now(),
        method: req.method,
        url: req.url,
        headers: { ...req.headers },
        rawBody,
        json,
        status: null,
      };
      const answer = respond(record.index, record);
      record.status = answer;
      requests.push(record);
      for (const l of listeners) l(record);
      if (answer === 'hang') return; // never answered; closed at stop()
      res.writeHead(answer, { 'content-type': 'text/plain' });
      res.end(answer >= 200 && answer < 300 ? 'ok' : 'no');
    });
  });
  server.keepAliveTimeout = 100;
  const port = await freePort();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  const accepted = () => requests.filter((r) => typeof r.status === 'number' && r.status >= 200 && r.status < 300);
  const receiver = {
    port,
    url: `http://127.0.0.1:${port}/hook`,
    requests,
    /** Requests answered 2xx. */
    accepted,
    /** Every event of the accepted requests, each with `_req` (the request record). */
    events() {
      return accepted().flatMap((r) => (r.json && Array.isArray(r.json.events) ? r.json.events : []).map((e) => ({ ...e, _req: r })));
    },
    /** Wait until an accepted event matches `pred`; resolve with it. */
    waitEvent(pred, timeoutMs = 3000, what = 'webhook event') {
      return waitFor(() => receiver.events().find(pred), timeoutMs, 20, what).catch((e) => {
        throw new Error(`${e.message}; received events: ${summarizeEvents(receiver.events())}`);
      });
    },
    async stop() {
      server.closeAllConnections?.();
      await new Promise((r) => server.close(() => r()));
    },
  };
  return receiver;
}

/** Short text of events for failure messages. */
export function summarizeEvents(events) {
  const s = JSON.stringify(events.map(({ _req, ...e }) => e));
  return s.length > 1500 ? `${s.slice(0, 1500)}…(${events.length} events)` : s;
}

/** Strip the `_req` back-reference the receiver adds. */
export const plain = ({ _req, ...e }) => e;

// ---------------------------------------------------------------------------
// A rusher process with its own config
// ---------------------------------------------------------------------------

/**
 * Build a config. `webhooks` = [server.webhooks] settings; `apps` = [{id, key,
 * secret, webhooks: [{url, event_types?, filter_prefix?, headers?}], ...limits}].
 */
export function buildConfig({ server = {}, webhooks = {}, apps }) {
  const lines = ['[server]', 'host = "127.0.0.1"', 'port = 6001', 'log_level = "warn"'];
  for (const [k, v] of Object.entries(server)) lines.push(`${k} = ${typeof v === 'string' ? q(v) : v}`);
  lines.push('', '[server.webhooks]');
  for (const [k, v] of Object.entries(webhooks)) lines.push(`${k} = ${v}`);
  for (const app of apps) {
    const { webhooks: hooks = [], ...fields } = app;
    lines.push('', '[[apps]]');
    for (const [k, v] of Object.entries(fields)) lines.push(`${k} = ${typeof v === 'string' ? q(v) : v}`);
    for (const hook of hooks) {
      lines.push('', '[[apps.webhooks]]', `url = ${q(hook.url)}`);
      if (hook.event_types) lines.push(`event_types = [${hook.event_types.map(q).join(', ')}]`);
      if (hook.filter_prefix !== undefined) lines.push(`filter_prefix = ${q(hook.filter_prefix)}`);
      if (hook.headers) {
        lines.push(`headers = { ${Object.entries(hook.headers).map(([k, v]) => `${q(k)} = ${q(v)}`).join(', ')} }`);
      }
    }
  }
  return `${lines.join('\n')}\n`;
}

/**
 * Write `configText` to a temp file and spawn RUSHER_BIN on a free port;
 * resolves once /ready answers 200.
 * Returns {child, pid, port, log, exited, configPath, kill()}.
 */
export async function spawnRusher(configText) {
  if (!BIN) throw new Error('RUSHER_BIN must be set');
  const { dir, path: configPath } = writeTempConfig('rusher-webhooks-', configText);
  const port = await freePort();
  const env = { ...process.env, RUSHER_PORT: String(port), RUSHER_HOST: '127.0.0.1', RUSHER_CONFIG: configPath };
  for (const k of ['RUSHER_APP_ID', 'RUSHER_APP_KEY', 'RUSHER_APP_SECRET', 'RUST_LOG']) delete env[k];
  const child = spawn(BIN, ['--config', configPath], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const log = captureOutput(child);
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal, at: Date.now() })));
  const server = {
    child,
    pid: child.pid,
    port,
    log,
    exited,
    configPath,
    get alive() {
      return child.exitCode === null && child.signalCode === null;
    },
    async kill() {
      if (server.alive) child.kill('SIGKILL');
      await exited;
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await waitReady(
      port,
      () => {
        if (!server.alive) throw new Error(`server exited with ${child.exitCode}`);
      },
      50,
      'spawned server /ready',
    );
  } catch (e) {
    await server.kill();
    throw new Error(`${e.message}\nconfig:\n${configText}\nserver log:\n${log.join('')}`);
  }
  return server;
}

/** The official Node server SDK pointed at a spawned server. */
export function sdkOn(server, app) {
  return serverSdk({ appId: app.id, key: app.key, secret: app.secret }, '127.0.0.1', server.port);
}

/** The value of a counter on GET /metrics (0 when absent). */
export async function metric(server, name) {
  const res = await fetch(`http://127.0.0.1:${server.port}/metrics`);
  const text = await res.text();
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}: ${text.slice(0, 200)}`);
  const m = text.match(new RegExp(`^${name}(?:\\{\\})? ([0-9.e+]+)$`, 'm'));
  return m ? Number(m[1]) : 0;
}

/** Resident set size of a process, in kB (Linux /proc). */
export function rssKb(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = status.match(/^VmRSS:\s+(\d+)\s+kB/m);
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]);
}

// ---------------------------------------------------------------------------
// Raw ws client on a spawned server
// ---------------------------------------------------------------------------

/**
 * A raw WebSocket on ws://127.0.0.1:{port}/app/{key}; answers pings.
 * `await client.ready` gives the socket id (also in client.socketId).
 */
export function wsClient(port, key) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/app/${key}?${DEFAULT_QUERY}`, { handshakeTimeout: 5000 });
  const frames = [];
  const waiters = [];
  const counts = new Map();
  let closedInfo = null;
  const closed = new Promise((resolve) => {
    ws.on('close', (code, reason) => {
      closedInfo = { code, reason: reason.toString() };
      for (const w of waiters.splice(0)) w.reject(new Error(`closed ${JSON.stringify(closedInfo)} while waiting`));
      resolve(closedInfo);
    });
  });
  ws.on('error', () => {});
  const client = {
    ws,
    frames,
    closed,
    socketId: null,
    /** How many frames with this event name arrived. */
    count: (event) => counts.get(event) || 0,
    send(obj) {
      ws.send(JSON.stringify(obj));
    },
    /** The first frame (received so far or later) matching pred, not consumed. */
    next(pred, timeoutMs = 3000) {
      const found = frames.find(pred);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const w = { pred, resolve, reject };
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(w), 1);
          reject(new Error(`no matching frame in ${timeoutMs} ms: ${pred}; last frames ${JSON.stringify(frames.slice(-5))}`));
        }, timeoutMs);
        w.resolve = (f) => {
          clearTimeout(timer);
          resolve(f);
        };
        w.reject = (e) => {
          clearTimeout(timer);
          reject(e);
        };
        if (closedInfo) w.reject(new Error(`closed ${JSON.stringify(closedInfo)}`));
        else waiters.push(w);
      });
    },
    /** Subscribe with extra data fields (auth, channel_data); resolve on success. */
    async subscribe(channel, fields = {}, timeoutMs = 3000) {
      const before = frames.length;
      client.send({ event: 'pusher:subscribe', data: { channel, ...fields } });
      const f = await client.next(
        (x, i = frames.indexOf(x)) =>
          i >= before &&
          x.channel === channel &&
          (x.event === 'pusher_internal:subscription_succeeded' || x.event === 'pusher:subscription_error'),
        timeoutMs,
      );
      if (f.event !== 'pusher_internal:subscription_succeeded') throw new Error(`subscribe ${channel}: ${JSON.stringify(f)}`);
      return f;
    },
    unsubscribe(channel) {
      client.send({ event: 'pusher:unsubscribe', data: { channel } });
    },
    close() {
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.terminate();
    },
    /** Close gracefully (close frame) and wait until closed. */
    async end() {
      if (ws.readyState === WebSocket.OPEN) ws.close(1000);
      else client.close();
      await Promise.race([closed, sleep(2000)]);
    },
  };
  ws.on('message', (buf) => {
    let f;
    try {
      f = JSON.parse(buf.toString('utf8'));
    } catch {
      return;
    }
    f.dataParsed = parseData(f.data);
    if (f.event === 'pusher:ping') client.send({ event: 'pusher:pong', data: {} });
    counts.set(f.event, (counts.get(f.event) || 0) + 1);
    frames.push(f);
    for (let i = 0; i < waiters.length; i += 1) {
      if (waiters[i].pred(f)) {
        const [w] = waiters.splice(i, 1);
        w.resolve(f);
        i -= 1;
      }
    }
  });
  client.ready = client.next((f) => f.event === 'pusher:connection_established', 5000).then((f) => {
    client.socketId = f.dataParsed.socket_id;
    return client.socketId;
  });
  return client;
}

/** Subscribe to a private or presence channel with auth signed by the SDK's authorizeChannel. */
export function subscribeSigned(client, sdk, channel, presenceData) {
  const auth = sdk.authorizeChannel(client.socketId, channel, presenceData);
  return client.subscribe(channel, auth);
}
