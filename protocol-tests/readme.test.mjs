// Every code block of README.md runs as written, against the server the
// README says (`cargo run --release`: the default config on port 6001).
//
// A block's info string says how it runs (GitHub shows only the language):
//
//   ```sh server           the server command (first line): `cargo run --release`
//   ```sh server-config    the server command with a config file (`--config rusher.toml`)
//   ```toml check          a config file: `rusher --check-config` must accept it
//   ```toml group=g:1      the config file the server of group g runs with
//   ```js group=g:2 ...    a program run in group g, in that order (a block may
//   ```python group=...    be in several groups: group=a:1,b:3)
//   ```js fragment         not a whole program: not run (the text says so)
//
// Blocks of a group run one after the other against one fresh server:
//   background             keeps running until the group ends; `ready="a|b"` waits
//                          until its output shows every text
//   (otherwise)            must exit 0 within 30 s
//   expect="a|b"           the block's own output shows every text (for a background
//                          block: by the end of the group)
//   then="a|b"             after the block, a background block prints each text anew
//                          (e.g. a client receives what the block published)
//
// A js/python/toml/sh block without one of these marks fails the suite, so a
// new example is either run or declared a fragment.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { sleep } from './helpers.mjs';

const PT = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.dirname(PT);
const README = path.join(ROOT, 'README.md');
const BIN = process.env.RUSHER_BIN || path.join(ROOT, 'target/release/rusher');
const PYTHON = path.join(PT, '.venv/bin/python');
const RUNNABLE = new Set(['js', 'python', 'toml', 'sh']);
const MARKS = ['fragment', 'group', 'check', 'server', 'server-config'];
// Ports the README's examples use: rusher's default and the example backend.
const README_PORTS = [6001, 3000];

/** Code blocks of `markdown`: {lang, attrs, code, line}. */
export function codeBlocks(markdown) {
  const blocks = [];
  const lines = markdown.split('\n');
  for (let i = 0; i < lines.length; i += 1) {
    const open = /^```(\S*)\s*(.*)$/.exec(lines[i]);
    if (!open) continue;
    const start = i;
    const body = [];
    for (i += 1; i < lines.length && !/^```\s*$/.test(lines[i]); i += 1) body.push(lines[i]);
    blocks.push({ lang: open[1], attrs: parseAttrs(open[2]), code: `${body.join('\n')}\n`, line: start + 1 });
  }
  return blocks;
}

/** `a b=c d="e f"` → {a: true, b: 'c', d: 'e f'} */
function parseAttrs(text) {
  const attrs = {};
  for (const m of text.matchAll(/([\w-]+)(?:=(?:"([^"]*)"|(\S+)))?/g)) {
    attrs[m[1]] = m[2] ?? m[3] ?? true;
  }
  return attrs;
}

const texts = (value) => (value ? String(value).split('|') : []);
const count = (haystack, needle) => haystack.split(needle).length - 1;
const label = (block) => `README.md:${block.line} (${block.lang})`;

/** Environment without the test server's RUSHER_* settings: examples see a plain shell. */
function cleanEnv() {
  const env = { ...process.env };
  for (const key of Object.keys(env)) if (key.startsWith('RUSHER_') || key === 'RUST_LOG') delete env[key];
  return env;
}

function portInUse(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('error', () => resolve(false));
  });
}

/** A child process whose output is collected; `kill()` ends it and waits. */
function start(command, args, options) {
  const child = spawn(command, args, { ...options, env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  const proc = { child, out: '', exited: null };
  child.stdout.on('data', (d) => { proc.out += d; });
  child.stderr.on('data', (d) => { proc.out += d; });
  proc.done = new Promise((resolve) => child.once('exit', (code, signal) => {
    proc.exited = { code, signal };
    resolve(proc.exited);
  }));
  proc.kill = async () => {
    if (!proc.exited) child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await proc.done;
    clearTimeout(timer);
  };
  return proc;
}

async function waitForOutput(proc, wanted, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (wanted.every((w) => count(proc.out, w) > 0)) return;
    if (proc.exited || Date.now() > deadline) {
      assert.fail(`${what}: expected ${JSON.stringify(wanted)} in its output${proc.exited ? ` (exited ${JSON.stringify(proc.exited)})` : ''}; output:\n${proc.out}`);
    }
    await sleep(50);
  }
}

/** The server command of the `sh server` / `sh server-config` block, as argv. */
function serverArgv(blocks, mark, configPath) {
  const block = blocks.find((b) => b.lang === 'sh' && b.attrs[mark]);
  assert.ok(block, `README.md has no \`\`\`sh ${mark} block`);
  const words = block.code.split('\n')[0].replace(/#.*$/, '').trim().split(/\s+/);
  // `cargo run --release` builds, then runs target/release/rusher with the
  // arguments after `--`; protocol-tests/run built that binary already.
  if (words[0] === 'cargo') {
    assert.deepEqual(words.slice(0, 3), ['cargo', 'run', '--release'], label(block));
    const rest = words.indexOf('--');
    return [BIN, rest < 0 ? [] : words.slice(rest + 1)];
  }
  assert.equal(words[0], 'target/release/rusher', label(block));
  return [BIN, words.slice(1).map((w) => (w === 'rusher.toml' ? configPath : w))];
}

async function startServer(blocks, configToml, dir) {
  let argv;
  if (configToml) {
    const configPath = path.join(dir, 'rusher.toml');
    fs.writeFileSync(configPath, configToml);
    argv = serverArgv(blocks, 'server-config', configPath);
  } else {
    argv = serverArgv(blocks, 'server');
  }
  const server = start(argv[0], argv[1], { cwd: ROOT });
  const deadline = Date.now() + 20000;
  for (;;) {
    try {
      const res = await fetch('http://127.0.0.1:6001/ready');
      if (res.status === 200) return server;
    } catch { /* not yet listening */ }
    if (server.exited || Date.now() > deadline) {
      await server.kill();
      assert.fail(`the README's server did not become ready on 6001; output:\n${server.out}`);
    }
    await sleep(100);
  }
}

/** Runs one block's program: node for js (an ES module), the venv's python. */
function runBlock(block, dir, index) {
  const file = path.join(dir, `block-${index}-line-${block.line}.${block.lang === 'js' ? 'mjs' : 'py'}`);
  fs.writeFileSync(file, block.code);
  return block.lang === 'js'
    ? start(process.execPath, [file], { cwd: dir })
    : start(PYTHON, [file], { cwd: dir });
}

const blocks = codeBlocks(fs.readFileSync(README, 'utf8'));

test('every runnable README block is marked: run in a group, checked, the server command, or a fragment', () => {
  const unmarked = blocks.filter((b) => RUNNABLE.has(b.lang) && !MARKS.some((m) => b.attrs[m]));
  assert.deepEqual(unmarked.map(label), []);
  assert.ok(blocks.filter((b) => b.attrs.group).length >= 8, 'the README runs its examples');
});

test('every README config block is accepted by `rusher --check-config`', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'readme-toml-'));
  try {
    for (const block of blocks.filter((b) => b.lang === 'toml')) {
      const file = path.join(dir, `line-${block.line}.toml`);
      fs.writeFileSync(file, block.code);
      const proc = start(BIN, ['--config', file, '--check-config'], { cwd: ROOT });
      const exit = await proc.done;
      assert.equal(exit.code, 0, `${label(block)} refused:\n${proc.out}`);
      assert.match(proc.out, /^config OK/m, label(block));
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// Groups in README order of their first block; blocks in their given order.
const groups = new Map();
for (const block of blocks) {
  if (!block.attrs.group) continue;
  for (const spec of String(block.attrs.group).split(',')) {
    const [name, order] = spec.split(':');
    if (!groups.has(name)) groups.set(name, []);
    groups.get(name).push({ block, order: Number(order ?? block.line) });
  }
}

for (const [name, members] of groups) {
  test(`README examples of group "${name}" run as written`, { timeout: 120000 }, async () => {
    members.sort((a, b) => a.order - b.order);
    for (const port of README_PORTS) {
      assert.equal(await portInUse(port), false, `port ${port} (used by the README's examples) is busy`);
    }
    const dir = fs.mkdtempSync(path.join(PT, '.readme-run-'));
    const configBlock = members.find((m) => m.block.lang === 'toml');
    const server = await startServer(blocks, configBlock?.block.code, dir);
    const background = [];
    try {
      for (const [index, { block }] of members.entries()) {
        if (block.lang === 'toml') continue;
        assert.ok(block.lang === 'js' || block.lang === 'python', `${label(block)}: cannot run ${block.lang}`);
        const before = background.map((b) => b.proc.out);
        const proc = runBlock(block, dir, index);
        if (block.attrs.background) {
          background.push({ block, proc });
          await waitForOutput(proc, texts(block.attrs.ready), 20000, `${label(block)} getting ready`);
        } else {
          const timer = setTimeout(() => proc.child.kill('SIGKILL'), 30000);
          const exit = await proc.done;
          clearTimeout(timer);
          assert.equal(exit.code, 0, `${label(block)} failed (${JSON.stringify(exit)}):\n${proc.out}`);
          for (const text of texts(block.attrs.expect)) {
            assert.ok(proc.out.includes(text), `${label(block)}: expected ${JSON.stringify(text)} in:\n${proc.out}`);
          }
        }
        for (const text of texts(block.attrs.then)) {
          const deadline = Date.now() + 10000;
          const gained = () => background.some((b, i) => count(b.proc.out, text) > count(before[i] ?? '', text));
          while (!gained() && Date.now() < deadline) await sleep(50);
          assert.ok(gained(), `after ${label(block)}, no example printed ${JSON.stringify(text)}:\n${background.map((b) => `${label(b.block)}:\n${b.proc.out}`).join('\n')}`);
        }
      }
      for (const { block, proc } of background) {
        await waitForOutput(proc, texts(block.attrs.expect), 10000, label(block));
        assert.equal(proc.exited, null, `${label(block)} stopped by itself:\n${proc.out}`);
      }
    } finally {
      await Promise.all(background.map((b) => b.proc.kill()));
      await server.kill();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}
