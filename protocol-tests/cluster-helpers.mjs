// Helpers for cluster.test.mjs: a private redis-server, several rusher nodes
// sharing it (adapter = "redis"), and real clients (pusher-js, the `pusher`
// Node SDK, raw ws) pointed at one node or another.
//
// Every process started here is registered and killed by `killAll()` (the
// suite's after hook) and, as a last resort, when the Node process exits.

import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import Pusher from 'pusher-js';
import PusherServer from 'pusher';
import { APPS, BIN, CONFIG, freePort, sleep, waitFor, withTimeout } from './helpers.mjs';
import { wsClient } from './webhook-helpers.mjs';

export const REDIS_BIN = process.env.REDIS_SERVER_BIN || 'redis-server';

const children = new Set();
process.on('exit', () => {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
});

function track(child) {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

const alive = (child) => child.exitCode === null && child.signalCode === null;

async function stopChild(child, signal = 'SIGKILL', graceMs = 5000) {
  if (!child || !alive(child)) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill(signal);
  const done = await Promise.race([exited.then(() => true), sleep(graceMs).then(() => false)]);
  if (!done && alive(child)) {
    child.kill('SIGKILL');
    await exited;
  }
}

// ---------------------------------------------------------------------------
// redis-server
// ---------------------------------------------------------------------------

/** PING over a fresh TCP connection; resolves true on +PONG. */
export function redisPing(port, timeoutMs = 500) {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    let buf = '';
    const done = (v) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.on('connect', () => sock.write('PING\r\n'));
    sock.on('data', (d) => {
      buf += d.toString();
      if (buf.includes('\r\n')) done(buf.startsWith('+PONG'));
    });
    sock.on('error', () => done(false));
  });
}

/**
 * A redis-server of our own on a free port, no persistence.
 * Returns {port, url, log, stop(signal), start()} — start() (re)starts it on the same port.
 */
export async function startRedis() {
  const port = await freePort();
  const redis = {
    port,
    url: `redis://127.0.0.1:${port}`,
    log: [],
    child: null,
    get running() {
      return redis.child !== null && alive(redis.child);
    },
    async start() {
      const child = track(
        spawn(REDIS_BIN, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
          stdio: ['ignore', 'pipe', 'pipe'],
        }),
      );
      const spawnError = new Promise((_, reject) =>
        child.once('error', (e) => reject(new Error(`cannot run ${REDIS_BIN}: ${e.message}`))),
      );
      spawnError.catch(() => {});
      child.stdout.on('data', (d) => redis.log.push(d.toString()));
      child.stderr.on('data', (d) => redis.log.push(d.toString()));
      redis.child = child;
      await Promise.race([
        spawnError,
        waitFor(
          async () => {
            if (!alive(child)) throw new Error(`redis-server exited: ${redis.log.join('').slice(-1000)}`);
            return redisPing(port);
          },
          10000,
          50,
          'redis-server PING',
        ),
      ]);
    },
    /** Stop it (SIGTERM by default) and wait until it exited. */
    async stop(signal = 'SIGTERM') {
      await stopChild(redis.child, signal);
    },
  };
  await redis.start();
  return redis;
}

// ---------------------------------------------------------------------------
// Cluster config and rusher nodes
// ---------------------------------------------------------------------------

/** A TOML string literal. */
const q = (s) => JSON.stringify(String(s));

/** The app with webhooks used by the webhook test (added to the fixture apps). */
export const WEBHOOK_APP = { appId: 'cluster-wh', key: 'cluster-wh-key', secret: 'cluster-wh-secret' };

/**
 * The cluster config: adapter = "redis", the [redis] section, fast webhooks,
 * and the apps of fixtures/test-config.toml plus WEBHOOK_APP (whose webhooks go
 * to `webhookUrl`).
 */
export function clusterConfig({ redisUrl, prefix, webhookUrl }) {
  if (!CONFIG) throw new Error('RUSHER_CONFIG must be set (fixtures/test-config.toml)');
  const fixture = fs.readFileSync(CONFIG, 'utf8');
  const at = fixture.search(/^\[\[apps\]\]/m);
  if (at < 0) throw new Error(`no [[apps]] in ${CONFIG}`);
  const apps = fixture.slice(at);
  return `adapter = "redis"

[server]
host = "127.0.0.1"
port = 6001
log_level = "info"
shutdown_grace = 1

[server.webhooks]
batch_ms = 50
member_removed_delay_ms = 200
backoff_ms = 100
timeout_ms = 1000

[redis]
url = ${q(redisUrl)}
prefix = ${q(prefix)}
heartbeat_secs = 1
node_timeout_secs = 3
operation_timeout_ms = 500

${apps}

[[apps]]
id = ${q(WEBHOOK_APP.appId)}
key = ${q(WEBHOOK_APP.key)}
secret = ${q(WEBHOOK_APP.secret)}

[[apps.webhooks]]
url = ${q(webhookUrl)}
event_types = ["channel_occupied", "channel_vacated"]
`;
}

/** Write a config to a temp dir; returns {dir, path}. */
export function writeConfig(text) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rusher-cluster-'));
  const file = path.join(dir, 'config.toml');
  fs.writeFileSync(file, text);
  return { dir, path: file };
}

/**
 * Spawn a rusher node with `configPath` on a free port; resolves once /ready is 200.
 * Returns {name, port, pid, log, exited, alive, kill(signal)}.
 */
export async function spawnNode(name, configPath) {
  if (!BIN) throw new Error('RUSHER_BIN must be set');
  const port = await freePort();
  const env = { ...process.env, RUSHER_PORT: String(port), RUSHER_HOST: '127.0.0.1' };
  // The config file alone decides; no stray override from the caller's environment.
  for (const k of [
    'RUSHER_ADAPTER',
    'RUSHER_REDIS_URL',
    'RUSHER_REDIS_PREFIX',
    'RUSHER_APP_ID',
    'RUSHER_APP_KEY',
    'RUSHER_APP_SECRET',
    'RUSHER_LOG_LEVEL',
    'RUST_LOG',
  ]) {
    delete env[k];
  }
  const child = track(spawn(BIN, ['--config', configPath], { env, stdio: ['ignore', 'pipe', 'pipe'] }));
  const log = [];
  child.stdout.on('data', (d) => log.push(d.toString()));
  child.stderr.on('data', (d) => log.push(d.toString()));
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const node = {
    name,
    port,
    pid: child.pid,
    child,
    log,
    exited,
    get alive() {
      return alive(child);
    },
    async kill(signal = 'SIGKILL') {
      await stopChild(child, signal);
    },
  };
  try {
    await waitFor(
      async () => {
        if (!node.alive) throw new Error(`node ${name} exited with ${child.exitCode}`);
        const res = await fetch(`http://127.0.0.1:${port}/ready`);
        await res.text();
        return res.status === 200;
      },
      20000,
      50,
      `node ${name} /ready`,
    );
  } catch (e) {
    await node.kill();
    throw new Error(`${e.message}\nnode log:\n${log.join('')}`);
  }
  return node;
}

/** Kill every process started here (rusher nodes and redis-server). */
export async function killAll() {
  await Promise.all([...children].map((child) => stopChild(child, 'SIGKILL')));
}

// ---------------------------------------------------------------------------
// Clients on one node
// ---------------------------------------------------------------------------

/** The official Node server SDK on `node`. */
export function sdkOn(node, app = APPS.main) {
  return new PusherServer({
    appId: app.appId,
    key: app.key,
    secret: app.secret,
    host: '127.0.0.1',
    port: String(node.port),
    useTLS: false,
  });
}

/**
 * A connected pusher-js client on `node`, disconnected after the test.
 * Channel authorization and user authentication are signed in-process by the SDK.
 * options: app, presence ({user_id, user_info}), user ({id, ...}).
 */
export async function pusherOn(t, node, options = {}) {
  const app = options.app ?? APPS.main;
  const signer = sdkOn(node, app);
  const client = new Pusher(app.key, {
    wsHost: '127.0.0.1',
    wsPort: node.port,
    wssPort: node.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: 'mt1',
    disableStats: true,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => {
        try {
          const presence = channelName.startsWith('presence-') ? options.presence : undefined;
          cb(null, signer.authorizeChannel(socketId, channelName, presence));
        } catch (e) {
          cb(e, null);
        }
      },
    },
    userAuthentication: {
      customHandler: ({ socketId }, cb) => {
        try {
          cb(null, signer.authenticateUser(socketId, options.user));
        } catch (e) {
          cb(e, null);
        }
      },
    },
  });
  t.after(() => client.disconnect());
  await withTimeout(
    new Promise((resolve, reject) => {
      if (client.connection.state === 'connected') resolve();
      client.connection.bind('connected', () => resolve());
      client.connection.bind('failed', () => reject(new Error('pusher-js connection failed')));
    }),
    8000,
    `pusher-js did not connect to node ${node.name}`,
  );
  return client;
}

/** A raw ws client on `node` (answers pings), closed after the test; resolves once established. */
export async function rawOn(t, node, app = APPS.main) {
  const client = wsClient(node.port, app.key);
  t.after(() => client.close());
  await client.ready;
  return client;
}

/**
 * Every event named `event` a pusher-js channel gets, with next(timeout) for the next unseen one
 * and none(ms) asserting nothing further arrives.
 */
export function listen(channel, event) {
  const events = [];
  let cursor = 0;
  const waiters = [];
  channel.bind(event, (data, meta) => {
    events.push({ data, meta });
    const w = waiters.shift();
    if (w) {
      cursor += 1;
      w({ data, meta });
    }
  });
  const stream = {
    events,
    next(timeoutMs = 3000) {
      if (cursor < events.length) {
        cursor += 1;
        return Promise.resolve(events[cursor - 1]);
      }
      let waiter;
      return withTimeout(
        new Promise((r) => {
          waiter = r;
          waiters.push(r);
        }),
        timeoutMs,
        `no ${event} on ${channel.name}`,
      ).catch((e) => {
        const i = waiters.indexOf(waiter);
        if (i >= 0) waiters.splice(i, 1);
        throw e;
      });
    },
    /** Resolves after `ms` if nothing new came; rejects with the unexpected event otherwise. */
    async none(ms) {
      const before = events.length;
      await sleep(ms);
      if (events.length > before) {
        throw new Error(`unexpected ${event} on ${channel.name}: ${JSON.stringify(events.slice(before).map((e) => e.data))}`);
      }
      cursor = events.length;
    },
  };
  return stream;
}

/** Subscribe a pusher-js client and wait for success; returns the channel. */
export function subscribed(client, name, timeoutMs = 5000) {
  const channel = client.subscribe(name);
  return withTimeout(
    new Promise((resolve, reject) => {
      channel.bind('pusher:subscription_succeeded', () => resolve(channel));
      channel.bind('pusher:subscription_error', (err) =>
        reject(new Error(`subscription_error on ${name}: ${JSON.stringify(err)}`)),
      );
    }),
    timeoutMs,
    `subscription to ${name} did not succeed`,
  );
}

/** Every raw frame (parsed) a pusher-js client receives from now on. */
export function frames(client) {
  const all = [];
  client.connection.bind('message', (m) => all.push(m));
  return all;
}

/** Signed GET on a node's HTTP API through the SDK; resolves the JSON body. */
export async function getJson(node, pathAfterApp, params = {}, app = APPS.main) {
  let res;
  try {
    res = await sdkOn(node, app).get({ path: pathAfterApp, params });
  } catch (e) {
    const cause = e.error ? `: ${e.error.code ?? ''} ${e.error.message}` : '';
    const status = e.status ? ` ${e.status} ${e.body}` : '';
    throw new Error(`GET ${pathAfterApp} on node ${node.name}: ${e.message}${status}${cause}`);
  }
  const text = await res.text();
  if (res.status !== 200) throw new Error(`GET ${pathAfterApp} on ${node.name}: ${res.status} ${text}`);
  return JSON.parse(text);
}
