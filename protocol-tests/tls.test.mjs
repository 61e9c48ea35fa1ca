// TLS served by rusher itself (`[server.tls]`): pusher-js over wss with
// `forceTLS: true` and the Node SDK over https with `useTLS: true`, both
// trusting the test's own CA through NODE_EXTRA_CA_CERTS as an application
// would (they run in a child process, tls-client.mjs, since Node reads that
// variable only at start); a second, plain port beside the TLS one; the
// certificate reloaded on SIGHUP and on file change while open sockets keep
// receiving; a bad certificate refused at startup (exit 1, the key and the
// path named) and on reload (the previous one kept); plain clients and idle
// TCP connections on the TLS port dropped cleanly. This suite makes its
// certificates with the `openssl` CLI and runs its own servers.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import https from 'node:https';
import readline from 'node:readline';
import { execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import {
  BIN,
  captureOutput,
  childTracker,
  exitOf,
  fixtureApps,
  freePort,
  stopChild,
  tomlString,
  uniqueChannel,
  waitFor,
  withTimeout,
} from './helpers.mjs';

const T = { timeout: 30000 };
const PT = path.dirname(fileURLToPath(import.meta.url));
const HOST = '127.0.0.1';
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rusher-tls-'));
const children = childTracker(() => fs.rmSync(dir, { recursive: true, force: true }));
let ca;

/** This process's environment without RUSHER_* (the suite's server port, config...). */
const cleanEnv = () => Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('RUSHER_')));

const openssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });

/** A server certificate for 127.0.0.1 and localhost signed by the test CA: {cert, key} paths. */
function issue(name, serial) {
  const key = path.join(dir, `${name}-key.pem`);
  const cert = path.join(dir, `${name}-cert.pem`);
  const csr = path.join(dir, `${name}.csr`);
  openssl('req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${name}`);
  openssl('x509', '-req', '-in', csr, '-CA', 'ca.pem', '-CAkey', 'ca-key.pem', '-set_serial', `0x${serial}`, '-days', '2', '-out', cert, '-extfile', 'ext.cnf');
  return { cert, key, serial };
}

before(() => {
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca-key.pem', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=rusher-test-ca');
  fs.writeFileSync(path.join(dir, 'ext.cnf'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n');
  ca = fs.readFileSync(path.join(dir, 'ca.pem'));
});

after(() => children.killAll());

/** Copies `from` ({cert, key}) to the files a server serves ({cert, key}), each by a rename as certbot or a secret mount does. */
function install(from, to) {
  for (const which of ['key', 'cert']) {
    fs.copyFileSync(from[which], `${to[which]}.tmp`);
    fs.renameSync(`${to[which]}.tmp`, to[which]);
  }
}

/**
 * Starts rusher with the fixture apps and `[server.tls]` = `tlsOptions`
 * (cert, key, port...). Resolves {child, port, tlsPort, log} once /ready answers
 * 200, over https with the test CA when the TLS port is server.port.
 */
async function startTls(tlsOptions, serverOptions = '', extraTables = '') {
  const port = await freePort();
  const tlsPort = tlsOptions.port === 'second' ? await freePort() : port;
  const lines = Object.entries({ ...tlsOptions, port: tlsPort === port ? undefined : tlsPort })
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k} = ${typeof v === 'string' ? tomlString(v) : v}`);
  const config = path.join(dir, `config-${port}.toml`);
  fs.writeFileSync(
    config,
    `[server]\nhost = "127.0.0.1"\nport = ${port}\nshutdown_grace = 1\n${serverOptions}\n[server.tls]\n${lines.join('\n')}\n\n${extraTables}\n${fixtureApps()}`,
  );
  const child = children.track(spawn(BIN, ['--config', config], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] }));
  const log = captureOutput(child);
  const server = { child, port, tlsPort, log };
  await waitFor(
    async () => {
      if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}: ${log.join('')}`);
      const res = tlsPort === port ? await httpsGet(port, '/ready') : await fetch(`http://${HOST}:${port}/ready`).then(async (r) => ({ status: r.status, body: await r.text() }));
      return res.status === 200;
    },
    10000,
    100,
    'TLS server /ready',
  );
  return server;
}

/** GET over https trusting the test CA: {status, body}. */
function httpsGet(port, urlPath) {
  return new Promise((resolve, reject) => {
    const req = https.get({ host: HOST, port, path: urlPath, ca, agent: false }, (res) => {
      let body = '';
      res.on('data', (d) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('error', reject);
    req.setTimeout(3000, () => req.destroy(new Error('https request timed out')));
  });
}

/** POST `body` as JSON over https trusting the test CA: {status, headers}. */
function httpsPostJson(port, urlPath, body) {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = https.request(
      { host: HOST, port, path: urlPath, method: 'POST', ca, agent: false, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } },
      (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers }));
      },
    );
    req.on('error', reject);
    req.setTimeout(3000, () => req.destroy(new Error('https request timed out')));
    req.end(data);
  });
}

/** The serial number (hex, as openssl prints it) of the certificate a new TLS connection to `port` is given. */
function servedSerial(port) {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: HOST, port, ca, servername: 'localhost' }, () => {
      const serial = socket.getPeerCertificate().serialNumber;
      socket.end();
      resolve(serial.replace(/^0+/, '').toUpperCase());
    });
    socket.on('error', reject);
    socket.setTimeout(3000, () => socket.destroy(new Error('TLS handshake timed out')));
  });
}

/** tls-client.mjs in a child trusting the test CA: send(cmd), next(pred) the next matching output line. */
function tlsClient(port) {
  const child = children.track(
    spawn(process.execPath, [path.join(PT, 'tls-client.mjs'), HOST, String(port)], {
      cwd: PT,
      env: { ...process.env, NODE_EXTRA_CA_CERTS: path.join(dir, 'ca.pem') },
      stdio: ['pipe', 'pipe', 'pipe'],
    }),
  );
  const seen = [];
  const waiters = [];
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    const msg = JSON.parse(line);
    const i = waiters.findIndex((w) => w.pred(msg));
    if (i >= 0) waiters.splice(i, 1)[0].resolve(msg);
    else seen.push(msg);
  });
  return {
    send: (cmd) => child.stdin.write(`${JSON.stringify(cmd)}\n`),
    next(pred, ms = 8000) {
      const i = seen.findIndex(pred);
      if (i >= 0) return Promise.resolve(seen.splice(i, 1)[0]);
      return withTimeout(new Promise((resolve) => waiters.push({ pred, resolve })), ms, `tls-client: no matching line (seen ${JSON.stringify(seen)}; stderr ${stderr})`);
    },
    close: () => stopChild(child, 'SIGTERM', 2000),
  };
}

/** Subscribes client `id` to `channel` and resolves once it is subscribed. */
async function subscribe(client, id, channel) {
  client.send({ op: 'connect', id, channel });
  const msg = await client.next((m) => m.id === id && m.event !== 'greet');
  assert.equal(msg.event, 'subscribed', JSON.stringify(msg));
  return msg;
}

/** Triggers `greet` with `data` through the SDK (useTLS) and waits for client `id` to receive it. */
async function triggerAndReceive(client, id, channel, data) {
  client.send({ op: 'trigger', channel, data });
  const sent = await client.next((m) => m.op === 'trigger');
  assert.equal(sent.status, 200, JSON.stringify(sent));
  const got = await client.next((m) => m.id === id && m.event === 'greet');
  assert.deepEqual(got.data, data);
}

/** The value of metric `name` (with its labels as written) on /metrics, or 0. */
async function metric(getMetrics, name) {
  const text = await getMetrics();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : 0;
}

test('pusher-js (forceTLS) receives over wss what the Node SDK (useTLS) triggers over https; the HTTP API answers over https', T, async () => {
  const certs = issue('main', '1001');
  const server = await startTls({ cert: certs.cert, key: certs.key });
  const client = tlsClient(server.port);
  try {
    const channel = uniqueChannel('tls');
    const { socketId } = await subscribe(client, 'a', channel);
    assert.match(socketId, /^\d+\.\d+$/);
    await triggerAndReceive(client, 'a', channel, { hello: 'over TLS' });
    client.send({ op: 'channels' });
    const channels = await client.next((m) => m.op === 'channels');
    assert.equal(channels.status, 200, JSON.stringify(channels));
    assert.ok(channel in channels.body.channels, JSON.stringify(channels.body));
    assert.equal((await httpsGet(server.port, '/ready')).status, 200);
    assert.equal(await servedSerial(server.port), '1001');
    assert.match(server.log.join(''), new RegExp(`wss://127\\.0\\.0\\.1:${server.port}/app/app-key`));
  } finally {
    await client.close();
    await stopChild(server.child, 'SIGTERM');
  }
});

test('plain ws and http to the TLS port fail cleanly and the server keeps serving; an idle TCP connection is dropped after handshake_timeout_ms', T, async () => {
  const certs = issue('plain', '2002');
  const server = await startTls({ cert: certs.cert, key: certs.key, handshake_timeout_ms: 300 });
  try {
    const plain = new WebSocket(`ws://${HOST}:${server.port}/app/app-key?protocol=7`, { handshakeTimeout: 3000 });
    const failed = await new Promise((resolve) => {
      plain.on('open', () => resolve(false));
      plain.on('error', () => resolve(true));
    });
    assert.ok(failed, 'a plain WebSocket opened on the TLS port');
    await assert.rejects(fetch(`http://${HOST}:${server.port}/ready`));

    const idle = net.connect(server.port, HOST);
    const opened = Date.now();
    await withTimeout(new Promise((resolve) => idle.on('close', resolve)), 5000, 'an idle TCP connection was kept');
    assert.ok(Date.now() - opened >= 250, `closed after ${Date.now() - opened} ms, before the timeout`);

    const wss = new WebSocket(`wss://${HOST}:${server.port}/app/app-key?protocol=7`, { ca });
    const frame = await withTimeout(new Promise((resolve, reject) => {
      wss.once('message', (m) => resolve(JSON.parse(m.toString())));
      wss.once('error', reject);
    }), 5000, 'no pusher:connection_established over wss');
    assert.equal(frame.event, 'pusher:connection_established');
    wss.close();
    assert.equal(server.child.exitCode, null, 'the server died');
  } finally {
    await stopChild(server.child, 'SIGTERM');
  }
});

test('[server.tls] port: TLS on a second port while server.port stays plain (a health check behind a proxy)', T, async () => {
  const certs = issue('second', '3003');
  const server = await startTls({ cert: certs.cert, key: certs.key, port: 'second' });
  try {
    assert.notEqual(server.tlsPort, server.port);
    const plain = await fetch(`http://${HOST}:${server.port}/ready`);
    assert.equal(plain.status, 200);
    assert.equal((await httpsGet(server.tlsPort, '/ready')).status, 200);
    assert.equal(await servedSerial(server.tlsPort), '3003');
    await assert.rejects(servedSerial(server.port), 'server.port serves TLS too');
  } finally {
    await stopChild(server.child, 'SIGTERM');
  }
});

// The listener's scheme decides what depends on TLS: the console's login
// cookie is `Secure` over https only (a browser would not send a Secure
// cookie back over plain http).
test('the console login cookie is Secure over TLS and not on the plain port', T, async () => {
  const certs = issue('cookie', '3004');
  const server = await startTls({ cert: certs.cert, key: certs.key, port: 'second' }, '', '[console]\nenabled = true\n');
  try {
    const login = { app_id: 'app-id', secret: 'app-secret' };
    const overTls = await httpsPostJson(server.tlsPort, '/console/api/login', login);
    assert.equal(overTls.status, 200);
    const tlsCookie = String(overTls.headers['set-cookie']);
    assert.match(tlsCookie, /;\s*Secure/i, `cookie over TLS: ${tlsCookie}`);
    const plain = await fetch(`http://${HOST}:${server.port}/console/api/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(login),
    });
    assert.equal(plain.status, 200);
    const plainCookie = plain.headers.get('set-cookie') ?? '';
    assert.ok(plainCookie.length > 0, 'a cookie on the plain port too');
    assert.doesNotMatch(plainCookie, /;\s*Secure/i, `cookie over plain http: ${plainCookie}`);
  } finally {
    await stopChild(server.child, 'SIGTERM');
  }
});

test('SIGHUP reloads the certificate: new connections get the new one, open sockets keep receiving; a bad file keeps the old one', T, async () => {
  const first = issue('reload-first', '4001');
  const second = issue('reload-second', '4002');
  const served = { cert: path.join(dir, 'served-cert.pem'), key: path.join(dir, 'served-key.pem') };
  install(first, served);
  // Reload on SIGHUP only: what changes below is the signal's doing.
  const server = await startTls({ ...served, port: 'second', reload_check_secs: 0 });
  const getMetrics = () => fetch(`http://${HOST}:${server.port}/metrics`).then((r) => r.text());
  const client = tlsClient(server.tlsPort);
  try {
    const channel = uniqueChannel('reload');
    await subscribe(client, 'open', channel);
    assert.equal(await servedSerial(server.tlsPort), '4001');
    assert.ok((await metric(getMetrics, 'rusher_tls_certificate_expiry_timestamp_seconds')) > Date.now() / 1000);

    install(second, served);
    assert.equal(await servedSerial(server.tlsPort), '4001', 'reloaded without SIGHUP');
    server.child.kill('SIGHUP');
    await waitFor(async () => (await servedSerial(server.tlsPort)) === '4002', 5000, 50, 'the new certificate after SIGHUP');
    assert.equal(await metric(getMetrics, 'rusher_tls_reloads_total{result="ok"}'), 1);
    // The socket opened under the first certificate is still there.
    await triggerAndReceive(client, 'open', channel, { after: 'reload' });

    fs.writeFileSync(served.cert, 'not a certificate\n');
    server.child.kill('SIGHUP');
    await waitFor(async () => (await metric(getMetrics, 'rusher_tls_reloads_total{result="error"}')) === 1, 5000, 50, 'the failed reload counted');
    assert.equal(await servedSerial(server.tlsPort), '4002', 'a bad file replaced the certificate');
    assert.match(server.log.join(''), /TLS certificate not reloaded.*server\.tls\.cert|server\.tls\.cert.*TLS certificate not reloaded/);
    assert.match(server.log.join(''), /is not a PEM file/);
    assert.equal(server.child.exitCode, null);
    await triggerAndReceive(client, 'open', channel, { still: 'open' });
  } finally {
    await client.close();
    await stopChild(server.child, 'SIGTERM');
  }
});

test('a changed certificate file is picked up without a signal (reload_check_secs)', T, async () => {
  const first = issue('watch-first', '5001');
  const second = issue('watch-second', '5002');
  const served = { cert: path.join(dir, 'watched-cert.pem'), key: path.join(dir, 'watched-key.pem') };
  install(first, served);
  const server = await startTls({ ...served, port: 'second', reload_check_secs: 1 });
  try {
    assert.equal(await servedSerial(server.tlsPort), '5001');
    install(second, served);
    await waitFor(async () => (await servedSerial(server.tlsPort)) === '5002', 5000, 100, 'the new certificate after the file changed');
  } finally {
    await stopChild(server.child, 'SIGTERM');
  }
});

/** Runs rusher (or `--check-config` with `check`) with `env` to its exit: {code, out}. */
async function runToExit(env, check = false) {
  const port = await freePort();
  const base = cleanEnv();
  const child = children.track(
    spawn(BIN, check ? ['--check-config'] : [], {
      env: { ...base, RUSHER_HOST: HOST, RUSHER_PORT: String(port), ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
  const log = captureOutput(child);
  const { code } = await withTimeout(exitOf(child), 10000, `rusher did not exit: ${log.join('')}`);
  return { code, out: log.join('') };
}

test('a missing, non-PEM or mismatched certificate or key stops startup and --check-config with exit 1 naming the key and the path', T, async () => {
  const good = issue('startup', '6001');
  const other = issue('startup-other', '6002');
  const junk = path.join(dir, 'junk.pem');
  fs.writeFileSync(junk, 'hello\n');
  const cases = [
    [{ RUSHER_TLS_CERT: path.join(dir, 'missing.pem'), RUSHER_TLS_KEY: good.key }, ['server.tls.cert via RUSHER_TLS_CERT', `cannot read ${path.join(dir, 'missing.pem')}`]],
    [{ RUSHER_TLS_CERT: junk, RUSHER_TLS_KEY: good.key }, ['server.tls.cert', `${junk} is not a PEM file`]],
    [{ RUSHER_TLS_CERT: good.cert, RUSHER_TLS_KEY: good.cert }, ['server.tls.key', 'holds no private key']],
    [{ RUSHER_TLS_CERT: good.cert, RUSHER_TLS_KEY: other.key }, ['server.tls.key via RUSHER_TLS_KEY', 'does not match the certificate']],
    [{ RUSHER_TLS_CERT: good.cert }, ['server.tls.key', 'must be set too']],
  ];
  for (const [env, needles] of cases) {
    for (const check of [false, true]) {
      const { code, out } = await runToExit(env, check);
      assert.equal(code, 1, `${JSON.stringify(env)} check=${check}: exit ${code}\n${out}`);
      assert.match(out, /^Error: invalid config value `server\.tls\./m, out);
      for (const needle of needles) assert.ok(out.includes(needle), `no \`${needle}\` in:\n${out}`);
    }
  }
  const { code, out } = await runToExit({ RUSHER_TLS_CERT: good.cert, RUSHER_TLS_KEY: good.key }, true);
  assert.equal(code, 0, out);
  assert.match(out, /config OK: listen 127\.0\.0\.1:\d+ \(TLS\)/);
});
