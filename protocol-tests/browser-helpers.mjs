// The browser harness: headless Chromium (Debian's /usr/bin/chromium, driven
// by playwright-core) running the real pusher-js WEB build
// (node_modules/pusher-js/dist/web/pusher.js, not the Node build), against
// the rusher that protocol-tests/run started (helpers.mjs HOST/PORT).
//
// Pieces:
//   launchBrowser()          one Chromium per suite file (before/after)
//   startPageServer(sdk)     the page's own origin (another port than rusher,
//                            so every XHR/EventSource to rusher is cross-origin
//                            and CORS is exercised), plus the app backend's
//                            POST /pusher/auth and /pusher/user-auth, signed
//                            with the official `pusher` Node SDK
//   withBrowserPage(...)     a new browser context + page per test, with the
//                            page-side recorder `window.rt`; on failure saves a
//                            screenshot, the page HTML and a diagnostics dump
//                            under protocol-tests/output/
//   wsBlockingProxy(t)       an HTTP proxy in front of rusher that passes plain
//                            (and streamed) HTTP but answers every WebSocket
//                            upgrade with 403, as a corporate proxy does
//
// Events are collected into the page (window.rt.log) and waited for from Node
// (page.waitForFunction), so nothing depends on timing between the two.

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { HOST, PORT } from './helpers.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));

/** Where Chromium is (Debian's package); RUSHER_CHROMIUM overrides it. */
export const CHROMIUM = process.env.RUSHER_CHROMIUM || '/usr/bin/chromium';

/** Failure artifacts (screenshot, HTML, diagnostics) go here; gitignored. */
export const OUTPUT_DIR = path.join(HERE, 'output');

/** The pusher-js web build the page loads. */
const PUSHER_WEB_JS = path.join(HERE, 'node_modules', 'pusher-js', 'dist', 'web', 'pusher.js');

// The machine has no internet: without the background-networking flags
// Chromium keeps dialing Google services and logs floods of refused connections.
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * Launch headless Chromium. playwright-core gives every launch a fresh
 * temporary --user-data-dir of its own (it refuses one in `args`) and removes
 * it on close. Returns the playwright Browser; close it in the suite's after().
 */
export async function launchBrowser() {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: protocol-tests/run installs Debian's chromium (apt-get install -y chromium)`);
  }
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30000 });
}

// ---------------------------------------------------------------------------
// Page server: the page's origin and the app backend's auth endpoints
// ---------------------------------------------------------------------------

/**
 * The page-side recorder, `window.rt`. Every record has a `seq` (its index in
 * `rt.log`) and a `source` (the name the test gave the client or EventSource);
 * `kind` is one of:
 *   state  {current, previous}        pusher-js connection state change
 *   error  {error}                    pusher-js connection error / EventSource error
 *   event  {channel, event, data}     any event on a subscribed channel (bind_global)
 *   user   {event, data}              an event to the signed-in user (sendToUser)
 *   open                              EventSource opened
 *   sse    {event, frame, lastEventId} an SSE event; frame = JSON.parse(e.data)
 * Every record is also appended to <pre id="log">, so a failure screenshot shows it.
 */
const PAGE_SCRIPT = String.raw`
(() => {
  const clients = {};
  const sources = {};
  const plain = (v) => {
    try { return v === undefined ? null : JSON.parse(JSON.stringify(v)); } catch (e) { return String(v); }
  };
  const rt = {
    log: [],
    record(source, kind, fields) {
      const r = Object.assign({ seq: rt.log.length, at: Date.now(), source, kind }, plain(fields || {}));
      rt.log.push(r);
      const pre = document.getElementById('log');
      if (pre) pre.textContent += JSON.stringify(r) + '\n';
      return r;
    },
    connect(name, key, options) {
      const p = new Pusher(key, options);
      clients[name] = p;
      p.connection.bind('state_change', (s) => rt.record(name, 'state', s));
      p.connection.bind('error', (e) => rt.record(name, 'error', { error: e }));
      p.user.bind_global((event, data) => rt.record(name, 'user', { event, data }));
      return true;
    },
    subscribe(name, channel) {
      clients[name].subscribe(channel).bind_global((event, data) => rt.record(name, 'event', { channel, event, data }));
      return true;
    },
    trigger(name, channel, event, data) {
      return clients[name].channel(channel).trigger(event, data);
    },
    signin(name) {
      clients[name].signin();
      return true;
    },
    userData(name) {
      return plain(clients[name].user.user_data);
    },
    state(name) {
      return clients[name].connection.state;
    },
    socketId(name) {
      return clients[name].connection.socket_id;
    },
    transport(name) {
      const c = clients[name].connection.connection;
      return c && c.transport ? c.transport.name : null;
    },
    memberIds(name, channel) {
      const ids = [];
      clients[name].channel(channel).members.each((m) => ids.push(m.id));
      return ids.sort();
    },
    eventSource(name, url, eventNames) {
      const es = new EventSource(url);
      sources[name] = es;
      es.onopen = () => rt.record(name, 'open', {});
      es.onerror = () => rt.record(name, 'error', { readyState: es.readyState });
      for (const ev of eventNames) {
        es.addEventListener(ev, (e) => {
          let frame;
          try { frame = JSON.parse(e.data); } catch (err) { frame = { unparsable: e.data }; }
          rt.record(name, 'sse', { event: e.type, frame, lastEventId: e.lastEventId });
        });
      }
      return true;
    },
    closeAll() {
      for (const p of Object.values(clients)) p.disconnect();
      for (const es of Object.values(sources)) es.close();
      return true;
    },
  };
  window.rt = rt;
})();
`;

const PAGE_HTML = `<!doctype html>
<html><head><meta charset="utf-8"><title>rusher browser harness</title>
<script src="/pusher.js"></script>
<script src="/harness.js"></script>
</head><body><h1>rusher browser harness</h1><pre id="log"></pre></body></html>
`;

/** Read a form-encoded (what pusher-js's ajax auth sends) or JSON request body. */
function readParams(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > 65536) {
        reject(new Error('auth request body over 64 KiB'));
        req.destroy();
      } else chunks.push(c);
    });
    req.on('error', reject);
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      if ((req.headers['content-type'] || '').includes('json')) {
        try {
          resolve(JSON.parse(text));
        } catch (e) {
          reject(e);
        }
      } else resolve(Object.fromEntries(new URLSearchParams(text)));
    });
  });
}

/**
 * Start the page server on 127.0.0.1:{free port}:
 *   GET /              the harness page (pusher-js web build + window.rt)
 *   GET /pusher.js     node_modules/pusher-js/dist/web/pusher.js
 *   POST /pusher/auth  {socket_id, channel_name[, user_id, user_info]} →
 *                      sdk.authorizeChannel(socket_id, channel_name[, presence data])
 *                      presence data = {user_id: user_id or `browser-{socket_id}`,
 *                      user_info: JSON.parse(user_info) or {}}
 *   POST /pusher/user-auth {socket_id, user_id} →
 *                      sdk.authenticateUser(socket_id, {id: user_id or `browser-{socket_id}`})
 * (extra fields come from pusher-js's channelAuthorization/userAuthentication `params`).
 * `sdk` is the official Node SDK of the app the page connects to.
 * Returns {origin, url, authCalls: [{path, params}], close()}.
 */
export async function startPageServer(sdk) {
  const authCalls = [];
  const pusherJs = fs.readFileSync(PUSHER_WEB_JS);
  const send = (res, status, type, body) => {
    res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
    res.end(body);
  };
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://page');
    try {
      if (req.method === 'GET' && url.pathname === '/') return send(res, 200, 'text/html; charset=utf-8', PAGE_HTML);
      if (req.method === 'GET' && url.pathname === '/pusher.js') return send(res, 200, 'text/javascript', pusherJs);
      if (req.method === 'GET' && url.pathname === '/harness.js') return send(res, 200, 'text/javascript', PAGE_SCRIPT);
      if (req.method === 'POST' && (url.pathname === '/pusher/auth' || url.pathname === '/pusher/user-auth')) {
        const params = await readParams(req);
        authCalls.push({ path: url.pathname, params });
        const socketId = params.socket_id;
        const userId = params.user_id || `browser-${socketId}`;
        let body;
        if (url.pathname === '/pusher/user-auth') {
          body = sdk.authenticateUser(socketId, { id: userId });
        } else if (String(params.channel_name).startsWith('presence-')) {
          const userInfo = params.user_info ? JSON.parse(params.user_info) : {};
          body = sdk.authorizeChannel(socketId, params.channel_name, { user_id: userId, user_info: userInfo });
        } else {
          body = sdk.authorizeChannel(socketId, params.channel_name);
        }
        return send(res, 200, 'application/json', JSON.stringify(body));
      }
      return send(res, 404, 'text/plain', 'not found');
    } catch (e) {
      // The SDK throws on invalid socket ids / channel names: that is a 403 for pusher-js.
      return send(res, 403, 'text/plain', String(e && e.message));
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const origin = `http://127.0.0.1:${server.address().port}`;
  return {
    origin,
    url: `${origin}/`,
    authCalls,
    async close() {
      server.closeAllConnections();
      await new Promise((r) => server.close(() => r()));
    },
  };
}

// ---------------------------------------------------------------------------
// One page per test
// ---------------------------------------------------------------------------

/**
 * A page of the harness in a fresh browser context. Methods:
 *   connect(name, key, options, timeoutMs)  new Pusher(key, {rusher defaults…, ...options})
 *                     in the page, resolves when its state is `connected`
 *   waitFor(filter, timeoutMs, what)  the first record of rt.log with seq ≥ filter.since
 *                     (default 0) whose fields equal the other fields of `filter`
 *   call(fn, ...args) page.evaluate of rt[fn](...args)
 *   diagnostics()     the recorder log, network log, console and page errors, as text
 *   page, context     playwright objects
 */
class BrowserPage {
  constructor(context, page, pageServer) {
    this.context = context;
    this.page = page;
    this.pageServer = pageServer;
    // "METHOD url -> status" of every request the page made; the failed ones again as {method, url}.
    this.network = [];
    this.failed = [];
    this.console = [];
    page.on('console', (m) => this.console.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => this.console.push(`pageerror: ${e.message}`));
    page.on('response', (r) => this.network.push(`${r.request().method()} ${r.url()} -> ${r.status()}`));
    page.on('requestfailed', (r) => {
      this.network.push(`${r.method()} ${r.url()} -> failed: ${r.failure()?.errorText}`);
      this.failed.push({ method: r.method(), url: r.url() });
    });
  }

  /**
   * The pusher-js options pointing at rusher (ws and http transports), with
   * the page server's auth endpoints; `options` overrides any of them.
   */
  pusherOptions(options = {}) {
    return {
      wsHost: HOST,
      wsPort: PORT,
      wssPort: PORT,
      httpHost: HOST,
      httpPort: PORT,
      forceTLS: false,
      cluster: 'mt1',
      disableStats: true,
      channelAuthorization: { endpoint: `${this.pageServer.origin}/pusher/auth`, transport: 'ajax' },
      userAuthentication: { endpoint: `${this.pageServer.origin}/pusher/user-auth`, transport: 'ajax' },
      ...options,
    };
  }

  call(fn, ...args) {
    return this.page.evaluate(([f, a]) => window.rt[f](...a), [fn, args]);
  }

  async connect(name, key, options = {}, timeoutMs = 10000) {
    await this.call('connect', name, key, this.pusherOptions(options));
    await this.waitFor({ source: name, kind: 'state', current: 'connected' }, timeoutMs, `pusher-js "${name}" connected`);
  }

  async waitFor(filter, timeoutMs = 5000, what = JSON.stringify(filter)) {
    const { since = 0, ...fields } = filter;
    try {
      const handle = await this.page.waitForFunction(
        // Every field of the filter equals the record's (shallow).
        ([f, s]) => window.rt.log.slice(s).find((r) => Object.keys(f).every((k) => r[k] === f[k])) || false,
        [fields, since],
        { timeout: timeoutMs, polling: 50 },
      );
      return await handle.jsonValue();
    } catch (e) {
      if (!/Timeout/i.test(String(e && e.message))) throw e;
      throw new Error(`no ${what} within ${timeoutMs} ms\n${await this.diagnostics()}`);
    }
  }

  /** The index the next record will get (for waitFor({since})). */
  async mark() {
    return this.page.evaluate(() => window.rt.log.length);
  }

  async diagnostics() {
    let log = [];
    try {
      log = await this.page.evaluate(() => window.rt.log);
    } catch {
      /* page gone */
    }
    const tail = (xs, n) => (xs.length > n ? [`… ${xs.length - n} earlier`, ...xs.slice(-n)] : xs);
    // Everything not to the page server goes to rusher (or to a proxy in front of it).
    const isRusher = (url) => /^https?:/.test(url) && !url.startsWith(this.pageServer.origin);
    const toRusher = this.network.filter((l) => isRusher(l.split(' ')[1]));
    return [
      `recorded in the page (${log.length}):`,
      ...tail(log.map((r) => `  ${JSON.stringify(r)}`), 40),
      `HTTP requests to rusher or its proxy (${toRusher.length}):`,
      ...tail([...new Set(toRusher)].map((l) => `  ${l}`), 20),
      `console (${this.console.length}):`,
      ...tail(this.console.map((l) => `  ${l}`), 20),
      ...(await this.replayFailed(isRusher)),
    ].join('\n');
  }

  /**
   * Chromium hides the status of a response that fails CORS (a 404 without
   * Access-Control-Allow-Origin is "net::ERR_FAILED"): ask rusher again from
   * Node, with the page's Origin, for up to 4 distinct failed paths, and
   * report the status and CORS header it answers (headers only; aborted after).
   */
  async replayFailed(isRusher) {
    const seen = new Map();
    for (const { method, url } of this.failed) {
      if (!isRusher(url)) continue;
      const u = new URL(url);
      const key = `${method} ${u.pathname.replace(/\/\d+\/[a-z0-9]+\/(xhr\w*)$/, '/{server}/{session}/$1')}`;
      if (!seen.has(key) && seen.size < 4) seen.set(key, { method, url });
    }
    const lines = [];
    for (const [key, { method, url }] of seen) {
      const abort = new AbortController();
      const timer = setTimeout(() => abort.abort(), 2000);
      try {
        const res = await fetch(url, { method, headers: { origin: this.pageServer.origin }, signal: abort.signal });
        lines.push(`  ${key} -> ${res.status} (access-control-allow-origin: ${res.headers.get('access-control-allow-origin')})`);
      } catch (e) {
        lines.push(`  ${key} -> ${e.name === 'AbortError' ? 'no answer within 2 s' : e.message}`);
      } finally {
        clearTimeout(timer);
        abort.abort();
      }
    }
    return lines.length ? ['failed requests to rusher, asked again from Node:', ...lines] : [];
  }

  /** Save screenshot, HTML and diagnostics under OUTPUT_DIR; returns the file prefix. */
  async saveArtifacts(name) {
    fs.mkdirSync(OUTPUT_DIR, { recursive: true });
    const prefix = path.join(OUTPUT_DIR, name.replace(/[^A-Za-z0-9_-]+/g, '_').slice(0, 100));
    await this.page.screenshot({ path: `${prefix}.png`, fullPage: true, timeout: 5000 }).catch(() => {});
    await this.page
      .content()
      .then((html) => fs.writeFileSync(`${prefix}.html`, html))
      .catch(() => {});
    fs.writeFileSync(`${prefix}.txt`, await this.diagnostics());
    return prefix;
  }
}

/**
 * Run `fn(browserPage)` on a fresh context + harness page of `browser`; close
 * the context afterwards. On failure the screenshot, HTML and diagnostics are
 * saved (BrowserPage.saveArtifacts, named after the test) and the error says where.
 */
export async function withBrowserPage(t, browser, pageServer, fn) {
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    const bp = new BrowserPage(context, page, pageServer);
    await page.goto(pageServer.url);
    await page.waitForFunction(() => typeof window.Pusher === 'function' && typeof window.rt === 'object', null, {
      timeout: 5000,
    });
    try {
      return await fn(bp);
    } catch (e) {
      const prefix = await bp.saveArtifacts(t.name).catch(() => null);
      if (prefix && e instanceof Error) e.message += `\n(artifacts: ${prefix}.{png,html,txt})`;
      throw e;
    }
  } finally {
    await context.close().catch(() => {});
  }
}

// ---------------------------------------------------------------------------
// A proxy that lets HTTP through and refuses WebSockets
// ---------------------------------------------------------------------------

// Hop-by-hop headers (RFC 9110 §7.6.1): the proxy's own connections carry their own.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer']);
const endToEnd = (headers) => Object.fromEntries(Object.entries(headers).filter(([k]) => !HOP_BY_HOP.has(k.toLowerCase())));

/**
 * An HTTP proxy on 127.0.0.1:{free port} in front of `upstream` (default the
 * test server), like a corporate proxy that does not allow WebSockets:
 * every request with `Upgrade: websocket` is answered `403 Forbidden` and
 * closed; any other request is forwarded and its response streamed back as it
 * arrives (xhr_streaming / SSE must not be buffered). Closed when the test ends.
 * Returns {port, upgradesRefused, forwarded} (counters).
 */
export async function wsBlockingProxy(t, upstream = { host: HOST, port: PORT }) {
  const stats = { port: 0, upgradesRefused: 0, forwarded: 0 };
  const server = http.createServer((req, res) => {
    stats.forwarded += 1;
    const up = http.request(
      {
        host: upstream.host,
        port: upstream.port,
        method: req.method,
        path: req.url,
        headers: endToEnd(req.headers),
        agent: false,
      },
      (ur) => {
        res.writeHead(ur.statusCode, ur.statusMessage, endToEnd(ur.headers));
        res.flushHeaders();
        ur.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    res.on('close', () => up.destroy());
    req.pipe(up);
  });
  server.on('upgrade', (req, socket) => {
    stats.upgradesRefused += 1;
    const body = 'WebSocket upgrades are not allowed by this proxy\n';
    socket.end(
      `HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    );
  });
  // pusher-js also tries wss:// on the same port: TLS bytes are not HTTP.
  server.on('clientError', (err, socket) => socket.destroy());
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  stats.port = server.address().port;
  t.after(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(() => r()));
  });
  return stats;
}
