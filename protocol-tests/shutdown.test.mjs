// Graceful shutdown: on SIGTERM the server stops listening at once (so a new
// process can take the port), closes every connection with 4200 (reconnect
// now), delivers what is pending and exits 0. This suite runs its own servers.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { spawn } from 'node:child_process';
import Pusher from 'pusher-js';
import WebSocket from 'ws';
import {
  BIN,
  alive,
  captureOutput,
  exitOf,
  fixtureApps,
  freePort,
  newPusherClient,
  parseData,
  spawnServer,
  stopChild,
  waitFor,
  waitReady,
  withTimeout,
  writeTempConfig,
  sleep,
} from './helpers.mjs';

const T = { timeout: 40000 };

/** A raw ws client on the spawned server, frames recorded, close captured. */
function rawClient(port) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/app/app-key?protocol=7&client=js&version=8.4.0&flash=false`);
  const frames = [];
  ws.on('message', (b) => frames.push(JSON.parse(b.toString())));
  ws.on('error', () => {});
  const closed = new Promise((r) => ws.on('close', (code, reason) => r({ code, reason: reason.toString() })));
  const established = new Promise((resolve, reject) => {
    ws.on('message', (b) => {
      const f = JSON.parse(b.toString());
      if (f.event === 'pusher:connection_established') resolve(parseData(f.data));
    });
    closed.then((c) => reject(new Error(`closed before established: ${JSON.stringify(c)}`)));
  });
  return { ws, frames, closed, established };
}

test('SIGTERM closes clients with 4200 and the process exits 0 within 5 s', T, async (t) => {
  const server = await spawnServer();
  t.after(() => {
    if (server.child.exitCode === null && server.child.signalCode === null) server.child.kill('SIGKILL');
  });
  const raw = rawClient(server.port);
  t.after(() => raw.ws.terminate());
  await withTimeout(raw.established, 5000, 'raw client connected');

  const pjs = new Pusher('app-key', {
    wsHost: '127.0.0.1',
    wsPort: server.port,
    wssPort: server.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: 'mt1',
    disableStats: true,
  });
  t.after(() => pjs.disconnect());
  await withTimeout(
    new Promise((r) => pjs.connection.bind('connected', r)),
    8000,
    'pusher-js connected to the spawned server',
  );
  const pjsStates = [];
  pjs.connection.bind('state_change', (s) => pjsStates.push(s.current));

  const t0 = Date.now();
  server.child.kill('SIGTERM');

  const closed = await withTimeout(raw.closed, 5000, 'raw client not closed after SIGTERM');
  assert.equal(closed.code, 4200, `raw client close ${JSON.stringify(closed)}`);

  const exit = await withTimeout(server.exited, 5000, 'server did not exit within 5 s of SIGTERM');
  const took = Date.now() - t0;
  assert.equal(exit.signal, null, `server died by signal ${exit.signal}\n${server.log.join('')}`);
  assert.equal(exit.code, 0, `exit code ${exit.code}\n${server.log.join('')}`);
  assert.ok(took <= 5000, `exit took ${took} ms`);

  // pusher-js noticed and left the connected state (it will try to reconnect; we stop it).
  await sleep(100);
  assert.ok(pjsStates.length > 0 && pjsStates[0] !== 'connected', `pusher-js states: ${pjsStates}`);
});

test('after SIGTERM the server stops accepting new connections and /ready stops answering 200', T, async (t) => {
  const server = await spawnServer();
  t.after(() => {
    if (server.child.exitCode === null && server.child.signalCode === null) server.child.kill('SIGKILL');
  });
  const raw = rawClient(server.port);
  t.after(() => raw.ws.terminate());
  await withTimeout(raw.established, 5000, 'raw client connected');
  server.child.kill('SIGTERM');
  await withTimeout(raw.closed, 5000, 'raw client closed');
  // While shutting down (or after exit) /ready is not 200.
  let status;
  try {
    const res = await fetch(`http://127.0.0.1:${server.port}/ready`);
    status = res.status;
    await res.text();
  } catch {
    status = 'refused';
  }
  assert.notEqual(status, 200, '/ready still answers 200 after SIGTERM');
  const exit = await withTimeout(server.exited, 5000, 'server exit');
  assert.equal(exit.code, 0);
});

/** Resolves 'refused' when a TCP connect to 127.0.0.1:`port` is refused, 'open' when it connects. */
function tcpProbe(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve('open');
    });
    socket.once('error', (err) => resolve(err.code === 'ECONNREFUSED' ? 'refused' : err.code));
  });
}

/**
 * Spawn rusher with `configText` on `port` (RUSHER_PORT); resolves once its
 * /ready answers 200 (which, on a shared port, may be another process: callers
 * that care check the child is still alive). Returns {child, port, log, exited, dir}.
 */
async function spawnOn(port, configText) {
  const { dir, path } = writeTempConfig('rusher-shutdown-', configText);
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('RUSHER_') && k !== 'RUST_LOG'));
  const child = spawn(BIN, ['--config', path], {
    env: { ...env, RUSHER_HOST: '127.0.0.1', RUSHER_PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log = captureOutput(child);
  const server = { child, port, log, exited: exitOf(child), dir };
  try {
    // A process that cannot start exits at once: fail then, not after waitReady's timeout.
    const exitedEarly = server.exited.then(({ code }) => {
      throw new Error(`rusher exited with ${code} before /ready\n${log.join('')}`);
    });
    exitedEarly.catch(() => {}); // once ready, a later exit is the test's business
    await Promise.race([waitReady(port, () => alive(child), 20, 'rusher /ready'), exitedEarly]);
  } catch (e) {
    await cleanup(server);
    throw e;
  }
  return server;
}

async function cleanup(server) {
  await stopChild(server.child);
  fs.rmSync(server.dir, { recursive: true, force: true });
}

/** A `[server]` section for 127.0.0.1 with `extra` lines, then the fixture's apps. */
const config = (extra = '') => `[server]\nhost = "127.0.0.1"\nlog_level = "info"\n${extra}\n${fixtureApps()}`;

/**
 * A webhook receiver that holds every request until `release()`, so the
 * process that sent it is still draining.
 */
async function holdingReceiver() {
  const held = [];
  const bodies = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      bodies.push(Buffer.concat(chunks).toString('utf8'));
      held.push(res);
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}/hook`,
    held,
    bodies,
    release() {
      for (const res of held.splice(0)) res.writeHead(200).end('ok');
    },
    stop() {
      server.closeAllConnections();
      return new Promise((r) => server.close(r));
    },
  };
}

test('after SIGTERM the port is closed at once, open sockets still get 4200, and a new process can bind it while the old one drains', T, async (t) => {
  const receiver = await holdingReceiver();
  t.after(() => receiver.stop());
  const port = await freePort();
  const oldText = `[server]\nhost = "127.0.0.1"\nshutdown_grace = 15\n[server.webhooks]\nbatch_ms = 10\ntimeout_ms = 20000\n\n[[apps]]\nid = "app-id"\nkey = "app-key"\nsecret = "app-secret"\n[[apps.webhooks]]\nurl = "${receiver.url}"\nevent_types = ["channel_vacated"]\n`;
  const old = await spawnOn(port, oldText);
  t.after(() => cleanup(old));
  const raw = rawClient(port);
  t.after(() => raw.ws.terminate());
  await withTimeout(raw.established, 5000, 'raw client connected');
  raw.ws.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: 'drain-me' } }));
  await waitFor(() => raw.frames.some((f) => f.event === 'pusher_internal:subscription_succeeded'), 3000, 20, 'subscribed');

  const t0 = Date.now();
  old.child.kill('SIGTERM');
  // The listening socket is gone at once: refused at TCP level, not accepted and then refused with 4200.
  const probe = await waitFor(async () => ((await tcpProbe(port)) === 'refused' ? 'refused' : null), 1000, 10, 'TCP connect refused');
  assert.equal(probe, 'refused');
  const refusedAfter = Date.now() - t0;
  t.diagnostic(`TCP connect refused ${refusedAfter} ms after SIGTERM`);
  assert.ok(refusedAfter < 1000, `port still open ${refusedAfter} ms after SIGTERM`);
  // Nobody takes the port over: after the handover wait (1 s by default) the socket gets its 4200.
  const closed = await withTimeout(raw.closed, 3000, 'raw client not closed after SIGTERM');
  assert.equal(closed.code, 4200, `close ${JSON.stringify(closed)}`);
  assert.ok(raw.frames.some((f) => f.event === 'pusher:error' && parseData(f.data).code === 4200), 'no pusher:error 4200 before the close');

  // The old process is still draining (its channel_vacated webhook is held)...
  await waitFor(() => receiver.held.length > 0, 5000, 20, 'the vacated webhook reached the receiver');
  assert.ok(alive(old.child), 'the old process exited before its webhook was answered');
  // ...and a new one binds the same port meanwhile (no SO_REUSEPORT involved).
  const next = await spawnOn(port, config());
  t.after(() => cleanup(next));
  assert.ok(alive(old.child), 'the old process must still be draining while the new one serves');
  const pjs = await newPusherClient('app-key', {}, { host: '127.0.0.1', port, what: 'pusher-js on the new process' });
  pjs.disconnect();

  // The drain still completes: the webhook is answered, then the old process exits 0.
  receiver.release();
  const exit = await withTimeout(old.exited, 5000, 'old process did not exit after its webhook was answered');
  assert.deepEqual(exit, { code: 0, signal: null }, old.log.join(''));
  assert.match(receiver.bodies.join(''), /channel_vacated/);
  assert.ok(alive(next.child), 'the new process stopped with the old one');
});

test('with server.reuse_port a new process serves beside the old one; SIGTERM moves pusher-js over in under 3 s', T, async (t) => {
  const port = await freePort();
  const old = await spawnOn(port, config('reuse_port = true'));
  t.after(() => cleanup(old));
  const pjs = await newPusherClient('app-key', {}, { host: '127.0.0.1', port, what: 'pusher-js on the old process' });
  t.after(() => pjs.disconnect());
  const firstId = pjs.connection.socket_id;

  const next = await spawnOn(port, config('reuse_port = true'));
  t.after(() => cleanup(next));
  assert.ok(alive(old.child) && alive(next.child), 'both processes run on one port');

  const t0 = Date.now();
  old.child.kill('SIGTERM');
  await waitFor(() => pjs.connection.state === 'connected' && pjs.connection.socket_id !== firstId, 10000, 20, 'pusher-js reconnected');
  const took = Date.now() - t0;
  t.diagnostic(`pusher-js connected to the new process ${took} ms after SIGTERM`);
  assert.ok(took < 3000, `pusher-js took ${took} ms to reconnect`);
  const exit = await withTimeout(old.exited, 5000, 'old process exit');
  assert.equal(exit.code, 0, old.log.join(''));
  assert.equal(pjs.connection.state, 'connected');
  assert.ok(alive(next.child));
});

test('a single instance restarted on its port (SIGTERM, then start) hands pusher-js over to the new process in under 3 s', T, async (t) => {
  // pusher-js reconnects at once after a 4200 and, when that attempt is
  // refused, waits out its 15 s connection timeout: the old process must not
  // send its 4200s before the new one listens (server.handover_wait_ms).
  const port = await freePort();
  const old = await spawnOn(port, config());
  t.after(() => cleanup(old));
  const pjs = await newPusherClient('app-key', {}, { host: '127.0.0.1', port, what: 'pusher-js on the old process' });
  t.after(() => pjs.disconnect());
  const firstId = pjs.connection.socket_id;
  const errors = [];
  pjs.connection.bind('error', (e) => errors.push(e));
  const raw = rawClient(port);
  t.after(() => raw.ws.terminate());
  await withTimeout(raw.established, 5000, 'raw client connected');

  const t0 = Date.now();
  old.child.kill('SIGTERM');
  await waitFor(async () => (await tcpProbe(port)) === 'refused', 1000, 10, 'the old process stopped listening');
  assert.ok(alive(old.child), 'the old process waits for its successor');
  assert.equal(pjs.connection.state, 'connected', 'sockets stay open until a new process listens');
  const next = await spawnOn(port, config());
  t.after(() => cleanup(next));

  await waitFor(() => pjs.connection.state === 'connected' && pjs.connection.socket_id !== firstId, 10000, 20, 'pusher-js reconnected');
  const took = Date.now() - t0;
  t.diagnostic(`pusher-js connected to the new process ${took} ms after SIGTERM`);
  assert.ok(took < 3000, `pusher-js took ${took} ms to reconnect`);
  const closed = await withTimeout(raw.closed, 3000, 'raw client closed');
  assert.equal(closed.code, 4200, `close ${JSON.stringify(closed)}`);
  assert.ok(errors.some((e) => e?.data?.code === 4200), `pusher-js saw the 4200: ${JSON.stringify(errors)}`);
  const exit = await withTimeout(old.exited, 5000, 'old process exit');
  assert.equal(exit.code, 0, old.log.join(''));
  assert.ok(alive(next.child));
});

test('without server.reuse_port a second process on a served port fails at once', T, async (t) => {
  const port = await freePort();
  const first = await spawnOn(port, config());
  t.after(() => cleanup(first));
  const { dir, path } = writeTempConfig('rusher-shutdown-', config());
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('RUSHER_')));
  const child = spawn(BIN, ['--config', path], { env: { ...env, RUSHER_PORT: String(port) }, stdio: ['ignore', 'pipe', 'pipe'] });
  const log = captureOutput(child);
  const exit = await withTimeout(exitOf(child), 10000, 'second process did not exit');
  assert.equal(exit.code, 1, log.join(''));
  assert.match(log.join(''), /address already in use/);
  assert.ok(alive(first.child));
});
