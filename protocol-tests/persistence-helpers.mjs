// Helpers for persistence.test.mjs: a MongoDB-wire server of our own
// (jongodb, in memory) or the real MongoDB named by RUSHER_TEST_MONGODB_URL,
// rusher processes with `[store] backend = "mongodb"`, and real clients
// (pusher-js, the `pusher` Node SDK, raw ws, signed HTTP) pointed at one of
// those processes (the suite never uses RUSHER_PORT's shared server).
//
// Every process started here is registered and killed by `killAll()` (the
// suite's after hook) and, as a last resort, when the Node process exits.

import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  APPS,
  BIN,
  alive,
  captureOutput,
  childTracker,
  collect,
  fixtureApps,
  freePort,
  hmacHex,
  md5,
  serverSdk,
  sleep,
  stopChild,
  tomlString as q,
  waitFor,
  withTimeout,
  writeTempConfig,
} from './helpers.mjs';
import {
  authedClient,
  channelAuth as channelAuthFor,
  rawClient,
  rawSubscribe as rawSubscribeWith,
  trySubscribe,
} from './auth-helpers.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const JONGODB_BIN =
  process.env.JONGODB_BIN || path.join(HERE, 'node_modules/@jongodb/memory-server-bin-linux-x64-gnu/bin/jongodb');
export const EXTERNAL_MONGODB_URL = process.env.RUSHER_TEST_MONGODB_URL || '';
export const RUN_ID = `${process.pid.toString(36)}${Date.now().toString(36).slice(-5)}`;

// ---------------------------------------------------------------------------
// Process bookkeeping
// ---------------------------------------------------------------------------

const tempDirs = new Set();
const { track, killAll: killTracked } = childTracker(() => {
  for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true });
});

/** Kill every process this module started and remove the temp configs. */
export async function killAll() {
  await killTracked(2000);
  for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true });
  tempDirs.clear();
}

// ---------------------------------------------------------------------------
// MongoDB (jongodb or external)
// ---------------------------------------------------------------------------

/**
 * A jongodb of our own on a free port (or `port`), data in memory.
 * Returns {port, url, log, running, start(), stop(signal)}: start() (re)starts it on the same port.
 */
export async function startJongodb(port = undefined) {
  const mongo = {
    port: port ?? (await freePort()),
    external: false,
    log: [],
    child: null,
    get url() {
      return `mongodb://127.0.0.1:${mongo.port}/?directConnection=true`;
    },
    get running() {
      return alive(mongo.child);
    },
    async start() {
      if (!fs.existsSync(JONGODB_BIN)) {
        throw new Error(`jongodb not found at ${JONGODB_BIN} (npm ci in protocol-tests installs it)`);
      }
      const child = track(
        spawn(JONGODB_BIN, ['--host=127.0.0.1', `--port=${mongo.port}`], { stdio: ['ignore', 'pipe', 'pipe'] }),
      );
      mongo.child = child;
      let out = '';
      const ready = new Promise((resolve, reject) => {
        child.once('error', (e) => reject(new Error(`cannot run jongodb: ${e.message}`)));
        child.once('exit', (code, signal) =>
          reject(new Error(`jongodb exited (${code ?? signal}) before it was ready: ${mongo.log.join('').slice(-2000)}`)),
        );
        const onData = (d) => {
          const s = d.toString();
          mongo.log.push(s);
          out += s;
          if (out.includes('JONGODB_URI=')) resolve();
        };
        child.stdout.on('data', onData);
        child.stderr.on('data', onData);
      });
      await withTimeout(ready, 20000, `jongodb on port ${mongo.port} did not print JONGODB_URI`);
    },
    async stop(signal = 'SIGKILL') {
      await stopChild(mongo.child, signal);
    },
  };
  // The port just probed free may be taken by the time jongodb binds it: retry once on a new one.
  try {
    await mongo.start();
  } catch (e) {
    if (port !== undefined) throw e;
    await mongo.stop();
    mongo.port = await freePort();
    await mongo.start();
  }
  return mongo;
}

/** The suite's MongoDB: RUSHER_TEST_MONGODB_URL when set, else a jongodb of our own. */
export async function suiteMongo() {
  if (EXTERNAL_MONGODB_URL) {
    return { external: true, url: EXTERNAL_MONGODB_URL, log: [], running: true, async stop() {} };
  }
  return startJongodb();
}

// ---------------------------------------------------------------------------
// rusher processes
// ---------------------------------------------------------------------------

/**
 * A config with the fixture's apps and `[store] backend = "mongodb"`.
 * `store` adds/overrides [store] keys (numbers or strings).
 */
export function storeConfig({ url, database, store = {} }) {
  const storeLines = Object.entries({ timeout_ms: 1000, ...store })
    .map(([k, v]) => `${k} = ${typeof v === 'string' ? q(v) : v}`)
    .join('\n');
  return `[server]
host = "127.0.0.1"
port = 6001
activity_timeout = 30
pong_timeout = 10
shutdown_grace = 1
log_level = "info"
# An unsigned personal-{user} subscription before any sign-in is refused after this wait.
subscribe_wait_ms = 1000

[store]
backend = "mongodb"
url = ${q(url)}
database = ${q(database)}
${storeLines}

${fixtureApps()}`;
}

function writeConfig(text) {
  const { dir, path: file } = writeTempConfig('rusher-persistence-', text);
  tempDirs.add(dir);
  return file;
}

/**
 * A rusher process on `config` (TOML text); resolves once /ready is 200.
 * Returns {port, log, child, running, stop(signal), start()}: start()
 * starts it again with the same config (on the same port when it is free).
 */
export async function startRusher(config) {
  if (!BIN) throw new Error('RUSHER_BIN must be set');
  const configPath = writeConfig(config);
  const server = {
    host: '127.0.0.1',
    port: await freePort(),
    log: [],
    child: null,
    get running() {
      return alive(server.child);
    },
    async start() {
      // The config file alone decides: no stray override from the caller's environment.
      const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('RUSHER_')));
      env.RUSHER_PORT = String(server.port);
      const child = track(spawn(BIN, ['--config', configPath], { env, stdio: ['ignore', 'pipe', 'pipe'] }));
      server.child = child;
      captureOutput(child, server.log);
      try {
        const deadline = Date.now() + 20000;
        for (;;) {
          if (!alive(child)) throw new Error(`rusher exited with ${child.exitCode ?? child.signalCode} before /ready`);
          try {
            const res = await fetch(`http://127.0.0.1:${server.port}/ready`);
            await res.text();
            if (res.status === 200) break;
          } catch {
            /* not listening yet */
          }
          if (Date.now() > deadline) throw new Error(`rusher on port ${server.port} not ready within 20 s`);
          await sleep(100);
        }
      } catch (e) {
        await stopChild(child);
        throw new Error(`${e.message}\nrusher log:\n${server.logTail()}`);
      }
    },
    /** SIGTERM (graceful) by default; waits for the exit. */
    async stop(signal = 'SIGTERM') {
      await stopChild(server.child, signal, 8000);
    },
    logTail(n = 4000) {
      return server.log.join('').slice(-n);
    },
  };
  await server.start();
  return server;
}

// ---------------------------------------------------------------------------
// Clients bound to one rusher process
// ---------------------------------------------------------------------------

/** The official Node server SDK for the main app on `server`. */
export function sdkOn(server, app = APPS.main) {
  return serverSdk(app, server.host, server.port);
}

/**
 * A signed API call (PROTOCOL.md §5) to `server`, like helpers.signedRequest.
 * options: body (object|string), params, app, tamper {signature, dropAuth}.
 * Resolves {status, text, json}.
 */
export async function api(server, method, pathname, options = {}) {
  const { body, params = {}, app = APPS.main, tamper = {} } = options;
  const M = method.toUpperCase();
  const bodyStr = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
  let qs;
  if (tamper.dropAuth) {
    qs = Object.entries(params)
      .map(([k, v]) => `${k}=${encodeURIComponent(String(v))}`)
      .join('&');
  } else {
    const query = {
      auth_key: app.key,
      auth_timestamp: String(Math.floor(Date.now() / 1000)),
      auth_version: '1.0',
      ...Object.fromEntries(Object.entries(params).map(([k, v]) => [k, String(v)])),
    };
    if (bodyStr !== undefined) query.body_md5 = md5(bodyStr);
    const keys = Object.keys(query).sort();
    const toSign = keys.map((k) => `${k}=${query[k]}`).join('&');
    const signature = tamper.signature ?? hmacHex(app.secret, `${M}\n${pathname}\n${toSign}`);
    qs = `${keys.map((k) => `${k}=${query[k]}`).join('&')}&auth_signature=${signature}`;
  }
  const res = await fetch(`http://${server.host}:${server.port}${pathname}${qs ? `?${qs}` : ''}`, {
    method: M,
    body: bodyStr,
    headers: bodyStr !== undefined ? { 'content-type': 'application/json' } : {},
  });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.status, text, json };
}

/** The persistence API of the main app on `server`. */
export function persistenceApi(server, app = APPS.main) {
  const base = `/apps/${app.appId}`;
  return {
    follow: (userId, channel) => api(server, 'POST', `${base}/subscribe`, { body: { user_id: userId, event: channel }, app }),
    unfollow: (userId, channel) =>
      api(server, 'POST', `${base}/unsubscribe`, { body: { user_id: userId, event: channel }, app }),
    subscriptions: (userId) => api(server, 'GET', `${base}/users/${userId}/subscriptions`, { app }),
    messages: (userId, params = {}) => api(server, 'GET', `${base}/users/${userId}/messages`, { params, app }),
  };
}

/**
 * A connected pusher-js client on `server` whose channel authorization and
 * user authentication are done in-process by the official SDK.
 * options: user ({id, ...} for signin()), presence ({user_id, user_info, peer?}).
 * `client.rawFrames` holds every frame as sent by the server (JSON-parsed,
 * with fields pusher-js drops, e.g. `source_channel` and `seq`).
 */
export async function pusherOn(t, server, options = {}) {
  const client = await authedClient(t, {
    presence: options.presence,
    user: options.user,
    sdk: options.sdk ?? sdkOn(server),
    at: { host: server.host, port: server.port, what: `pusher-js did not connect to port ${server.port}` },
  });
  client.rawFrames = [];
  // The transport emits every raw message event ({data: string}) before pusher-js decodes it.
  client.connection.connection.transport.bind('message', (m) => {
    try {
      client.rawFrames.push(JSON.parse(m.data));
    } catch {
      /* not JSON */
    }
  });
  return client;
}

/** pusher-js signin() as `user.id`; resolves once signin_success was handled. */
export async function signIn(client, userId) {
  client.signin();
  await waitFor(
    () => client.user.user_data && client.user.user_data.id === userId,
    5000,
    20,
    `sign-in of ${userId}`,
  );
}

export { trySubscribe };

/** Subscribe with pusher-js; rejects on subscription_error. */
export async function subscribeOk(client, channelName, timeoutMs = 5000) {
  const r = await trySubscribe(client, channelName, timeoutMs);
  if (!r.ok) throw new Error(`subscription_error on ${channelName}: ${JSON.stringify(r.error)}`);
  return r;
}

/**
 * A raw `ws` connection to `server`, established; answers pusher:ping; closed
 * after the test (auth-helpers.rawClient). Has socketId, frames, send(obj),
 * next(pred, ms), close().
 */
export function rawOn(t, server, app = APPS.main) {
  return rawClient(t, app.key, server);
}

/** Send pusher:subscribe with `fields`; resolves with the succeeded or error frame. */
export function rawSubscribe(conn, channel, fields = {}, timeoutMs = 4000) {
  return rawSubscribeWith(conn, channel, fields, timeoutMs);
}

/** `key:hex(hmac(secret, socket_id:channel[:channel_data]))`. */
export function channelAuth(socketId, channel, channelData, app = APPS.main) {
  return channelAuthFor(app, socketId, channel, channelData);
}

/** Collect every `event` on a pusher-js channel: {events, next(ms)} (helpers.collect). */
export const collectEvents = collect;
