// A raw client of pusher-js's HTTP transports (xhr_streaming, xhr_polling),
// speaking what pusher-js speaks (src/core/http/http_socket.ts): POST receive
// requests under /pusher/app/{key}/{server}/{session}/, lines `o`, `a[...]`,
// `h`, `c[code,"reason"]`, and POST xhr_send with a JSON array of frames.
// The suites also drive the unmodified pusher-js; this is for what pusher-js
// hides (the lines themselves, polls, a client that vanishes).

import { HOST, PORT, DEFAULT_QUERY, withTimeout } from './helpers.mjs';

let counter = 0;

/** A session id as pusher-js makes one: `{0-999}/{8 base-32 chars}`. */
export function sessionPath() {
  counter += 1;
  const random = Math.random().toString(32).slice(2, 8).padEnd(6, '0');
  return `${Math.floor(Math.random() * 1000)}/${random}${(counter % 1024).toString(32).padStart(2, '0')}`;
}

/** Parses one line: {type, payload}; `a` lines give the decoded frames. */
export function parseLine(line) {
  const type = line[0];
  const rest = line.slice(1);
  if (type === 'a') return { type, frames: JSON.parse(rest).map((text) => JSON.parse(text)) };
  if (type === 'c') return { type, close: JSON.parse(rest) };
  return { type };
}

/**
 * One raw HTTP session. `base` defaults to the test server; `key` the app key.
 * stream(): opens xhr_streaming and collects its lines into `lines`.
 * poll(): one xhr poll, resolves with its parsed lines.
 * send(frames): xhr_send, resolves with the Response.
 */
export class XhrSession {
  constructor({ key = 'app-key', host = HOST, port = PORT, query = DEFAULT_QUERY, origin } = {}) {
    this.base = `http://${host}:${port}/pusher/app/${key}/${sessionPath()}`;
    this.query = query;
    this.origin = origin;
    this.lines = [];
    this.waiters = [];
    this.controller = new AbortController();
  }

  headers() {
    const headers = { 'content-type': 'application/json' };
    if (this.origin) headers.origin = this.origin;
    return headers;
  }

  /** Opens the streaming response; resolves with the Response once headers arrived. */
  async stream() {
    const res = await fetch(`${this.base}/xhr_streaming?${this.query}`, {
      method: 'POST',
      headers: this.headers(),
      signal: this.controller.signal,
    });
    this.response = res;
    (async () => {
      const decoder = new TextDecoder();
      let buffer = '';
      try {
        for await (const chunk of res.body) {
          buffer += decoder.decode(chunk, { stream: true });
          let at;
          while ((at = buffer.indexOf('\n')) >= 0) {
            this.push(parseLine(buffer.slice(0, at)));
            buffer = buffer.slice(at + 1);
          }
        }
      } catch {
        // aborted by close()
      }
      this.ended = true;
      this.wake();
    })();
    return res;
  }

  /** One poll; resolves with {status, lines} (lines parsed). */
  async poll(timeoutMs = 10000) {
    const res = await fetch(`${this.base}/xhr?${this.query}`, {
      method: 'POST',
      headers: this.headers(),
      signal: AbortSignal.any([this.controller.signal, AbortSignal.timeout(timeoutMs)]),
    });
    const text = await res.text();
    const lines = text.split('\n').filter(Boolean).map(parseLine);
    for (const line of lines) this.push(line);
    return { status: res.status, headers: res.headers, lines };
  }

  /** xhr_send with these frames (objects are JSON-encoded, strings sent as they are). */
  send(frames) {
    const body = JSON.stringify(frames.map((f) => (typeof f === 'string' ? f : JSON.stringify(f))));
    return fetch(`${this.base}/xhr_send`, { method: 'POST', headers: this.headers(), body });
  }

  push(line) {
    this.lines.push(line);
    this.wake();
  }

  wake() {
    for (const waiter of this.waiters.splice(0)) waiter();
  }

  /** Every frame received so far (from `a` lines), in order. */
  frames() {
    return this.lines.flatMap((line) => line.frames ?? []);
  }

  /** Waits until `fn(this)` is truthy (re-checked on every line); resolves with its value. */
  async until(fn, timeoutMs = 5000, what = 'condition') {
    return withTimeout(
      (async () => {
        for (;;) {
          const value = fn(this);
          if (value) return value;
          if (this.ended && !this.polling) throw new Error(`stream ended before ${what}`);
          await new Promise((resolve) => this.waiters.push(resolve));
        }
      })(),
      timeoutMs,
      what,
    );
  }

  /** Waits for a frame with this event (and channel, if given). */
  frame(event, channel, timeoutMs = 5000) {
    return this.until(
      (s) => s.frames().find((f) => f.event === event && (channel === undefined || f.channel === channel)),
      timeoutMs,
      `frame ${event}${channel ? ` on ${channel}` : ''}`,
    );
  }

  /** The socket_id from pusher:connection_established. */
  async socketId(timeoutMs = 5000) {
    const established = await this.frame('pusher:connection_established', undefined, timeoutMs);
    return JSON.parse(established.data).socket_id;
  }

  close() {
    this.controller.abort();
  }
}
