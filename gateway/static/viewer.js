// Viewer page (/): video, chat, reactions, pinned product, flash deal checkout.

import { LiveCore, LiveCoreHttp, uuid } from './livecore.js';
import { initLang, locale, onLangChange, t } from './i18n.js';
import {
  Countdown,
  appendChat,
  askCredentials,
  bindConnectionStatus,
  byId,
  chatItem,
  el,
  errorText,
  fatalText,
  forgetToken,
  money,
  removeChat,
  renderShowStatus,
  saveCredentials,
  setProgress,
  takeCredentials,
  wireChatForm,
} from './ui.js';
import { decodedFrames, play, trackFrames } from './whip.js';

const ROLE = 'viewer';
const REACTIONS = ['❤️', '🔥', '👏', '😂', '😮', '🛒'];
const REACTION_MIN_INTERVAL_MS = 150;
const MAX_FLOATS_PER_EMOJI = 5;
const DEAL_HIDE_AFTER_END_MS = 60000;
// `?claim=ws` claims over the socket; the default is HTTP with an
// Idempotency-Key, which is safe to retry after a network blip.
const CLAIM_VIA = new URLSearchParams(window.location.search).get('claim') === 'ws' ? 'ws' : 'http';

const state = {
  show: null,
  token: null,
  client: null,
  http: new LiveCoreHttp(),
  status: null,
  user: null,
  pinned: null,
  deal: null,
  dealState: 'none', // none | live | sold_out | expired | cancelled
  claimKey: null, // reused until a claim attempt has a definite answer
  buying: false,
  reservation: null,
  order: null,
  bought: {}, // deal id → units bought by boughtBy (kept per tab, like the hold)
  boughtBy: null,
  notice: null,
  lastReactionAt: 0,
  tokenRefreshedAt: 0,
};

let dealCountdown;
let holdCountdown;
let renderConnection = () => {};
let dealHideTimer = null;

async function main() {
  initLang();
  wireUi();
  let { show, token } = takeCredentials(ROLE);
  if (!show) ({ show, token } = await askCredentials({ tokenRequired: false }));
  state.show = show;
  if (!token) token = await mintGuest();
  setToken(token);
  byId('app').hidden = false;
  connect();
  startVideo();
}

function setToken(token) {
  state.token = token;
  state.http.setToken(token);
  state.client?.setToken(token);
}

/** A guest token lets a browser chat and buy without an account; null → watch only. */
async function mintGuest() {
  try {
    const guest = await state.http.guest(state.show);
    saveCredentials(ROLE, state.show, guest.token, guest.expires_at);
    return guest.token;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------- socket

function connect() {
  const client = new LiveCore({ show: state.show, role: ROLE, token: state.token });
  state.client = client;
  dealCountdown = new Countdown(client.clock, {
    onFrame: (f) => setProgress(byId('deal-progress'), f),
    onSecond: (s) => {
      byId('deal-countdown').textContent = String(s);
    },
    onDone: () => {
      if (state.dealState === 'live') {
        state.dealState = 'expired';
        renderDeal();
      }
    },
  });
  holdCountdown = new Countdown(client.clock, {
    onSecond: (s) => {
      byId('reservation-countdown').textContent = String(s);
    },
    onDone: () => holdExpired(),
  });
  renderConnection = bindConnectionStatus(client);

  client.on('welcome', onWelcome);
  client.on('fatal', onFatal);
  client.on('chat.message', (ev) => addMessage(ev.message));
  client.on('chat.deleted', (ev) => {
    removeChat(byId('chat-list'), ev.message_id);
    if (byId('pinned-message').dataset.messageId === String(ev.message_id)) setPinnedMessage(null);
  });
  client.on('chat.pinned', (ev) => setPinnedMessage(ev.message));
  client.on('chat.unpinned', () => setPinnedMessage(null));
  client.on('product.pinned', (ev) => setPinned(ev.product));
  client.on('product.unpinned', (ev) => {
    if (!state.pinned || !ev.product_id || state.pinned.id === ev.product_id) setPinned(null);
  });
  client.on('deal.started', (ev) => {
    if (state.order && state.order.deal_id !== ev.deal.id) hideOrder();
    setDeal(ev.deal);
  });
  client.on('deal.tick', onDealTick);
  client.on('deal.ended', onDealEnded);
  client.on('announcement', (ev) => showAnnouncement(ev.text));
  client.on('show.status', (ev) => setShowStatus(ev.status));
  client.on('viewers', (ev) => setViewers(ev.count));
  client.on('reactions', (ev) => {
    for (const [emoji, count] of Object.entries(ev.counts || {})) {
      if (!REACTIONS.includes(emoji)) continue;
      const n = Math.min(MAX_FLOATS_PER_EMOJI, Number(count) || 0);
      for (let i = 0; i < n; i += 1) setTimeout(() => floatReaction(emoji), i * 180);
    }
  });
  client.on('mod.notice', (ev) => setNotice(ev));
  client.connect();
}

function onWelcome(w) {
  state.user = w.user || null;
  loadBought();
  const title = (w.show && w.show.title) || state.show;
  byId('show-title').textContent = title;
  document.title = `${title} · LiveCore`;
  setShowStatus(w.show && w.show.status);
  setViewers(w.viewers);
  setPinned(w.pinned || null);
  setDeal(w.deal || null);
  setPinnedMessage(w.pinned_message || null); // extension: not in PROTOCOL.md

  const canAct = Boolean(state.token && state.user);
  byId('chat-readonly').hidden = canAct;
  byId('chat-input').disabled = !canAct;
  byId('chat-send').disabled = !canAct;
  byId('user-name').hidden = !state.user;
  byId('user-name-text').textContent = state.user ? state.user.name || state.user.id : '';
  restoreReservation();
}

async function onFatal({ code }) {
  // A stale or foreign viewer token: fall back to a fresh guest token (at most every 30 s).
  if ((code === 4401 || code === 4403) && Date.now() - state.tokenRefreshedAt > 30000) {
    state.tokenRefreshedAt = Date.now();
    forgetToken(ROLE, state.show);
    setToken(await mintGuest());
    state.client.connect();
    return;
  }
  const creds = await askCredentials({ show: state.show, error: fatalText(code), tokenRequired: false });
  saveCredentials(ROLE, creds.show, creds.token);
  window.location.reload();
}

// ---------------------------------------------------------------- show, chat, reactions

function setShowStatus(status) {
  if (!status) return;
  const wasLive = state.status === 'live';
  state.status = status;
  renderShowStatus(status);
  if (status === 'live' && !wasLive) startVideo(true);
  if (status === 'ended') endVideo();
}

function setViewers(count) {
  if (Number.isFinite(count)) byId('viewer-count').textContent = String(count);
}

function addMessage(message) {
  if (message && message.id !== undefined) appendChat(byId('chat-list'), chatItem(message));
}

function setPinnedMessage(message) {
  const box = byId('pinned-message');
  box.hidden = !message;
  box.dataset.messageId = message ? message.id : '';
  byId('pinned-message-author').textContent = message && message.user ? message.user.name || '' : '';
  byId('pinned-message-text').textContent = message ? message.text : '';
}

function setNotice(ev) {
  state.notice = ev;
  renderNotice();
  const until = Number(ev && ev.until);
  if (until) {
    const ms = until - state.client.clock.now();
    setTimeout(() => {
      if (state.notice === ev) {
        state.notice = null;
        renderNotice();
      }
    }, Math.max(0, Math.min(ms, 2 ** 31 - 1)));
  }
}

function renderNotice() {
  const node = byId('mod-notice');
  const ev = state.notice;
  const action = ev ? String(ev.action || '') : '';
  if (!ev || /^un/.test(action)) {
    node.hidden = true;
    return;
  }
  let text;
  if (/ban/.test(action)) text = t('notice.banned');
  else if (/mute|timeout/.test(action)) {
    text = ev.until
      ? t('notice.muted', { time: new Date(ev.until).toLocaleTimeString(locale()) })
      : t('notice.muted_forever');
  } else text = t('notice.other', { action });
  node.textContent = text;
  node.dataset.action = action;
  node.hidden = false;
}

function react(emoji) {
  const now = Date.now();
  if (now - state.lastReactionAt < REACTION_MIN_INTERVAL_MS) return;
  state.lastReactionAt = now;
  if (state.client && state.client.send('react', { emoji })) floatReaction(emoji);
}

function floatReaction(emoji) {
  const layer = byId('reaction-layer');
  if (layer.childElementCount > 40) return;
  const node = el('span', { className: 'reaction-float', text: emoji });
  node.style.setProperty('--x', `${Math.round(Math.random() * 70)}%`);
  node.style.setProperty('--drift', `${Math.round((Math.random() * 2 - 1) * 40)}px`);
  const remove = () => node.remove();
  node.addEventListener('animationend', remove);
  setTimeout(remove, 4000);
  layer.append(node);
}

function showAnnouncement(text) {
  const box = byId('announcement');
  byId('announcement-text').textContent = text || '';
  box.hidden = !text;
  clearTimeout(box._timer);
  box._timer = setTimeout(() => {
    box.hidden = true;
  }, 15000);
}

// ---------------------------------------------------------------- product and deal

const products = new Map(); // id → product (or null while loading)

function productFor(productId) {
  if (state.pinned && state.pinned.id === productId) return state.pinned;
  return products.get(productId) || null;
}

/** Fetch a deal's product (name, list price) when it is not the pinned one. */
async function loadProduct(productId) {
  if (!productId || productFor(productId) || products.has(productId)) return;
  products.set(productId, null);
  try {
    products.set(productId, await state.http.product(productId));
    renderDeal();
  } catch {
    products.delete(productId);
  }
}

function setPinned(product) {
  state.pinned = product;
  if (product) products.set(product.id, product);
  const card = byId('pinned-card');
  card.hidden = !product;
  card.dataset.productId = product ? product.id : '';
  if (product) {
    byId('pinned-name').textContent = product.name || '';
    const img = byId('pinned-image');
    img.alt = product.name || t('pinned.image');
    img.src = /^(https?:|data:image\/|\/)/.test(product.image_url || '') ? product.image_url : '/static/poster.svg';
  }
  renderPrices();
  renderDeal();
}

function setDeal(deal) {
  clearTimeout(dealHideTimer);
  if (!deal && state.deal && state.dealState !== 'live' && state.dealState !== 'none') return; // keep the ended state visible
  if (deal && (!state.deal || state.deal.id !== deal.id)) state.claimKey = null;
  state.deal = deal ? { ...deal } : null;
  if (!deal) {
    state.dealState = 'none';
    dealCountdown.stop();
  } else {
    const timeUp = Number.isFinite(deal.ends_at) && deal.ends_at <= state.client.clock.now();
    state.dealState = timeUp ? 'expired' : deal.remaining <= 0 ? 'sold_out' : 'live';
    byId('deal-countdown').textContent = '';
    dealCountdown.start(deal.starts_at, deal.ends_at);
    loadProduct(deal.product_id);
  }
  renderDeal();
}

function onDealTick(ev) {
  const deal = state.deal;
  if (!deal || deal.id !== ev.deal_id) return;
  if (Number.isFinite(ev.remaining)) deal.remaining = ev.remaining;
  if (Number.isFinite(ev.ends_at)) {
    deal.ends_at = ev.ends_at;
    dealCountdown.update(ev.ends_at);
  }
  // Expired holds can put units back: sold out is not final until deal.ended.
  if (state.dealState === 'live' && deal.remaining <= 0) state.dealState = 'sold_out';
  else if (state.dealState === 'sold_out' && deal.remaining > 0) state.dealState = 'live';
  renderDeal();
}

function onDealEnded(ev) {
  const deal = state.deal;
  if (!deal || deal.id !== ev.deal_id) return;
  state.dealState = ['sold_out', 'expired', 'cancelled'].includes(ev.reason) ? ev.reason : 'expired';
  if (ev.reason === 'sold_out') deal.remaining = 0;
  dealCountdown.stop();
  byId('deal-countdown').textContent = '0';
  renderDeal();
  dealHideTimer = setTimeout(() => {
    if (state.deal === deal && !state.reservation) {
      state.deal = null;
      state.dealState = 'none';
      renderDeal();
    }
  }, DEAL_HIDE_AFTER_END_MS);
}

function renderDeal() {
  const banner = byId('deal-banner');
  const deal = state.deal;
  banner.hidden = !deal || state.dealState === 'none';
  banner.dataset.state = state.dealState;
  banner.dataset.dealId = deal ? deal.id : '';
  const button = byId('buy-button');
  if (!deal) return;
  const product = productFor(deal.product_id);
  byId('deal-name').textContent = product ? product.name : '';
  byId('deal-remaining').textContent = String(deal.remaining ?? 0);
  byId('deal-quantity').textContent = String(deal.quantity ?? 0);
  renderPrices();

  let label = 'deal.buy';
  let enabled = false;
  if (!state.token) label = 'deal.login_to_buy';
  else if (state.buying) label = 'deal.reserving';
  else if (state.reservation && state.reservation.deal_id === deal.id) label = 'deal.reserved';
  else if (state.dealState === 'live' && limitReached(deal)) label = 'deal.limit_reached';
  else if (state.dealState === 'live') enabled = true;
  else label = `deal.${state.dealState}`;
  button.disabled = !enabled;
  button.dataset.state = enabled ? 'ready' : label.slice(5);
  button.textContent = t(label);
}

/** True once this viewer holds the deal's per-user limit in orders: "Buy now" would only be refused. */
function limitReached(deal) {
  const limit = Number(deal.per_user_limit);
  return Number.isFinite(limit) && limit > 0 && (state.bought[deal.id] || 0) >= limit;
}

function noteBought(dealId, units) {
  state.bought[dealId] = units;
  try {
    sessionStorage.setItem(boughtKey(), JSON.stringify({ user: state.boughtBy, deals: state.bought }));
  } catch {
    /* storage disabled */
  }
}

/** On (re)join: purchases belong to one user; a new guest identity starts with none. */
function loadBought() {
  const user = state.user ? state.user.id : null;
  if (user === state.boughtBy) return;
  let saved = null;
  try {
    saved = JSON.parse(sessionStorage.getItem(boughtKey()) || 'null');
  } catch {
    saved = null;
  }
  state.boughtBy = user;
  state.bought = saved && user && saved.user === user && saved.deals ? saved.deals : {};
}

function renderPrices() {
  const p = state.pinned;
  byId('pinned-price').textContent = p ? money(p.price_cents, p.currency) : '';
  const deal = state.deal;
  if (deal) {
    const product = productFor(deal.product_id);
    byId('deal-price').textContent = money(deal.price_cents, deal.currency);
    byId('deal-original-price').textContent =
      product && product.price_cents !== deal.price_cents ? money(product.price_cents, product.currency) : '';
  }
  // price_cents is the unit price; qty units were held / bought.
  const r = state.reservation;
  byId('reservation-price').textContent = r ? total(r) : '';
  const o = state.order;
  byId('order-total').textContent = o ? total(o) : '';
}

function total({ price_cents: price, qty = 1, currency }) {
  const sum = money(price * qty, currency);
  return qty > 1 ? `${qty} × ${money(price, currency)} = ${sum}` : sum;
}

// ---------------------------------------------------------------- checkout

async function buy() {
  const deal = state.deal;
  if (!deal || state.dealState !== 'live' || state.buying || !state.token) return;
  state.buying = true;
  byId('buy-error').textContent = '';
  renderDeal();
  try {
    state.claimKey = state.claimKey || uuid();
    const reservation =
      CLAIM_VIA === 'ws'
        ? (await state.client.request('deal.claim', { deal_id: deal.id, qty: 1, idempotency_key: state.claimKey }))
            .reservation
        : await state.http.claim(state.show, deal.id, { qty: 1, idempotencyKey: state.claimKey });
    state.claimKey = null;
    showReservation(reservation);
  } catch (err) {
    // Keep the key after an unanswered attempt so pressing again cannot hold twice.
    if (!['network', 'timeout', 'not_connected', 'disconnected'].includes(err.code) && !(err.status >= 500)) {
      state.claimKey = null;
    }
    if (state.deal === deal) {
      if (err.code === 'sold_out') {
        state.dealState = 'sold_out';
        deal.remaining = 0;
      } else if (err.code === 'deal_not_live') state.dealState = 'expired';
      else if (err.code === 'limit_reached' && Number.isFinite(Number(deal.per_user_limit))) {
        noteBought(deal.id, Number(deal.per_user_limit));
      }
    }
    byId('buy-error').textContent = errorText(err);
  } finally {
    state.buying = false;
    renderDeal();
  }
}

const reservationKey = () => `livecore:viewer:${state.show}:reservation`;
const boughtKey = () => `livecore:viewer:${state.show}:bought`;

function showReservation(reservation) {
  state.reservation = reservation;
  try {
    sessionStorage.setItem(reservationKey(), JSON.stringify(reservation));
  } catch {
    /* storage disabled */
  }
  hideOrder();
  byId('confirm-error').textContent = '';
  byId('confirm-form').hidden = false;
  byId('confirm-form').dataset.reservationId = reservation.id;
  byId('confirm-button').disabled = false;
  byId('confirm-button').textContent = t('confirm.button');
  holdCountdown.start(state.client.clock.now(), reservation.expires_at);
  renderPrices();
  renderDeal();
  byId('confirm-button').focus();
}

/** After a reload, bring back an unexpired hold from this tab's storage. */
function restoreReservation() {
  if (state.reservation) return;
  let saved = null;
  try {
    saved = JSON.parse(sessionStorage.getItem(reservationKey()) || 'null');
  } catch {
    saved = null;
  }
  if (saved && saved.id && saved.expires_at > state.client.clock.now() + 1000) showReservation(saved);
}

function clearReservation() {
  state.reservation = null;
  try {
    sessionStorage.removeItem(reservationKey());
  } catch {
    /* ignore */
  }
  holdCountdown.stop();
  byId('confirm-form').hidden = true;
  renderDeal();
}

function holdExpired() {
  if (!state.reservation) return;
  clearReservation();
  byId('buy-error').textContent = t('hold.expired');
}

async function confirmOrder(e) {
  e.preventDefault();
  const reservation = state.reservation;
  if (!reservation) return;
  const button = byId('confirm-button');
  button.disabled = true;
  button.textContent = t('confirm.confirming');
  byId('confirm-error').textContent = '';
  try {
    const order = await state.http.confirm(reservation.id, byId('payment-ref').value.trim());
    clearReservation();
    showOrder(order);
  } catch (err) {
    if (err.code === 'reservation_expired' || err.code === 'reservation_not_active') {
      clearReservation();
      byId('buy-error').textContent = errorText(err);
    } else {
      byId('confirm-error').textContent = errorText(err);
    }
  } finally {
    button.disabled = false;
    button.textContent = t('confirm.button');
  }
}

async function releaseReservation() {
  const reservation = state.reservation;
  if (!reservation) return;
  clearReservation();
  try {
    await state.http.release(reservation.id);
  } catch {
    /* the hold expires on its own */
  }
}

function showOrder(order) {
  state.order = order;
  if (order.deal_id) noteBought(order.deal_id, (state.bought[order.deal_id] || 0) + (Number(order.qty) || 1));
  byId('order-id').textContent = order.id;
  const box = byId('order-confirmation');
  box.dataset.orderId = order.id;
  box.dataset.status = order.status || 'paid';
  box.hidden = false;
  renderPrices();
  renderDeal();
}

function hideOrder() {
  state.order = null;
  byId('order-confirmation').hidden = true;
}

// ---------------------------------------------------------------- video (WHEP)

const player = {
  session: null,
  retryTimer: null,
  attempt: 0,
  starting: false,
  lastFrames: 0,
  lastProgressAt: 0,
};

async function startVideo(now = false) {
  clearTimeout(player.retryTimer);
  if (now) player.attempt = 0;
  if (player.session || player.starting || state.status === 'ended') return;
  player.starting = true;
  const node = byId('video');
  node.dataset.state = 'connecting';
  try {
    const session = await play({
      url: `/whep/${encodeURIComponent(state.show)}`,
      video: node,
      token: state.token,
    });
    if (state.status === 'ended') {
      session.stop(); // the show ended while we were connecting
      endVideo();
      return;
    }
    player.session = session;
    player.attempt = 0;
    player.lastProgressAt = Date.now();
    session.onended = () => restartVideo();
    node.dataset.state = 'playing';
    byId('video-waiting').hidden = true;
    byId('video-unmute').hidden = false;
  } catch {
    node.dataset.state = 'idle';
    scheduleVideo();
  } finally {
    player.starting = false;
  }
}

function scheduleVideo() {
  if (state.status === 'ended') return;
  const delay = Math.min(5000, 2000 * 2 ** player.attempt);
  player.attempt += 1;
  player.retryTimer = setTimeout(() => startVideo(), delay);
}

function restartVideo() {
  const session = player.session;
  player.session = null;
  if (session) session.stop();
  const node = byId('video');
  node.srcObject = null;
  node.dataset.state = 'idle';
  byId('video-waiting').hidden = false;
  byId('video-unmute').hidden = true;
  scheduleVideo();
}

/** The show is over: stop playing and retrying, and say so where the video was. */
function endVideo() {
  clearTimeout(player.retryTimer);
  const session = player.session;
  player.session = null;
  if (session) session.stop();
  const node = byId('video');
  node.srcObject = null;
  node.dataset.state = 'idle';
  byId('video-unmute').hidden = true;
  const note = byId('video-waiting');
  note.dataset.i18n = 'video.ended'; // applyI18n re-translates it on a language switch
  note.textContent = t('video.ended');
  note.hidden = false;
}

/** A session whose frames stop for 10 s is restarted (the host may have re-published). */
function watchVideoStall() {
  setInterval(() => {
    if (!player.session) return;
    const frames = decodedFrames(byId('video'));
    if (frames !== player.lastFrames) {
      player.lastFrames = frames;
      player.lastProgressAt = Date.now();
    } else if (Date.now() - player.lastProgressAt > 10000) {
      restartVideo();
    }
  }, 2000);
}

function toggleMute() {
  const node = byId('video');
  node.muted = !node.muted;
  if (!node.muted) node.play().catch(() => {});
  renderMute();
}

function renderMute() {
  const node = byId('video');
  const button = byId('video-unmute');
  button.textContent = t(node.muted ? 'video.unmute' : 'video.mute');
  button.setAttribute('aria-pressed', String(!node.muted));
}

// ---------------------------------------------------------------- wiring

function wireUi() {
  wireChatForm(() => state.client);
  byId('buy-button').addEventListener('click', buy);
  byId('confirm-form').addEventListener('submit', confirmOrder);
  byId('reservation-release').addEventListener('click', releaseReservation);
  byId('video-unmute').addEventListener('click', toggleMute);
  byId('reactions').addEventListener('click', (e) => {
    const button = e.target.closest('[data-emoji]');
    if (button) react(button.dataset.emoji);
  });
  byId('pinned-image').addEventListener('error', (e) => {
    if (!e.target.src.endsWith('/static/poster.svg')) e.target.src = '/static/poster.svg';
  });
  trackFrames(byId('video'));
  watchVideoStall();
  window.addEventListener('pagehide', () => {
    if (player.session) player.session.stop({ keepalive: true });
  });
  const relabel = () => {
    for (const b of document.querySelectorAll('.reaction-button')) {
      b.setAttribute('aria-label', t('reactions.send', { emoji: b.dataset.emoji }));
    }
    renderMute();
    renderConnection();
    if (state.status) renderShowStatus(state.status);
    renderNotice();
    renderDeal();
    renderPrices();
    if (state.reservation) byId('confirm-button').textContent = t('confirm.button');
  };
  onLangChange(relabel);
  relabel();
}

// For debugging and browser tests: window.livecorePage.state.client is the LiveCore instance.
window.livecorePage = { state };

main();
