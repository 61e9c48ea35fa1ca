// A Redis Cluster of three masters on free loopback ports, for the suites
// that run rusher on a Redis Cluster (redis-cluster.test.mjs) and for bench
// scripts (the commands are in `redisClusterCommands`).
//
// Each master: redis-server --port P --cluster-enabled yes
//   --cluster-config-file <dir>/nodes-P.conf --cluster-node-timeout 2000
//   --cluster-require-full-coverage no --save "" --appendonly no
// then: redis-cli --cluster create 127.0.0.1:P1 127.0.0.1:P2 127.0.0.1:P3
//   --cluster-replicas 0 --cluster-yes
// and every node waits for `cluster_state:ok` in CLUSTER INFO.
// `--cluster-require-full-coverage no`: with one master stopped, the others
// keep serving their slots (the shard-failure test).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { alive, captureOutput, childTracker, freePort, stopChild, waitFor } from './helpers.mjs';
import { REDIS_BIN, redisPing } from './cluster-helpers.mjs';

export const REDIS_CLI = process.env.REDIS_CLI_BIN || path.join(path.dirname(REDIS_BIN), 'redis-cli');

const { track, killAll } = childTracker();

/** The shard group of a channel: 32-bit FNV-1a of `app \x1f channel` modulo the groups (src/adapter/redis/keys.rs). */
export function groupOf(appId, channel, groups = 16) {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(`${appId}\x1f${channel}`, 'utf8')) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash % groups;
}

/** A per-channel key as the adapter names it (`kind`: subs, members, history, serial, ...). */
export function channelKey(prefix, kind, appId, channel, groups = 16) {
  return `{${prefix}:g${groupOf(appId, channel, groups)}}:${appId}:${kind}:${channel}`;
}

/** The shell commands that start a 3-master cluster on `ports` with config files in `dir`. */
export function redisClusterCommands(ports, dir) {
  const servers = ports.map((p) => [
    REDIS_BIN,
    '--port', String(p),
    '--bind', '127.0.0.1',
    '--cluster-enabled', 'yes',
    '--cluster-config-file', path.join(dir, `nodes-${p}.conf`),
    '--cluster-node-timeout', '2000',
    '--cluster-require-full-coverage', 'no',
    '--save', '',
    '--appendonly', 'no',
  ]);
  const create = [REDIS_CLI, '--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'];
  return { servers, create };
}

/** redis-cli against one port; returns stdout (throws on failure). */
export function cli(port, ...args) {
  const out = spawnSync(REDIS_CLI, ['-p', String(port), ...args], { encoding: 'utf8', timeout: 5000 });
  if (out.status !== 0) throw new Error(`redis-cli ${args.join(' ')}: ${out.stderr || out.stdout}`);
  return out.stdout;
}

/**
 * Starts three masters and creates the cluster.
 * Returns {ports, url, urls, masters: [{port, child}], stop(i, signal), resume(i), slotOf(key), ownerOf(key), shutdown()}.
 */
export async function startRedisCluster(count = 3) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rusher-rcluster-'));
  const ports = [];
  for (let i = 0; i < count; i += 1) ports.push(await freePort());
  const { servers, create } = redisClusterCommands(ports, dir);
  const masters = servers.map(([bin, ...args], i) => {
    const log = [];
    const child = track(spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
    captureOutput(child, log);
    return { port: ports[i], child, log };
  });
  for (const m of masters) {
    await waitFor(
      async () => {
        if (!alive(m.child)) throw new Error(`redis-server ${m.port} exited: ${m.log.join('').slice(-800)}`);
        return redisPing(m.port);
      },
      10000,
      50,
      `redis-server ${m.port} PING`,
    );
  }
  const made = spawnSync(create[0], create.slice(1), { encoding: 'utf8', timeout: 30000 });
  if (made.status !== 0) throw new Error(`redis-cli --cluster create: ${made.stdout}${made.stderr}`);
  await waitFor(
    () => ports.every((p) => /cluster_state:ok/.test(cli(p, 'CLUSTER', 'INFO'))),
    15000,
    100,
    'cluster_state:ok on every master',
  );
  const cluster = {
    dir,
    ports,
    masters,
    url: `redis://127.0.0.1:${ports[0]}`,
    urls: ports.map((p) => `redis://127.0.0.1:${p}`),
    /** The hash slot of a key (CLUSTER KEYSLOT). */
    slotOf(key) {
      return Number(cli(ports[0], 'CLUSTER', 'KEYSLOT', key).trim());
    },
    /** The index (into ports) of the master serving a key's slot. */
    ownerOf(key) {
      const slot = cluster.slotOf(key);
      const lines = cli(ports[0], 'CLUSTER', 'NODES').trim().split('\n');
      for (const line of lines) {
        const fields = line.split(' ');
        if (!fields[2].includes('master')) continue;
        const port = Number(fields[1].split('@')[0].split(':').at(-1));
        for (const range of fields.slice(8)) {
          const [lo, hi = lo] = range.split('-').map(Number);
          if (slot >= lo && slot <= hi) return ports.indexOf(port);
        }
      }
      throw new Error(`no master serves slot ${slot}`);
    },
    /** Stops master `i` (SIGSTOP: it neither answers nor closes its connections). */
    pause(i) {
      process.kill(masters[i].child.pid, 'SIGSTOP');
    },
    /** Resumes master `i`. */
    resume(i) {
      process.kill(masters[i].child.pid, 'SIGCONT');
    },
    async shutdown() {
      for (const m of masters) {
        try {
          process.kill(m.child.pid, 'SIGCONT');
        } catch {
          // already gone
        }
        await stopChild(m.child, 'SIGKILL');
      }
      await killAll();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  return cluster;
}
