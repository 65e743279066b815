// DOM helpers shared by the viewer, host and moderator pages.
// Rule: user-supplied text only ever goes through textContent.

import { formatMoney } from './livecore.js';
import { t, locale } from './i18n.js';

export const byId = (id) => document.getElementById(id);

/**
 * Build an element. `props`: {className, text, attrs, dataset, hidden}.
 * Children may be nodes or strings (inserted as text).
 */
export function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  if (props.className) node.className = props.className;
  if (props.text !== undefined && props.text !== null) node.textContent = String(props.text);
  for (const [k, v] of Object.entries(props.attrs || {})) {
    if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const [k, v] of Object.entries(props.dataset || {})) {
    if (v !== undefined && v !== null) node.dataset[k] = String(v);
  }
  if (props.hidden) node.hidden = true;
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return node;
}

export const money = (minor, currency) => formatMoney(minor, currency, locale());

/** Localised text for a LiveCoreError (or anything with a `code`). */
export function errorText(err) {
  const code = (err && err.code) || 'generic';
  const seconds = err && err.retryAfterMs ? Math.ceil(err.retryAfterMs / 1000) : null;
  if (seconds && (code === 'slow_mode' || code === 'rate_limited')) {
    return t(`err.${code}_wait`, { seconds });
  }
  const key = `err.${code}`;
  const text = t(key);
  if (text !== key) return text;
  return (err && err.message) || t('err.generic', { code });
}

// ---------------------------------------------------------------- credentials

const storage = {
  get(key) {
    try {
      return sessionStorage.getItem(key);
    } catch {
      return null;
    }
  },
  set(key, value) {
    try {
      if (value === null || value === undefined) sessionStorage.removeItem(key);
      else sessionStorage.setItem(key, value);
    } catch {
      /* storage disabled: keep going in memory */
    }
  },
};

const tokenKey = (role, show) => `livecore:${role}:${show}:token`;
const expiryKey = (role, show) => `livecore:${role}:${show}:expires_at`;

/**
 * Read `show` and `token` from the query string, keep the token in
 * sessionStorage and remove it from the visible URL (and history).
 * Falls back to what this tab stored before. Returns {show, token}.
 */
export function takeCredentials(role) {
  const url = new URL(window.location.href);
  const params = url.searchParams;
  const show = params.get('show') || storage.get(`livecore:${role}:show`) || '';
  let token = params.get('token');
  if (token !== null || (show && !params.get('show'))) {
    params.delete('token');
    if (show) params.set('show', show);
    replaceUrl(url);
  }
  if (show && token) saveCredentials(role, show, token);
  if (!token && show) {
    token = storage.get(tokenKey(role, show));
    const expires = Number(storage.get(expiryKey(role, show)));
    if (token && expires && expires <= Date.now() + 5000) token = null;
  }
  return { show, token: token || null };
}

/** Remember credentials for this tab and put `?show=` (never the token) in the URL. */
export function saveCredentials(role, show, token, expiresAt = null) {
  storage.set(`livecore:${role}:show`, show);
  storage.set(tokenKey(role, show), token || null);
  storage.set(expiryKey(role, show), expiresAt ? String(expiresAt) : null);
  const url = new URL(window.location.href);
  if (url.searchParams.get('show') !== show) {
    url.searchParams.set('show', show);
    replaceUrl(url);
  }
}

export function forgetToken(role, show) {
  storage.set(tokenKey(role, show), null);
  storage.set(expiryKey(role, show), null);
}

function replaceUrl(url) {
  const qs = url.searchParams.toString();
  window.history.replaceState(window.history.state, '', `${url.pathname}${qs ? `?${qs}` : ''}${url.hash}`);
}

/**
 * Show the login form (#login-form) and resolve with {show, token} on submit.
 * `error` is a message to display above the fields.
 */
export function askCredentials({ show = '', error = '', tokenRequired = true } = {}) {
  const form = byId('login-form');
  const app = byId('app');
  byId('login-show').value = show;
  byId('login-token').value = '';
  byId('login-token').required = tokenRequired;
  byId('login-error').textContent = error;
  form.hidden = false;
  app.hidden = true;
  (show ? byId('login-token') : byId('login-show')).focus();
  return new Promise((resolve) => {
    const onSubmit = (e) => {
      e.preventDefault();
      const creds = {
        show: byId('login-show').value.trim(),
        token: byId('login-token').value.trim() || null,
      };
      if (!creds.show || (tokenRequired && !creds.token)) return;
      form.removeEventListener('submit', onSubmit);
      form.hidden = true;
      app.hidden = false;
      resolve(creds);
    };
    form.addEventListener('submit', onSubmit);
  });
}

// ---------------------------------------------------------------- shared widgets

/** Keep #connection-status in sync: data-state is always the English state name. */
export function bindConnectionStatus(client, node = byId('connection-status')) {
  const render = () => {
    const state = client.state === 'idle' ? 'connecting' : client.state;
    node.dataset.state = state;
    node.textContent = t(`conn.${state}`);
  };
  client.on('connection', render);
  render();
  return render;
}

export function renderShowStatus(status, node = byId('show-status')) {
  node.dataset.state = status || 'unknown';
  node.textContent = status ? t(`show.${status}`) : '';
}

/** A chat message as an <li data-message-id>. `extra` nodes are appended (e.g. moderator buttons). */
export function chatItem(message, extra = []) {
  const user = message.user || {};
  const time = Number.isFinite(message.ts)
    ? new Date(message.ts).toLocaleTimeString(locale(), { hour: '2-digit', minute: '2-digit' })
    : '';
  const item = el(
    'li',
    {
      className: 'chat-message',
      dataset: { messageId: message.id, userId: user.id, role: user.role },
    },
    [
      el('span', { className: 'chat-author', text: user.name || user.id || '?', attrs: { dir: 'auto' } }),
      ' ',
      el('span', { className: 'chat-text', text: message.text, attrs: { dir: 'auto' } }),
      time ? ' ' : null,
      time ? el('time', { className: 'chat-time', text: time, attrs: { datetime: new Date(message.ts).toISOString() } }) : null,
      ...extra,
    ],
  );
  return item;
}

/**
 * Append to a chat list, keeping at most `max` items and scrolling to the end
 * if the reader was already there. Replaces an item with the same id.
 */
export function appendChat(list, item, max = 200) {
  const id = item.dataset.messageId;
  const existing = id ? list.querySelector(`[data-message-id="${CSS.escape(id)}"]`) : null;
  if (existing) {
    existing.replaceWith(item);
    return;
  }
  const atEnd = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(item);
  while (list.children.length > max) list.firstElementChild.remove();
  if (atEnd) list.scrollTop = list.scrollHeight;
}

export function removeChat(list, messageId) {
  list.querySelector(`[data-message-id="${CSS.escape(String(messageId))}"]`)?.remove();
}

/**
 * Wire the chat box (#chat-form, #chat-input, #chat-send, #chat-error) to
 * `chat.send` on the client returned by getClient().
 */
export function wireChatForm(getClient) {
  const form = byId('chat-form');
  const input = byId('chat-input');
  const button = byId('chat-send');
  const error = byId('chat-error');
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const text = input.value.trim();
    const client = getClient();
    if (!text || !client) return;
    button.disabled = true;
    try {
      const ack = await client.request('chat.send', { text });
      input.value = '';
      error.textContent = ack && ack.held ? t('chat.held') : '';
      error.dataset.kind = ack && ack.held ? 'info' : '';
    } catch (err) {
      error.textContent = errorText(err);
      error.dataset.kind = 'error';
      error.dataset.code = err.code || '';
    } finally {
      button.disabled = false;
      input.focus();
    }
  });
}

/** Show a short status line in `node` (role=status); `kind` = 'ok' | 'error'. */
export function flash(node, text, kind = 'ok', ms = 6000) {
  node.textContent = text;
  node.dataset.kind = kind;
  clearTimeout(node._flashTimer);
  if (ms) {
    node._flashTimer = setTimeout(() => {
      node.textContent = '';
      delete node.dataset.kind;
    }, ms);
  }
}

/**
 * Smooth countdown driven by requestAnimationFrame against the server clock.
 * onFrame(fractionLeft) runs every frame; onSecond(secondsLeft) only when the
 * whole-second value changes; onDone() once at zero.
 */
export class Countdown {
  constructor(clock, { onFrame = () => {}, onSecond = () => {}, onDone = () => {} } = {}) {
    this.clock = clock;
    this.onFrame = onFrame;
    this.onSecond = onSecond;
    this.onDone = onDone;
    this.raf = 0;
    this.lastSecond = null;
  }

  start(startsAt, endsAt) {
    this.startsAt = Number.isFinite(startsAt) ? startsAt : this.clock.now();
    this.endsAt = endsAt;
    this.lastSecond = null;
    this.done = false;
    if (!this.raf) this.raf = requestAnimationFrame(this.tick);
    this.tick();
  }

  /** Move the end (e.g. from deal.tick) without restarting. */
  update(endsAt) {
    if (Number.isFinite(endsAt)) this.endsAt = endsAt;
  }

  stop() {
    cancelAnimationFrame(this.raf);
    this.raf = 0;
  }

  secondsLeft() {
    return Math.max(0, Math.ceil((this.endsAt - this.clock.now()) / 1000));
  }

  tick = () => {
    this.raf = 0;
    const msLeft = this.endsAt - this.clock.now();
    const span = Math.max(1, this.endsAt - this.startsAt);
    this.onFrame(Math.min(1, Math.max(0, msLeft / span)));
    const seconds = Math.max(0, Math.ceil(msLeft / 1000));
    if (seconds !== this.lastSecond) {
      this.lastSecond = seconds;
      this.onSecond(seconds);
    }
    if (msLeft <= 0) {
      if (!this.done) {
        this.done = true;
        this.onDone();
      }
      return;
    }
    this.raf = requestAnimationFrame(this.tick);
  };
}

/** Set a 0..1 CSS custom property via CSSOM (allowed under `style-src 'self'`). */
export function setProgress(node, fraction) {
  node.style.setProperty('--progress', String(fraction));
}

/** The connection error to show for a fatal close code. */
export function fatalText(code) {
  const key = `fatal.${code}`;
  const text = t(key);
  return text === key ? t('fatal.other', { code }) : text;
}
