// Helpers for the suites that need signatures: private/presence channels,
// client events, cache/encrypted channels and user sign-in.
//
// Everything here builds on helpers.mjs; every client opened is closed by the
// test that opened it (t.after), so node:test can exit.

import crypto from 'node:crypto';
import http from 'node:http';
import {
  APPS,
  DEFAULT_QUERY,
  HOST,
  PORT,
  connectEstablished,
  hmacHex,
  newPusherClient,
  serverSdk,
  withTimeout,
} from './helpers.mjs';

/** The official Node SDK for one of the fixture apps, optionally with an encryption master key. */
export function sdkFor(app = APPS.main, extra = {}) {
  return serverSdk(app, HOST, PORT, extra);
}

/** A fresh base64 encryption master key (32 random bytes). */
export const randomMasterKey = () => crypto.randomBytes(32).toString('base64');

/**
 * The pusher-js options `channelAuthorization` and `userAuthentication` with
 * custom handlers that sign in-process with `sdk` (the official Node SDK).
 *
 * options:
 *   presence      {user_id, user_info} used for presence channels
 *                 (or a function of the channel name returning it)
 *   user          user data for pusher.signin() ({id, watchlist?, ...})
 *   authCalls     an array that receives every {socketId, channelName} asked for
 */
export function sdkAuthOptions(sdk, options = {}) {
  const presenceFor = (channelName) =>
    typeof options.presence === 'function' ? options.presence(channelName) : options.presence;
  return {
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => {
        if (options.authCalls) options.authCalls.push({ socketId, channelName });
        try {
          const presence = channelName.startsWith('presence-') ? presenceFor(channelName) : undefined;
          cb(null, sdk.authorizeChannel(socketId, channelName, presence));
        } catch (e) {
          cb(e, null);
        }
      },
    },
    userAuthentication: {
      customHandler: ({ socketId }, cb) => {
        try {
          cb(null, sdk.authenticateUser(socketId, options.user));
        } catch (e) {
          cb(e, null);
        }
      },
    },
  };
}

/**
 * A connected pusher-js client whose channel authorization (and user
 * authentication) is done in-process by the official Node SDK, disconnected
 * after the test.
 *
 * options: those of sdkAuthOptions, and
 *   app           fixture app (default main)
 *   sdk           the server SDK signing for it (default sdkFor(app))
 *   at            {host, port, what} of another server (newPusherClient; default the test server)
 */
export async function authedClient(t, options = {}) {
  const app = options.app ?? APPS.main;
  const sdk = options.sdk ?? sdkFor(app);
  const client = await newPusherClient(app.key, sdkAuthOptions(sdk, options), options.at);
  t.after(() => client.disconnect());
  return client;
}

/**
 * Subscribe with pusher-js and resolve with the outcome instead of throwing:
 * {ok: true, channel, data} on pusher:subscription_succeeded,
 * {ok: false, channel, error} on pusher:subscription_error.
 */
export function trySubscribe(client, channelName, timeoutMs = 5000) {
  const channel = client.subscribe(channelName);
  return withTimeout(
    new Promise((resolve) => {
      channel.bind('pusher:subscription_succeeded', (data) => resolve({ ok: true, channel, data }));
      channel.bind('pusher:subscription_error', (error) => resolve({ ok: false, channel, error }));
    }),
    timeoutMs,
    `no subscription outcome for ${channelName}`,
  );
}

/**
 * A raw `ws` connection (helpers.connectRaw) that is established, answers the
 * server's `pusher:ping` (the fixture's activity timeout is 3 s) and is closed
 * after the test. Returns the connection with `socketId` set.
 * `at` = {host, port} of another server (default the test server).
 */
export async function rawClient(t, key = APPS.main.key, at = {}) {
  const [conn, est] = await connectEstablished(key, DEFAULT_QUERY, at);
  conn.socketId = est.socket_id;
  conn.ws.on('message', (buf) => {
    try {
      if (JSON.parse(buf.toString('utf8')).event === 'pusher:ping') {
        conn.send({ event: 'pusher:pong', data: {} });
      }
    } catch {
      /* not JSON: helpers.mjs records it */
    }
  });
  t.after(() => conn.close());
  return conn;
}

/** `key:hex(hmac(secret, socket_id:channel[:channel_data]))` (PROTOCOL.md §2). */
export function channelAuth(app, socketId, channel, channelData) {
  const toSign = channelData === undefined ? `${socketId}:${channel}` : `${socketId}:${channel}:${channelData}`;
  return `${app.key}:${hmacHex(app.secret, toSign)}`;
}

/**
 * Send pusher:subscribe by hand with the given data fields and resolve with
 * the answer frame (subscription_succeeded or subscription_error) for that channel.
 */
export function rawSubscribe(conn, channel, fields = {}, timeoutMs = 3000) {
  conn.send({ event: 'pusher:subscribe', data: { channel, ...fields } });
  return conn.next(
    (f) =>
      (f.event === 'pusher_internal:subscription_succeeded' || f.event === 'pusher:subscription_error') &&
      f.channel === channel,
    timeoutMs,
  );
}

/** Resolve with the next `event` on a pusher-js event source (channel, user, watchlist...). */
export function nextEvent(source, event, timeoutMs = 3000, what = event) {
  return withTimeout(
    new Promise((resolve) => {
      const fn = (data, meta) => {
        source.unbind(event, fn);
        resolve({ data, meta });
      };
      source.bind(event, fn);
    }),
    timeoutMs,
    `no ${what}`,
  );
}

/** Sorted copy. */
export const sorted = (xs) => [...xs].sort();

/** Member ids of a pusher-js presence channel, sorted. */
export function memberIds(channel) {
  const ids = [];
  channel.members.each((m) => ids.push(m.id));
  return ids.sort();
}

/**
 * Sign a raw connection in with the SDK's `authenticateUser` and wait for
 * `pusher:signin_success`; returns that frame.
 */
export async function rawSignIn(conn, sdk, userData, timeoutMs = 3000) {
  conn.send({ event: 'pusher:signin', data: sdk.authenticateUser(conn.socketId, userData) });
  return conn.next('pusher:signin_success', timeoutMs);
}

/** Every frame a pusher-js client receives (connection 'message'), from now on. */
export function recordMessages(client) {
  const messages = [];
  client.connection.bind('message', (m) => messages.push(m));
  return messages;
}

/**
 * A backend's userAuthentication endpoint on 127.0.0.1:{free port}, as an app
 * would serve it: pusher-js POSTs `socket_id` (form-encoded) and gets the
 * SDK's `authenticateUser(socket_id, user)`. `userFor()` gives the user data.
 * Returns {url, calls, stop()}; stop it with t.after.
 */
export async function startUserAuthEndpoint(sdk, userFor) {
  const calls = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const socketId = new URLSearchParams(Buffer.concat(chunks).toString('utf8')).get('socket_id');
      calls.push(socketId);
      const body = JSON.stringify(sdk.authenticateUser(socketId, userFor()));
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(body);
    });
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    url: `http://127.0.0.1:${server.address().port}/pusher/user-auth`,
    calls,
    async stop() {
      server.closeAllConnections?.();
      await new Promise((r) => server.close(() => r()));
    },
  };
}
