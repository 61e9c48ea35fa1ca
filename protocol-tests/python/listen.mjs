// Tiny pusher-js listener for the Python suite.
//   node listen.mjs <channel> <event> [app-key]
// Prints one JSON line {"ready":true,"socket_id":..,"data":..} once subscribed
// (data: what pusher:subscription_succeeded carried), then one
// JSON line {"event":..,"data":..} when <event> arrives on <channel>, and exits 0.
// Exits 2 if nothing arrives within LISTEN_TIMEOUT_MS (default 15000).
//
// With LISTEN_AUTH_URL (the Python suite's auth server, which signs with the
// PyPI SDK), private and presence channels are authorized by POSTing
// socket_id and channel_name to {LISTEN_AUTH_URL}/pusher/auth, as pusher-js's
// own endpoint transport does. With LISTEN_USER as well, the listener signs
// in as that user ({LISTEN_AUTH_URL}/pusher/user-auth), prints
// {"signed_in":true}, and also takes <event> sent to the user
// (server-to-user). Every pusher:error is printed as {"error":{code,message}}.
import Pusher from 'pusher-js';

const [channelName, eventName, key = 'app-key'] = process.argv.slice(2);
if (!channelName || !eventName) {
  console.error('usage: node listen.mjs <channel> <event> [app-key]');
  process.exit(64);
}
const host = process.env.RUSHER_HOST || '127.0.0.1';
const port = Number(process.env.RUSHER_PORT || 6001);
const timeoutMs = Number(process.env.LISTEN_TIMEOUT_MS || 15000);
const authUrl = process.env.LISTEN_AUTH_URL;
const user = process.env.LISTEN_USER;

/** A pusher-js customHandler that asks the auth server at `path` for the signature. */
const askAuthServer = (path) => async (params, callback) => {
  try {
    const body = new URLSearchParams({ socket_id: params.socketId });
    if (params.channelName) body.set('channel_name', params.channelName);
    if (user) body.set('user_id', user);
    const res = await fetch(`${authUrl}${path}`, { method: 'POST', body });
    if (res.status !== 200) throw new Error(`${path} answered ${res.status}: ${await res.text()}`);
    callback(null, await res.json());
  } catch (error) {
    callback(error, null);
  }
};

const pusher = new Pusher(key, {
  wsHost: host,
  wsPort: port,
  wssPort: port,
  forceTLS: false,
  enabledTransports: ['ws'],
  cluster: 'mt1',
  disableStats: true,
  ...(authUrl && {
    channelAuthorization: { customHandler: askAuthServer('/pusher/auth') },
    userAuthentication: { customHandler: askAuthServer('/pusher/user-auth') },
  }),
});

const print = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);
pusher.connection.bind('error', (error) => {
  const data = error && error.data;
  if (data && data.code) print({ error: { code: data.code, message: data.message } });
});
if (user) {
  pusher.bind('pusher:signin_success', () => print({ signed_in: true }));
  pusher.signin();
}

const timer = setTimeout(() => {
  console.error(`listen.mjs: no ${eventName} on ${channelName} within ${timeoutMs} ms (state ${pusher.connection.state})`);
  pusher.disconnect();
  process.exit(2);
}, timeoutMs);

const channel = pusher.subscribe(channelName);
channel.bind('pusher:subscription_succeeded', (data) => {
  // `data`: the subscription's data (a personal channel's catch-up `{messages}`).
  process.stdout.write(`${JSON.stringify({ ready: true, socket_id: pusher.connection.socket_id, data })}\n`);
});
channel.bind('pusher:subscription_error', (err) => {
  console.error(`listen.mjs: subscription_error ${JSON.stringify(err)}`);
  pusher.disconnect();
  process.exit(3);
});
const received = (data) => {
  clearTimeout(timer);
  process.stdout.write(`${JSON.stringify({ event: eventName, data })}\n`, () => {
    pusher.disconnect();
    process.exit(0);
  });
};
channel.bind(eventName, received);
if (user) pusher.user.bind(eventName, received);
