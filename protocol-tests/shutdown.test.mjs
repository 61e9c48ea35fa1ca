// Graceful shutdown: on SIGTERM the server closes every connection with 4200
// (reconnect now) and exits 0. This suite runs its own server.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import Pusher from 'pusher-js';
import WebSocket from 'ws';
import { parseData, spawnServer, withTimeout, sleep } from './helpers.mjs';

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
