// Tiny pusher-js listener for the Python suite.
//   node listen.mjs <channel> <event> [app-key]
// Prints one JSON line {"ready":true,"socket_id":..} once subscribed, then one
// JSON line {"event":..,"data":..} when <event> arrives on <channel>, and exits 0.
// Exits 2 if nothing arrives within LISTEN_TIMEOUT_MS (default 15000).
import Pusher from 'pusher-js';

const [channelName, eventName, key = 'app-key'] = process.argv.slice(2);
if (!channelName || !eventName) {
  console.error('usage: node listen.mjs <channel> <event> [app-key]');
  process.exit(64);
}
const host = process.env.RUSHER_HOST || '127.0.0.1';
const port = Number(process.env.RUSHER_PORT || 6001);
const timeoutMs = Number(process.env.LISTEN_TIMEOUT_MS || 15000);

const pusher = new Pusher(key, {
  wsHost: host,
  wsPort: port,
  wssPort: port,
  forceTLS: false,
  enabledTransports: ['ws'],
  cluster: 'mt1',
  disableStats: true,
});

const timer = setTimeout(() => {
  console.error(`listen.mjs: no ${eventName} on ${channelName} within ${timeoutMs} ms (state ${pusher.connection.state})`);
  pusher.disconnect();
  process.exit(2);
}, timeoutMs);

const channel = pusher.subscribe(channelName);
channel.bind('pusher:subscription_succeeded', () => {
  process.stdout.write(`${JSON.stringify({ ready: true, socket_id: pusher.connection.socket_id })}\n`);
});
channel.bind('pusher:subscription_error', (err) => {
  console.error(`listen.mjs: subscription_error ${JSON.stringify(err)}`);
  pusher.disconnect();
  process.exit(3);
});
channel.bind(eventName, (data) => {
  clearTimeout(timer);
  process.stdout.write(`${JSON.stringify({ event: eventName, data })}\n`, () => {
    pusher.disconnect();
    process.exit(0);
  });
});
