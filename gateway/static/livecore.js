// LiveCore browser client: a small, dependency-free ES module.
//
//   import { LiveCore, LiveCoreHttp } from '/static/livecore.js';
//   const client = new LiveCore({ show: 'show_1', role: 'viewer', token });
//   client.on('chat.message', (ev) => render(ev.message));
//   client.connect();
//   await client.request('chat.send', { text: 'hi' });
//
// The wire contract is spec/PROTOCOL.md; docs/client.md documents this API.

/** Close codes after which reconnecting cannot help (bad token, wrong role, unknown show). */
export const FATAL_CLOSE_CODES = new Set([4401, 4403, 4404]);

/** Close codes that mean "come back later": reconnect, but not in a hurry. */
const SLOW_RETRY_CLOSE_CODES = new Set([1013, 4429]);
const SLOW_RETRY_MIN_MS = 3000;

export const DEFAULT_BACKOFF = Object.freeze({ baseMs: 500, factor: 2, maxMs: 15000 });

/** An error with a stable protocol `code` (and, from HTTP, a `status`). */
export class LiveCoreError extends Error {
  constructor(code, message, extra = {}) {
    super(message || code);
    this.name = 'LiveCoreError';
    this.code = code;
    this.status = extra.status ?? null;
    this.retryAfterMs = extra.retryAfterMs ?? null;
    this.details = extra.details ?? null;
  }
}

/**
 * Delay before reconnect attempt number `attempt` (0-based): exponential with
 * "equal jitter", i.e. uniformly in [ceiling/2, ceiling], so a crowd of clients
 * dropped together by a restarting node does not come back in lockstep.
 */
export function backoffDelay(attempt, options = DEFAULT_BACKOFF, random = Math.random) {
  const { baseMs, factor, maxMs } = { ...DEFAULT_BACKOFF, ...options };
  const ceiling = Math.min(maxMs, baseMs * factor ** Math.max(0, attempt));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/**
 * Estimates the server clock from `server_time` samples.
 *
 * A sample `server_time - local receive time` underestimates the true offset
 * by the one-way delay of the frame, so the largest recent sample is the best
 * estimate.
 */
export class ServerClock {
  constructor(windowSize = 8) {
    this.windowSize = windowSize;
    this.samples = [];
    this.offsetMs = 0;
  }

  sample(serverTime, localTime = Date.now()) {
    if (!Number.isFinite(serverTime)) return;
    this.samples.push(serverTime - localTime);
    if (this.samples.length > this.windowSize) this.samples.shift();
    this.offsetMs = Math.max(...this.samples);
  }

  reset() {
    this.samples = [];
  }

  /** Current server time in epoch milliseconds. */
  now() {
    return Date.now() + this.offsetMs;
  }
}

/** RFC 4122 v4 id; works outside secure contexts too (no crypto.randomUUID there). */
export function uuid() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') {
    try {
      return c.randomUUID();
    } catch {
      /* insecure context: fall through */
    }
  }
  const b = c.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// ---------------------------------------------------------------- money

const digitCache = new Map();
const formatterCache = new Map();

/** Minor-unit exponent of an ISO 4217 currency (USD 2, JPY 0, KWD 3). */
export function currencyDigits(currency) {
  if (!digitCache.has(currency)) {
    let digits = 2;
    try {
      digits = new Intl.NumberFormat(undefined, { style: 'currency', currency })
        .resolvedOptions().maximumFractionDigits;
    } catch {
      /* unknown currency code: assume cents */
    }
    digitCache.set(currency, digits);
  }
  return digitCache.get(currency);
}

/** Formats integer minor units, e.g. formatMoney(1999, 'USD') → "$19.99", (1500, 'JPY') → "¥1,500". */
export function formatMoney(minorUnits, currency, locale = undefined) {
  if (!Number.isFinite(minorUnits)) return '';
  const value = minorUnits / 10 ** currencyDigits(currency);
  const key = `${locale || ''}|${currency}`;
  if (!formatterCache.has(key)) {
    let fmt;
    try {
      fmt = new Intl.NumberFormat(locale, { style: 'currency', currency });
    } catch {
      fmt = { format: (v) => `${v.toFixed(2)} ${currency || ''}`.trim() };
    }
    formatterCache.set(key, fmt);
  }
  return formatterCache.get(key).format(value);
}

/** "19.99" (major units) → 1999 for USD, "1500" → 1500 for JPY. NaN if not a number. */
export function toMinorUnits(major, currency) {
  const n = typeof major === 'number' ? major : Number(String(major).trim().replace(',', '.'));
  if (!Number.isFinite(n)) return NaN;
  return Math.round(n * 10 ** currencyDigits(currency));
}

/** 1999 → "19.99" for USD (for prefilling inputs; not localised). */
export function toMajorString(minorUnits, currency) {
  const digits = currencyDigits(currency);
  return (minorUnits / 10 ** digits).toFixed(digits);
}

// ---------------------------------------------------------------- socket client

function wsUrl(baseUrl, role, show) {
  const url = new URL(`/ws/${encodeURIComponent(role)}/${encodeURIComponent(show)}`, baseUrl);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.toString();
}

/**
 * One logical connection to a show: connects, says hello, reconnects with
 * backoff and `resume_from`, unpacks batches, drops replayed duplicates and
 * matches replies to requests.
 *
 * Emits every server event by its `type`, plus:
 *   'connection' {state, code?, reason?, delayMs?, attempt?}
 *       state: 'connecting' | 'live' | 'reconnecting' | 'closed'
 *   'fatal'      {code, reason}   closed for good (4401/4403/4404)
 *   'error'      LiveCoreError    an `error` frame not tied to a request
 *   '*'          every server event (after batch unpacking)
 */
export class LiveCore {
  constructor({
    show,
    role = 'viewer',
    token = null,
    baseUrl = globalThis.location ? globalThis.location.origin : undefined,
    batch = true,
    backoff = DEFAULT_BACKOFF,
    requestTimeoutMs = 10000,
    welcomeTimeoutMs = 10000,
    heartbeatMs = 25000,
    WebSocketImpl = globalThis.WebSocket,
  } = {}) {
    if (!show) throw new TypeError('LiveCore: `show` is required');
    this.show = show;
    this.role = role;
    this.token = token;
    this.baseUrl = baseUrl;
    this.batch = batch;
    this.backoff = backoff;
    this.requestTimeoutMs = requestTimeoutMs;
    this.welcomeTimeoutMs = welcomeTimeoutMs;
    this.heartbeatMs = heartbeatMs;
    this.WebSocketImpl = WebSocketImpl;

    this.clock = new ServerClock();
    this.state = 'idle';
    this.lastSeq = null; // last broadcast seq applied; sent as resume_from
    this.welcome = null; // the latest welcome frame
    this.user = null;
    this.sessionId = null;

    this._listeners = new Map();
    this._pending = new Map();
    this._nextId = 0;
    this._idPrefix = `r${Math.random().toString(36).slice(2, 7)}-`;
    this._ws = null;
    this._attempt = 0;
    this._everWelcomed = false;
    this._stopped = false;
    this._retryTimer = null;
    this._welcomeTimer = null;
    this._heartbeatTimer = null;
    this._lastFrameAt = 0;
    this._onOnline = () => {
      if (this.state === 'reconnecting' && this._retryTimer) {
        clearTimeout(this._retryTimer);
        this._retryTimer = null;
        this._open();
      }
    };
  }

  // -- subscription

  /** Subscribe to an event type ('*' for all). Returns an unsubscribe function. */
  on(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    this._listeners.get(type)?.delete(fn);
  }

  _emit(type, payload) {
    for (const key of [type, '*']) {
      if (key === '*' && !isServerEvent(type)) continue;
      for (const fn of [...(this._listeners.get(key) || [])]) {
        try {
          fn(payload);
        } catch (err) {
          console.error(`LiveCore listener for ${type} failed`, err);
        }
      }
    }
  }

  // -- lifecycle

  connect() {
    this._stopped = false;
    if (this._ws) return this;
    globalThis.addEventListener?.('online', this._onOnline);
    this._open();
    return this;
  }

  /** Close for good (no reconnect). */
  close(code = 1000, reason = 'client closing') {
    this._stopped = true;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    globalThis.removeEventListener?.('online', this._onOnline);
    const ws = this._ws;
    this._teardown(new LiveCoreError('disconnected', 'connection closed'));
    if (ws) {
      try {
        ws.close(code, reason);
      } catch {
        /* already closing */
      }
    }
    this._setState('closed', { code, reason });
  }

  /** Use a new token from the next (re)connect on. */
  setToken(token) {
    this.token = token;
  }

  /** Drop the current socket and reconnect now (keeps resume_from). */
  reconnect() {
    if (this._stopped) return;
    const ws = this._ws;
    this._teardown(new LiveCoreError('disconnected', 'reconnecting'));
    if (ws) {
      try {
        ws.close(4000, 'client reconnecting');
      } catch {
        /* ignore */
      }
    }
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._open();
  }

  get connected() {
    return this.state === 'live';
  }

  _setState(state, extra = {}) {
    this.state = state;
    this._emit('connection', { state, ...extra });
  }

  _open() {
    this._setState(this._everWelcomed ? 'reconnecting' : 'connecting', { attempt: this._attempt });
    let ws;
    try {
      ws = new this.WebSocketImpl(wsUrl(this.baseUrl, this.role, this.show));
    } catch (err) {
      this._scheduleReconnect(1006, String(err));
      return;
    }
    this._ws = ws;
    ws.onopen = () => {
      if (this._ws !== ws) return;
      const hello = { type: 'hello', token: this.token || null, resume_from: this.lastSeq };
      if (this.batch === false) hello.batch = false;
      ws.send(JSON.stringify(hello));
      this._welcomeTimer = setTimeout(() => {
        if (this._ws === ws && this.state !== 'live') ws.close(4000, 'no welcome');
      }, this.welcomeTimeoutMs);
    };
    ws.onmessage = (e) => {
      if (this._ws !== ws) return;
      this._lastFrameAt = Date.now();
      let frame;
      try {
        frame = JSON.parse(e.data);
      } catch {
        return; // not JSON: ignore
      }
      this._dispatch(frame);
    };
    ws.onclose = (e) => {
      if (this._ws !== ws) return;
      this._teardown(new LiveCoreError('disconnected', 'connection lost'));
      if (this._stopped) return;
      if (FATAL_CLOSE_CODES.has(e.code)) {
        this._stopped = true;
        this._setState('closed', { code: e.code, reason: e.reason });
        this._emit('fatal', { code: e.code, reason: e.reason });
        return;
      }
      this._scheduleReconnect(e.code, e.reason);
    };
  }

  _teardown(err) {
    clearTimeout(this._welcomeTimer);
    clearInterval(this._heartbeatTimer);
    this._welcomeTimer = null;
    this._heartbeatTimer = null;
    if (this._ws) {
      this._ws.onopen = this._ws.onmessage = this._ws.onclose = null;
    }
    this._ws = null;
    for (const { reject, timer } of this._pending.values()) {
      clearTimeout(timer);
      reject(err);
    }
    this._pending.clear();
  }

  _scheduleReconnect(code, reason) {
    let delayMs = backoffDelay(this._attempt, this.backoff);
    if (SLOW_RETRY_CLOSE_CODES.has(code)) delayMs = Math.max(delayMs, SLOW_RETRY_MIN_MS);
    this._attempt += 1;
    this._setState('reconnecting', { code, reason, delayMs, attempt: this._attempt });
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      if (!this._stopped) this._open();
    }, delayMs);
  }

  // -- incoming frames

  _dispatch(frame) {
    if (!frame || typeof frame !== 'object' || Array.isArray(frame)) return;
    const { type } = frame;
    if (type === 'batch') {
      for (const event of Array.isArray(frame.events) ? frame.events : []) this._dispatch(event);
      return;
    }
    if (type === 'welcome') {
      this._onWelcome(frame);
      return;
    }
    if (frame.re !== undefined && frame.re !== null && this._pending.has(frame.re)) {
      const { resolve, reject, timer } = this._pending.get(frame.re);
      this._pending.delete(frame.re);
      clearTimeout(timer);
      if (Number.isFinite(frame.server_time)) this.clock.sample(frame.server_time);
      if (type === 'error') reject(errorFromFrame(frame));
      else resolve(frame);
      return;
    }
    if (type === 'error') {
      this._emit('error', errorFromFrame(frame));
      return;
    }
    if (typeof frame.seq === 'number') {
      // Replays after a resume can overlap what we already applied.
      if (this.lastSeq !== null && frame.seq <= this.lastSeq) return;
      this.lastSeq = frame.seq;
    }
    if (type === 'deal.tick' && Number.isFinite(frame.server_time)) {
      this.clock.sample(frame.server_time);
    }
    if (typeof type === 'string') this._emit(type, frame);
  }

  _onWelcome(frame) {
    clearTimeout(this._welcomeTimer);
    this._welcomeTimer = null;
    this.clock.reset();
    this.clock.sample(frame.server_time);
    const resumed = this.lastSeq !== null;
    // Without recovery the snapshot is the truth and the seq restarts there
    // (this also copes with a server whose history was reset).
    if ((!frame.recovered || !resumed) && typeof frame.seq === 'number') this.lastSeq = frame.seq;
    this.welcome = frame;
    this.user = frame.user || null;
    this.sessionId = frame.session_id || null;
    this._attempt = 0;
    this._everWelcomed = true;
    this._startHeartbeat();
    this._setState('live');
    this._emit('welcome', { ...frame, resumed });
  }

  // Any frame proves the socket is alive. After `heartbeatMs` of silence we
  // ping; after twice that with no frame at all the socket is half-open.
  _startHeartbeat() {
    clearInterval(this._heartbeatTimer);
    if (!this.heartbeatMs) return;
    this._heartbeatTimer = setInterval(() => {
      const idle = Date.now() - this._lastFrameAt;
      if (idle >= 2 * this.heartbeatMs) this.reconnect();
      else if (idle >= this.heartbeatMs) this.request('ping').catch(() => {});
    }, this.heartbeatMs);
  }

  // -- outgoing frames

  /** Send a command and wait for its `ack` (resolves with the ack frame) or `error` (rejects). */
  request(type, fields = {}, { timeoutMs = this.requestTimeoutMs } = {}) {
    if (!this._ws || this.state !== 'live') {
      return Promise.reject(new LiveCoreError('not_connected', 'not connected'));
    }
    this._nextId += 1;
    const id = `${this._idPrefix}${this._nextId}`;
    const ws = this._ws;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new LiveCoreError('timeout', `no reply to ${type}`));
      }, timeoutMs);
      this._pending.set(id, { resolve, reject, timer });
      try {
        ws.send(JSON.stringify({ ...fields, type, id }));
      } catch (err) {
        clearTimeout(timer);
        this._pending.delete(id);
        reject(new LiveCoreError('not_connected', String(err)));
      }
    });
  }

  /** Fire-and-forget command (no id, no reply expected). Returns false if not connected. */
  send(type, fields = {}) {
    if (!this._ws || this.state !== 'live') return false;
    this._ws.send(JSON.stringify({ ...fields, type }));
    return true;
  }
}

const CLIENT_EVENTS = new Set(['connection', 'fatal', 'error']);
function isServerEvent(type) {
  return !CLIENT_EVENTS.has(type);
}

function errorFromFrame(frame) {
  return new LiveCoreError(frame.code || 'error', frame.message, {
    retryAfterMs: frame.retry_after_ms,
    details: frame,
  });
}

// ---------------------------------------------------------------- HTTP helpers

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Thin wrapper over the REST API. Every method resolves with the parsed JSON
 * body (or null for 204) and rejects with a LiveCoreError carrying the
 * server's `error.code`, the HTTP `status` and `retryAfterMs`.
 * Network failures reject with code 'network'.
 */
export class LiveCoreHttp {
  constructor({
    baseUrl = globalThis.location ? globalThis.location.origin : undefined,
    token = null,
    fetchImpl = globalThis.fetch?.bind(globalThis),
  } = {}) {
    this.baseUrl = baseUrl;
    this.token = token;
    this.fetch = fetchImpl;
  }

  setToken(token) {
    this.token = token;
  }

  async call(method, path, { body, headers = {}, auth = true, keepalive = false } = {}) {
    const init = { method, headers: { Accept: 'application/json', ...headers }, keepalive };
    if (auth && this.token) init.headers.Authorization = `Bearer ${this.token}`;
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await this.fetch(new URL(path, this.baseUrl).toString(), init);
    } catch (err) {
      throw new LiveCoreError('network', String(err && err.message ? err.message : err));
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!res.ok) {
      const e = (data && data.error) || {};
      const retryHeader = Number(res.headers.get('Retry-After'));
      const retryAfterMs = e.retry_after_ms ?? (Number.isFinite(retryHeader) && retryHeader > 0 ? retryHeader * 1000 : null);
      throw new LiveCoreError(e.code || `http_${res.status}`, e.message || res.statusText, {
        status: res.status,
        retryAfterMs,
        details: data,
      });
    }
    return data;
  }

  /** POST /api/v1/shows/{show}/guest → {token, expires_at, user}. */
  guest(show) {
    return this.call('POST', `/api/v1/shows/${enc(show)}/guest`, { auth: false });
  }

  /** GET /api/v1/shows/{show} → show with `pinned`, `deal`, `viewers`. */
  getShow(show) {
    return this.call('GET', `/api/v1/shows/${enc(show)}`);
  }

  /** GET /api/v1/products/{id} → product (public; not in PROTOCOL.md). */
  product(productId) {
    return this.call('GET', `/api/v1/products/${enc(productId)}`);
  }

  /** GET /api/v1/products (host/admin) → {products:[...]}. */
  products() {
    return this.call('GET', '/api/v1/products');
  }

  /**
   * GET /api/v1/shows/{show}/moderation (moderator/host) → {actions:[...], next}.
   * Pages run oldest first; pass the previous page's `next` as `after`.
   */
  moderation(show, { after = null, limit = null } = {}) {
    const q = new URLSearchParams();
    if (after !== null && after !== undefined) q.set('after', String(after));
    if (limit) q.set('limit', String(limit));
    const qs = q.toString();
    return this.call('GET', `/api/v1/shows/${enc(show)}/moderation${qs ? `?${qs}` : ''}`);
  }

  /**
   * Claim units of a live deal → 201 reservation
   * {id, deal_id, qty, price_cents, currency, expires_at}.
   * Retries network failures, 429 and 5xx with the SAME Idempotency-Key, so a
   * retry can never create a second hold.
   */
  async claim(show, dealId, { qty = 1, idempotencyKey = uuid(), retries = 3 } = {}) {
    const path = `/api/v1/shows/${enc(show)}/deals/${enc(dealId)}/claims`;
    return withRetries(retries, () =>
      this.call('POST', path, { body: { qty }, headers: { 'Idempotency-Key': idempotencyKey } }),
    );
  }

  /**
   * POST /api/v1/reservations/{id}/confirm → 201 order. Confirming twice
   * returns the same order, so transient failures are retried.
   */
  confirm(reservationId, paymentRef, { retries = 2 } = {}) {
    const path = `/api/v1/reservations/${enc(reservationId)}/confirm`;
    return withRetries(retries, () => this.call('POST', path, { body: { payment_ref: paymentRef } }));
  }

  /** DELETE /api/v1/reservations/{id} → releases the hold. */
  release(reservationId, { keepalive = false } = {}) {
    return this.call('DELETE', `/api/v1/reservations/${enc(reservationId)}`, { keepalive });
  }

  /** POST /api/v1/shows/{show}/deals (host) → 201 deal. Same fields as `deal.launch`. */
  launchDeal(show, fields) {
    return this.call('POST', `/api/v1/shows/${enc(show)}/deals`, { body: fields });
  }
}

/** Run an idempotent request, retrying network failures, 429 and 5xx with backoff. */
async function withRetries(retries, fn) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await fn();
    } catch (err) {
      const retriable = err.code === 'network' || err.status === 429 || err.status >= 500;
      if (!retriable || attempt >= retries) throw err;
      await sleep(Math.max(err.retryAfterMs || 0, backoffDelay(attempt, { baseMs: 300, maxMs: 3000 })));
    }
  }
}

function enc(s) {
  return encodeURIComponent(String(s));
}
