// Moderator page (/moderator): chat actions, flagged queue, slow mode, word filter, audit log.

import { LiveCore, LiveCoreHttp } from './livecore.js';
import { initLang, locale, onLangChange, t } from './i18n.js';
import {
  appendChat,
  askCredentials,
  bindConnectionStatus,
  byId,
  chatItem,
  el,
  errorText,
  fatalText,
  flash,
  forgetToken,
  removeChat,
  renderShowStatus,
  saveCredentials,
  takeCredentials,
  wireChatForm,
} from './ui.js';

const ROLE = 'moderator';
const TIMEOUT_SECONDS = 60;

const state = {
  show: null,
  token: null,
  client: null,
  http: new LiveCoreHttp(),
  status: null,
  messages: new Map(), // id → message (chat list, for re-rendering on language change)
  flagged: new Map(), // id → {message, reason}
  banned: new Map(), // user id → display name
  audit: new Map(), // action id → action
  auditNext: null, // `after` cursor for the next audit page
  auditDone: null,
};

let renderConnection = () => {};

async function main() {
  initLang();
  wireUi();
  let { show, token } = takeCredentials(ROLE);
  if (!show || !token) {
    ({ show, token } = await askCredentials({ show }));
    saveCredentials(ROLE, show, token);
  }
  state.show = show;
  state.token = token;
  state.http.setToken(token);
  byId('app').hidden = false;
  connect();
  loadAudit();
}

// ---------------------------------------------------------------- socket

function connect() {
  const client = new LiveCore({ show: state.show, role: ROLE, token: state.token });
  state.client = client;
  renderConnection = bindConnectionStatus(client);

  client.on('welcome', (w) => {
    const title = (w.show && w.show.title) || state.show;
    byId('show-title').textContent = title;
    document.title = `${title} · ${t('mod.title')}`;
    setStatus(w.show && w.show.status);
    setViewers(w.viewers);
    // Extensions (not in PROTOCOL.md): pinned message, current settings, held messages.
    setPinnedMessage(w.pinned_message || null);
    const settings = w.moderation || {};
    if (Number.isFinite(settings.slow_mode)) byId('slow-mode').value = String(settings.slow_mode);
    if (Array.isArray(settings.filter)) byId('filter-words').value = settings.filter.join(', ');
    if (Array.isArray(w.held)) {
      state.flagged.clear();
      for (const m of w.held) addFlagged(m, m.reason);
      renderFlagged();
    }
    if (w.resumed && !w.recovered) loadAudit(state.auditNext); // we may have missed mod.action events
  });
  client.on('fatal', async ({ code }) => {
    forgetToken(ROLE, state.show);
    const creds = await askCredentials({ show: state.show, error: fatalText(code) });
    saveCredentials(ROLE, creds.show, creds.token);
    window.location.reload();
  });
  client.on('show.status', (ev) => setStatus(ev.status));
  client.on('viewers', (ev) => setViewers(ev.count));
  client.on('chat.message', (ev) => {
    addMessage(ev.message);
    removeFlagged(ev.message && ev.message.id); // an approved message comes back as chat
  });
  client.on('chat.deleted', (ev) => {
    state.messages.delete(String(ev.message_id));
    removeChat(byId('chat-list'), ev.message_id);
    removeFlagged(ev.message_id);
    if (byId('pinned-message').dataset.messageId === String(ev.message_id)) setPinnedMessage(null);
  });
  client.on('chat.pinned', (ev) => setPinnedMessage(ev.message));
  client.on('chat.unpinned', () => setPinnedMessage(null));
  client.on('chat.flagged', (ev) => addFlagged(ev.message, ev.reason));
  client.on('mod.action', (ev) => {
    const action = ev.action && typeof ev.action === 'object' ? ev.action : ev;
    addAudit(action);
    applyAction(action);
  });
  client.connect();
}

/** Send a moderator command; report the outcome in #mod-message. Resolves with the ack or null. */
async function command(type, fields = {}) {
  try {
    const ack = await state.client.request(type, fields);
    flash(byId('mod-message'), t(`done.${type}`), 'ok');
    return ack;
  } catch (err) {
    flash(byId('mod-message'), errorText(err), 'error', 10000);
    return null;
  }
}

function setStatus(status) {
  if (!status) return;
  state.status = status;
  renderShowStatus(status);
}

function setViewers(count) {
  if (Number.isFinite(count)) byId('viewer-count').textContent = String(count);
}

// ---------------------------------------------------------------- chat

function button(action, labelKey, name, className = 'secondary small') {
  return el('button', {
    className,
    text: t(labelKey),
    attrs: {
      type: 'button',
      'data-action': action,
      'data-testid': `mod-${action}`,
      'aria-label': t('mod.action_label', { action: t(labelKey), name }),
    },
  });
}

function messageItem(message) {
  const name = (message.user && (message.user.name || message.user.id)) || '?';
  const actions = el('span', { className: 'mod-actions' }, [
    button('delete', 'mod.delete', name, 'danger small'),
    button('pin', 'mod.pin', name),
    button('timeout', 'mod.timeout', name),
    button('ban', 'mod.ban', name, 'danger small'),
  ]);
  return chatItem(message, [actions]);
}

function addMessage(message) {
  if (!message || message.id === undefined) return;
  state.messages.set(String(message.id), message);
  if (state.messages.size > 300) state.messages.delete(state.messages.keys().next().value);
  appendChat(byId('chat-list'), messageItem(message));
}

function setPinnedMessage(message) {
  const box = byId('pinned-message');
  box.hidden = !message;
  box.dataset.messageId = message ? message.id : '';
  byId('pinned-message-author').textContent = message && message.user ? message.user.name || '' : '';
  byId('pinned-message-text').textContent = message ? message.text : '';
}

async function onChatAction(e) {
  const target = e.target.closest('button[data-action]');
  const item = target && target.closest('[data-message-id]');
  if (!item) return;
  const messageId = item.dataset.messageId;
  const userId = item.dataset.userId;
  const message = state.messages.get(messageId);
  target.disabled = true;
  switch (target.dataset.action) {
    case 'delete':
      await command('chat.delete', { message_id: messageId });
      break;
    case 'pin':
      await command('chat.pin', { message_id: messageId });
      break;
    case 'timeout':
      await command('user.timeout', { user_id: userId, seconds: TIMEOUT_SECONDS });
      break;
    case 'ban':
      if (await command('user.ban', { user_id: userId })) {
        addBanned(userId, message && message.user ? message.user.name : userId);
      }
      break;
    default:
      break;
  }
  target.disabled = false;
}

// ---------------------------------------------------------------- flagged queue

function addFlagged(message, reason) {
  if (!message || message.id === undefined) return;
  state.flagged.set(String(message.id), { message, reason });
  renderFlagged();
}

function removeFlagged(messageId) {
  if (messageId !== undefined && state.flagged.delete(String(messageId))) renderFlagged();
}

function renderFlagged() {
  const items = [...state.flagged.values()].map(({ message, reason }) => {
    const name = (message.user && (message.user.name || message.user.id)) || '?';
    return chatItem(message, [
      reason ? el('span', { className: 'flag-reason', text: t('flagged.reason', { reason }), attrs: { dir: 'auto' } }) : null,
      el('span', { className: 'mod-actions' }, [
        button('approve', 'mod.approve', name, 'primary small'),
        button('reject', 'mod.reject', name, 'danger small'),
      ]),
    ]);
  });
  byId('flagged-list').replaceChildren(...items);
  byId('flagged-count').textContent = String(state.flagged.size);
}

async function onFlaggedAction(e) {
  const target = e.target.closest('button[data-action]');
  const item = target && target.closest('[data-message-id]');
  if (!item) return;
  const messageId = item.dataset.messageId;
  const type = target.dataset.action === 'approve' ? 'chat.approve' : 'chat.reject';
  target.disabled = true;
  if (await command(type, { message_id: messageId })) removeFlagged(messageId);
  else target.disabled = false;
}

// ---------------------------------------------------------------- bans

function addBanned(userId, name) {
  if (!userId) return;
  state.banned.set(String(userId), name || String(userId));
  renderBanned();
}

function renderBanned() {
  byId('banned-list').replaceChildren(
    ...[...state.banned].map(([userId, name]) =>
      el('li', { dataset: { userId } }, [
        el('span', { text: name, attrs: { dir: 'auto' } }),
        ' ',
        el('code', { text: userId }),
        ' ',
        el('button', {
          className: 'secondary small',
          text: t('mod.unban'),
          attrs: {
            type: 'button',
            'data-action': 'unban',
            'data-testid': 'mod-unban',
            'aria-label': t('mod.user_label', { action: t('mod.unban'), name }),
          },
        }),
      ]),
    ),
  );
}

async function unban(userId) {
  if (!userId) return false;
  const ok = Boolean(await command('user.unban', { user_id: userId }));
  if (ok) {
    state.banned.delete(String(userId));
    renderBanned();
  }
  return ok;
}

// ---------------------------------------------------------------- audit log

function auditId(a) {
  return String(a.id ?? `${a.created_at}|${a.actor_id}|${a.action}|${targetText(a.target)}`);
}

function targetText(target) {
  if (target === null || target === undefined) return '';
  if (typeof target === 'object') {
    return Object.entries(target)
      .map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`)
      .join(' ');
  }
  return String(target);
}

function dataText(data) {
  if (!data || typeof data !== 'object') return '';
  return Object.entries(data)
    .filter(([k]) => k !== 'until')
    .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(',') : typeof v === 'object' ? JSON.stringify(v) : v}`)
    .join(' ');
}

function targetUser(target) {
  if (target && typeof target === 'object') return target.user_id ?? null;
  return target ?? null;
}

function targetMessage(target) {
  if (target && typeof target === 'object') return target.message_id ?? null;
  return target ?? null;
}

function auditItem(a) {
  const created = Number(a.created_at ?? a.ts);
  const when = Number.isFinite(created)
    ? el('time', {
        text: new Date(created).toLocaleTimeString(locale()),
        attrs: { datetime: new Date(created).toISOString() },
      })
    : null;
  return el(
    'li',
    { className: 'audit-entry', dataset: { actionId: auditId(a), action: a.action, createdAt: Number.isFinite(created) ? created : 0 } },
    [
      when,
      ' ',
      el('strong', { className: 'audit-action', text: a.action }),
      ' ',
      el('span', { className: 'audit-actor', text: [a.actor_role, a.actor_id].filter(Boolean).join(' '), attrs: { dir: 'auto' } }),
      targetText(a.target) ? ' → ' : null,
      el('span', { className: 'audit-target', text: targetText(a.target), attrs: { dir: 'auto' } }),
      a.reason ? el('span', { className: 'audit-reason', text: ` (${a.reason})`, attrs: { dir: 'auto' } }) : null,
      dataText(a.data) ? el('span', { className: 'audit-data', text: ` ${dataText(a.data)}`, attrs: { dir: 'auto' } }) : null,
    ],
  );
}

/** Insert newest first, once per action id. */
function addAudit(a) {
  if (!a || !a.action || typeof a.action !== 'string') return;
  const id = auditId(a);
  if (state.audit.has(id)) return;
  state.audit.set(id, a);
  const item = auditItem(a);
  const log = byId('audit-log');
  const created = Number(item.dataset.createdAt);
  const before = [...log.children].find((li) => Number(li.dataset.createdAt) < created);
  log.insertBefore(item, before || null);
}

/** Keep the banned list and flagged queue in step with actions taken anywhere. */
function applyAction(a) {
  const action = String(a.action || '');
  if (/unban/.test(action)) {
    state.banned.delete(String(targetUser(a.target)));
    renderBanned();
  } else if (/ban/.test(action)) {
    const userId = targetUser(a.target);
    if (userId !== null && !state.banned.has(String(userId))) addBanned(String(userId), String(userId));
  }
  if (/approve|reject|delete/.test(action)) removeFlagged(targetMessage(a.target));
}

/**
 * Load audit pages (oldest first, `after` = previous page's `next`) until the
 * end or `maxPages`; #audit-more continues from where we stopped.
 */
async function loadAudit(after = null, maxPages = 20) {
  const more = byId('audit-more');
  more.disabled = true;
  try {
    let cursor = after;
    for (let page = 0; page < maxPages; page += 1) {
      const body = await state.http.moderation(state.show, { after: cursor });
      const actions = (body && body.actions) || [];
      actions.forEach(addAudit);
      [...actions].sort((x, y) => (x.created_at || 0) - (y.created_at || 0)).forEach(applyAction);
      const next = (body && body.next) ?? null;
      const lastId = actions.length ? actions[actions.length - 1].id : null;
      cursor = next ?? lastId ?? cursor;
      state.auditNext = cursor;
      state.auditDone = next === null;
      if (next === null) break;
    }
  } catch (err) {
    flash(byId('mod-message'), errorText(err), 'error', 10000);
  } finally {
    more.disabled = false;
    more.hidden = state.auditDone !== false;
  }
}

// ---------------------------------------------------------------- wiring

function wireUi() {
  byId('chat-list').addEventListener('click', onChatAction);
  byId('flagged-list').addEventListener('click', onFlaggedAction);
  byId('chat-unpin').addEventListener('click', () => command('chat.unpin'));
  byId('banned-list').addEventListener('click', (e) => {
    const target = e.target.closest('button[data-action="unban"]');
    const item = target && target.closest('[data-user-id]');
    if (item) unban(item.dataset.userId);
  });
  byId('slow-mode-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const seconds = Math.max(0, Math.round(Number(byId('slow-mode').value) || 0));
    command('chat.slow_mode', { seconds });
  });
  byId('filter-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const words = byId('filter-words')
      .value.split(/[,\n]/)
      .map((w) => w.trim())
      .filter(Boolean);
    command('chat.filter', { words });
  });
  byId('unban-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const input = byId('unban-user');
    if (await unban(input.value.trim())) input.value = '';
  });
  byId('audit-more').addEventListener('click', () => loadAudit(state.auditNext));
  wireChatForm(() => state.client);
  const relabel = () => {
    renderConnection();
    if (state.status) renderShowStatus(state.status);
    const list = byId('chat-list');
    for (const item of [...list.children]) {
      const message = state.messages.get(item.dataset.messageId);
      if (message) item.replaceWith(messageItem(message));
    }
    renderFlagged();
    renderBanned();
  };
  onLangChange(relabel);
  relabel();
}

// For debugging and browser tests: window.livecorePage.state.client is the LiveCore instance.
window.livecorePage = { state };

main();
