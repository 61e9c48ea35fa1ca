// The per-app HTTP API rate limit: over `max_api_requests_per_second`
// requests get 429 with a JSON error, other apps are unaffected, and the
// next second is allowed again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import Pusher from 'pusher';
import { HOST, PORT, sleep } from './helpers.mjs';

const sdk = (appId, key, secret) =>
  new Pusher({ appId, key, secret, host: HOST, port: String(PORT), useTLS: false });

test('over the app API rate limit answers 429 with a message, then recovers', async () => {
  const throttled = sdk('throttled-app', 'throttled-key', 'throttled-secret');
  let refusal = null;
  // All at once, so they fall in one window however slow the machine is.
  const statuses = await Promise.all(
    Array.from({ length: 12 }, (_, i) =>
      throttled.trigger('rate-limited', 'ev', { i }).then(
        (res) => res.status,
        (error) => {
          refusal ??= error;
          return error.status;
        },
      ),
    ),
  );
  const ok = statuses.filter((s) => s === 200).length;
  const limited = statuses.filter((s) => s === 429).length;
  assert.ok(ok >= 5 && ok <= 10, `allowed ${ok} of 12: ${statuses}`);
  assert.ok(limited >= 2, `429s: ${statuses}`);
  assert.ok(refusal, 'a 429 was seen');
  assert.equal(ok + limited, 12, `only 200 or 429: ${statuses}`);
  assert.match(JSON.parse(refusal.body).error, /API requests per second/);

  // Another app is not limited by this one's budget.
  const other = sdk('app-id', 'app-key', 'app-secret');
  const res = await other.trigger('rate-free', 'ev', {});
  assert.equal(res.status, 200);

  await sleep(1100);
  const again = await throttled.trigger('rate-limited', 'ev', { again: true });
  assert.equal(again.status, 200);
});
