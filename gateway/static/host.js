// Host page (/host): show control, camera (WHIP), products, flash deals, announcements, stats.

import { LiveCore, LiveCoreHttp, toMajorString, toMinorUnits } from './livecore.js';
import { initLang, onLangChange, t } from './i18n.js';
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
  flash,
  forgetToken,
  money,
  removeChat,
  renderShowStatus,
  saveCredentials,
  setProgress,
  takeCredentials,
  wireChatForm,
} from './ui.js';
import { publish } from './whip.js';
import { StatsChart } from './chart.js';

const ROLE = 'host';

const state = {
  show: null,
  token: null,
  client: null,
  http: new LiveCoreHttp(),
  status: null,
  products: [],
  pinnedId: null,
  deal: null,
  dealState: 'none',
  stats: null,
  // gen: bumped by every stop, so late answers of an older camera session are ignored.
  camera: {
    session: null, stream: null, state: 'off', error: '', retrying: false,
    gen: 0, attempt: 0, retryTimer: null, stopping: null,
  },
};

let chart;
let dealCountdown;
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
  // The report page reads the same sessionStorage credentials: no token in the URL.
  byId('report-link').href = `/host/report?show=${encodeURIComponent(show)}`;
  state.token = token;
  state.http.setToken(token);
  byId('app').hidden = false;
  chart = new StatsChart(byId('stats-chart'));
  connect();
  loadProducts();
}

// ---------------------------------------------------------------- socket

function connect() {
  const client = new LiveCore({ show: state.show, role: ROLE, token: state.token });
  state.client = client;
  renderConnection = bindConnectionStatus(client);
  dealCountdown = new Countdown(client.clock, {
    onFrame: (f) => setProgress(byId('deal-progress'), f),
    onSecond: (s) => {
      byId('deal-countdown').textContent = String(s);
    },
  });

  client.on('welcome', (w) => {
    const title = (w.show && w.show.title) || state.show;
    byId('show-title').textContent = title;
    document.title = `${title} · ${t('host.title')}`;
    setStatus(w.show && w.show.status);
    setViewers(w.viewers);
    setPinned(w.pinned ? w.pinned.id : null);
    setDeal(w.deal || null);
  });
  client.on('fatal', async ({ code }) => {
    forgetToken(ROLE, state.show);
    const creds = await askCredentials({ show: state.show, error: fatalText(code) });
    saveCredentials(ROLE, creds.show, creds.token);
    window.location.reload();
  });
  client.on('show.status', (ev) => setStatus(ev.status));
  client.on('viewers', (ev) => setViewers(ev.count));
  client.on('product.pinned', (ev) => {
    if (ev.product) upsertProduct(ev.product);
    setPinned(ev.product ? ev.product.id : null);
  });
  client.on('product.unpinned', () => setPinned(null));
  client.on('deal.started', (ev) => setDeal(ev.deal));
  client.on('deal.tick', (ev) => {
    if (!state.deal || state.deal.id !== ev.deal_id) return;
    if (Number.isFinite(ev.remaining)) state.deal.remaining = ev.remaining;
    if (Number.isFinite(ev.ends_at)) {
      state.deal.ends_at = ev.ends_at;
      dealCountdown.update(ev.ends_at);
    }
    renderDeal();
  });
  client.on('deal.ended', (ev) => {
    if (!state.deal || state.deal.id !== ev.deal_id) return;
    state.dealState = ev.reason || 'expired';
    dealCountdown.stop();
    byId('deal-countdown').textContent = '0';
    renderDeal();
    loadProducts(); // unsold units went back to stock
  });
  client.on('stats', onStats);
  client.on('chat.message', (ev) => appendChat(byId('chat-list'), chatItem(ev.message)));
  client.on('chat.deleted', (ev) => removeChat(byId('chat-list'), ev.message_id));
  client.on('announcement', (ev) => flash(byId('host-message'), ev.text || ''));
  client.connect();
}

/** Send a host command; report success or the error in #host-message. Resolves with the ack or null. */
async function command(type, fields = {}, doneKey = `done.${type}`) {
  try {
    const ack = await state.client.request(type, fields);
    flash(byId('host-message'), t(doneKey), 'ok');
    return ack;
  } catch (err) {
    flash(byId('host-message'), errorText(err), 'error', 10000);
    return null;
  }
}

// ---------------------------------------------------------------- show

function setStatus(status) {
  if (!status) return;
  state.status = status;
  renderShowStatus(status);
  byId('show-start').disabled = status === 'live' || status === 'ended';
  byId('show-end').disabled = status === 'ended';
  // The broadcast is over: free the camera (the server refuses new WHIP sessions for ended shows).
  if (status === 'ended' && (state.camera.session || state.camera.stream || state.camera.state === 'connecting')) {
    stopCamera();
  }
}

function setViewers(count) {
  if (Number.isFinite(count)) byId('viewer-count').textContent = String(count);
}

// ---------------------------------------------------------------- products

async function loadProducts() {
  try {
    const body = await state.http.products();
    state.products = (body && body.products) || [];
  } catch (err) {
    flash(byId('host-message'), errorText(err), 'error', 10000);
  }
  renderProducts();
}

function upsertProduct(product) {
  const i = state.products.findIndex((p) => p.id === product.id);
  if (i >= 0) state.products[i] = { ...state.products[i], ...product };
  else state.products.push(product);
  renderProducts();
}

function setPinned(productId) {
  state.pinnedId = productId;
  renderProducts();
}

function renderProducts() {
  const list = byId('product-list');
  list.replaceChildren(
    ...state.products.map((p) => {
      const pinned = p.id === state.pinnedId;
      const image = el('img', {
        className: 'thumb',
        attrs: { alt: '', width: 48, height: 48, loading: 'lazy', src: /^(https?:|data:image\/|\/)/.test(p.image_url || '') ? p.image_url : '/static/poster.svg' },
      });
      return el('li', { className: 'product-row', dataset: { productId: p.id, pinned: pinned ? 'true' : 'false' } }, [
        image,
        el('span', { className: 'product-info' }, [
          el('span', { className: 'product-name', text: p.name, attrs: { dir: 'auto' } }),
          el('span', { className: 'hint', text: `${money(p.price_cents, p.currency)} · ${t('products.stock', { n: p.stock ?? '?' })}` }),
        ]),
        el('button', {
          className: pinned ? 'secondary small' : 'primary small',
          text: t(pinned ? 'products.pinned' : 'products.pin'),
          attrs: {
            type: 'button',
            'data-pin-product': p.id,
            'aria-pressed': String(pinned),
            'aria-label': t('products.pin_label', { name: p.name }),
          },
        }),
      ]);
    }),
  );
  byId('products-empty').hidden = state.products.length > 0;
  byId('product-unpin').disabled = !state.pinnedId;

  const select = byId('deal-product');
  const previous = select.value;
  select.replaceChildren(
    ...state.products.map((p) => el('option', { text: `${p.name} (${p.sku || p.id})`, attrs: { value: p.id } })),
  );
  if (state.products.some((p) => p.id === previous)) select.value = previous;
  else if (state.pinnedId && state.products.some((p) => p.id === state.pinnedId)) select.value = state.pinnedId;
  if (select.value !== previous) prefillDealForm();
}

function selectedProduct() {
  return state.products.find((p) => p.id === byId('deal-product').value) || null;
}

function prefillDealForm() {
  const p = selectedProduct();
  if (!p) return;
  byId('deal-currency').textContent = p.currency;
  byId('deal-price').value = toMajorString(p.price_cents, p.currency);
  if (Number.isFinite(p.stock) && p.stock > 0) {
    byId('deal-quantity').max = String(p.stock);
    byId('deal-quantity').value = String(Math.min(p.stock, Number(byId('deal-quantity').value) || 10));
  }
}

// ---------------------------------------------------------------- deals

async function launchDeal(e) {
  e.preventDefault();
  const product = selectedProduct();
  if (!product) return;
  const priceCents = toMinorUnits(byId('deal-price').value, product.currency);
  if (!Number.isInteger(priceCents) || priceCents < 0) {
    flash(byId('host-message'), t('dealform.bad_price'), 'error');
    byId('deal-price').focus();
    return;
  }
  const fields = {
    product_id: product.id,
    price_cents: priceCents,
    quantity: Number(byId('deal-quantity').value),
    duration_s: Number(byId('deal-duration').value),
    per_user_limit: Number(byId('deal-limit').value),
  };
  byId('deal-launch').disabled = true;
  const ack = await command('deal.launch', fields);
  byId('deal-launch').disabled = false;
  if (ack && ack.deal && (!state.deal || state.deal.id !== ack.deal.id)) setDeal(ack.deal);
  if (ack) loadProducts(); // stock moved into the deal
}

function setDeal(deal) {
  if (!deal && state.deal && state.dealState !== 'live') return; // keep the ended result visible
  state.deal = deal ? { ...deal } : null;
  state.dealState = deal ? 'live' : 'none';
  if (deal) dealCountdown.start(deal.starts_at, deal.ends_at);
  else dealCountdown.stop();
  renderDeal();
}

function renderDeal() {
  const deal = state.deal;
  byId('host-deal').dataset.state = state.dealState;
  byId('host-deal-none').hidden = Boolean(deal);
  byId('host-deal-live').hidden = !deal;
  byId('deal-cancel').disabled = state.dealState !== 'live';
  if (!deal) return;
  const product = state.products.find((p) => p.id === deal.product_id) || deal.product;
  byId('host-deal-name').textContent = product ? product.name : deal.product_id;
  byId('host-deal-price').textContent = money(deal.price_cents, deal.currency);
  byId('deal-remaining').textContent = String(deal.remaining ?? 0);
  byId('deal-quantity-total').textContent = String(deal.quantity ?? 0);
  byId('host-deal-state').textContent = state.dealState === 'live' ? t('show.live') : t(`deal.${state.dealState}`);
  byId('host-deal-state').dataset.state = state.dealState;
}

// ---------------------------------------------------------------- stats

function onStats(stats) {
  state.stats = stats;
  renderStats();
  chart.push({ a: stats.viewers || 0, b: stats.chat_per_min || 0 });
}

function renderStats() {
  const s = state.stats;
  if (!s) return;
  const set = (id, v) => {
    byId(id).textContent = String(Number.isFinite(v) ? Math.round(v * 10) / 10 : 0);
  };
  set('stats-viewers', s.viewers);
  set('stats-peak-viewers', s.peak_viewers);
  set('stats-chat-per-min', s.chat_per_min);
  set('stats-reactions-per-min', s.reactions_per_min);
  set('stats-claims', s.claims);
  set('stats-orders', s.orders);
  const gmv = Number(s.gmv_cents) || 0;
  const currency = s.currency || (state.deal && state.deal.currency) || (state.products[0] && state.products[0].currency);
  const node = byId('stats-gmv');
  node.dataset.cents = String(gmv);
  node.textContent = currency ? money(gmv, currency) : (gmv / 100).toFixed(2);
}

// ---------------------------------------------------------------- camera (WHIP)

// Once the camera has been live, a WHIP session that dies (server restart,
// network change) is published again with the same stream, backing off up to
// RETRY_MAX_MS, until the host presses stop or the server refuses for good.
const RETRY_BASE_MS = 1000;
const RETRY_MAX_MS = 10000;
const RETRYABLE = new Set(['network', 'ingest_active', 'unavailable', 'rate_limited', 'internal', 'timeout']);

function retryable(err) {
  if (!err || !err.code) return false; // a browser-side failure (e.g. SDP) will not heal by itself
  return RETRYABLE.has(err.code) || err.status === 429 || err.status >= 500;
}

async function toggleCamera() {
  if (state.camera.session || state.camera.stream || state.camera.state === 'connecting') {
    await stopCamera();
    return;
  }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setCamera('error', t('publish.insecure'));
    return;
  }
  const gen = state.camera.gen;
  setCamera('connecting');
  try {
    await state.camera.stopping; // the last session's DELETE: else the server sees a second ingest
    const stream = await getCamera();
    if (gen !== state.camera.gen) {
      for (const track of stream.getTracks()) track.stop(); // stopped while asking for the camera
      return;
    }
    state.camera.stream = stream;
    byId('host-preview').srcObject = stream;
    await publishOnce(gen);
  } catch (err) {
    if (gen !== state.camera.gen) return;
    await stopCamera();
    setCamera('error', t('publish.failed', { error: err.code ? errorText(err) : err.message || err.name }));
  }
}

/** One WHIP session for the current stream. Rejects if the server refuses it. */
async function publishOnce(gen) {
  const session = await publish({
    url: `/whip/${encodeURIComponent(state.show)}`,
    stream: state.camera.stream,
    token: state.token,
  });
  if (gen !== state.camera.gen) {
    session.stop(); // stopped while negotiating
    return;
  }
  state.camera.session = session;
  state.camera.attempt = 0;
  session.onended = (reason) => {
    if (gen !== state.camera.gen || state.camera.session !== session) return;
    state.camera.session = null;
    session.stop(); // DELETE the dead session, so the new one is not refused as a second ingest
    republish(gen, reason);
  };
  setCamera('live');
}

function republish(gen, reason) {
  const usable = state.camera.stream && state.camera.stream.getVideoTracks().some((tr) => tr.readyState === 'live');
  if (!usable) {
    stopCamera();
    setCamera('error', t('publish.failed', { error: reason }));
    return;
  }
  setCamera('connecting', '', true);
  const delay = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** state.camera.attempt);
  state.camera.attempt += 1;
  clearTimeout(state.camera.retryTimer);
  state.camera.retryTimer = setTimeout(async () => {
    if (gen !== state.camera.gen) return;
    try {
      await publishOnce(gen);
    } catch (err) {
      if (gen !== state.camera.gen) return;
      if (retryable(err)) {
        republish(gen, err.code);
        return;
      }
      await stopCamera();
      setCamera('error', t('publish.failed', { error: err.code ? errorText(err) : err.message || err.name }));
    }
  }, delay);
}

async function getCamera() {
  const video = { width: { ideal: 1280 }, height: { ideal: 720 } };
  try {
    return await navigator.mediaDevices.getUserMedia({ video, audio: true });
  } catch {
    return navigator.mediaDevices.getUserMedia({ video }); // no microphone (or refused)
  }
}

async function stopCamera() {
  const { session, stream } = state.camera;
  state.camera.gen += 1; // pending negotiations and retries of the old camera give up
  clearTimeout(state.camera.retryTimer);
  state.camera.attempt = 0;
  state.camera.session = null;
  state.camera.stream = null;
  if (stream) for (const track of stream.getTracks()) track.stop();
  byId('host-preview').srcObject = null;
  setCamera('off');
  if (session) {
    state.camera.stopping = session.stop();
    await state.camera.stopping;
  }
}

function setCamera(cameraState, error = '', retrying = false) {
  state.camera.state = cameraState;
  state.camera.error = error;
  state.camera.retrying = retrying;
  renderCamera();
}

function renderCamera() {
  const { state: s, error, retrying } = state.camera;
  const button = byId('publish-video');
  button.dataset.state = s;
  button.setAttribute('aria-pressed', String(s === 'live' || s === 'connecting'));
  button.textContent = t(s === 'live' || s === 'connecting' ? 'publish.stop' : 'publish.start');
  const status = byId('publish-status');
  status.dataset.state = s;
  status.textContent = s === 'error' ? error : t(retrying ? 'publish.retrying' : `publish.${s}`);
}

// ---------------------------------------------------------------- wiring

function wireUi() {
  byId('show-start').addEventListener('click', () => command('show.start'));
  byId('show-end').addEventListener('click', () => command('show.end'));
  byId('product-list').addEventListener('click', (e) => {
    const button = e.target.closest('[data-pin-product]');
    if (!button) return;
    command('product.pin', { product_id: button.dataset.pinProduct }); // idempotent; #product-unpin unpins
  });
  byId('product-unpin').addEventListener('click', () => command('product.unpin'));
  byId('products-reload').addEventListener('click', loadProducts);
  byId('deal-product').addEventListener('change', prefillDealForm);
  byId('deal-form').addEventListener('submit', launchDeal);
  byId('deal-cancel').addEventListener('click', () => {
    if (state.deal) command('deal.cancel', { deal_id: state.deal.id });
  });
  byId('announce-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const input = byId('announce-input');
    const text = input.value.trim();
    if (!text) return;
    if (await command('announce', { text })) input.value = '';
  });
  byId('publish-video').addEventListener('click', toggleCamera);
  wireChatForm(() => state.client);
  window.addEventListener('pagehide', () => {
    if (state.camera.session) state.camera.session.stop({ keepalive: true });
  });
  const relabel = () => {
    renderConnection();
    if (state.status) renderShowStatus(state.status);
    renderProducts();
    renderDeal();
    renderStats();
    renderCamera();
    if (chart) chart.draw();
  };
  onLangChange(relabel);
  relabel();
}

// For debugging and browser tests: window.livecorePage.state.client is the LiveCore instance.
window.livecorePage = { state };

main();
