// pusher-js clients that recover across a cut connection, shared by the
// one-node and the cluster recovery suites: the README's anonymous snippet,
// taken from its code block, and a pusher-js client with fast keep-alive.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Pusher from 'pusher-js';
import { waitFor, withTimeout } from './helpers.mjs';

const README = fs.readFileSync(path.join(path.dirname(path.dirname(fileURLToPath(import.meta.url))), 'README.md'), 'utf8');
const snippetCode = [...README.matchAll(/^```js[^\n]*\n([\s\S]*?)^```$/gm)]
  .map((m) => m[1])
  .find((code) => code.includes('function resumeWithSince('));

/** The README's snippet, evaluated from its code block (undefined when the README has none). */
// eslint-disable-next-line no-new-func
export const resumeWithSince = snippetCode && new Function(`${snippetCode}\nreturn resumeWithSince;`)();

/**
 * A pusher-js client of `app` through `proxy`, with fast keep-alive (1 s +
 * 1 s), signing in as `user` when given (signed in-process by `sdk`),
 * authorising private channels (forged while `forge()` is true; after the
 * sign-in when `authAfterSignin`), and running the README snippet when
 * `snippet`. Connected (and signed in) when it resolves; disconnected when
 * the test ends.
 */
export async function recoveringClient(t, proxy, sdk, { app, user, snippet = false, forge = () => false, authAfterSignin = false }) {
  const pusher = new Pusher(app.key, {
    wsHost: '127.0.0.1',
    wsPort: proxy.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: 'mt1',
    disableStats: true,
    activityTimeout: 1000,
    pongTimeout: 1000,
    userAuthentication: {
      customHandler: ({ socketId }, cb) => cb(null, sdk.authenticateUser(socketId, user)),
    },
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => {
        const answer = () =>
          cb(null, forge() ? { auth: `${app.key}:${'0'.repeat(64)}` } : sdk.authorizeChannel(socketId, channelName));
        if (!authAfterSignin) return answer();
        waitFor(() => pusher.user.user_data, 5000, 10, 'sign-in before channel auth').then(answer, (e) => cb(e, null));
      },
    },
  });
  t.after(() => pusher.disconnect());
  if (snippet) resumeWithSince(pusher);
  await withTimeout(
    new Promise((resolve) => pusher.connection.bind('connected', resolve)),
    8000,
    'pusher-js connected',
  );
  if (user) {
    pusher.signin();
    await waitFor(() => pusher.user.user_data, 5000, 20, `sign-in of ${user.id}`);
  }
  return pusher;
}
