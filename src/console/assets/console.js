// The rusher console page: login, then a live view of one app.
// Plain ES module, no framework, no build step (see src/console/mod.rs).
// Everything from the server is written with textContent, never as HTML.

const $ = (id) => document.getElementById(id);
const SAMPLES = 600; // the sparkline: 10 minutes at one sample a second

const state = {
  appId: null,
  maxLog: 500,
  source: null,
  entries: [], // newest last, at most maxLog
  paused: false,
  samples: [],
  channels: [],
  selected: null, // the presence channel whose members are shown
  refreshTimer: null,
};

async function call(path, options = {}) {
  const response = await fetch(path, { credentials: 'same-origin', ...options });
  let body = {};
  try { body = await response.json(); } catch { /* an empty body */ }
  return { ok: response.ok, status: response.status, body };
}

const appPath = (rest) => `/console/api/apps/${encodeURIComponent(state.appId)}${rest}`;

function showLogin(message = '') {
  if (state.source) state.source.close();
  state.source = null;
  state.appId = null;
  $('console').hidden = true;
  $('who').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message;
  $('login-app').focus();
}

function start(session) {
  state.appId = session.app_id;
  state.maxLog = session.max_log_events || 500;
  state.entries = [];
  state.samples = [];
  $('app-id').textContent = state.appId;
  $('login').hidden = true;
  $('who').hidden = false;
  $('console').hidden = false;
  renderLog();
  refreshChannels();
  openLive();
}

function openLive() {
  const source = new EventSource(appPath('/live'));
  state.source = source;
  source.addEventListener('history', (e) => showHistory(JSON.parse(e.data)));
  source.addEventListener('log', (e) => addEntry(JSON.parse(e.data)));
  source.addEventListener('stats', (e) => showStats(JSON.parse(e.data)));
  source.addEventListener('error', async () => {
    // Reconnects by itself; an ended session goes back to the login.
    const session = await call('/console/api/session');
    if (!session.ok) showLogin('Your session ended: log in again.');
  });
}

// The server's samples of the last minutes (one per interval_ms), drawn as
// steps of one point a second before the live samples (one a second) follow.
function showHistory(history) {
  const repeat = Math.max(1, Math.round(history.interval_ms / 1000));
  state.samples = history.samples.flatMap(([, count]) => Array(repeat).fill(count)).slice(-SAMPLES);
  drawSparkline();
}

function showStats(stats) {
  $('connections').textContent = String(stats.connections);
  $('dropped').textContent = stats.dropped ? `${stats.dropped} log events dropped (the page read too slowly).` : '';
  state.samples.push(stats.connections);
  if (state.samples.length > SAMPLES) state.samples.shift();
  drawSparkline();
}

function drawSparkline() {
  const max = Math.max(1, ...state.samples);
  const offset = SAMPLES - state.samples.length;
  const points = state.samples.map((v, i) => `${offset + i},${(38 - (v / max) * 36).toFixed(1)}`);
  $('spark-line').setAttribute('points', points.join(' '));
}

// ---- channels and members ----

function scheduleRefresh() {
  if (state.refreshTimer) return;
  state.refreshTimer = setTimeout(() => {
    state.refreshTimer = null;
    refreshChannels();
  }, 200);
}

async function refreshChannels() {
  if (!state.appId) return;
  const answer = await call(appPath('/channels'));
  if (answer.status === 401) return showLogin('Your session ended: log in again.');
  if (!answer.ok) return;
  state.channels = answer.body.channels;
  renderChannels();
  if (state.selected) showMembers(state.selected);
}

function renderChannels() {
  const query = $('channel-search').value.trim().toLowerCase();
  const body = $('channel-list');
  body.replaceChildren();
  const shown = state.channels.filter((c) => c.name.toLowerCase().includes(query));
  for (const channel of shown) {
    const row = document.createElement('tr');
    row.dataset.channel = channel.name;
    const name = document.createElement('td');
    if (channel.name.startsWith('presence-')) {
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'link';
      button.textContent = channel.name;
      button.setAttribute('aria-label', `Show members of ${channel.name}`);
      button.addEventListener('click', () => showMembers(channel.name));
      name.append(button);
    } else {
      name.textContent = channel.name;
    }
    const subs = document.createElement('td');
    subs.className = 'subscriptions';
    subs.textContent = String(channel.subscription_count);
    const users = document.createElement('td');
    users.className = 'users';
    users.textContent = channel.name.startsWith('presence-') ? String(channel.user_count) : '–';
    row.append(name, subs, users);
    body.append(row);
  }
  $('channels-empty').hidden = shown.length > 0;
}

async function showMembers(channel) {
  state.selected = channel;
  $('members-title').textContent = `Presence members of ${channel}`;
  const answer = await call(appPath(`/channels/${encodeURIComponent(channel)}/members`));
  const list = $('members');
  list.replaceChildren();
  if (!answer.ok) {
    $('members-hint').textContent = answer.body.error || 'Could not list the members.';
    return;
  }
  $('members-hint').textContent = answer.body.users.length ? '' : 'Nobody is on this channel.';
  for (const user of answer.body.users) {
    const item = document.createElement('li');
    item.textContent = user.id;
    list.append(item);
  }
}

// ---- the log ----

const KIND_LABELS = {
  api_event: 'API event',
  client_event: 'client event',
  subscribed: 'subscribed',
  unsubscribed: 'unsubscribed',
  connected: 'connected',
  disconnected: 'disconnected',
  refused: 'refused',
  webhook_sent: 'webhook sent',
  webhook_failed: 'webhook failed',
};

function matches(entry) {
  const channel = $('filter-channel').value.trim();
  const event = $('filter-event').value.trim();
  return (!channel || (entry.channel || '').includes(channel)) && (!event || (entry.event || '').includes(event));
}

function row(entry) {
  const tr = document.createElement('tr');
  tr.dataset.kind = entry.kind;
  if (entry.channel) tr.dataset.channel = entry.channel;
  if (entry.event) tr.dataset.event = entry.event;
  if (entry.error) tr.className = 'error-row';
  const cells = [
    new Date(entry.time_ms).toLocaleTimeString(),
    KIND_LABELS[entry.kind] || entry.kind,
    entry.channel || '',
    entry.event || '',
    [entry.data, entry.detail, entry.socket_id && `socket ${entry.socket_id}`].filter(Boolean).join(' · '),
  ];
  for (const text of cells) {
    const td = document.createElement('td');
    td.textContent = text;
    tr.append(td);
  }
  if (entry.node) {
    // Several nodes: which one it happened on, in small text.
    const node = document.createElement('small');
    node.className = 'node';
    node.textContent = ` node ${entry.node.slice(0, 8)}`;
    node.title = `node ${entry.node}`;
    tr.firstElementChild.append(node);
    tr.dataset.node = entry.node;
  }
  return tr;
}

function addEntry(entry) {
  state.entries.push(entry);
  if (state.entries.length > state.maxLog) state.entries.shift();
  if (['subscribed', 'unsubscribed', 'connected', 'disconnected'].includes(entry.kind)) scheduleRefresh();
  if (state.paused) {
    $('log-status').textContent = `Paused: ${state.entries.length} events kept.`;
    return;
  }
  const body = $('log');
  if (matches(entry)) body.prepend(row(entry));
  while (body.children.length > state.maxLog) body.lastElementChild.remove();
}

function renderLog() {
  const body = $('log');
  body.replaceChildren(...state.entries.filter(matches).reverse().map(row));
  $('log-status').textContent = state.paused ? 'Paused.' : '';
}

// ---- wiring ----

function wire() {
  $('login-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    $('login-error').textContent = '';
    const answer = await call('/console/api/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ app_id: $('login-app').value, secret: $('login-secret').value }),
    });
    $('login-secret').value = '';
    if (!answer.ok) return showLogin(answer.body.error || `Login refused (${answer.status}).`);
    start(answer.body);
  });
  $('logout').addEventListener('click', async () => {
    await call('/console/api/logout', { method: 'POST' });
    showLogin();
  });
  $('channel-search').addEventListener('input', renderChannels);
  $('filter-channel').addEventListener('input', renderLog);
  $('filter-event').addEventListener('input', renderLog);
  $('pause').addEventListener('click', () => {
    state.paused = !state.paused;
    $('pause').setAttribute('aria-pressed', String(state.paused));
    $('pause').textContent = state.paused ? 'Resume' : 'Pause';
    renderLog();
  });
  $('clear').addEventListener('click', () => {
    state.entries = [];
    renderLog();
  });
  $('send-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const result = $('send-result');
    result.className = '';
    result.textContent = 'Sending…';
    const answer = await call(appPath('/events'), {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ channel: $('send-channel').value, event: $('send-event').value, data: $('send-data').value }),
    });
    if (answer.status === 401) return showLogin('Your session ended: log in again.');
    result.className = answer.ok ? 'ok' : 'error';
    result.textContent = answer.ok ? 'Sent.' : `Refused: ${answer.body.error || answer.status}`;
  });
}

wire();
const session = await call('/console/api/session');
if (session.ok) start(session.body);
else showLogin();
