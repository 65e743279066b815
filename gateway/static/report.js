// Show report page (/host/report?show=…&token=…): the analytics of one show
// for its host (or an admin). Reads GET /api/v1/shows/{show}/analytics; the
// token stays in sessionStorage (shared with the host page), never in the URL.

import { LiveCoreHttp } from './livecore.js';
import {
  askCredentials,
  byId,
  el,
  errorText,
  forgetToken,
  money,
  renderShowStatus,
  saveCredentials,
  takeCredentials,
} from './ui.js';
import { StatsChart } from './chart.js';

const ROLE = 'host';
const LIVE_REFRESH_MS = 30_000;

const state = {
  show: null,
  token: null,
  http: new LiveCoreHttp(),
  chart: null,
  timer: null,
  loading: false,
};

async function main() {
  let { show, token } = takeCredentials(ROLE);
  if (!show || !token) {
    ({ show, token } = await askCredentials({ show }));
    saveCredentials(ROLE, show, token);
  }
  setCredentials(show, token);
  byId('app').hidden = false;
  state.chart = new StatsChart(byId('series-chart'));
  byId('refresh').addEventListener('click', () => load());
  for (const button of document.querySelectorAll('[data-export]')) {
    button.addEventListener('click', () => exportCsv(button.dataset.export, button));
  }
  await load();
}

function setCredentials(show, token) {
  state.show = show;
  state.token = token;
  state.http.setToken(token);
}

const analyticsPath = (query = '') => `/api/v1/shows/${encodeURIComponent(state.show)}/analytics${query}`;

async function load() {
  if (state.loading) return;
  state.loading = true;
  clearTimeout(state.timer);
  try {
    const report = await state.http.call('GET', analyticsPath());
    showError('');
    render(report);
    if (report.show.status === 'live') state.timer = setTimeout(load, LIVE_REFRESH_MS);
  } catch (err) {
    if (err.code === 'unauthenticated' || err.code === 'forbidden') {
      forgetToken(ROLE, state.show);
      const creds = await askCredentials({ show: state.show, error: errorText(err) });
      saveCredentials(ROLE, creds.show, creds.token);
      setCredentials(creds.show, creds.token);
      state.timer = setTimeout(load, 0);
    } else {
      showError(errorText(err));
    }
  } finally {
    state.loading = false;
  }
}

function showError(text) {
  const node = byId('report-error');
  node.textContent = text;
  node.hidden = !text;
}

// ---------------------------------------------------------------- formatting

const DASH = '–';
const intFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const pctFmt = new Intl.NumberFormat(undefined, { style: 'percent', maximumFractionDigits: 1 });

const count = (n) => (Number.isFinite(n) ? intFmt.format(n) : DASH);
const percent = (ratio) => (Number.isFinite(ratio) ? pctFmt.format(ratio) : DASH);

function duration(ms) {
  if (!Number.isFinite(ms)) return DASH;
  const total = Math.round(ms / 1000);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`;
}

/** Money of a sales block: one currency, or each currency when the show mixed them. */
function sales(block, fallbackCurrency = null) {
  if (block.currency) return money(block.gmv_cents, block.currency);
  const parts = Object.entries(block.by_currency || {}).map(([cur, v]) => money(v.gmv_cents, cur));
  if (parts.length) return parts.join(' + ');
  return fallbackCurrency ? money(0, fallbackCurrency) : count(0);
}

const plural = (n, one, many) => `${count(n)} ${n === 1 ? one : many}`;

const clock = (ms) => (Number.isFinite(ms) ? new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : DASH);

function set(id, text) {
  byId(id).textContent = text;
}

// ---------------------------------------------------------------- rendering

function render(r) {
  byId('show-title').textContent = r.show.title || r.show.id;
  document.title = `${r.show.title || r.show.id} · Show report · LiveCore`;
  renderShowStatus(r.show.status);
  set('report-updated', `Updated ${clock(r.generated_at)}`);

  set('m-peak', count(r.viewers.peak));
  set('m-unique', count(r.viewers.unique));
  set('m-watch', duration(r.viewers.avg_watch_ms));
  set('m-chat', count(r.engagement.chat_messages));
  set('m-reactions', count(r.engagement.reactions));
  set('m-pins', count(r.engagement.product_pins));

  set('m-gmv', sales(r.sales));
  set('m-orders', count(r.sales.orders));
  set('m-aov', r.sales.currency && r.sales.aov_cents !== null ? money(r.sales.aov_cents, r.sales.currency) : DASH);
  set('m-buyers', count(r.sales.buyers));
  set('m-conv-live', percent(r.conversion.live));
  set('m-conv-claims', percent(r.conversion.claims_to_orders));
  set('m-claims', count(r.claims.total));
  const outcomes = Object.entries(r.claims.by_outcome).map(([k, v]) => `${k.replace(/_/g, ' ')}: ${count(v)}`);
  set('m-claims-detail', outcomes.join(' · '));

  set('m-post-orders', count(r.post_live.orders));
  const showCurrency = r.sales.currency || (r.deals[0] && r.deals[0].currency) || null;
  set('m-post-gmv', sales(r.post_live, showCurrency));
  set('m-post-conv', percent(r.post_live.conversion));
  let windowText = 'Counted once the show has ended.';
  if (r.show.ended_at) {
    windowText = r.post_live.complete
      ? 'Complete: the 24 h window has closed.'
      : `Still counting until ${new Date(r.show.ended_at + r.post_live.window_ms).toLocaleString()}.`;
  }
  set('m-post-window', windowText);

  renderSeries(r.series);
  renderDeals(r.deals);
}

function renderSeries(series) {
  const chart = state.chart;
  chart.points = [];
  chart.capacity = Math.max(2, series.length);
  for (const p of series) chart.push({ a: p.viewers, b: p.orders });
  chart.canvas.dataset.samples = String(series.length);
  chart.schedule();
  set('series-range', series.length
    ? `${clock(series[0].minute_at)} – ${clock(series[series.length - 1].minute_at + 60_000)} · ${series.length} min`
    : 'No activity recorded yet.');
}

function renderDeals(deals) {
  const list = byId('deals-list');
  list.replaceChildren(
    ...deals.map((d) => {
      const soldOut = d.time_to_sell_out_ms !== null ? `sold out in ${duration(d.time_to_sell_out_ms)}` : (d.end_reason || d.status);
      return el('li', { dataset: { dealId: d.id } }, [
        el('strong', { text: d.product_name || d.product_id, attrs: { dir: 'auto' } }),
        el('span', { className: 'num', text: money(d.price_cents, d.currency) }),
        el('span', { text: `${count(d.sold)} / ${count(d.quantity)} sold (${percent(d.sell_through)})` }),
        el('span', { className: 'hint', text: soldOut }),
        el('span', { className: 'hint', text: `${plural(d.orders, 'order', 'orders')} · ${money(d.gmv_cents, d.currency)}` }),
      ]);
    }),
  );
  byId('deals-empty').hidden = deals.length > 0;
}

// ---------------------------------------------------------------- CSV export

async function exportCsv(part, button) {
  button.disabled = true;
  try {
    const res = await fetch(analyticsPath(`?format=csv&part=${encodeURIComponent(part)}`), {
      headers: { Authorization: `Bearer ${state.token}` },
    });
    if (!res.ok) {
      let message = res.statusText;
      try {
        message = (await res.json()).error.message || message;
      } catch {
        /* not JSON */
      }
      throw new Error(message);
    }
    const url = URL.createObjectURL(await res.blob());
    const link = el('a', { attrs: { href: url, download: `show-${state.show}-${part}.csv` }, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  } catch (err) {
    showError(`Export failed: ${err.message || err}`);
  } finally {
    button.disabled = false;
  }
}

main().catch((err) => showError(errorText(err)));
