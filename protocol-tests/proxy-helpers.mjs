// A TCP proxy a test can cut, as a network does, between clients and a
// rusher node: shared by the recovery suites (one node and cluster).

import net from 'node:net';

/**
 * A TCP proxy to `upstream` ({port, host}). `cut('close')` closes both sides
 * of every open connection; `cut('silent')` drops their bytes both ways and
 * leaves the node's side open (until `close()`), as a dead network does.
 * After a cut, new connections wait (accepted, not forwarded) until
 * `resume(to)`, which may point the proxy at another node (the client
 * reconnects elsewhere). `close()` stops accepting and destroys everything;
 * it runs when the test ends.
 */
export async function cuttableProxy(t, upstream) {
  let target = { host: '127.0.0.1', ...upstream };
  const pairs = new Set();
  const waiting = [];
  let holding = false;
  const forward = (client) => {
    const up = net.connect(target.port, target.host);
    const pair = { client, upstream: up, silent: false };
    pairs.add(pair);
    client.on('data', (d) => pair.silent || up.write(d));
    up.on('data', (d) => pair.silent || client.write(d));
    client.on('close', () => pair.silent || up.destroy());
    up.on('close', () => pair.silent || client.destroy());
    for (const s of [client, up]) s.on('error', () => {});
    client.resume();
  };
  const server = net.createServer({ pauseOnConnect: true }, (client) => {
    client.on('error', () => {});
    if (holding) waiting.push(client);
    else forward(client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const proxy = {
    port: server.address().port,
    pairs,
    cut(mode = 'close') {
      holding = true;
      for (const pair of pairs) {
        if (mode === 'silent') pair.silent = true;
        else {
          pair.client.destroy();
          pair.upstream.destroy();
        }
      }
    },
    resume(to) {
      if (to) target = { host: '127.0.0.1', ...to };
      holding = false;
      for (const client of waiting.splice(0)) forward(client);
    },
    close() {
      server.close();
      for (const pair of pairs) {
        pair.client.destroy();
        pair.upstream.destroy();
      }
      for (const client of waiting.splice(0)) client.destroy();
    },
  };
  t.after(() => proxy.close());
  return proxy;
}
