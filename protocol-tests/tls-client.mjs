// A pusher-js client and the Node `pusher` SDK over TLS, run as a child
// process by tls.test.mjs: Node reads NODE_EXTRA_CA_CERTS (the test's own CA)
// only when a process starts, so the clients that trust it live here, as an
// application's would, with no TLS option of their own.
//
// argv: host port (the TLS port). Commands come as JSON lines on stdin, each
// answered by JSON lines on stdout:
//   {"op":"connect","id":"a","channel":"c"}  pusher-js (forceTLS) connects and
//        subscribes → {"id":"a","event":"subscribed","socketId":...}; every
//        `greet` event on it later → {"id":"a","event":"greet","data":...}
//   {"op":"trigger","channel":"c","data":...}  the SDK (useTLS) triggers `greet`
//        → {"op":"trigger","status":200} or {"op":"trigger","error":"..."}
//   {"op":"channels"}  the SDK GETs /channels → {"op":"channels","status":200,"body":{...}}
// A failure to connect → {"id":"a","event":"failed","error":"..."}.

import readline from 'node:readline';
import Pusher from 'pusher-js';
import PusherServer from 'pusher';

const [host, port] = process.argv.slice(2);
const app = { appId: 'app-id', key: 'app-key', secret: 'app-secret' };
const out = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
const clients = [];

const sdk = new PusherServer({ ...app, host, port, useTLS: true });

function connect({ id, channel }) {
  const client = new Pusher(app.key, {
    wsHost: host,
    wssPort: Number(port),
    forceTLS: true,
    enabledTransports: ['ws'],
    cluster: 'mt1',
    disableStats: true,
  });
  clients.push(client);
  client.connection.bind('failed', () => out({ id, event: 'failed', error: 'pusher-js connection failed' }));
  client.connection.bind('error', (err) => out({ id, event: 'error', error: JSON.stringify(err && err.error) }));
  const ch = client.subscribe(channel);
  ch.bind('pusher:subscription_succeeded', () => out({ id, event: 'subscribed', socketId: client.connection.socket_id }));
  ch.bind('greet', (data) => out({ id, event: 'greet', data }));
}

async function run(cmd) {
  try {
    if (cmd.op === 'connect') connect(cmd);
    else if (cmd.op === 'trigger') {
      const res = await sdk.trigger(cmd.channel, 'greet', cmd.data);
      out({ op: 'trigger', status: res.status });
    } else if (cmd.op === 'channels') {
      const res = await sdk.get({ path: '/channels' });
      out({ op: 'channels', status: res.status, body: await res.json() });
    }
  } catch (e) {
    out({ op: cmd.op, error: String((e && e.message) || e) });
  }
}

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim()) run(JSON.parse(line));
});
process.stdin.on('end', () => {
  for (const client of clients) client.disconnect();
  process.exit(0);
});
