// A client that stops reading must not make the server buffer without bound:
// its outgoing queue fills, it is closed with 4100, and everyone else keeps
// getting events at full speed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';
import Pusher from 'pusher';
import { BIN, freePort, waitFor } from './helpers.mjs';

function rssKb(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)[1]);
}

async function startServer(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rusher-slow-'));
  const config = path.join(dir, 'config.toml');
  fs.writeFileSync(
    config,
    `[server]\nhost = "127.0.0.1"\noutgoing_queue = 64\nlog_level = "warn"\n` +
      `[[apps]]\nid = "app-id"\nkey = "app-key"\nsecret = "app-secret"\n`,
  );
  const port = await freePort();
  const child = spawn(BIN, ['--config', config], {
    env: { ...process.env, RUSHER_PORT: String(port) },
    stdio: 'ignore',
  });
  t.after(() => {
    child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await waitFor(async () => {
    const res = await fetch(`http://127.0.0.1:${port}/ready`).catch(() => null);
    return res?.status === 200;
  }, 20000, 100, 'server ready');
  return { port, pid: child.pid };
}

function subscriber(port, channel) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/app/app-key?protocol=7`);
  const state = { ws, received: 0, closeCode: null, subscribed: false };
  state.closed = new Promise((resolve) =>
    ws.on('close', (code) => {
      state.closeCode = code;
      resolve(code);
    }),
  );
  ws.on('message', (buf) => {
    const frame = JSON.parse(buf.toString());
    if (frame.event === 'pusher:connection_established') {
      ws.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel } }));
    } else if (frame.event === 'pusher_internal:subscription_succeeded') {
      state.subscribed = true;
    } else if (frame.event === 'big') {
      state.received += 1;
    }
  });
  return state;
}

test('a client that stops reading is closed with 4100 while the others get every event', async (t) => {
  const { port, pid } = await startServer(t);
  const channel = 'slow-test';
  const slow = subscriber(port, channel);
  const healthy = subscriber(port, channel);
  t.after(() => {
    slow.ws.terminate();
    healthy.ws.terminate();
  });
  await waitFor(() => slow.subscribed && healthy.subscribed, 5000, 20, 'both subscribed');

  // The slow client stops reading from its socket: TCP buffers fill, then the
  // server's per-connection queue.
  slow.ws._socket.pause();
  const rssBefore = rssKb(pid);
  const sdk = new Pusher({ appId: 'app-id', key: 'app-key', secret: 'app-secret', host: '127.0.0.1', port: String(port), useTLS: false });
  const payload = 'x'.repeat(9000);
  const events = 1500; // ~13.5 MB towards the slow client
  const started = Date.now();
  for (let i = 0; i < events; i += 10) {
    await Promise.all(Array.from({ length: 10 }, () => sdk.trigger(channel, 'big', payload)));
  }
  const publishMs = Date.now() - started;

  await waitFor(() => healthy.received === events, 15000, 50, 'healthy client got every event');
  const rssAfter = rssKb(pid);
  // The server holds at most the queue (64 frames) plus socket buffers for the
  // slow client, not the 13.5 MB published towards it.
  assert.ok(rssAfter - rssBefore < 12 * 1024, `RSS grew ${rssAfter - rssBefore} kB`);

  slow.ws._socket.resume();
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve('timeout'), 10000);
  });
  const code = await Promise.race([slow.closed, timeout]);
  clearTimeout(timer);
  assert.equal(code, 4100, `slow client closed with ${code}`);
  assert.ok(slow.received < events, `slow client got ${slow.received} of ${events}: it was cut off, not buffered`);
  assert.equal(healthy.closeCode, null, 'healthy client stays connected');
  assert.ok(publishMs < 15000, `publishing took ${publishMs} ms`);
});

/** rusher_slow_client_disconnects_total and the open sessions of `transport`, from /metrics. */
async function slowMetrics(port, transport) {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const slow = Number(/^rusher_slow_client_disconnects_total (\d+)/m.exec(text)?.[1] ?? 0);
  const open = Number(new RegExp(`^rusher_transport_sessions\\{transport="${transport}"\\} (\\d+)`, 'm').exec(text)?.[1] ?? 0);
  return { slow, open };
}

test('an xhr_streaming client that stops reading is closed with 4100, without unbounded memory', async (t) => {
  const { port, pid } = await startServer(t);
  const channel = 'slow-stream';
  const healthy = subscriber(port, channel);
  t.after(() => healthy.ws.terminate());
  // A raw HTTP client that sends the streaming request, subscribes, then
  // never reads its response again.
  const base = `/pusher/app/app-key/1/slowstream`;
  const socket = net.connect(port, '127.0.0.1');
  t.after(() => socket.destroy());
  await new Promise((resolve) => socket.once('connect', resolve));
  socket.write(`POST ${base}/xhr_streaming?protocol=7 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n`);
  let head = '';
  await new Promise((resolve) => {
    socket.on('data', (chunk) => {
      head += chunk.toString();
      if (head.includes('connection_established')) resolve();
    });
  });
  const sent = await fetch(`http://127.0.0.1:${port}${base}/xhr_send`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify([JSON.stringify({ event: 'pusher:subscribe', data: { channel } })]),
  });
  assert.equal(sent.status, 204);
  await waitFor(() => healthy.subscribed, 5000, 20, 'healthy subscribed');
  await waitFor(async () => (await slowMetrics(port, 'xhr_streaming')).open === 1, 5000, 50, 'stream open');
  socket.pause();
  const before = await slowMetrics(port, 'xhr_streaming');
  const rssBefore = rssKb(pid);
  const sdk = new Pusher({ appId: 'app-id', key: 'app-key', secret: 'app-secret', host: '127.0.0.1', port: String(port), useTLS: false });
  const payload = 'x'.repeat(9000);
  const events = 1500;
  for (let i = 0; i < events; i += 10) {
    await Promise.all(Array.from({ length: 10 }, () => sdk.trigger(channel, 'big', payload)));
  }
  await waitFor(() => healthy.received === events, 15000, 50, 'healthy client got every event');
  const rssAfter = rssKb(pid);
  assert.ok(rssAfter - rssBefore < 12 * 1024, `RSS grew ${rssAfter - rssBefore} kB`);
  await waitFor(async () => (await slowMetrics(port, 'xhr_streaming')).open === 0, 10000, 50, 'the stalled session closed');
  const after = await slowMetrics(port, 'xhr_streaming');
  assert.equal(after.slow - before.slow, 1, 'counted as one slow client');
  assert.equal(healthy.closeCode, null, 'healthy client stays connected');
});

test('an xhr_polling client that stops polling while events pile up is closed with 4100 and told so', async (t) => {
  const { port } = await startServer(t);
  const channel = 'slow-poll';
  const base = `http://127.0.0.1:${port}/pusher/app/app-key/2/slowpoll`;
  const poll = async () => (await (await fetch(`${base}/xhr?protocol=7`, { method: 'POST' })).text()).split('\n').filter(Boolean);
  assert.deepEqual((await poll()).map((l) => l[0]), ['o', 'a']);
  await fetch(`${base}/xhr_send`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify([JSON.stringify({ event: 'pusher:subscribe', data: { channel } })]),
  });
  assert.match((await poll())[0], /subscription_succeeded/);
  const before = await slowMetrics(port, 'xhr_polling');
  const sdk = new Pusher({ appId: 'app-id', key: 'app-key', secret: 'app-secret', host: '127.0.0.1', port: String(port), useTLS: false });
  // More than outgoing_queue (64) frames while nobody polls.
  for (let i = 0; i < 100; i += 10) {
    await Promise.all(Array.from({ length: 10 }, (_, k) => sdk.trigger(channel, 'pile', { n: i + k })));
  }
  await waitFor(async () => (await slowMetrics(port, 'xhr_polling')).open === 0, 5000, 50, 'the session closed');
  const after = await slowMetrics(port, 'xhr_polling');
  assert.equal(after.slow - before.slow, 1, 'counted as one slow client');
  const lines = await poll();
  assert.deepEqual(lines.map((l) => l[0]), ['c'], 'the next poll learns the close');
  assert.equal(JSON.parse(lines[0].slice(1))[0], 4100);
});
