// A Redis Cluster of three masters on free loopback ports, for the suites
// that run rusher on a Redis Cluster (redis-cluster.test.mjs) and for bench
// scripts (the commands are in `redisClusterCommands`); with `replicas: 1`,
// three masters and three replicas (redis-cluster-failover.test.mjs).
//
// Each master: redis-server --port P --cluster-enabled yes
//   --cluster-config-file <dir>/nodes-P.conf --cluster-node-timeout 2000
//   --cluster-require-full-coverage no --save "" --appendonly no
//   --dir <dir> --dbfilename dump-P.rdb (replicas write what they sync there)
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
export function redisClusterCommands(ports, dir, { replicas = 0, nodeTimeoutMs = 2000 } = {}) {
  const servers = ports.map((p) => [
    REDIS_BIN,
    '--port', String(p),
    '--bind', '127.0.0.1',
    '--cluster-enabled', 'yes',
    '--cluster-config-file', path.join(dir, `nodes-${p}.conf`),
    // A replica stores the RDB its master sends in its working directory.
    '--dir', dir,
    '--dbfilename', `dump-${p}.rdb`,
    '--cluster-node-timeout', String(nodeTimeoutMs),
    '--cluster-require-full-coverage', 'no',
    '--save', '',
    '--appendonly', 'no',
  ]);
  const create = [REDIS_CLI, '--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', String(replicas), '--cluster-yes'];
  return { servers, create };
}

/** redis-cli against one port; returns stdout (throws on failure). */
export function cli(port, ...args) {
  const out = spawnSync(REDIS_CLI, ['-p', String(port), ...args], { encoding: 'utf8', timeout: 5000 });
  if (out.status !== 0) throw new Error(`redis-cli ${args.join(' ')}: ${out.stderr || out.stdout}`);
  return out.stdout;
}

/**
 * Starts three masters (and `replicas` replicas of each) and creates the cluster.
 * `masters[i]` is the server on `ports[i]` (a replica too, with `replicas`).
 * Returns {ports, url, urls, masters: [{port, child}], pause(i), resume(i), kill(i),
 * slotOf(key), ownerOf(key), replicaOf(i), isMaster(i), shutdown()}.
 */
export async function startRedisCluster(count = 3, { replicas = 0, nodeTimeoutMs = 2000 } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rusher-rcluster-'));
  const ports = [];
  for (let i = 0; i < count * (1 + replicas); i += 1) ports.push(await freePort());
  const { servers, create } = redisClusterCommands(ports, dir, { replicas, nodeTimeoutMs });
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
  /** CLUSTER NODES as seen by a live server: [{id, port, master, masterId, failed}]. */
  const nodes = (from = ports[0]) =>
    cli(from, 'CLUSTER', 'NODES')
      .trim()
      .split('\n')
      .map((line) => {
        const fields = line.split(' ');
        return {
          id: fields[0],
          port: Number(fields[1].split('@')[0].split(':').at(-1)),
          master: fields[2].includes('master'),
          masterId: fields[3],
          failed: /fail/.test(fields[2]),
          slots: fields.slice(8),
        };
      });
  if (replicas > 0) {
    // Replicas are in sync before a test kills their master.
    await waitFor(
      () => ports.every((p) => /master_link_status:up|role:master/.test(cli(p, 'INFO', 'replication'))),
      15000,
      100,
      'every replica in sync',
    );
  }
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
    /** The index (into ports) of the master serving a key's slot (as server `from` sees it). */
    ownerOf(key, from = 0) {
      const slot = cluster.slotOf(key);
      for (const node of nodes(ports[from])) {
        if (!node.master || node.failed) continue;
        for (const range of node.slots) {
          const [lo, hi = lo] = range.split('-').map(Number);
          if (slot >= lo && slot <= hi) return ports.indexOf(node.port);
        }
      }
      throw new Error(`no master serves slot ${slot}`);
    },
    /** The index of a replica of master `i` (-1 if none). */
    replicaOf(i) {
      const all = nodes();
      const master = all.find((n) => n.port === ports[i]);
      const replica = all.find((n) => !n.master && n.masterId === master.id);
      return replica ? ports.indexOf(replica.port) : -1;
    },
    /** Whether server `i` is a master now (asked to itself). */
    isMaster(i) {
      return /role:master/.test(cli(ports[i], 'INFO', 'replication'));
    },
    /** Resolves once every server reports cluster_state:ok and no master with slots is flagged failing. */
    async settled(timeoutMs = 15000) {
      await waitFor(
        () =>
          ports.every(
            (p) =>
              /cluster_state:ok/.test(cli(p, 'CLUSTER', 'INFO')) &&
              nodes(p).every((n) => !n.master || n.slots.length === 0 || !n.failed),
          ),
        timeoutMs,
        100,
        'the cluster settled (every master up, state ok)',
      );
    },
    /** Kills server `i` (SIGKILL: its connections drop at once). */
    kill(i) {
      process.kill(masters[i].child.pid, 'SIGKILL');
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
