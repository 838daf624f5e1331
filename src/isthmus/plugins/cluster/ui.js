// Cluster pages, one per menu item (the view after /cluster/): an overview (no view), Rooms
// (racks as elevations, nodes coloured by severity), Nodes (a filterable, sortable list),
// Partitions (free/total now and over time), Charts (utilisation, queue, wait, temperature,
// power over time) and a full-screen Wallboard. Node detail opens over any of them. Severity
// is always shown as text and an icon too, never by colour alone. Data is set as text only.
import { el, fmt, requestJson } from '/static/app.js';
import { sparkline, timeSeries } from '/static/charts.js';

export const name = 'cluster';
export const notificationConfig = { topic: 'cluster', idField: 'name' };
const SEVERITIES = ['CRIT', 'WARN', 'UNKNOWN', 'OK'];
const ICON = { OK: '✔', WARN: '⚠', CRIT: '✖', UNKNOWN: '?' };
const VIEWS = ['overview', 'rooms', 'nodes', 'partitions', 'charts', 'wallboard'];
const WALL_REFRESH = 10;  // seconds
const MAX_ROWS = 600;  // rows drawn in the node list; the filter narrows the rest

export function template() {
  return `<nav class="cl-tabs" aria-label="Cluster views"></nav>
  <div class="card cl-sec" data-views="overview rooms"><h2>Summary</h2>
    <div class="cl-bars bars" role="img" aria-label="nodes by severity"></div>
    <p class="cl-counts"></p><p class="cl-asof hint" aria-live="polite"></p></div>
  <div class="card cl-sec" data-views="overview charts"><h2>Over time</h2><div class="cl-charts"></div></div>
  <div class="card cl-sec" data-views="overview rooms"><h2>Rooms</h2><div class="cl-rooms" role="tablist" aria-label="Rooms"></div>
    <div class="cl-room" role="tabpanel"></div><div class="cl-room-charts"></div></div>
  <div class="card cl-sec" data-views="overview partitions"><h2>Partitions</h2><div class="cl-parts"></div>
    <div class="cl-part-charts"></div></div>
  <div class="card cl-sec" data-views="overview nodes"><h2>Nodes</h2>
    <div class="cl-filters"><label for="cl-filter">Filter</label>
      <input id="cl-filter" class="cl-filter" type="search" placeholder="name, rack or reason">
      <label for="cl-state">State</label><select id="cl-state" class="cl-state">
      <option value="">all</option><option>idle</option><option>allocated</option><option>mixed</option>
      <option>draining</option><option>drained</option><option>down</option><option>maint</option>
      <option>reserved</option><option>unknown</option></select>
      <label for="cl-severity">Health</label><select id="cl-severity" class="cl-severity"><option value="">all</option>
      <option>CRIT</option><option>WARN</option><option>UNKNOWN</option><option>OK</option></select>
      <label for="cl-partition">Partition</label><select id="cl-partition" class="cl-partition"><option value="">all</option></select>
    </div><p class="cl-shown hint" aria-live="polite"></p><div class="cl-nodes"></div></div>
  <section class="cl-sec cl-wall" data-views="wallboard" aria-label="Wallboard"></section>`;
}

export function css() {
  return `.cl-tabs { display: flex; flex-wrap: wrap; gap: 6px; margin-bottom: 12px; }
  .cl-tabs a { padding: 4px 10px; border: 1px solid var(--line); border-radius: 6px; color: var(--fg); text-decoration: none; }
  .cl-tabs a[aria-current="page"] { border-color: var(--accent); font-weight: 600; }
  .cl .sev-OK, .cl-sevtext.sev-OK { background: #1a7f37; color: #fff; } .cl .sev-WARN { background: #9a6700; color: #fff; }
  .cl .sev-CRIT { background: #cf222e; color: #fff; } .cl .sev-UNKNOWN { background: #6e7781; color: #fff; }
  .cl .slot.sev-OK { background: var(--ok); } .cl .slot.sev-WARN { background: var(--warn); }
  .cl .slot.sev-CRIT { background: var(--crit); } .cl .slot.sev-UNKNOWN { background: var(--unknown); }
  .cl .slot { min-height: 12px; } .cl .slot:focus-visible { outline: 2px solid var(--fg); }
  .cl-rooms button[aria-selected="true"] { border-color: var(--accent); font-weight: 600; }
  .cl-filters { display: flex; flex-wrap: wrap; gap: 6px 10px; align-items: center; margin-bottom: 6px; }
  .cl-filters input { min-width: 0; width: 14em; max-width: 100%; }
  .cl-nodes { max-height: 480px; overflow: auto; } .cl-nodes th button { border: 0; padding: 0; background: none; font-weight: 600; }
  .cl-parts meter { width: 8em; max-width: 30vw; }
  .cl-chart-grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 420px), 1fr)); gap: 12px; }
  .node-detail table.cl-metrics td:nth-child(2) { font-variant-numeric: tabular-nums; }
  .node-detail form { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; margin: 8px 0; }
  .node-detail input[name="reason"] { flex: 1; min-width: 10em; }
  .plugin-page.cl-wallboard { position: fixed; inset: 0; z-index: 25; overflow: auto; background: var(--bg); padding: 2vh 2vw; }
  .plugin-page.cl-wallboard > .page-head, .plugin-page.cl-wallboard > .cl-tabs { display: none; }
  .cl-wall { font-size: clamp(16px, 1.6vw, 34px); }
  .cl-wall header { display: flex; flex-wrap: wrap; gap: 12px; align-items: baseline; }
  .cl-wall h2 { font-size: 1.8em; margin: 0; } .cl-wall h3 { font-size: 1.2em; margin: .6em 0 .3em; }
  .cl-wall .cl-clock { font-variant-numeric: tabular-nums; font-size: 1.4em; }
  .cl-tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 9em), 1fr)); gap: .5em; }
  .cl-tile { border-radius: 10px; padding: .4em .6em; color: #fff; background: #6e7781; }
  .cl-tile strong { display: block; font-size: 2.2em; line-height: 1.1; }
  .cl-tile.sev-OK { background: #1a7f37; } .cl-tile.sev-WARN { background: #9a6700; }
  .cl-tile.sev-CRIT { background: #cf222e; } .cl-tile.sev-UNKNOWN { background: #6e7781; } .cl-tile.plain { background: #24292f; }
  .cl-wall-racks { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 7.5em), 1fr)); gap: .4em; }
  .cl-wall-rack { border-radius: 8px; padding: .3em .5em; color: #fff; background: #6e7781; }
  .cl-wall-rack.sev-OK { background: #1a7f37; } .cl-wall-rack.sev-WARN { background: #9a6700; }
  .cl-wall-rack.sev-CRIT { background: #cf222e; } .cl-wall-rack span { display: block; font-size: .8em; }
  .cl-wall .cl-trend { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: center; }
  .cl-wall svg.sparkline { color: var(--fg); }`;
}

// -- small helpers ------------------------------------------------------------------------------

function sevBadge(severity) {
  const s = SEVERITIES.includes(severity) ? severity : 'UNKNOWN';
  return el('span', { class: `sev sev-${s}`, text: `${ICON[s]} ${s}` });
}

// Answers come from a snapshot: say when its data was read (as_of, unix seconds; age, seconds).
function asOf(s) {
  if (typeof s.as_of !== 'number' || !Number.isFinite(s.as_of)) return '';
  const age = typeof s.age === 'number' && Number.isFinite(s.age) ? Math.round(s.age) : 0;
  return `as of ${new Date(s.as_of * 1000).toLocaleTimeString()}` + (age >= 1 ? ` (${age} s old when fetched)` : '');
}

function num(v, digits = 1) {
  return typeof v === 'number' && Number.isFinite(v) ? String(Math.round(v * 10 ** digits) / 10 ** digits) : '–';
}

function duration(seconds) {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds)) return '–';
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${Math.round(seconds / 360) / 10} h`;
}

function history(query) {
  return new URLSearchParams(query).toString();
}

// -- page state ---------------------------------------------------------------------------------

const ctx = { view: 'overview', room: null, role: null, nodes: [], sort: { key: 'name', dir: 1 },
  charts: [], timer: null, wallTimer: null, showing: 0 };

// A chart fed from `GET history`: the whole window first, then only samples after the last one.
function liveChart(api, container, title, query, height = 180) {
  const chart = { container, query, data: null, plot: null, window: 3600 };
  chart.load = async () => {
    const since = chart.data?.[0]?.length ? chart.data[0][chart.data[0].length - 1] : null;
    const answer = await api.fetch(`history?${history(since ? { ...query, since } : query)}`);
    chart.window = Math.max(60, (answer.interval || 15) * 240);
    if (!chart.plot) {
      chart.data = answer.data;
      chart.plot = timeSeries(container, { title, series: answer.series.map(s => ({ label: s.label, unit: s.unit })),
        data: chart.data, height });
      return;
    }
    if (!answer.data[0].length) return;
    const cut = answer.data[0][answer.data[0].length - 1] - chart.window;
    chart.data = chart.data.map((col, i) => col.concat(answer.data[i] || []));
    const drop = chart.data[0].findIndex(t => t > cut);
    if (drop > 0) chart.data = chart.data.map(col => col.slice(drop));
    chart.plot.update(chart.data);
  };
  ctx.charts.push(chart);
  return chart.load().catch(err => container.replaceChildren(el('p', { class: 'field-error', text: `${title}: ${err.message}` })));
}

function dropCharts(scope) {
  ctx.charts = ctx.charts.filter(c => {
    if (scope.contains(c.container)) { c.plot?.destroy?.(); return false; }
    return true;
  });
}

// -- summary ------------------------------------------------------------------------------------

async function summary(page, api) {
  const s = await api.fetch('summary');
  const bars = page.querySelector('.cl-bars');
  bars.setAttribute('aria-label', `nodes by severity: ${SEVERITIES.map(k => `${k} ${s.by_severity[k]}`).join(', ')}`);
  bars.replaceChildren(...SEVERITIES.slice().reverse().filter(k => s.by_severity[k]).map(k => {
    const span = el('span', { class: `sev-${k}`, title: `${k}: ${s.by_severity[k]}` });
    span.style.width = `${(100 * s.by_severity[k]) / Math.max(1, s.total)}%`;  // CSSOM: allowed by the CSP
    return span;
  }));
  page.querySelector('.cl-counts').replaceChildren(`${s.total} nodes: `,
    ...SEVERITIES.flatMap(k => [sevBadge(k), ` ${s.by_severity[k]}  `]));
  const stamp = page.querySelector('.cl-asof');
  stamp.textContent = asOf(s);  // text, never markup
  stamp.dataset.asOf = String(s.as_of ?? '');
}

// -- node detail --------------------------------------------------------------------------------

const NODE_METRICS = [['util', 'CPU allocated', '%'], ['load', 'Load', ''], ['temperature', 'Temperature', '°C'],
  ['power', 'Power', 'W']];

async function showNode(page, api, nodeName) {
  const n = await api.fetch(`node/${encodeURIComponent(nodeName)}`);
  const h = n.history || { time: [] };
  const now = { util: n.cpus ? (100 * n.cpus_alloc) / n.cpus : null, load: n.load, ...n.metrics };
  const rows = NODE_METRICS.filter(([k]) => now[k] !== undefined && now[k] !== null || (h[k] || []).some(Number.isFinite))
    .map(([k, label, unit]) => {
      const values = h[k] || [];
      const seen = values.filter(Number.isFinite);
      return el('tr', { 'data-metric': k }, el('th', { scope: 'row', text: label }),
        el('td', { text: `${num(now[k])}${unit ? ' ' + unit : ''}` }),
        el('td', { text: seen.length ? `${num(Math.min(...seen))} – ${num(Math.max(...seen))}` : '–' }),
        el('td', {}, sparkline(values, { width: 140, height: 28, label: `${label} of ${n.name}, last ${duration((h.time.at(-1) ?? 0) - (h.time[0] ?? 0))}` })));
    });
  // the simulator's cpu_util is the allocated share again: shown once, as "CPU allocated"
  const other = Object.entries(n.metrics || {}).filter(([k]) => k !== 'cpu_util' && !NODE_METRICS.some(([m]) => m === k));
  const body = el('div', { class: 'node-detail cl' },
    el('p', {}, sevBadge(n.severity), ` ${n.state}`, n.reason ? ` — ${n.reason}` : ''),
    el('table', { class: 'cl-facts' }, el('tbody', {},
      el('tr', {}, el('th', { scope: 'row', text: 'Location' }), el('td', { text: `${n.site || '?'} / ${n.room || '?'} / rack ${n.rack || '?'} slot ${n.slot ?? '?'}` })),
      el('tr', {}, el('th', { scope: 'row', text: 'Partitions' }), el('td', { text: fmt(n.partitions) })),
      el('tr', {}, el('th', { scope: 'row', text: 'CPUs allocated' }), el('td', { text: `${n.cpus_alloc} of ${n.cpus}` })),
      el('tr', {}, el('th', { scope: 'row', text: 'GPUs allocated' }), el('td', { text: `${n.gpus_alloc} of ${n.gpus}` })),
      el('tr', {}, el('th', { scope: 'row', text: 'Memory' }), el('td', { text: `${Math.round((n.memory_mb || 0) / 1024)} GiB` })))),
    el('h3', { text: 'Metrics' }),
    el('table', { class: 'cl-metrics' }, el('thead', {}, el('tr', {}, el('th', { text: 'Metric' }), el('th', { text: 'Now' }),
      el('th', { text: 'Range (last hour)' }), el('th', { text: 'Trend' }))), el('tbody', {}, ...rows,
      ...other.map(([k, v]) => el('tr', {}, el('th', { scope: 'row', text: k }), el('td', { text: num(v) }), el('td'), el('td'))))),
    el('p', { class: 'hint cl-node-asof', text: asOf(n) }),
    ctx.role === 'admin' ? drainControls(page, api, n) : null,
    el('h3', { text: `Jobs (${n.jobs.length})` }),
    n.jobs.length ? el('table', {}, el('thead', {}, el('tr', {}, ...['Job', 'Name', 'User', 'State'].map(t => el('th', { text: t })))),
      el('tbody', {}, ...n.jobs.map(j => el('tr', {}, el('td', { text: j.job_id }), el('td', { text: j.name }),
        el('td', { text: j.user }), el('td', { text: j.state })))))
      : el('p', { class: 'hint', text: 'No jobs on this node.' }));
  api.showOverlay(`Node ${nodeName}`, body);
}

function drainControls(page, api, n) {
  const drained = n.state === 'drained' || n.state === 'draining';
  const form = el('form', { class: 'cl-drain', 'aria-label': `Drain or resume ${n.name}` });
  const reasonId = `cl-reason-${Math.random().toString(36).slice(2, 8)}`;
  const reason = el('input', { id: reasonId, name: 'reason', maxlength: 200, required: true,
    placeholder: 'why (shown to users and operators)' });
  const act = async (path, body, done) => {
    try {
      await api.fetch(path, { method: 'POST', body });
      api.flash(done);
      await showNode(page, api, n.name);
      refreshView(page, api).catch(() => {});
    } catch (err) { api.flash(err.message, false); }
  };
  form.append(el('label', { for: reasonId, text: 'Reason' }), reason,
    el('button', { type: 'submit', class: 'warning', text: 'Drain' }));
  form.addEventListener('submit', e => {
    e.preventDefault();
    if (!reason.value.trim()) { api.flash('A drain needs a reason.', false); return; }
    act(`node/${encodeURIComponent(n.name)}/drain`, { reason: reason.value.trim() }, `Draining ${n.name}`);
  });
  const resume = el('button', { type: 'button', class: 'cl-resume', text: 'Resume', disabled: !drained,
    onclick: () => act(`node/${encodeURIComponent(n.name)}/resume`, {}, `Resumed ${n.name}`) });
  return el('div', { class: 'cl-admin' }, el('h3', { text: 'Admin' }), form, resume);
}

// -- rooms --------------------------------------------------------------------------------------

async function rooms(page, api) {
  const { rooms: list } = await api.fetch('rooms');
  if (!ctx.room || !list.some(r => r.id === ctx.room)) ctx.room = list[0]?.id ?? null;
  page.querySelector('.cl-rooms').replaceChildren(...list.map(r => el('button', {
    type: 'button', role: 'tab', 'data-room': r.id, 'aria-selected': String(r.id === ctx.room),
    onclick: () => { ctx.room = r.id; rooms(page, api); },
  }, `${r.name} `, sevBadge(r.severity))));
  if (ctx.room) await room(page, api, ctx.room);
}

async function room(page, api, roomId) {
  const r = await api.fetch(`room/${encodeURIComponent(roomId)}`);
  const racks = el('div', { class: 'racks' }, ...r.racks.map(rack => el('div', { class: `rack sev-border-${rack.severity}`, 'data-rack': rack.id },
    el('h4', {}, `${rack.name} `, el('span', { class: `sev sev-${rack.severity}`, text: ICON[rack.severity] || '?', title: rack.severity,
      'aria-label': rack.severity })),
    el('div', { class: 'slots' }, ...rack.nodes.map(n => el('button', {
      type: 'button', class: `slot sev-${n.severity}`, 'data-node': n.name, 'data-severity': n.severity,
      title: `${n.name} slot ${n.slot}: ${n.state} (${n.severity})`, 'aria-label': `${n.name} ${n.state} ${n.severity}`,
      onclick: () => showNode(page, api, n.name),
    }))))));
  page.querySelector('.cl-room').replaceChildren(el('p', {}, `${r.name} `, sevBadge(r.severity)), racks);
  const holder = page.querySelector('.cl-room-charts');
  if (ctx.view === 'rooms' && (holder.dataset.room !== roomId || !holder.querySelector('.ts-chart'))) {
    holder.dataset.room = roomId;
    dropCharts(holder);
    const grid = el('div', { class: 'cl-chart-grid' }, el('div'), el('div'));
    holder.replaceChildren(grid);
    await Promise.all([liveChart(api, grid.children[0], `${r.name}: hottest node`, { metric: 'temperature', room: roomId }),
      liveChart(api, grid.children[1], `${r.name}: power`, { metric: 'power', room: roomId })]);
  }
}

// -- nodes --------------------------------------------------------------------------------------

const COLUMNS = [['name', 'Node'], ['state', 'State'], ['severity', 'Health'], ['rack', 'Rack:slot'], ['util', 'CPU %'],
  ['load', 'Load'], ['temperature', 'Temp °C'], ['jobs', 'Jobs'], ['reason', 'Reason']];
const SEV_RANK = { CRIT: 3, WARN: 2, UNKNOWN: 1, OK: 0 };

function nodeValue(n, key) {
  switch (key) {
    case 'severity': return SEV_RANK[n.severity] ?? 1;
    case 'rack': return `${n.rack ?? ''}:${String(n.slot ?? '').padStart(3, '0')}`;
    case 'util': return n.cpus ? n.cpus_alloc / n.cpus : -1;
    case 'temperature': return n.metrics?.temperature ?? -Infinity;
    case 'load': return n.load ?? -Infinity;
    case 'jobs': return n.jobs.length;
    default: return n[key] ?? '';
  }
}

async function loadNodes(page, api) {
  const state = page.querySelector('.cl-state').value;
  const query = new URLSearchParams({ metrics: '1' });
  if (state) query.set('state', state);
  ctx.nodes = (await api.fetch(`nodes?${query}`)).nodes;
  renderNodes(page, api);
}

function renderNodes(page, api) {
  const text = page.querySelector('.cl-filter').value.trim().toLowerCase();
  const severity = page.querySelector('.cl-severity').value;
  const partition = page.querySelector('.cl-partition').value;
  const list = ctx.nodes.filter(n => (!severity || n.severity === severity) && (!partition || n.partitions.includes(partition))
    && (!text || [n.name, n.rack, n.reason, n.room].some(v => String(v ?? '').toLowerCase().includes(text))));
  const { key, dir } = ctx.sort;
  list.sort((a, b) => {
    const x = nodeValue(a, key), y = nodeValue(b, key);
    return (x < y ? -1 : x > y ? 1 : 0) * dir || a.name.localeCompare(b.name);
  });
  page.querySelector('.cl-shown').textContent = `${list.length} of ${ctx.nodes.length} nodes` +
    (list.length > MAX_ROWS ? ` (first ${MAX_ROWS} shown; filter to narrow)` : '') + `, sorted by ${key} ${dir > 0 ? 'ascending' : 'descending'}`;
  const head = COLUMNS.map(([k, label]) => el('th', { scope: 'col', 'aria-sort': k === key ? (dir > 0 ? 'ascending' : 'descending') : 'none' },
    el('button', { type: 'button', 'data-sort': k, text: `${label}${k === key ? (dir > 0 ? ' ▲' : ' ▼') : ''}`,
      onclick: () => {
        ctx.sort = { key: k, dir: ctx.sort.key === k ? -ctx.sort.dir : 1 };
        renderNodes(page, api);
        page.querySelector(`.cl-nodes th button[data-sort="${k}"]`)?.focus();  // the table was redrawn: keep the keyboard's place
      } })));
  page.querySelector('.cl-nodes').replaceChildren(el('table', {}, el('thead', {}, el('tr', {}, ...head)),
    el('tbody', {}, ...list.slice(0, MAX_ROWS).map(n => el('tr', { 'data-node': n.name },
      el('td', {}, el('button', { type: 'button', text: n.name, onclick: () => showNode(page, api, n.name) })),
      el('td', { text: n.state }), el('td', {}, sevBadge(n.severity)),
      el('td', { text: `${n.rack ?? ''}:${n.slot ?? ''}` }), el('td', { text: n.cpus ? num((100 * n.cpus_alloc) / n.cpus, 0) : '–' }),
      el('td', { text: num(n.load) }), el('td', { text: num(n.metrics?.temperature) }),
      el('td', { text: n.jobs.length }), el('td', { text: n.reason || '' }))))));
}

// -- partitions ---------------------------------------------------------------------------------

async function partitions(page, api) {
  const { partitions: parts } = await api.fetch('partitions');
  const select = page.querySelector('.cl-partition');
  const chosen = select.value;
  select.replaceChildren(el('option', { value: '', text: 'all' }), ...parts.map(p => el('option', { value: p.name, text: p.name })));
  select.value = chosen;
  const meter = (free, total, what) => el('meter', { min: 0, max: Math.max(1, total), value: free,
    'aria-label': `${what}: ${free} free of ${total}` });
  page.querySelector('.cl-parts').replaceChildren(el('table', {}, el('thead', {}, el('tr', {},
    ...['Partition', 'Health', 'Nodes free/total', '', 'CPUs free/total', 'GPUs free/total', 'Nodes by state'].map(h => el('th', { scope: 'col', text: h })))),
    el('tbody', {}, ...parts.map(p => el('tr', { 'data-partition': p.name }, el('th', { scope: 'row', text: p.name }),
      el('td', {}, sevBadge(p.severity)),
      el('td', { text: `${p.idle_nodes}/${p.total_nodes}` }), el('td', {}, meter(p.idle_nodes, p.total_nodes, `${p.name} nodes`)),
      el('td', { text: `${p.idle_cpus}/${p.total_cpus}` }), el('td', { text: `${p.idle_gpus}/${p.total_gpus}` }),
      el('td', { text: Object.entries(p.by_state || {}).map(([k, v]) => `${k} ${v}`).join(', ') }))))));
  if (ctx.view === 'partitions' && !page.querySelector('.cl-part-charts .ts-chart')) {
    const grid = el('div', { class: 'cl-chart-grid' }, el('div'), el('div'), el('div'));
    page.querySelector('.cl-part-charts').replaceChildren(grid);
    await Promise.all([liveChart(api, grid.children[0], 'Free nodes per partition', { metric: 'idle_nodes', partition: '*' }),
      liveChart(api, grid.children[1], 'Queue length per partition', { metric: 'pending_jobs', partition: '*' }),
      liveChart(api, grid.children[2], 'CPU utilisation per partition', { metric: 'util', partition: '*' })]);
  }
}

// -- charts -------------------------------------------------------------------------------------

async function charts(page, api) {
  const holder = page.querySelector('.cl-charts');
  if (holder.querySelector('.ts-chart')) return;  // live already: the timer appends new samples
  const wanted = [['Cluster CPU utilisation', { metric: 'util' }], ['Queue: pending and running jobs', { metric: 'pending_jobs,running_jobs' }]];
  if (ctx.view === 'charts') {
    wanted.push(['Wait of pending jobs', { metric: 'wait_mean,wait_max' }],
      ['Hottest node per room', { metric: 'temperature', room: '*' }], ['Power per room', { metric: 'power', room: '*' }],
      ['Temperature of every node', { metric: 'temperature', node: '*' }]);
  }
  const grid = el('div', { class: 'cl-chart-grid' }, ...wanted.map(() => el('div')));
  holder.replaceChildren(grid);
  await Promise.all(wanted.map(([title, query], i) => liveChart(api, grid.children[i], title, query,
    query.node === '*' ? 260 : 180)));
}

// -- wallboard ----------------------------------------------------------------------------------

function tile(label, value, severity) {
  return el('div', { class: `cl-tile ${severity ? `sev-${severity}` : 'plain'}` },
    el('strong', { text: String(value) }), el('span', { text: label }));
}

async function wallboard(page, api) {
  const wall = page.querySelector('.cl-wall');
  const [s, { rooms: list }, { partitions: parts }, trend] = await Promise.all([api.fetch('summary'), api.fetch('rooms'),
    api.fetch('partitions'), api.fetch(`history?${history({ metric: 'util,pending_jobs,wait_max' })}`)]);
  const detail = await Promise.all(list.map(r => api.fetch(`room/${encodeURIComponent(r.id)}`)));
  const last = col => [...(col || [])].reverse().find(Number.isFinite);
  const [, util, pending, wait] = trend.data;
  wall.replaceChildren(
    el('header', {}, el('h2', { text: `${api.edgeName}: cluster` }), el('span', { class: 'cl-clock', text: new Date().toLocaleTimeString() }),
      el('span', { class: 'hint', text: `${asOf(s)} · refreshes every ${WALL_REFRESH} s` }),
      el('span', { class: 'spacer' }),
      el('button', { type: 'button', class: 'cl-fullscreen', text: 'Full screen', onclick: () => page.requestFullscreen?.().catch(() => {}) }),
      el('a', { href: `#/${encodeURIComponent(api.edgeName)}/cluster`, class: 'cl-leave', text: 'Leave wallboard (Esc)' })),
    el('div', { class: 'cl-tiles', role: 'list', 'aria-label': 'Nodes by health' }, ...SEVERITIES.map(k => {
      const t = tile(`${ICON[k]} ${k} nodes`, s.by_severity[k], s.by_severity[k] || k === 'OK' ? k : null);
      t.setAttribute('role', 'listitem');
      return t;
    })),
    el('div', { class: 'cl-trend' },
      el('span', {}, `CPU utilisation ${num(last(util), 0)} % `, sparkline(util || [], { width: 160, height: 36, label: 'CPU utilisation, last hour' })),
      el('span', {}, `Pending jobs ${num(last(pending), 0)} `, sparkline(pending || [], { width: 160, height: 36, label: 'Pending jobs, last hour' })),
      el('span', { text: `Longest wait ${duration(last(wait))}` })),
    ...detail.map(r => el('section', { class: 'cl-wall-room', 'data-room': r.id, 'aria-label': r.name },
      el('h3', {}, `${r.name} `, sevBadge(r.severity)),
      el('div', { class: 'cl-wall-racks' }, ...r.racks.map(rack => {
        const bad = ['CRIT', 'WARN', 'UNKNOWN'].filter(k => rack.counts?.[k]).map(k => `${ICON[k]} ${rack.counts[k]}`).join('  ');
        return el('div', { class: `cl-wall-rack sev-${rack.severity}`, 'data-rack': rack.id, 'data-severity': rack.severity },
          el('strong', { text: rack.name }), el('span', { text: `${ICON[rack.severity] || '?'} ${rack.severity}` }),
          el('span', { text: bad || `${rack.nodes.length} nodes OK` }));
      })))),
    el('h3', { text: 'Partitions' }),
    el('div', { class: 'cl-tiles' }, ...parts.map(p => tile(`${p.name}: nodes free of ${p.total_nodes}`, p.idle_nodes,
      p.severity === 'OK' ? null : p.severity))));
  wall.dataset.refreshed = String(Date.now());
}

// -- views --------------------------------------------------------------------------------------

function tabs(page, api) {
  const base = `#/${encodeURIComponent(api.edgeName)}/cluster`;
  const labels = { overview: 'Overview', rooms: 'Rooms', nodes: 'Nodes', partitions: 'Partitions', charts: 'Charts', wallboard: 'Wallboard' };
  page.querySelector('.cl-tabs').replaceChildren(...VIEWS.map(v => el('a', {
    href: v === 'overview' ? base : `${base}/${v}`, 'data-view': v, 'aria-current': v === ctx.view ? 'page' : null, text: labels[v] })));
}

async function refreshView(page, api) {
  const v = ctx.view;
  const jobs = [];
  if (v === 'overview' || v === 'rooms') jobs.push(summary(page, api), rooms(page, api));
  if (v === 'overview' || v === 'nodes') jobs.push(loadNodes(page, api));
  if (v === 'overview' || v === 'partitions' || v === 'nodes') jobs.push(partitions(page, api));
  if (v === 'overview' || v === 'charts') jobs.push(charts(page, api));
  if (v === 'wallboard') jobs.push(wallboard(page, api));
  await Promise.all(jobs);
}

function stopTimers() {
  clearInterval(ctx.timer);
  clearInterval(ctx.wallTimer);
  ctx.timer = ctx.wallTimer = null;
}

export async function init(page, api) {
  page.classList.add('cl');
  for (const sel of ['.cl-state']) page.querySelector(sel).addEventListener('change', () => loadNodes(page, api));
  for (const sel of ['.cl-severity', '.cl-partition']) page.querySelector(sel).addEventListener('change', () => renderNodes(page, api));
  let typing = null;
  page.querySelector('.cl-filter').addEventListener('input', () => { clearTimeout(typing); typing = setTimeout(() => renderNodes(page, api), 120); });
  document.addEventListener('keydown', e => {
    if (e.key === 'Escape' && ctx.view === 'wallboard' && page.isConnected) location.hash = `#/${encodeURIComponent(api.edgeName)}/cluster`;
  });
  try { ctx.role = (await requestJson('/auth/whoami')).role; } catch { ctx.role = null; }
}

export async function onShow(page, api, view) {
  stopTimers();
  ctx.view = VIEWS.includes(view) ? view : 'overview';
  const shown = ++ctx.showing;
  tabs(page, api);
  page.classList.toggle('cl-wallboard', ctx.view === 'wallboard');
  for (const sec of page.querySelectorAll('.cl-sec')) sec.classList.toggle('hidden', !sec.dataset.views.split(' ').includes(ctx.view));
  for (const holder of page.querySelectorAll('.cl-charts, .cl-part-charts, .cl-room-charts')) {
    dropCharts(holder);  // each view builds the charts it shows
    holder.replaceChildren();
  }
  await refreshView(page, api);
  // Live while on screen: charts append new samples; the wallboard redraws. A page that was
  // left (its root detached, or another view shown) stops its own timers.
  const alive = () => page.isConnected && shown === ctx.showing;
  ctx.timer = setInterval(() => {
    if (!alive()) { stopTimers(); return; }
    for (const c of ctx.charts) c.load().catch(() => {});
  }, 15000);
  if (ctx.view === 'wallboard') {
    ctx.wallTimer = setInterval(() => {
      if (!alive()) { stopTimers(); return; }
      wallboard(page, api).catch(err => api.flash(err.message, false));
    }, WALL_REFRESH * 1000);
  }
}

let refresh = null;
export function onNotification(data, page, api) {
  clearTimeout(refresh);  // many changes arrive together: redraw once
  refresh = setTimeout(() => { if (page.isConnected && ctx.view !== 'charts') refreshView(page, api).catch(() => {}); }, 300);
}
