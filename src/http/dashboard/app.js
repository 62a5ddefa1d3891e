// The wharf dashboard: a page over the public HTTP API, nothing else. Hash routes:
// #/ (overview), #/queues/NAME (charts, jobs, filters, pause, redrive), #/jobs/ID (detail,
// live progress, cancel, redrive), #/alarms (rules, state, history). Live updates come from the API's event streams, read with
// fetch (EventSource cannot send a token), and reconnect by themselves.
'use strict';

const TOKEN_KEY = 'wharf-token';
let token = sessionStorage.getItem(TOKEN_KEY);
// The page's live stream and timers, stopped when the route changes.
let page = new AbortController();
// What the token may do (`GET /v1/whoami`): buttons for anything else are not shown.
let may = new Set();
let identified = null;

// ---- API ------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, problem) {
    super(problem && problem.detail ? problem.detail : `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

function headers(extra) {
  const h = Object.assign({ Accept: 'application/json' }, extra || {});
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

async function api(method, path, body) {
  const init = { method, headers: headers(body === undefined ? {} : { 'Content-Type': 'application/json' }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const res = await fetch(path, init);
  if (res.status === 401) {
    signIn();
    throw new ApiError(401, null);
  }
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

// Reads a server-sent event stream until `signal` aborts; reconnects after errors (a server
// restart included), resuming after the last event id.
async function follow(path, onEvent, signal, onLive) {
  let last = null;
  let delay = 500;
  while (!signal.aborted) {
    try {
      const h = headers({ Accept: 'text/event-stream' });
      if (last) h['Last-Event-ID'] = last;
      const res = await fetch(path, { headers: h, signal });
      if (res.status === 401) { signIn(); return; }
      if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
      if (onLive) onLive(true);
      delay = 500;
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = { event: 'message', data: '' };
          for (const line of block.split('\n')) {
            const colon = line.indexOf(':');
            if (colon <= 0) continue;
            const field = line.slice(0, colon);
            const v = line.slice(colon + 1).replace(/^ /, '');
            if (field === 'event') event.event = v;
            else if (field === 'data') event.data += v;
            else if (field === 'id') last = v;
          }
          if (event.data) {
            let data = null;
            try { data = JSON.parse(event.data); } catch (_) { /* keep-alive or text */ }
            onEvent(event.event, data);
          }
        }
      }
    } catch (_) {
      if (signal.aborted) return;
    }
    if (onLive) onLive(false);
    await sleep(delay, signal);
    delay = Math.min(delay * 2, 5000);
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    if (signal) signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

// Runs `fn` at most once per `ms`, the last call winning.
function throttle(fn, ms) {
  let timer = null;
  let again = false;
  return () => {
    if (timer) { again = true; return; }
    fn();
    timer = setTimeout(() => { timer = null; if (again) { again = false; fn(); } }, ms);
  };
}

// ---- DOM ------------------------------------------------------------------

// An element; text children are text nodes (never parsed as HTML).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k === 'class') node.className = v;
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function table(columns, rows) {
  return el('table', {},
    el('thead', {}, el('tr', {}, columns.map((c) => el('th', { class: c.cls }, c.title)))),
    el('tbody', {}, rows.length ? rows.map((r) => el('tr', {}, columns.map((c) => el('td', { class: c.cls }, c.value(r)))))
      : el('tr', {}, el('td', { colspan: columns.length, class: 'muted' }, 'none'))));
}

function badge(state) { return el('span', { class: `state ${state}` }, state); }
function jobLink(id) { return el('a', { href: `#/jobs/${encodeURIComponent(id)}` }, id); }
function queueLink(name) { return el('a', { href: `#/queues/${encodeURIComponent(name)}` }, name); }

function ago(iso) {
  if (!iso) return '';
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return `${Math.round(s)}s`;
  if (s < 3600) return `${Math.round(s / 60)}m`;
  if (s < 86400) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86400)}d`;
}

// ---- Charts (SVG drawn here: the page loads nothing else) -----------------------

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) node.setAttribute(k, v);
  for (const c of children.flat()) if (c) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

// A small bar chart of succeeded (and, stacked on top, failed) attempts per minute.
function sparkline(recent) {
  const w = 90;
  const h = 20;
  if (!recent) return svg('svg', { class: 'spark', width: w, height: h, 'aria-label': 'no attempts' });
  const n = recent.succeeded.length;
  const max = Math.max(1, ...recent.succeeded.map((s, i) => s + recent.failed[i]));
  const bw = w / n;
  const bars = [];
  recent.succeeded.forEach((s, i) => {
    const f = recent.failed[i];
    const hs = (s / max) * h;
    const hf = (f / max) * h;
    if (s) bars.push(svg('rect', { class: 'ok', x: i * bw, y: h - hs, width: bw - 1, height: hs }));
    if (f) bars.push(svg('rect', { class: 'bad', x: i * bw, y: h - hs - hf, width: bw - 1, height: hf }));
  });
  const total = recent.succeeded.reduce((a, b) => a + b, 0) + recent.failed.reduce((a, b) => a + b, 0);
  return svg('svg', { class: 'spark', width: w, height: h, viewBox: `0 0 ${w} ${h}`, 'aria-label': `${total} attempts in 15 minutes` },
    svg('title', {}, `${total} attempts in the last 15 minutes`), bars);
}

function failureRate(recent) {
  if (!recent) return '';
  const failed = recent.failed.reduce((a, b) => a + b, 0);
  const all = failed + recent.succeeded.reduce((a, b) => a + b, 0);
  return all ? `${Math.round((failed / all) * 100)}%` : '';
}

function formatMs(ms) {
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${(ms / 60000).toFixed(1)} min`;
}

// A chart over the last hour: `series` are {name, cls, values: [[time ms, value]], bars}.
function chart(title, series, { from, to, unit }) {
  const w = 560;
  const h = 140;
  const left = 56;
  const bottom = 18;
  const plotW = w - left - 8;
  const plotH = h - bottom - 8;
  const max = Math.max(0, ...series.flatMap((s) => s.values.map((v) => v[1])));
  const top = max > 0 ? max * 1.1 : 1;
  const x = (t) => left + ((t - from) / (to - from)) * plotW;
  const y = (v) => 8 + plotH - (v / top) * plotH;
  const label = unit === 'ms' ? formatMs : (v) => String(Math.round(v));
  const parts = [
    svg('line', { class: 'axis', x1: left, y1: 8 + plotH, x2: w - 8, y2: 8 + plotH }),
    svg('text', { x: left - 4, y: 14, 'text-anchor': 'end' }, label(top)),
    svg('text', { x: left - 4, y: 8 + plotH, 'text-anchor': 'end' }, '0'),
    svg('text', { x: left, y: h - 4 }, '−60 min'),
    svg('text', { x: w - 8, y: h - 4, 'text-anchor': 'end' }, 'now'),
  ];
  for (const s of series) {
    if (s.bars) {
      const bw = Math.max(1, plotW / 360 - 0.5);
      for (const [t, v, base] of s.values) {
        if (v > 0) parts.push(svg('rect', { class: s.cls, x: x(t), y: y(v + (base || 0)), width: bw, height: y(base || 0) - y(v + (base || 0)) }));
      }
    } else if (s.values.length) {
      parts.push(svg('polyline', { class: s.cls, fill: 'none', points: s.values.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' ') }));
      if (s.values.length === 1) parts.push(svg('circle', { class: s.cls, cx: x(s.values[0][0]), cy: y(s.values[0][1]), r: 2 }));
    }
  }
  return el('figure', { class: 'chart' },
    el('figcaption', {}, title, ' ', series.map((s) => el('span', { class: `key ${s.cls}` }, s.name))),
    svg('svg', { viewBox: `0 0 ${w} ${h}`, role: 'img', 'aria-label': title }, parts));
}

function charts(stats) {
  const to = Date.now();
  const from = to - 3600 * 1000;
  const pts = stats.points.map((p) => Object.assign({ t: Date.parse(p.at) }, p));
  const pct = (field) => ['p50', 'p95', 'p99'].map((k, i) => ({
    name: k, cls: `l${i}`, values: pts.filter((p) => p[field]).map((p) => [p.t, p[field][k]]),
  }));
  return el('section', { id: 'charts' }, el('h2', {}, 'Last hour'), el('div', { class: 'charts' },
    chart('Attempts per 10 s', [
      { name: 'succeeded', cls: 'ok', bars: true, values: pts.map((p) => [p.t, p.succeeded, 0]) },
      { name: 'failed', cls: 'bad', bars: true, values: pts.map((p) => [p.t, p.failed, p.succeeded]) },
    ], { from, to, unit: '' }),
    chart('Wait (ready → leased)', pct('wait_ms'), { from, to, unit: 'ms' }),
    chart('Run time', pct('run_ms'), { from, to, unit: 'ms' })));
}

// Replaces the page's content; the input being typed in keeps its focus across live updates.
function show(...nodes) {
  const main = document.getElementById('main');
  const focused = main.contains(document.activeElement) ? document.activeElement.id : '';
  main.replaceChildren(...nodes);
  const again = focused && document.getElementById(focused);
  if (again) {
    again.focus();
    if (again.tagName === 'INPUT' && again.type === 'text') again.setSelectionRange(again.value.length, again.value.length);
  }
}

function failure(err) {
  return el('p', { class: 'error', role: 'alert' }, err.message || String(err));
}

function setLive(on) {
  document.getElementById('live').classList.toggle('on', on);
}

// ---- Sign-in --------------------------------------------------------------

// Learns who the token is, once per sign-in.
function identify() {
  if (!identified) {
    identified = api('GET', '/v1/whoami').then((me) => {
      may = new Set(me.may);
      document.getElementById('who').textContent = `${me.id} (${me.role})`;
    }).catch(() => { identified = null; });
  }
  return identified;
}

function signIn() {
  const dialog = document.getElementById('signin');
  if (!dialog.open) dialog.showModal();
}

document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('signin-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const value = document.getElementById('token').value.trim();
    token = value;
    try {
      await api('GET', '/v1/queues');
      sessionStorage.setItem(TOKEN_KEY, value);
      identified = null;
      document.getElementById('signin').close();
      route();
    } catch (err) {
      document.getElementById('signin-error').textContent = err.status === 401 ? 'Unknown token.' : err.message;
    }
  });
  window.addEventListener('hashchange', route);
  route();
});

// ---- Alarms banner ----------------------------------------------------------

async function refreshAlarms() {
  const banner = document.getElementById('alarms-banner');
  try {
    const { alarms } = await api('GET', '/v1/alarms');
    const firing = alarms.filter((a) => a.state === 'firing');
    banner.hidden = firing.length === 0;
    banner.replaceChildren(...firing.map((a) => el('div', { class: 'alarm' },
      `Firing: ${a.name} (${a.when}) on `, a.queues.filter((q) => q.state === 'firing').map((q) => q.queue).join(', '),
      ` since ${ago(a.since)}`)));
  } catch (_) { /* shown by the page itself */ }
}

// ---- Overview ---------------------------------------------------------------

async function overview(signal) {
  const render = async () => {
    try {
      const [{ queues }, { workers }, { pools }] = await Promise.all([
        api('GET', '/v1/queues'), api('GET', '/v1/workers'), api('GET', '/v1/pools'),
      ]);
      if (signal.aborted) return;
      const n = (k) => ({ title: k, cls: 'num', value: (q) => q.counts[k] });
      show(
        el('h1', {}, 'Overview'),
        el('section', { id: 'queues' }, el('h2', {}, `Queues (${queues.length})`), table([
          { title: 'queue', value: (q) => queueLink(q.name) },
          n('ready'), n('scheduled'), n('running'), n('succeeded'), n('dead'),
          { title: 'oldest ready', cls: 'num', value: (q) => ago(q.oldest_ready_at) },
          { title: 'last 15 min', cls: 'hide-narrow', value: (q) => sparkline(q.recent) },
          { title: 'failed', cls: 'num hide-narrow', value: (q) => failureRate(q.recent) },
          { title: '', value: (q) => (q.policy.paused ? badge('paused') : '') },
        ], queues)),
        el('section', { id: 'workers' }, el('h2', {}, `Workers (${workers.length})`), table([
          { title: 'worker', value: (w) => w.id },
          { title: 'state', value: (w) => badge(w.running > 0 && w.state === 'running' ? 'busy' : w.state) },
          { title: 'jobs', cls: 'num', value: (w) => (w.capacity ? `${w.running}/${w.capacity}` : w.running) },
          { title: 'host', cls: 'hide-narrow', value: (w) => w.pod || w.host || '' },
          { title: 'queues', cls: 'hide-narrow', value: (w) => w.queues.join(', ') },
        ], workers)),
        el('section', { id: 'pools' }, el('h2', {}, `Pools (${pools.length})`), table([
          { title: 'pool', value: (p) => p.name },
          { title: 'desired', cls: 'num', value: (p) => p.desired },
          { title: 'actual', cls: 'num', value: (p) => p.actual },
          { title: 'busy', cls: 'num', value: (p) => p.busy },
          { title: 'backlog', cls: 'num', value: (p) => p.backlog },
          { title: 'last decision', cls: 'hide-narrow', value: (p) => (p.last_change ? `${p.last_change.from} → ${p.last_change.desired} (${p.last_change.reason}, ${ago(p.last_change.at)} ago)` : p.reason) },
        ], pools)),
      );
    } catch (err) {
      if (!signal.aborted && err.status !== 401) show(el('h1', {}, 'Overview'), failure(err));
    }
  };
  await render();
  const again = throttle(render, 1000);
  follow('/v1/events', again, signal, setLive);
  // Workers and pools change without job events.
  while (!signal.aborted) {
    await sleep(5000, signal);
    if (!signal.aborted) again();
  }
}

// ---- Queue ------------------------------------------------------------------

async function queuePage(name, query, signal) {
  const filters = {
    state: query.get('state') || '', kind: query.get('kind') || '', error: query.get('error') || '', since: query.get('since') || '',
  };
  let jobs = [];
  let cursor = null;
  let info = null;
  let stats = null;
  // Built again only when the policy changes, so a half-filled form survives live updates.
  let policy = { key: '', node: null };
  const policyNode = () => {
    const key = JSON.stringify(info.policy);
    if (policy.key !== key) policy = { key, node: policySection(name, info.policy, async () => { await load(false); render(); }) };
    return policy.node;
  };
  const loadStats = async () => {
    try { stats = await api('GET', `/v1/queues/${encodeURIComponent(name)}/stats`); } catch (_) { /* charts wait for the next try */ }
  };
  const load = async (more) => {
    const params = new URLSearchParams({ limit: '50' });
    if (filters.state) params.set('state', filters.state);
    if (filters.kind) params.set('kind', filters.kind);
    if (filters.error) params.set('error', filters.error);
    if (SINCE[filters.since]) params.set('created_after', new Date(Date.now() - SINCE[filters.since]).toISOString());
    if (more && cursor) params.set('cursor', cursor);
    const [q, page_] = await Promise.all([
      api('GET', `/v1/queues/${encodeURIComponent(name)}`),
      api('GET', `/v1/queues/${encodeURIComponent(name)}/jobs?${params}`),
    ]);
    info = q;
    jobs = more ? jobs.concat(page_.jobs) : page_.jobs;
    cursor = page_.next_cursor || null;
  };
  const act = (label, method, path, body, cls) => el('button', {
    type: 'button',
    class: cls,
    onclick: async (e) => {
      e.target.disabled = true;
      try { await api(method, path, body); await load(false); render(); } catch (err) { show(failure(err)); }
    },
  }, label);
  // What is typed but not yet applied survives the live re-renders.
  const draft = { kind: filters.kind, error: filters.error };
  const apply = () => {
    filters.kind = draft.kind.trim();
    filters.error = draft.error.trim();
    const q = new URLSearchParams();
    if (filters.state) q.set('state', filters.state);
    if (filters.kind) q.set('kind', filters.kind);
    if (filters.error) q.set('error', filters.error);
    if (filters.since) q.set('since', filters.since);
    location.hash = `#/queues/${encodeURIComponent(name)}${q.toString() ? `?${q}` : ''}`;
  };
  const render = () => {
    const path = `/v1/queues/${encodeURIComponent(name)}`;
    const states = ['', 'ready', 'scheduled', 'running', 'succeeded', 'dead', 'canceled'];
    show(
      el('h1', {}, 'Queue ', name, info.policy.paused ? [' ', badge('paused')] : ''),
      el('p', { class: 'muted' }, Object.entries(info.counts).map(([k, v]) => `${k} ${v}`).join(' · ')),
      may.has('manage') ? el('div', { class: 'actions' },
        info.policy.paused ? act('Resume', 'POST', `${path}/resume`) : act('Pause', 'POST', `${path}/pause`),
        info.counts.dead > 0 ? act(`Redrive all ${info.counts.dead} dead`, 'POST', `${path}/redrive`, {}, 'danger') : '') : '',
      stats ? charts(stats) : '',
      policyNode(),
      el('section', {},
        el('form', { class: 'filters', onsubmit: (e) => { e.preventDefault(); apply(); } },
          el('label', {}, 'State', el('select', { id: 'filter-state', onchange: (e) => { filters.state = e.target.value; apply(); } },
            states.map((s) => el('option', { value: s, selected: s === filters.state }, s || 'any')))),
          el('label', {}, 'Kind', el('input', { id: 'filter-kind', value: draft.kind, oninput: (e) => { draft.kind = e.target.value; } })),
          el('label', {}, 'Created', el('select', { id: 'filter-since', onchange: (e) => { filters.since = e.target.value; apply(); } },
            Object.keys(SINCE).map((k) => el('option', { value: k, selected: k === filters.since }, k ? `last ${k}` : 'any time')))),
          el('label', {}, 'Error contains', el('input', { id: 'filter-error', maxlength: 256, value: draft.error, oninput: (e) => { draft.error = e.target.value; } })),
          el('button', { type: 'submit' }, 'Filter'),
          // A filtered view of dead jobs can be redriven as it stands.
          filters.state === 'dead' && (filters.kind || filters.error || filters.since) && jobs.length && may.has('manage')
            ? act(`Redrive the ${jobs.length} shown`, 'POST', `${path}/redrive`, { ids: jobs.map((j) => j.id) }, 'redrive-shown') : ''),
        table([
          { title: 'job', value: (j) => jobLink(j.id) },
          { title: 'kind', value: (j) => j.kind },
          { title: 'state', value: (j) => badge(j.state) },
          { title: 'attempt', cls: 'num', value: (j) => j.attempt },
          { title: 'created', cls: 'num hide-narrow', value: (j) => `${ago(j.created_at)} ago` },
        ], jobs),
        cursor ? el('button', { id: 'more', onclick: async () => { await load(true); render(); } }, 'More') : ''),
    );
  };
  try {
    await Promise.all([load(false), loadStats()]);
    if (signal.aborted) return;
    render();
  } catch (err) {
    if (err.status !== 401) show(el('h1', {}, 'Queue ', name), failure(err));
    return;
  }
  const again = throttle(async () => { try { await load(false); if (!signal.aborted) render(); } catch (_) { /* retried on the next event */ } }, 1000);
  follow(`/v1/events?queue=${encodeURIComponent(name)}`, again, signal, setLive);
  // A new point every 10 s.
  while (!signal.aborted) {
    await sleep(10000, signal);
    if (!signal.aborted) { await loadStats(); again(); }
  }
}

// A queue's policy; a form to change it for a token that may manage queues.
const POLICY_FIELDS = [
  ['lease_ms', 'lease (ms)', (p) => p.lease_ms],
  ['max_attempts', 'max attempts', (p) => p.max_attempts],
  ['backoff_base_ms', 'backoff base (ms)', (p) => p.backoff.base_ms],
  ['backoff_factor', 'backoff factor', (p) => p.backoff.factor],
  ['backoff_cap_ms', 'backoff cap (ms)', (p) => p.backoff.cap_ms],
  ['retention_ms', 'retention (ms)', (p) => p.retention_ms],
  ['concurrency', 'concurrency', (p) => p.concurrency, true],
  ['rate', 'rate (jobs/s)', (p) => p.rate, true],
  ['max_ready', 'max waiting', (p) => p.max_ready, true],
];

function policySection(name, policy, saved) {
  const shown = (v) => (v === null || v === undefined ? 'no limit' : v);
  if (!may.has('manage')) {
    return el('section', { id: 'policy' }, el('h2', {}, 'Policy'), el('dl', {},
      POLICY_FIELDS.map(([, label, get]) => [el('dt', {}, label), el('dd', {}, shown(get(policy)))])));
  }
  const message = el('p', { class: 'error', role: 'alert' });
  const form = el('form', { class: 'filters', id: 'policy-form' },
    POLICY_FIELDS.map(([key, label, get, nullable]) => el('label', {}, label,
      el('input', { name: key, id: `policy-${key}`, inputmode: 'decimal', size: 8, value: get(policy) ?? '', placeholder: nullable ? 'no limit' : null }))),
    el('button', { type: 'submit' }, 'Save'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const body = {};
    for (const [key, , get, nullable] of POLICY_FIELDS) {
      const text = form.elements[key].value.trim();
      const before = get(policy) ?? '';
      if (text === String(before)) continue;
      if (text === '' && nullable) body[key] = null;
      else if (text !== '' && Number.isFinite(Number(text))) body[key] = Number(text);
      else { message.textContent = `${key}: give a number`; return; }
    }
    if (!Object.keys(body).length) return;
    try {
      await api('PUT', `/v1/queues/${encodeURIComponent(name)}`, body);
      await saved();
    } catch (err) {
      message.textContent = err.message;
    }
  });
  return el('section', { id: 'policy' }, el('details', {}, el('summary', {}, 'Policy'), form, message));
}

// The creation-time ranges the queue page offers, in milliseconds.
const SINCE = { '': 0, '15 min': 15 * 60e3, '1 h': 3600e3, '24 h': 86400e3, '7 d': 7 * 86400e3 };

// ---- Job --------------------------------------------------------------------

// A fraction in [0, 1] from common progress shapes, or null.
function fraction(progress) {
  if (progress === null || progress === undefined) return null;
  let v = null;
  if (typeof progress === 'number') v = progress > 1 ? progress / 100 : progress;
  else if (typeof progress === 'object') {
    if (typeof progress.percent === 'number') v = progress.percent / 100;
    else if (typeof progress.done === 'number' && progress.total > 0) v = progress.done / progress.total;
    else if (typeof progress.current === 'number' && progress.total > 0) v = progress.current / progress.total;
  }
  return v === null || !Number.isFinite(v) ? null : Math.min(1, Math.max(0, v));
}

async function jobPage(id, signal) {
  let job;
  const render = () => {
    const f = fraction(job.progress);
    const finished = ['succeeded', 'dead', 'canceled'].includes(job.state);
    const act = (label, path, cls) => el('button', {
      class: cls,
      id: label.toLowerCase(),
      onclick: async (e) => {
        e.target.disabled = true;
        try { await api('POST', path, label === 'Redrive' ? { ids: [job.id] } : {}); job = await api('GET', `/v1/jobs/${encodeURIComponent(id)}`); render(); } catch (err) { show(failure(err)); }
      },
    }, label);
    show(
      el('h1', {}, 'Job ', job.id, ' ', badge(job.state)),
      el('div', { class: 'actions' },
        finished || !may.has('cancel') ? '' : act('Cancel', `/v1/jobs/${encodeURIComponent(job.id)}/cancel`, 'danger'),
        job.state === 'dead' && may.has('manage') ? act('Redrive', `/v1/queues/${encodeURIComponent(job.queue)}/redrive`) : ''),
      el('section', {},
        el('h2', {}, 'Progress'),
        el('div', { class: 'bar', id: 'progress', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': f === null ? null : Math.round(f * 100) },
          el('div', { style: null })),
        el('p', { class: 'muted', id: 'progress-text' }, job.progress === null || job.progress === undefined ? 'no progress reported' : JSON.stringify(job.progress))),
      el('section', {}, el('h2', {}, 'Details'), el('dl', {},
        el('dt', {}, 'queue'), el('dd', {}, queueLink(job.queue)),
        el('dt', {}, 'kind'), el('dd', {}, job.kind),
        el('dt', {}, 'attempt'), el('dd', {}, `${job.attempt} of ${job.max_attempts}`),
        el('dt', {}, 'created'), el('dd', {}, job.created_at),
        el('dt', {}, 'started'), el('dd', {}, job.started_at || ''),
        el('dt', {}, 'finished'), el('dd', {}, job.finished_at || ''),
        el('dt', {}, 'worker'), el('dd', {}, job.worker_id || ''),
        Object.keys(job.metadata || {}).length ? [el('dt', {}, 'metadata'), el('dd', {}, JSON.stringify(job.metadata))] : '')),
      el('section', {}, el('h2', {}, 'Payload'), el('pre', {}, JSON.stringify(job.payload, null, 2))),
      job.errors.length ? el('section', { id: 'errors' }, el('h2', {}, 'Attempts that failed'), table([
        { title: 'attempt', cls: 'num', value: (e) => e.attempt },
        { title: 'at', value: (e) => e.at },
        { title: 'error', value: (e) => e.message },
      ], job.errors)) : '',
      job.result !== null && job.result !== undefined ? el('section', {}, el('h2', {}, 'Result'), el('pre', { id: 'result' }, JSON.stringify(job.result, null, 2))) : '',
    );
    // Width through the CSSOM: the page's policy allows no inline style attributes.
    const bar = document.querySelector('#progress > div');
    if (bar) bar.style.width = `${f === null ? (finished && job.state === 'succeeded' ? 100 : 0) : Math.round(f * 100)}%`;
  };
  try {
    job = await api('GET', `/v1/jobs/${encodeURIComponent(id)}`);
    if (signal.aborted) return;
    render();
  } catch (err) {
    if (err.status !== 401) show(el('h1', {}, 'Job ', id), failure(err));
    return;
  }
  const refetch = throttle(async () => { try { job = await api('GET', `/v1/jobs/${encodeURIComponent(id)}`); if (!signal.aborted) render(); } catch (_) { /* next event */ } }, 500);
  follow(`/v1/jobs/${encodeURIComponent(id)}/events`, (event, data) => {
    if (!data) return;
    if (event === 'snapshot') { job = data; render(); return; }
    if (event === 'progress') { job.progress = data.progress; render(); return; }
    refetch();
  }, signal, setLive);
}

// ---- Alarms -------------------------------------------------------------------

async function alarmsPage(signal) {
  const duration = (ms) => (ms ? formatMs(ms) : '');
  while (!signal.aborted) {
    try {
      const { alarms } = await api('GET', '/v1/alarms');
      if (signal.aborted) return;
      const history = alarms.flatMap((a) => a.history.map((h) => Object.assign({ name: a.name }, h)))
        .sort((a, b) => (a.at < b.at ? 1 : -1));
      show(
        el('h1', {}, 'Alarms'),
        el('section', { id: 'alarm-rules' }, el('h2', {}, `Rules (${alarms.length})`), table([
          { title: 'alarm', value: (a) => a.name },
          { title: 'state', value: (a) => badge(a.state === 'ok' ? 'ok' : 'firing') },
          { title: 'queue', value: (a) => (a.queue === '*' ? '*' : queueLink(a.queue)) },
          { title: 'when', value: (a) => a.when },
          { title: 'for', cls: 'num hide-narrow', value: (a) => duration(a.for_ms) },
          { title: 'value', cls: 'num', value: (a) => Math.round(a.value * 1000) / 1000 },
          { title: 'since', cls: 'num hide-narrow', value: (a) => (a.since ? `${ago(a.since)} ago` : '') },
          { title: 'notifies', cls: 'hide-narrow', value: (a) => a.notify.join(', ') + (a.undelivered ? ` (${a.undelivered} undelivered)` : '') },
          { title: 'from', cls: 'hide-narrow', value: (a) => a.source },
        ], alarms)),
        el('section', { id: 'alarm-history' }, el('h2', {}, 'History'), table([
          { title: 'at', value: (h) => h.at },
          { title: 'alarm', value: (h) => h.name },
          { title: 'queue', value: (h) => queueLink(h.queue) },
          { title: 'became', value: (h) => badge(h.state === 'resolved' ? 'ok' : 'firing') },
          { title: 'value', cls: 'num', value: (h) => Math.round(h.value * 1000) / 1000 },
        ], history)),
      );
    } catch (err) {
      if (!signal.aborted && err.status !== 401) show(el('h1', {}, 'Alarms'), failure(err));
    }
    await sleep(5000, signal);
  }
}

// ---- Routing ----------------------------------------------------------------

async function route() {
  page.abort();
  page = new AbortController();
  const signal = page.signal;
  await identify();
  if (signal.aborted) return;
  const hash = location.hash.replace(/^#/, '') || '/';
  const [path, search] = hash.split('?');
  const query = new URLSearchParams(search || '');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  refreshAlarms();
  if (parts[0] === 'queues' && parts[1]) queuePage(parts[1], query, signal);
  else if (parts[0] === 'jobs' && parts[1]) jobPage(parts[1], signal);
  else if (parts[0] === 'alarms') alarmsPage(signal);
  else overview(signal);
}
setInterval(refreshAlarms, 5000);
