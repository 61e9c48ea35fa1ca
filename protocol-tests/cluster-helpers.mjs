// Helpers for cluster.test.mjs: a private redis-server, several rusher nodes
// sharing it (adapter = "redis"), and real clients (pusher-js, the `pusher`
// Node SDK, raw ws) pointed at one node or another.
//
// Every process started here is registered and killed by `killAll()` (the
// suite's after hook) and, as a last resort, when the Node process exits.

import net from 'node:net';
import { spawn } from 'node:child_process';
import {
  APPS,
  BIN,
  alive,
  captureOutput,
  childTracker,
  exitOf,
  fixtureApps,
  freePort,
  serverSdk,
  sleep,
  stopChild,
  subscribeAndWait,
  tomlString as q,
  waitFor,
  waitReady,
  withTimeout,
  writeTempConfig,
} from './helpers.mjs';
import { authedClient, recordMessages } from './auth-helpers.mjs';
import { wsClient } from './webhook-helpers.mjs';

export const REDIS_BIN = process.env.REDIS_SERVER_BIN || 'redis-server';

const { track, killAll: killTracked } = childTracker();

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
      captureOutput(child, redis.log);
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

/** The app with webhooks used by the webhook test (added to the fixture apps). */
export const WEBHOOK_APP = { appId: 'cluster-wh', key: 'cluster-wh-key', secret: 'cluster-wh-secret' };

/** An app with channel history (added to the fixture apps). */
export const HISTORY_APP = { appId: 'cluster-hist', key: 'cluster-hist-key', secret: 'cluster-hist-secret' };

/**
 * The cluster config: adapter = "redis", the [redis] section, fast webhooks,
 * (`cluster = true` when `cluster`: redisUrl is a Redis Cluster's seed node),
 * and the apps of fixtures/test-config.toml plus WEBHOOK_APP (whose webhooks go
 * to `webhookUrl`).
 */
export function clusterConfig({ redisUrl, prefix, webhookUrl, allEventsUrl, cluster = false }) {
  const apps = fixtureApps();
  return `adapter = "redis"

[server]
host = "127.0.0.1"
port = 6001
log_level = "info"
shutdown_grace = 1

[server.webhooks]
batch_ms = 50
member_removed_delay_ms = 200
channel_vacated_delay_ms = 200
backoff_ms = 100
timeout_ms = 1000

[redis]
url = ${q(redisUrl)}
prefix = ${q(prefix)}
heartbeat_secs = 1
node_timeout_secs = 3
operation_timeout_ms = 500${cluster ? '\ncluster = true' : ''}

${apps}

[[apps]]
id = ${q(WEBHOOK_APP.appId)}
key = ${q(WEBHOOK_APP.key)}
secret = ${q(WEBHOOK_APP.secret)}
subscription_count = true
subscription_count_interval_ms = 300

[[apps.webhooks]]
url = ${q(webhookUrl)}
event_types = ["channel_occupied", "channel_vacated"]
${allEventsUrl ? `\n[[apps.webhooks]]\nurl = ${q(allEventsUrl)}\n` : ''}
[[apps]]
id = ${q(HISTORY_APP.appId)}
key = ${q(HISTORY_APP.key)}
secret = ${q(HISTORY_APP.secret)}
history = true
`;
}

/** Write a config to a temp dir; returns {dir, path}. */
export function writeConfig(text) {
  return writeTempConfig('rusher-cluster-', text);
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
    'RUSHER_REDIS_CLUSTER',
    'RUSHER_APP_ID',
    'RUSHER_APP_KEY',
    'RUSHER_APP_SECRET',
    'RUSHER_LOG_LEVEL',
    'RUST_LOG',
  ]) {
    delete env[k];
  }
  const child = track(spawn(BIN, ['--config', configPath], { env, stdio: ['ignore', 'pipe', 'pipe'] }));
  const log = captureOutput(child);
  const exited = exitOf(child);
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
    await waitReady(
      port,
      () => {
        if (!node.alive) throw new Error(`node ${name} exited with ${child.exitCode}`);
      },
      50,
      `node ${name} /ready`,
    );
  } catch (e) {
    await node.kill();
    throw new Error(`${e.message}\nnode log:\n${log.join('')}`);
  }
  return node;
}

/**
 * The Redis adapter's log lines and every warning/error of some nodes (the
 * last `tail` of each), for failure messages.
 */
export function adapterLogs(nodes, tail = 30) {
  return nodes
    .map((n) => {
      const lines = n.log
        .join('')
        .replace(/\x1b\[[0-9;]*m/g, '')
        .split('\n')
        .filter((l) => /adapter::redis|WARN|ERROR/.test(l));
      return `--- node ${n.name} ---\n${lines.slice(-tail).join('\n')}`;
    })
    .join('\n');
}

/** Kill every process started here (rusher nodes and redis-server). */
export async function killAll() {
  await killTracked();
}

// ---------------------------------------------------------------------------
// Clients on one node
// ---------------------------------------------------------------------------

/** The official Node server SDK on `node`. */
export function sdkOn(node, app = APPS.main) {
  return serverSdk(app, '127.0.0.1', node.port);
}

/**
 * A connected pusher-js client on `node`, disconnected after the test.
 * Channel authorization and user authentication are signed in-process by the SDK.
 * options: app, presence ({user_id, user_info}), user ({id, ...}).
 */
export function pusherOn(t, node, options = {}) {
  const app = options.app ?? APPS.main;
  return authedClient(t, {
    ...options,
    app,
    sdk: sdkOn(node, app),
    at: { host: '127.0.0.1', port: node.port, what: `pusher-js did not connect to node ${node.name}` },
  });
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

/** Subscribe a pusher-js client and wait for success; returns the channel (helpers.subscribeAndWait). */
export const subscribed = subscribeAndWait;

/** Every raw frame (parsed) a pusher-js client receives from now on (auth-helpers.recordMessages). */
export const frames = recordMessages;

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

/**
 * Waits until the nodes deliver through Redis: an event published on each
 * node reaches a subscriber of `channel` on each.
 */
export async function waitBus(nodes, channel) {
  const cleanups = [];
  const fake = { after: (fn) => cleanups.push(fn) };
  try {
    const subs = await Promise.all(nodes.map((node) => rawOn(fake, node)));
    await Promise.all(subs.map((c) => c.subscribe(channel)));
    for (const node of nodes) {
      await waitFor(
        async () => {
          await sdkOn(node).trigger(channel, 'probe', node.name);
          await sleep(100);
          return subs.every((c) => c.frames.some((f) => f.event === 'probe' && f.dataParsed === node.name));
        },
        15000,
        100,
        `node ${node.name} publishing through Redis to every node`,
      );
    }
  } finally {
    for (const fn of cleanups) fn();
  }
}

/**
 * Every message Redis publishes on channels matching `pattern` (PSUBSCRIBE
 * over a raw RESP connection to the redis-server on `port`), as
 * {channel, payload} with the payload a Buffer. Resolves once subscribed;
 * close() ends it.
 */
export async function busSpy(port, pattern) {
  const sock = net.connect(port, '127.0.0.1');
  const messages = [];
  let buf = Buffer.alloc(0);
  let subscribed;
  const ready = new Promise((resolve, reject) => {
    subscribed = resolve;
    sock.once('error', reject);
  });
  // One RESP value at `at`: [value, next offset], or null when incomplete.
  const parse = (at) => {
    const eol = buf.indexOf('\r\n', at);
    if (eol < 0) return null;
    const head = buf.toString('latin1', at, eol);
    const n = Number(head.slice(1));
    if (head[0] === '$') {
      if (eol + 2 + n + 2 > buf.length) return null;
      return [buf.subarray(eol + 2, eol + 2 + n), eol + 2 + n + 2];
    }
    if (head[0] === '*') {
      const items = [];
      let next = eol + 2;
      for (let i = 0; i < n; i += 1) {
        const item = parse(next);
        if (!item) return null;
        items.push(item[0]);
        next = item[1];
      }
      return [items, next];
    }
    return [head, eol + 2];
  };
  sock.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    for (;;) {
      const value = parse(0);
      if (!value) break;
      buf = buf.subarray(value[1]);
      const [kind, ...rest] = value[0];
      if (String(kind) === 'psubscribe') subscribed();
      if (String(kind) === 'pmessage') messages.push({ channel: rest[1].toString(), payload: rest[2] });
    }
  });
  const arg = (s) => `$${Buffer.byteLength(s)}\r\n${s}\r\n`;
  sock.write(`*2\r\n${arg('PSUBSCRIBE')}${arg(pattern)}`);
  await withTimeout(ready, 3000, `PSUBSCRIBE ${pattern}`);
  return { messages, close: () => sock.destroy() };
}
