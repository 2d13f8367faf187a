// app.js — the holdfast dashboard. Everything it shows comes from the public HTTP API
// (docs/api.md), with the API key from sessionStorage when the server asks for one.
// No framework, no build step: the DOM is built with textContent, never from HTML strings.
'use strict';

const PAGE = 25;             // resources per page
const SERIES_S = 300;        // seconds charted
const EVENTS_KEPT = 200;     // event lines kept on the page
const KEY = 'holdfast.apiKey';

const $ = (sel) => document.querySelector(sel);

const state = {
  prefix: '',
  cursors: [null],           // cursors[i]: the cursor that loads page i
  page: 0,
  more: false,
  rows: [],
  selected: null,            // resource name shown in the detail
  holders: [],
  waiters: [],
  waitersListed: true,       // false once the engine answers that it cannot list them
  saga: null,                // the saga whose timeline is shown
  expiring: [],
  skewMs: 0,                 // server clock minus ours, from /v1/stats/series
  lastSeq: null,             // the last event shown; null until the log's end is known
  paused: false,
  keyWanted: false,
};

class ApiError extends Error {
  constructor(status, error) {
    super(error && error.message ? error.message : 'HTTP ' + status);
    this.status = status;
    this.code = error && error.code ? error.code : 'http_' + status;
  }
}

function authHeaders(extra) {
  const h = Object.assign({}, extra || {});
  const k = sessionStorage.getItem(KEY);
  if (k) h.Authorization = 'Bearer ' + k;
  return h;
}

async function api(path, opts) {
  opts = opts || {};
  const r = await fetch(path, {
    method: opts.method || 'GET',
    headers: authHeaders(opts.body ? { 'Content-Type': 'application/json' } : {}),
    body: opts.body ? JSON.stringify(opts.body) : undefined,
    cache: 'no-store',
  });
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (r.status === 401) askKey();
  if (!r.ok) throw new ApiError(r.status, body && body.error);
  return body;
}

// ---- Small DOM helpers. ------------------------------------------------------------

function el(tag, props, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k.startsWith('data-') || k.startsWith('aria-')) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of kids) if (c != null) e.append(c);
  return e;
}

// Redraws a container with fn, unless `sig` (what it shows) is unchanged; the element that had
// the focus in it (by its data-key) gets it back, so that refreshes do not move a keyboard user.
function redraw(container, sig, fn) {
  if (container.dataset.sig === sig) return;
  container.dataset.sig = sig;
  const a = document.activeElement;
  const key = a && container.contains(a) ? a.dataset.key : null;
  fn();
  if (key) {
    for (const e of container.querySelectorAll('[data-key]')) if (e.dataset.key === key) { e.focus(); break; }
  }
}

function num(n) { return Number(n).toLocaleString('en-US'); }
function serverNow() { return Date.now() + state.skewMs; }
function shortId(id) { return id.slice(0, 8) + '…'; }

function fmtLeft(ms) {
  if (ms <= 0) return 'due';
  if (ms < 10000) return (ms / 1000).toFixed(1) + ' s';
  if (ms < 120000) return Math.round(ms / 1000) + ' s';
  if (ms < 7200000) return Math.round(ms / 60000) + ' min';
  return Math.round(ms / 3600000) + ' h';
}

// A bar of `frac` (0..1) with a label; `cls` adds low/full.
function bar(frac, label, cls) {
  const f = Math.max(0, Math.min(1, frac));
  const inner = el('span');
  inner.style.width = (f * 100).toFixed(1) + '%';
  const b = el('span', { class: 'bar' + (cls ? ' ' + cls : ''), role: 'presentation' }, inner);
  return el('span', {}, b, el('span', { text: label }));
}

// The draining bar of a hold's lease: what is left of created..expires.
function leaseCell(h) {
  const td = el('td', { class: 'lease', 'data-expires': String(h.expires_at_ms || ''),
    'data-created': String(h.created_at_ms) });
  paintLease(td);
  return td;
}

function paintLease(td) {
  const exp = Number(td.dataset.expires);
  td.textContent = '';
  if (!exp) { td.append('no lease (confirmed)'); return; }
  const created = Number(td.dataset.created);
  const left = exp - serverNow();
  const total = Math.max(1, exp - created);
  const frac = left / total;
  td.append(bar(frac, fmtLeft(left) + ' left', frac < 0.2 ? 'low' : ''));
}

function showError(msg) {
  const p = $('#error');
  p.textContent = msg || '';
  p.hidden = !msg;
}

function setConn(text, ok) {
  const c = $('#conn');
  c.textContent = text;
  c.className = 'pill ' + (ok ? 'ok' : 'bad');
}

// ---- The API key. -----------------------------------------------------------------

function askKey() {
  if (state.keyWanted) return;
  state.keyWanted = true;
  setConn('API key needed', false);
  const d = $('#key-dialog');
  $('#key-input').value = '';
  if (!d.open) d.showModal();
}

function setupKey() {
  const d = $('#key-dialog');
  $('#key-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const k = $('#key-input').value.trim();
    if (!k) return;
    sessionStorage.setItem(KEY, k);
    state.keyWanted = false;
    d.close();
    restartEvents();
    refreshAll();
  });
  $('#key-cancel').addEventListener('click', () => d.close());
  d.addEventListener('close', () => { state.keyWanted = false; }); // also on Escape
  $('#key-button').addEventListener('click', () => { state.keyWanted = false; askKey(); });
}

// ---- Contention charts. -----------------------------------------------------------

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

// Draws lines of `series` ([{values, color}]) over x = 0..n-1 on a canvas, y from 0.
function drawChart(canvas, series, unit) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (!w || !h) return;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const g = canvas.getContext('2d');
  g.scale(dpr, dpr);
  g.clearRect(0, 0, w, h);
  const n = series.length ? series[0].values.length : 0;
  let max = 0;
  for (const s of series) for (const v of s.values) max = Math.max(max, v);
  max = max > 0 ? niceCeil(max) : 1;
  const left = 44, right = 8, top = 8, bottom = 18;
  const pw = w - left - right, ph = h - top - bottom;
  g.font = '11px system-ui, sans-serif';
  g.fillStyle = cssVar('--muted');
  g.strokeStyle = cssVar('--line');
  g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = top + ph - (ph * i) / 4;
    g.beginPath(); g.moveTo(left, y + 0.5); g.lineTo(w - right, y + 0.5); g.stroke();
    const v = (max * i) / 4;
    g.fillText((v >= 100 ? Math.round(v) : +v.toFixed(2)) + (i === 4 ? unit : ''), 2, y + 4);
  }
  g.fillText('-' + Math.round(n / 60) + ' min', left, h - 4);
  g.fillText('now', w - right - 22, h - 4);
  if (n < 2) return;
  for (const s of series) {
    g.strokeStyle = s.color;
    g.lineWidth = 1.6;
    g.beginPath();
    s.values.forEach((v, i) => {
      const x = left + (pw * i) / (n - 1), y = top + ph - (ph * v) / max;
      if (i) g.lineTo(x, y); else g.moveTo(x, y);
    });
    g.stroke();
  }
}

function niceCeil(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

let lastSeries = null;

async function loadSeries() {
  const s = await api('/v1/stats/series?seconds=' + SERIES_S);
  state.skewMs = s.now_ms - Date.now();
  // The current second is still counting: chart the complete ones, padded to the window.
  const pts = s.points.slice(0, -1);
  const pad = Math.max(0, SERIES_S - 1 - pts.length);
  const zero = { granted: 0, conflicts: 0, timeouts: 0, expired: 0, latency_ms: { p50: 0, p99: 0 },
    handoff_ms: { n: 0, p50: 0, p99: 0 } };
  lastSeries = Array(pad).fill(zero).concat(pts);
  drawSeries();
  const sum = (k, n) => pts.slice(-n).reduce((a, p) => a + p[k], 0);
  const n = Math.min(10, pts.length) || 1;
  $('#rates-now').textContent = 'last ' + n + ' s, per second: ' +
    ['granted', 'conflicts', 'timeouts', 'expired'].map((k) => k + ' ' + (sum(k, n) / n).toFixed(1)).join(', ');
  const withLat = pts.filter((p) => p.granted > 0);
  const last = withLat[withLat.length - 1];
  $('#latency-now').textContent = last
    ? 'latest second with grants: p50 ' + last.latency_ms.p50.toFixed(2) + ' ms, p99 ' + last.latency_ms.p99.toFixed(2) + ' ms'
    : 'no grants in the window';
  const withHandoff = pts.filter((p) => p.handoff_ms && p.handoff_ms.n > 0);
  const lastH = withHandoff[withHandoff.length - 1];
  $('#handoff-now').textContent = lastH
    ? 'latest second with hand-offs: ' + lastH.handoff_ms.n + ', p50 ' + lastH.handoff_ms.p50.toFixed(0) +
      ' ms, p99 ' + lastH.handoff_ms.p99.toFixed(0) + ' ms'
    : 'no hand-offs in the window';
}

function drawSeries() {
  if (!lastSeries) return;
  const pick = (f) => lastSeries.map(f);
  drawChart($('#chart-rates'), [
    { values: pick((p) => p.granted), color: cssVar('--granted') },
    { values: pick((p) => p.conflicts), color: cssVar('--conflicts') },
    { values: pick((p) => p.timeouts), color: cssVar('--timeouts') },
    { values: pick((p) => p.expired), color: cssVar('--expired') },
  ], '/s');
  drawChart($('#chart-latency'), [
    { values: pick((p) => p.latency_ms.p50), color: cssVar('--p50') },
    { values: pick((p) => p.latency_ms.p99), color: cssVar('--p99') },
  ], ' ms');
  drawChart($('#chart-handoff'), [
    { values: pick((p) => (p.handoff_ms ? p.handoff_ms.p50 : 0)), color: cssVar('--p50') },
    { values: pick((p) => (p.handoff_ms ? p.handoff_ms.p99 : 0)), color: cssVar('--p99') },
  ], ' ms');
}

// ---- Resources: paged and searched by the server (cursor), never all loaded. ------

async function loadResources() {
  const cursor = state.cursors[state.page];
  const prefix = state.prefix;
  let rows = [], more = false;
  if (!prefix) {
    const r = await api('/v1/resources?limit=' + PAGE + (cursor !== null ? '&cursor=' + encodeURIComponent(cursor) : ''));
    rows = r.resources;
    more = r.more;
  } else {
    // Names are sorted bytewise, so the names starting with the prefix follow each other:
    // the prefix itself, then the names after it while they start with it.
    if (cursor === null) {
      try { rows.push(await api('/v1/resources/' + encodeURIComponent(prefix))); } catch (e) {
        if (e.code !== 'resource_not_found') throw e;
      }
    }
    const r = await api('/v1/resources?limit=' + PAGE + '&cursor=' + encodeURIComponent(cursor !== null ? cursor : prefix));
    let ended = false;
    for (const x of r.resources) {
      if (!x.name.startsWith(prefix)) { ended = true; break; }
      rows.push(x);
    }
    more = r.more && !ended;
  }
  state.rows = rows;
  state.more = more;
  renderResources();
}

function renderResources() {
  const tb = $('#resources tbody');
  redraw(tb, JSON.stringify([state.selected, state.prefix, state.rows]), () => fillResources(tb));
  $('#prev').disabled = state.page === 0;
  $('#next').disabled = !state.more;
  $('#page-info').textContent = 'page ' + (state.page + 1) + (state.more ? '' : ' (last)');
  if (state.selected) {
    const r = state.rows.find((x) => x.name === state.selected);
    if (r) renderSummary(r);
  }
}

function fillResources(tb) {
  tb.textContent = '';
  for (const r of state.rows) {
    const sel = r.name === state.selected;
    const btn = el('button', { type: 'button', class: 'link', text: r.name, 'data-name': r.name, 'data-key': 'r:' + r.name,
      'aria-pressed': String(sel), onclick: () => select(r.name) });
    const frac = r.capacity ? r.held / r.capacity : 0;
    tb.append(el('tr', { class: sel ? 'selected' : '', 'data-name': r.name },
      el('td', {}, btn),
      el('td', { class: 'num', text: num(r.capacity) }),
      el('td', {}, bar(frac, num(r.held), frac >= 1 ? 'full' : '')),
      el('td', { class: 'num', text: num(r.holds) }),
      el('td', { class: 'num waiters', text: num(r.waiters) })));
  }
  if (!state.rows.length) {
    tb.append(el('tr', {}, el('td', { colSpan: 5, class: 'muted',
      text: state.prefix ? 'no resource starts with “' + state.prefix + '”' : 'no resources yet' })));
  }
}

function setupResources() {
  $('#search-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    state.prefix = $('#search').value;
    state.cursors = [null];
    state.page = 0;
    loadResources().catch(fail);
  });
  $('#next').addEventListener('click', () => {
    if (!state.more || !state.rows.length) return;
    state.cursors[state.page + 1] = state.rows[state.rows.length - 1].name;
    state.page++;
    loadResources().catch(fail);
  });
  $('#prev').addEventListener('click', () => {
    if (state.page === 0) return;
    state.page--;
    loadResources().catch(fail);
  });
}

// ---- One resource: its holders and waiters. ---------------------------------------

function select(name) {
  if (state.selected !== name) state.waiters = [];
  state.selected = name;
  $('#detail').hidden = false;
  $('#detail-name').textContent = name;
  renderResources();
  loadDetail().catch(fail);
}

function renderSummary(r) {
  $('#detail-summary').textContent = 'capacity ' + num(r.capacity) + ', ' + num(r.held) + ' held by ' +
    num(r.holds) + (r.holds === 1 ? ' hold' : ' holds') + (r.declared ? '' : ' (implicit resource)');
  const shown = state.waiters.length;
  $('#waiters').textContent = !r.waiters ? 'no waiters'
    : num(r.waiters) + (r.waiters === 1 ? ' waiter' : ' waiters') +
      (!state.waitersListed ? ' queued (this engine does not list them: count only)'
        : shown < r.waiters ? ' queued, the first ' + num(shown) + ' shown' : ' queued');
}

async function loadDetail() {
  const name = state.selected;
  if (!name) return;
  const q = '/v1/holds?limit=100&resource=' + encodeURIComponent(name) + '&state=';
  let r;
  try {
    r = await api('/v1/resources/' + encodeURIComponent(name));
  } catch (e) {
    if (e.code !== 'resource_not_found') throw e;
    r = { name, capacity: 0, held: 0, holds: 0, waiters: 0, declared: false };
  }
  const [t, c, w] = await Promise.all([api(q + 'tentative'), api(q + 'confirmed'), loadWaiters(name)]);
  if (state.selected !== name) return;
  state.waiters = w;
  renderSummary(r);
  const wb = $('#waiters-table tbody');
  redraw(wb, JSON.stringify([name, w]), () => fillWaiters(wb, w));
  const holds = t.holds.concat(c.holds);
  holds.sort((a, b) => (a.expires_at_ms || Infinity) - (b.expires_at_ms || Infinity));
  const tb = $('#holders tbody');
  redraw(tb, JSON.stringify([name, holds, t.more || c.more]), () => fillHolders(tb, name, holds, t.more || c.more));
}

// The queue, first 50: GET /v1/resources/{name}/waiters. An engine that cannot list its queue
// (not_supported) leaves the count only.
async function loadWaiters(name) {
  try {
    const r = await api('/v1/resources/' + encodeURIComponent(name) + '/waiters?limit=50');
    state.waitersListed = true;
    return r.waiters;
  } catch (e) {
    if (e.code === 'not_supported') { state.waitersListed = false; return []; }
    if (e.code === 'resource_not_found') return [];
    throw e;
  }
}

function fillWaiters(tb, ws) {
  tb.textContent = '';
  for (const w of ws) {
    tb.append(el('tr', { 'data-position': String(w.position), 'data-owner': w.owner },
      el('td', { class: 'num', text: String(w.position) }),
      el('td', { class: 'owner', text: w.owner }),
      el('td', { class: 'num', text: w.units ? num(w.units) : 'all' }),
      el('td', { text: w.mode + (w.any ? ' (any of ' + w.claims.length + ')' : w.claims.length > 1 ? ' (' + w.claims.length + ' resources)' : '') }),
      el('td', { class: 'waited', 'data-since': String(w.waiting_since_ms) }),
      el('td', { class: 'gives-up', 'data-deadline': String(w.wait_deadline_ms) })));
  }
  if (!ws.length) tb.append(el('tr', {}, el('td', { colSpan: 6, class: 'muted', text: 'nobody waiting' })));
  paintWaits();
}

// Wait times are redrawn with the lease bars, from the server's clock.
function paintWaits() {
  const now = serverNow();
  for (const td of document.querySelectorAll('td.waited')) td.textContent = fmtLeft(now - Number(td.dataset.since));
  for (const td of document.querySelectorAll('td.gives-up')) td.textContent = fmtLeft(Number(td.dataset.deadline) - now);
}

function fillHolders(tb, name, holds, more) {
  tb.textContent = '';
  for (const h of holds) {
    const part = h.resources.find((p) => p.name === name) || {};
    tb.append(el('tr', { 'data-hold': h.id },
      el('td', { class: 'owner', text: h.owner }),
      el('td', { class: 'state', text: h.state }),
      el('td', { class: 'num', text: num(part.units || 0) }),
      el('td', { class: 'num fence', text: String(part.fence) }),
      leaseCell(h),
      el('td', {}, el('code', { title: h.id, text: shortId(h.id) })),
      el('td', {}, el('button', { type: 'button', class: 'danger release', text: 'Release…', 'data-key': 'rel:' + h.id,
        'aria-label': 'Release hold ' + h.id + ' of ' + h.owner, onclick: () => askRelease(h) }))));
  }
  if (!holds.length) tb.append(el('tr', {}, el('td', { colSpan: 7, class: 'muted', text: 'no live holds' })));
  if (more) tb.append(el('tr', {}, el('td', { colSpan: 7, class: 'muted', text: 'first 100 of each state shown' })));
}

// ---- Releasing a hold: a confirmation, then an operator release (the API key the page
// already sends). A server without an API key refuses it (operator_needs_api_key): then the
// dialog asks for the hold's token instead. ------------------------------------------

let releasing = null;

function askRelease(h) {
  releasing = h;
  $('#release-id').textContent = h.id;
  $('#release-owner').textContent = h.owner;
  $('#release-resources').textContent = h.resources.map((p) => p.name).join(', ');
  $('#release-token').value = '';
  $('#release-error').hidden = true;
  $('#release-dialog').showModal();
  const box = $('#release-token-box');
  (box.hidden ? $('#release-confirm') : $('#release-token')).focus();
}

function setupRelease() {
  const d = $('#release-dialog');
  $('#release-cancel').addEventListener('click', () => { releasing = null; d.close(); });
  $('#release-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!releasing) return;
    const box = $('#release-token-box');
    const body = box.hidden ? { operator: true } : { token: $('#release-token').value.trim() };
    const errp = $('#release-error');
    try {
      await api('/v1/holds/' + encodeURIComponent(releasing.id) + '/release', { method: 'POST', body });
      releasing = null;
      d.close();
      refreshAll();
    } catch (e) {
      errp.textContent = e.code + ': ' + e.message;
      errp.hidden = false;
      if (e.code === 'operator_needs_api_key') { box.hidden = false; $('#release-token').focus(); }
    }
  });
}

// ---- Sagas in flight, failed and stuck (GET /v1/sagas by state); hidden on engines that
// keep none (not_supported). Each list is bounded; the timeline is read on demand. --------

const SAGA_STATES = ['running', 'compensating', 'compensation_failed', 'failed'];
const SAGAS_EACH = 20;

async function loadSagas() {
  let lists;
  try {
    lists = await Promise.all(SAGA_STATES.map((st) => api('/v1/sagas?limit=' + SAGAS_EACH + '&state=' + st)));
  } catch (e) {
    if (e.code === 'not_supported') { $('#sagas').hidden = true; return; }
    throw e;
  }
  $('#sagas').hidden = false;
  const count = (l) => num(l.items.length) + (l.more ? '+' : '');
  $('#sagas-summary').textContent = 'in flight ' + count(lists[0]) + ' running, ' + count(lists[1]) +
    ' compensating; stuck ' + count(lists[2]) + ' (compensation_failed); failed ' + count(lists[3]);
  const rows = [].concat(...lists.map((l) => l.items));
  const tb = $('#sagas-table tbody');
  redraw(tb, JSON.stringify(rows), () => fillSagas(tb, rows));
  if (state.saga) loadSagaTimeline(state.saga).catch(fail);
}

function fillSagas(tb, rows) {
  tb.textContent = '';
  for (const g of rows) {
    const acts = el('td', {}, el('button', { type: 'button', class: 'link', text: 'Timeline', 'data-key': 'tl:' + g.id,
      'aria-label': 'Timeline of saga ' + g.id, onclick: () => { state.saga = g.id; loadSagaTimeline(g.id).catch(fail); } }));
    if (g.state === 'compensation_failed') {
      acts.append(' ', el('button', { type: 'button', class: 'danger resume', text: 'Resume…', 'data-key': 'res:' + g.id,
        'aria-label': 'Resume saga ' + g.id, onclick: () => askResume(g) }));
    }
    tb.append(el('tr', { 'data-saga': g.id, 'data-state': g.state },
      el('td', {}, el('code', { title: g.id, text: shortId(g.id) })),
      el('td', { text: g.type }),
      el('td', { class: 'saga-state ' + g.state, text: g.state }),
      el('td', { text: new Date(g.updated_at_ms).toISOString().slice(11, 19) }),
      el('td', { class: 'muted', text: g.error ? g.error.code + ': ' + g.error.message : '' }),
      acts));
  }
  if (!rows.length) tb.append(el('tr', {}, el('td', { colSpan: 6, class: 'muted', text: 'no saga in flight, failed or stuck' })));
}

async function loadSagaTimeline(id) {
  const g = await api('/v1/sagas/' + encodeURIComponent(id));
  if (state.saga !== id) return;
  $('#saga-detail').hidden = false;
  $('#saga-detail-id').textContent = id + ' (' + g.state + ')';
  const ol = $('#saga-timeline');
  redraw(ol, JSON.stringify([id, g.timeline, g.timeline_dropped]), () => {
    ol.textContent = '';
    if (g.timeline_dropped) ol.append(el('li', { class: 'muted', text: g.timeline_dropped + ' earlier entries dropped' }));
    for (const t of g.timeline) {
      ol.append(el('li', {}, el('span', { class: 'muted', text: new Date(t.at_ms).toISOString().slice(11, 23) + ' ' }),
        t.step + ' ' + t.phase + ' ' + t.what + (t.attempt ? ' #' + t.attempt : '') + (t.detail ? ': ' + t.detail : '')));
    }
  });
}

let resuming = null;

function askResume(g) {
  resuming = g;
  $('#resume-id').textContent = g.id;
  $('#resume-type').textContent = g.type;
  $('#resume-error').hidden = true;
  $('#resume-dialog').showModal();
  $('#resume-confirm').focus();
}

function setupResume() {
  const d = $('#resume-dialog');
  $('#resume-cancel').addEventListener('click', () => { resuming = null; d.close(); });
  $('#resume-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!resuming) return;
    try {
      await api('/v1/sagas/' + encodeURIComponent(resuming.id) + '/resume', { method: 'POST', body: {} });
      state.saga = resuming.id;
      resuming = null;
      d.close();
      refreshAll();
    } catch (e) {
      const p = $('#resume-error');
      p.textContent = e.code + ': ' + e.message;
      p.hidden = false;
    }
  });
}

// ---- Holds about to expire. -------------------------------------------------------

async function loadExpiring() {
  const r = await api('/v1/holds?state=tentative&limit=1000');
  const hs = r.holds.filter((h) => h.expires_at_ms).sort((a, b) => a.expires_at_ms - b.expires_at_ms).slice(0, 10);
  const tb = $('#expiring tbody');
  redraw(tb, JSON.stringify(hs), () => fillExpiring(tb, hs));
  $('#expiring-note').textContent = r.more
    ? 'the 10 soonest among the first 1,000 tentative holds (the API lists holds by id, not by expiry)'
    : '';
}

function fillExpiring(tb, hs) {
  tb.textContent = '';
  for (const h of hs) {
    tb.append(el('tr', { 'data-hold': h.id },
      el('td', {}, el('button', { type: 'button', class: 'link', text: h.resources.map((p) => p.name).join(', '), 'data-key': 'exp:' + h.id,
        onclick: () => select(h.resources[0].name) })),
      el('td', { text: h.owner }),
      leaseCell(h),
      el('td', {}, el('code', { title: h.id, text: shortId(h.id) }))));
  }
  if (!hs.length) tb.append(el('tr', {}, el('td', { colSpan: 4, class: 'muted', text: 'no tentative holds' })));
}

// ---- The event stream (SSE over fetch, so that the API key can be sent). -----------

let evAbort = null;
let evRetry = null;

function eventMatches(ev) {
  const f = $('#events-filter').value.trim();
  return !f || (ev.resource && ev.resource.includes(f));
}

function addEvent(ev) {
  state.lastSeq = Math.max(state.lastSeq || 0, ev.seq);
  if (ev.resource && ev.resource === state.selected) scheduleDetail();
  scheduleResources();
  if (state.paused) return;
  const list = $('#events');
  const t = new Date(ev.at_ms).toISOString().slice(11, 23);
  const li = el('li', { class: ev.type, 'data-seq': String(ev.seq), 'data-resource': ev.resource || '' },
    el('span', { class: 't', text: t + ' ' }),
    el('span', { class: 'ty', text: ev.type }),
    ' ', ev.resource || '', ev.hold_id ? ' ' + shortId(ev.hold_id) : '',
    ev.data && ev.data.owner ? ' owner=' + ev.data.owner : '',
    ev.data && ev.data.by ? ' by=' + ev.data.by : '');
  li.hidden = !eventMatches(ev);
  list.prepend(li);
  while (list.children.length > EVENTS_KEPT) list.lastChild.remove();
}

function setEventsState(text, ok) {
  const s = $('#events-state');
  s.textContent = text;
  s.className = 'pill ' + (ok ? 'ok' : 'bad');
}

async function streamEvents() {
  evAbort = new AbortController();
  try {
    if (state.lastSeq === null) {
      // Begin with the last few events of the log, then follow: never replay all of it.
      const r = await api('/v1/events?after=0&limit=1');
      state.lastSeq = Math.max(0, r.last_seq - 30);
    }
    const r = await fetch('/v1/events?after=' + state.lastSeq, {
      headers: authHeaders({ Accept: 'text/event-stream' }), signal: evAbort.signal, cache: 'no-store',
    });
    if (r.status === 401) { askKey(); setEventsState('API key needed', false); return; }
    if (!r.ok || !r.body) throw new Error('HTTP ' + r.status);
    setEventsState('live', true);
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        let type = 'message', data = '';
        for (const line of block.split('\n')) {
          if (line.startsWith('event: ')) type = line.slice(7);
          else if (line.startsWith('data: ')) data += line.slice(6);
        }
        if (!data) continue;
        if (type === 'error') { setEventsState('error', false); continue; }
        try { addEvent(JSON.parse(data)); } catch (e) { /* a malformed line: skip it */ }
      }
    }
    setEventsState('reconnecting', false);
  } catch (e) {
    if (e.name === 'AbortError') return;
    if (e.status === 401) { setEventsState('API key needed', false); return; } // restarted with the key
    setEventsState('reconnecting', false);
  }
  evRetry = setTimeout(streamEvents, 2000);
}

function restartEvents() {
  if (evAbort) evAbort.abort();
  clearTimeout(evRetry);
  streamEvents();
}

function setupEvents() {
  $('#events-filter').addEventListener('input', () => {
    for (const li of $('#events').children) li.hidden = !eventMatches({ resource: li.dataset.resource });
  });
  const p = $('#events-pause');
  p.addEventListener('click', () => {
    state.paused = !state.paused;
    p.setAttribute('aria-pressed', String(state.paused));
    p.textContent = state.paused ? 'Resume' : 'Pause';
  });
}

// ---- Refreshing. ------------------------------------------------------------------

function fail(e) {
  if (e && e.status === 401) return; // the key dialog is open
  setConn('error', false);
  showError(e && e.message ? 'the server answered: ' + e.message : String(e));
}

let detailTimer = null, resourcesTimer = null;
function scheduleDetail() {
  if (!detailTimer) detailTimer = setTimeout(() => { detailTimer = null; loadDetail().catch(fail); }, 150);
}
function scheduleResources() {
  if (!resourcesTimer) resourcesTimer = setTimeout(() => { resourcesTimer = null; loadResources().catch(fail); }, 300);
}

async function refreshAll() {
  try {
    await Promise.all([loadSeries(), loadResources(), loadExpiring(), loadDetail(), loadSagas()]);
    setConn('connected', true);
    showError('');
  } catch (e) { fail(e); }
}

async function loadUptime() {
  try {
    const h = await api('/readyz');
    $('#uptime').textContent = 'engine ' + h.engine;
  } catch (e) { $('#uptime').textContent = ''; }
}

function tick() {
  for (const td of document.querySelectorAll('td.lease')) paintLease(td);
  paintWaits();
}

function main() {
  setupKey();
  setupResources();
  setupRelease();
  setupResume();
  setupEvents();
  loadUptime();
  refreshAll();
  streamEvents();
  setInterval(refreshAll, 2000);
  setInterval(tick, 250);
  window.addEventListener('resize', drawSeries);
  matchMedia('(prefers-color-scheme: dark)').addEventListener('change', drawSeries);
}

main();
