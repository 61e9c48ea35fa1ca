// Two apps on one server share nothing: same channel name, separate worlds.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { APPS, collect, newPusherClient, newServerSdk, sleep, subscribeAndWait, uniqueChannel } from './helpers.mjs';

const T = { timeout: 30000 };
const mainSdk = newServerSdk(APPS.main.appId, APPS.main.key, APPS.main.secret);
const otherSdk = newServerSdk(APPS.other.appId, APPS.other.key, APPS.other.secret);

async function pair(t, name) {
  const mainClient = await newPusherClient(APPS.main.key);
  t.after(() => mainClient.disconnect());
  const otherClient = await newPusherClient(APPS.other.key);
  t.after(() => otherClient.disconnect());
  const mainGot = collect(await subscribeAndWait(mainClient, name), 'ev');
  const otherGot = collect(await subscribeAndWait(otherClient, name), 'ev');
  return { mainClient, otherClient, mainGot, otherGot };
}

test('an event triggered for other-app reaches only the other-app subscriber', T, async (t) => {
  const name = uniqueChannel('iso');
  const { mainGot, otherGot } = await pair(t, name);
  await otherSdk.trigger(name, 'ev', { app: 'other', n: 1 });
  assert.deepEqual(await otherGot.next(), { app: 'other', n: 1 });
  // barrier: a later event for app-id must be the first thing the app-id client sees
  await mainSdk.trigger(name, 'ev', { app: 'main', n: 2 });
  assert.deepEqual(await mainGot.next(), { app: 'main', n: 2 });
  await sleep(200);
  assert.deepEqual(mainGot.events, [{ app: 'main', n: 2 }], 'app-id client never saw the other-app event');
  assert.deepEqual(otherGot.events, [{ app: 'other', n: 1 }], 'other-app client never saw the app-id event');
});

test('an event triggered for app-id reaches only the app-id subscriber', T, async (t) => {
  const name = uniqueChannel('iso');
  const { mainGot, otherGot } = await pair(t, name);
  await mainSdk.trigger(name, 'ev', { to: 'main' });
  assert.deepEqual(await mainGot.next(), { to: 'main' });
  await otherSdk.trigger(name, 'ev', { to: 'other' });
  assert.deepEqual(await otherGot.next(), { to: 'other' });
  await sleep(200);
  assert.deepEqual(mainGot.events, [{ to: 'main' }]);
  assert.deepEqual(otherGot.events, [{ to: 'other' }]);
});

test('each app lists only its own channels and counts only its own subscribers', T, async (t) => {
  const shared = uniqueChannel('isoshared');
  const mainOnly = uniqueChannel('isomain');
  const otherOnly = uniqueChannel('isoother');
  const { mainClient, otherClient } = await pair(t, shared);
  await subscribeAndWait(mainClient, mainOnly);
  await subscribeAndWait(otherClient, otherOnly);

  const mainList = (await (await mainSdk.get({ path: '/channels', params: { filter_by_prefix: 'iso' } })).json()).channels;
  const otherList = (await (await otherSdk.get({ path: '/channels', params: { filter_by_prefix: 'iso' } })).json()).channels;
  assert.ok(shared in mainList && mainOnly in mainList, JSON.stringify(mainList));
  assert.ok(!(otherOnly in mainList), `app-id lists other-app's channel: ${JSON.stringify(mainList)}`);
  assert.ok(shared in otherList && otherOnly in otherList, JSON.stringify(otherList));
  assert.ok(!(mainOnly in otherList), `other-app lists app-id's channel: ${JSON.stringify(otherList)}`);

  const info = async (sdk, name) =>
    (await sdk.get({ path: `/channels/${name}`, params: { info: 'subscription_count' } })).json();
  assert.deepEqual(await info(mainSdk, shared), { occupied: true, subscription_count: 1 });
  assert.deepEqual(await info(otherSdk, shared), { occupied: true, subscription_count: 1 });
  assert.equal((await info(mainSdk, otherOnly)).occupied, false);
  assert.equal((await info(otherSdk, mainOnly)).occupied, false);
});

test('socket_id exclusion is per app: another app cannot exclude an app-id socket', T, async (t) => {
  const name = uniqueChannel('isoexcl');
  const { mainClient, mainGot } = await pair(t, name);
  // other-app triggers with the app-id socket's id: nothing reaches app-id at all, and the
  // exclusion must not leak into app-id's next event either.
  await otherSdk.trigger(name, 'ev', { from: 'other' }, { socket_id: mainClient.connection.socket_id });
  await mainSdk.trigger(name, 'ev', { from: 'main' });
  assert.deepEqual(await mainGot.next(), { from: 'main' });
  await sleep(200);
  assert.deepEqual(mainGot.events, [{ from: 'main' }]);
});
