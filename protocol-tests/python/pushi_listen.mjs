// A pushi.js-style raw WebSocket listener, for the pushi oracle in
// test_pushi_client.py (pusher-js cannot reach pushi-service: it connects to
// /app/{key}?protocol=7&..., and pushi takes the whole last path segment,
// query included, as the app key).
//   node pushi_listen.mjs <ws-url, e.g. ws://127.0.0.1:9000/{app_key}> <channel> <event>
// Prints {"ready":true,"socket_id":..} once subscribed, then
// {"event":..,"data":..,"frame":{...}} when <event> arrives on <channel>, and
// exits 0; exits 2 after LISTEN_TIMEOUT_MS (default 15000) without it.
import WebSocket from 'ws';

const [url, channelName, eventName] = process.argv.slice(2);
if (!url || !channelName || !eventName) {
  console.error('usage: node pushi_listen.mjs <ws-url> <channel> <event>');
  process.exit(64);
}
const timeoutMs = Number(process.env.LISTEN_TIMEOUT_MS || 15000);
const print = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);
const ws = new WebSocket(url);
let socketId = null;
const timer = setTimeout(() => {
  console.error(`pushi_listen.mjs: no ${eventName} on ${channelName} within ${timeoutMs} ms`);
  process.exit(2);
}, timeoutMs);
ws.on('error', (e) => {
  console.error(`pushi_listen.mjs: ${e.message}`);
  process.exit(3);
});
ws.on('message', (raw) => {
  const frame = JSON.parse(raw.toString());
  const data = typeof frame.data === 'string' ? JSON.parse(frame.data) : frame.data;
  if (frame.event === 'pusher:connection_established') {
    socketId = data.socket_id;
    ws.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: channelName } }));
  } else if (frame.event === 'pusher_internal:subscription_succeeded' && frame.channel === channelName) {
    print({ ready: true, socket_id: socketId });
  } else if (frame.event === eventName && frame.channel === channelName) {
    clearTimeout(timer);
    let parsed = frame.data;
    try {
      parsed = JSON.parse(frame.data);
    } catch {
      // a plain string event
    }
    process.stdout.write(`${JSON.stringify({ event: eventName, data: parsed, frame })}\n`, () => {
      ws.close();
      process.exit(0);
    });
  }
});
