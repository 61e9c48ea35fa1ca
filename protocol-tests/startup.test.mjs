// Startup as a new user meets it: a bad setting stops rusher with exit code 1
// and one line naming the key (or the environment variable) that set it, never
// a backtrace, even with RUST_BACKTRACE=1; logs written to a pipe carry no
// colour codes. This suite runs its own processes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { spawn } from 'node:child_process';
import {
  BIN,
  captureOutput,
  exitOf,
  fixtureApps,
  freePort,
  spawnServer,
  stopChild,
  waitReady,
  withTimeout,
  writeTempConfig,
} from './helpers.mjs';

const T = { timeout: 30000 };

/**
 * Run rusher with `configText` (a TOML file, or none when null) and `env`
 * added to a clean environment (no RUSHER_*, RUST_LOG); RUST_BACKTRACE=1 as
 * in many Rust shells. Resolves with {code, signal, out} once it exits, or
 * rejects when it is still running after 10 s.
 */
async function runToExit(configText, env = {}) {
  const base = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('RUSHER_') && k !== 'RUST_LOG' && k !== 'NO_COLOR'),
  );
  const args = [];
  let dir = null;
  if (configText !== null) {
    const written = writeTempConfig('rusher-startup-', configText);
    dir = written.dir;
    args.push('--config', written.path);
  }
  const port = await freePort();
  const child = spawn(BIN, args, {
    env: { ...base, RUSHER_HOST: '127.0.0.1', RUSHER_PORT: String(port), RUST_BACKTRACE: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log = captureOutput(child);
  try {
    const exit = await withTimeout(exitOf(child), 10000, `rusher did not exit\n${log.join('')}`);
    return { ...exit, out: log.join('') };
  } finally {
    await stopChild(child);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Asserts a refused start: exit 1, every `needles` in the output, no backtrace. */
function assertRefused(result, needles) {
  assert.equal(result.signal, null, result.out);
  assert.equal(result.code, 1, `exit code ${result.code}\n${result.out}`);
  for (const needle of needles) assert.ok(result.out.includes(needle), `no \`${needle}\` in:\n${result.out}`);
  assert.doesNotMatch(result.out, /stack backtrace/i, 'a user error printed a backtrace');
  assert.match(result.out, /^Error: /m, result.out);
}

const LEVELS = 'trace, debug, info, warn, error, off';

test('an unknown server.log_level stops startup naming the key and the valid levels', T, async () => {
  const result = await runToExit(`[server]\nlog_level = "verbose"\n`);
  assertRefused(result, ['server.log_level', 'verbose', LEVELS]);
});

test('an unknown RUSHER_LOG_LEVEL (`verbose`, `warning`) names the key and the variable', T, async () => {
  assertRefused(await runToExit(null, { RUSHER_LOG_LEVEL: 'verbose' }), ['server.log_level via RUSHER_LOG_LEVEL', LEVELS]);
  assertRefused(await runToExit(null, { RUSHER_LOG_LEVEL: 'warning' }), ['server.log_level via RUSHER_LOG_LEVEL', '`warn`, not `warning`']);
  // A directive whose level is wrong is refused too.
  assertRefused(await runToExit(null, { RUSHER_LOG_LEVEL: 'info,rusher=loud' }), ['RUSHER_LOG_LEVEL', 'loud']);
  // `warn` starts (the info-level "listening" line is not printed).
  const server = await spawnServer({ RUSHER_LOG_LEVEL: 'warn', RUST_LOG: '' });
  try {
    assert.doesNotMatch(server.log.join(''), /rusher listening/, 'warn level printed an info line');
  } finally {
    await stopChild(server.child, 'SIGTERM');
  }
});

test('a bad RUST_LOG is an error naming RUST_LOG, not silence', T, async () => {
  assertRefused(await runToExit(null, { RUST_LOG: 'verbose' }), ['RUST_LOG', LEVELS]);
});

test('[redis] and [store] values are validated whatever the adapter and backend', T, async () => {
  assertRefused(await runToExit(`[redis]\nheartbeat_secs = 0\n`), ['redis.heartbeat_secs']);
  assertRefused(await runToExit(`[redis]\nheartbeat_secs = 20\nnode_timeout_secs = 10\n`), ['redis.node_timeout_secs']);
  assertRefused(await runToExit(`[redis]\nurl = "localhost:6379"\n`), ['redis.url']);
  assertRefused(await runToExit(`[store]\nurl = "localhost:27017"\n`), ['store.url']);
});

test('a port in use names the address and the key that set it', T, async () => {
  const first = await spawnServer();
  try {
    const port = first.port;
    // The port comes from RUSHER_PORT...
    assertRefused(await runToExit(null, { RUSHER_PORT: String(port) }), [
      `cannot listen on 127.0.0.1:${port} (server.port via RUSHER_PORT): address already in use`,
    ]);
    // ...or from the file.
    const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('RUSHER_')));
    const { dir, path } = writeTempConfig('rusher-startup-', `[server]\nhost = "127.0.0.1"\nport = ${port}\n`);
    try {
      const child = spawn(BIN, ['--config', path], {
        env: { ...base, RUST_BACKTRACE: '1' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const log = captureOutput(child);
      const exit = await withTimeout(exitOf(child), 10000, 'second rusher did not exit');
      assertRefused({ ...exit, out: log.join('') }, [`cannot listen on 127.0.0.1:${port} (server.port): address already in use`]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    // The first one is unharmed.
    const res = await fetch(`http://127.0.0.1:${port}/ready`);
    assert.equal(res.status, 200);
    await res.text();
  } finally {
    await stopChild(first.child, 'SIGTERM');
  }
});

test('a host that does not resolve names the host and the key', T, async () => {
  const result = await runToExit(null, { RUSHER_HOST: 'no-such-host.invalid' });
  assertRefused(result, ['cannot listen on no-such-host.invalid:', '(server.host via RUSHER_HOST)']);
});

test('a config error with RUST_BACKTRACE=1 is one line, no backtrace', T, async () => {
  const result = await runToExit(`[[apps]]\nid = "a"\nkey = "b"\nsecret = "c"\nmax_batch_events = 0\n`);
  assertRefused(result, ['Error: invalid config value `apps[0].max_batch_events`: must be greater than 0']);
  assert.equal(result.out.trim().split('\n').length, 1, result.out);
});

test('logs written to a pipe carry no ANSI colour codes', T, async () => {
  const { dir, path } = writeTempConfig('rusher-startup-', `[server]\nhost = "127.0.0.1"\nlog_level = "info"\n${fixtureApps()}`);
  const port = await freePort();
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('RUSHER_') && k !== 'RUST_LOG' && k !== 'NO_COLOR'));
  const child = spawn(BIN, ['--config', path], {
    env: { ...base, RUSHER_PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log = captureOutput(child);
  try {
    await waitReady(port, () => assert.equal(child.exitCode, null, log.join('')), 50, 'rusher /ready');
    await stopChild(child, 'SIGTERM');
    const out = log.join('');
    assert.match(out, /rusher listening/, out);
    assert.ok(!out.includes('\x1b['), `colour codes in piped logs:\n${JSON.stringify(out.slice(0, 300))}`);
  } finally {
    await stopChild(child);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
