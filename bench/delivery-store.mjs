// The cost of acknowledged delivery's redis store (README "Acknowledged
// delivery", store = "redis"): one redis-server and one rusher node
// (adapter = "redis") with two apps that differ only in `store` ("memory"
// vs "redis"). SUBS signed-in raw WebSocket clients per app subscribe to one
// channel; EVENTS events are published through the HTTP API; we time until
// every client has every event (deliveries/s), in two client modes: `ack`
// (each message acknowledged at once, the usual case) and `noack` (never
// acknowledged: every delivery is mirrored to Redis). Also counts the Redis
// script calls of each run (INFO commandstats). Prints a markdown table.
//
// Usage: node bench/delivery-store.mjs   (after cargo build --release)
// Env: SUBS [500] EVENTS [200] ROUNDS [2] RUSHER_BIN [target/release/rusher]
//      REDIS_SERVER [redis-server]

import { spawn, execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(path.join(ROOT, 'protocol-tests', 'package.json'));
const WebSocket = require('ws');
const Pusher = require('pusher');

const SUBS = Number(process.env.SUBS || 500);
const EVENTS = Number(process.env.EVENTS || 200);
const ROUNDS = Number(process.env.ROUNDS || 2);
const BIN = process.env.RUSHER_BIN || path.join(ROOT, 'target/release/rusher');
const REDIS = process.env.REDIS_SERVER || 'redis-server';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function until(what, fn, ms = 10000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try {
      if (await fn()) return;
    } catch {}
    await sleep(50);
  }
  throw new Error(`timed out: ${what}`);
}

const children = [];
process.on('exit', () => children.forEach((c) => c.kill('SIGKILL')));

const redisPort = await freePort();
children.push(spawn(REDIS, ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' }));
const redisCli = (...args) => execFileSync('redis-cli', ['-p', String(redisPort), ...args]).toString();
await until('redis', () => redisCli('ping').includes('PONG'));

const port = await freePort();
const app = (id, store) => `
[[apps]]
id = "${id}"
key = "${id}-key"
secret = "${id}-secret"
max_connections = 100000

[apps.delivery]
enabled = true
ack_timeout_ms = 60000
max_pending = 1000
ack_rate = 1000
store = "${store}"
`;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rusher-delivery-bench-'));
const config = path.join(dir, 'rusher.toml');
fs.writeFileSync(config, `adapter = "redis"
[server]
host = "127.0.0.1"
port = ${port}
log_level = "warn"
outgoing_queue = 100000
[redis]
url = "redis://127.0.0.1:${redisPort}"
prefix = "bench-delivery"
${app('mem', 'memory')}${app('red', 'redis')}`);
children.push(spawn(BIN, ['--config', config], { stdio: 'ignore' }));
await until('rusher', async () => (await fetch(`http://127.0.0.1:${port}/ready`)).ok);

async function run(appId, mode, round) {
  const sdk = new Pusher({ appId, key: `${appId}-key`, secret: `${appId}-secret`, host: '127.0.0.1', port: String(port) });
  const channel = `bench-${mode}-${round}`;
  let received = 0;
  let done;
  const all = new Promise((r) => (done = r));
  const clients = await Promise.all(
    Array.from({ length: SUBS }, (_, i) =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(`ws://127.0.0.1:${port}/app/${appId}-key?protocol=7`);
        ws.on('error', reject);
        ws.on('message', (buf) => {
          const f = JSON.parse(buf.toString());
          if (f.event === 'pusher:connection_established') {
            const socketId = JSON.parse(f.data).socket_id;
            ws.send(JSON.stringify({ event: 'pusher:signin', data: sdk.authenticateUser(socketId, { id: `u${round}-${i}` }) }));
          } else if (f.event === 'pusher:signin_success') {
            ws.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel } }));
          } else if (f.event === 'pusher_internal:subscription_succeeded') {
            resolve(ws);
          } else if (f.event === 'e') {
            if (mode === 'ack') ws.send(JSON.stringify({ event: 'pusher:ack', data: { message_id: f.message_id } }));
            received += 1;
            if (received === SUBS * EVENTS) done();
          }
        });
      }),
    ),
  );
  const calls = () => {
    const m = redisCli('info', 'commandstats').match(/cmdstat_evalsha:calls=(\d+)/);
    return m ? Number(m[1]) : 0;
  };
  const before = calls();
  const started = performance.now();
  for (let i = 0; i < EVENTS; i += 10) {
    await sdk.triggerBatch(Array.from({ length: Math.min(10, EVENTS - i) }, (_, j) => ({ channel, name: 'e', data: { n: i + j } })));
  }
  await all;
  const secs = (performance.now() - started) / 1000;
  await sleep(500); // the last mirror flushes
  const scripts = calls() - before;
  for (const ws of clients) ws.terminate();
  await sleep(500);
  return { rate: (SUBS * EVENTS) / secs, scripts };
}

const rows = [];
for (const mode of ['ack', 'noack']) {
  const best = { mem: { rate: 0 }, red: { rate: 0 } };
  for (let round = 0; round < ROUNDS; round += 1) {
    for (const appId of ['mem', 'red']) {
      const r = await run(appId, mode, `${appId}${round}`);
      if (r.rate > best[appId].rate) best[appId] = r;
    }
  }
  rows.push(
    `| ${mode} | ${Math.round(best.mem.rate)} | ${Math.round(best.red.rate)} | ${(best.red.rate / best.mem.rate).toFixed(2)} | ${best.red.scripts} |`,
  );
}
console.log(`${SUBS} signed-in subscribers, ${EVENTS} events (batches of 10), best of ${ROUNDS}\n`);
console.log('| clients | memory deliveries/s | redis deliveries/s | redis/memory | redis scripts (store = "redis") |');
console.log('|---|---|---|---|---|');
console.log(rows.join('\n'));
process.exit(0);
