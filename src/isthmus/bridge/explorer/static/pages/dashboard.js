// Home dashboard: every edge's health, a page at a time, live.
//
// Scale: the edge list is one page of /edge/list summaries (server-side filter and cursor),
// so 10,000 edges cost the browser 25 cards. Details (cluster summary and partitions, queue
// counts, my jobs, tasks and pilot pools: one call per plugin) are fetched only for the edges
// on screen. Events never trigger a
// request each: they mark an edge dirty, and dirty visible edges are refreshed at most every
// REFRESH_DIRTY ms; everything visible is refreshed every REFRESH_ALL ms.

import { el, explorerState, fmt, pluginHref } from '../app.js';
import { FINAL_JOB, call, edgePage, labelled, table } from './common.js';
import { poolsTable } from './pools.js';
import { throughputCard } from './throughput.js';

const PAGE = 25;
const REFRESH_DIRTY = 3000;
const REFRESH_ALL = 30000;

function stat(key, label, value, extra = '') {
  return el('div', { class: `stat ${extra}`, 'data-stat': key },
    el('span', { class: 'stat-value', text: String(value) }), el('span', { class: 'stat-label', text: label }));
}

// What one edge's card shows, from the plugins it has; each part fails on its own.
async function details(edge, plugins) {
  const out = {};
  const jobs = [];
  if (plugins.cluster) {
    jobs.push(call(edge, 'cluster', 'summary').then(d => { out.severity = d.by_severity || {}; out.nodes = d.total; }),
      call(edge, 'cluster', 'partitions').then(d => { out.partitions = d.partitions || []; }));
  }
  if (plugins.queue_info) {
    jobs.push(call(edge, 'queue_info', 'list_all_jobs/{sid}?user=*').then(d => {
      const counts = { RUNNING: 0, PENDING: 0 };
      for (const j of d.jobs || []) if (j.state in counts) counts[j.state]++;
      out.queue = counts;
    }));
  }
  if (plugins.psij) {
    jobs.push(call(edge, 'psij', 'list_jobs/{sid}?limit=1000').then(d => {
      const list = d.jobs || [];
      out.myJobs = { active: list.filter(j => !FINAL_JOB.has(j.state)).length, total: list.length, more: !!d.next };
    }));
  }
  if (plugins.tasks) {
    // over all my sessions (the CLI's, scripts'), not only this page's; an edge older than
    // task_counts answers 404: then this page's own session's counts
    jobs.push(call(edge, 'tasks', 'task_counts')
      .catch(err => (err.status === 404 ? call(edge, 'tasks', 'list_tasks/{sid}?limit=0') : Promise.reject(err)))
      .then(d => { out.tasks = d.counts || {}; }));
  }
  if (plugins.pilots) {
    jobs.push(call(edge, 'pilots', 'list_pools').then(d => { out.pools = d.pools || []; }));
  }
  const results = await Promise.allSettled(jobs);
  out.errors = results.filter(r => r.status === 'rejected').map(r => r.reason?.message || String(r.reason));
  return out;
}

function edgeCard(edge, info, d) {
  const plugins = info.plugins || {};
  const card = el('article', { class: 'card edge-card', 'data-edge': edge, 'aria-label': `Edge ${edge}` });
  const severity = d?.severity || {};
  const worst = ['CRIT', 'WARN', 'UNKNOWN'].find(s => severity[s] > 0) || (d?.severity ? 'OK' : 'UNKNOWN');
  card.append(el('div', { class: 'edge-head' },
    el('h2', {}, el('span', { class: `dot sev-${worst}`, 'aria-hidden': 'true' }), ' ', edge),
    el('span', { class: 'hint', text: info.host ? `on ${info.host}` : '' })));
  if (!d) { card.append(el('p', { class: 'hint', text: 'Loading…' })); return card; }
  const stats = el('div', { class: 'stats' });
  if (d.severity) {
    for (const sev of ['OK', 'WARN', 'CRIT', 'UNKNOWN']) {
      stats.append(stat(`sev-${sev}`, `nodes ${sev}`, severity[sev] ?? 0, `sev-edge-${sev}`));
    }
  }
  if (d.queue) {
    stats.append(stat('running', 'jobs running', d.queue.RUNNING), stat('pending', 'jobs pending', d.queue.PENDING));
  }
  if (d.myJobs) stats.append(stat('my-jobs', 'my active jobs', d.myJobs.active));
  if (d.tasks) stats.append(stat('my-tasks', 'my running tasks', d.tasks.RUNNING ?? 0));
  if (d.pools) stats.append(stat('my-pools', 'my pilot pools', d.pools.length));
  card.append(stats);
  if (d.partitions?.length) {
    const body = el('tbody', {}, ...d.partitions.map(p => el('tr', { 'data-partition': p.name },
      el('th', { scope: 'row', text: p.name }),
      el('td', {}, el('span', { class: 'free', text: String(p.idle_nodes) }), ' / ',
        el('span', { class: 'total', text: String(p.total_nodes) })),
      el('td', {}, el('meter', { min: 0, max: p.total_nodes || 1, value: p.idle_nodes,
        'aria-label': `${p.name}: ${p.idle_nodes} of ${p.total_nodes} nodes free` })))));
    card.append(table(['Partition', 'Free / total nodes', ''], body, `Partitions of ${edge}`));
  }
  if (d.pools?.length) card.append(...poolsTable(edge, d.pools).filter(Boolean));
  const links = Object.entries(plugins).map(([name, m]) => el('a', { href: pluginHref(edge, name), text: m.title || name }));
  card.append(el('p', { class: 'edge-links' }, ...links.flatMap((a, i) => (i ? [' · ', a] : [a]))));
  for (const e of d.errors || []) card.append(el('p', { class: 'field-error', text: e }));
  return card;
}

export function render(main, route) {
  const s = explorerState();
  const filter = el('input', { type: 'search', placeholder: 'name or glob (hpc*)', value: route.query.get('name') || '' });
  const plugin = el('input', { type: 'search', placeholder: 'plugin, e.g. cluster', value: route.query.get('plugin') || '' });
  const prev = el('button', { type: 'button', text: '← Previous' });
  const next = el('button', { type: 'button', text: 'Next →' });
  const count = el('span', { class: 'hint', role: 'status' });
  const grid = el('div', { class: 'edge-grid' });
  const recent = el('ul', { class: 'events recent' });
  const { card: chartCard, note, stop: stopChart } = throughputCard();
  main.replaceChildren(el('section', { class: 'dashboard' },
    el('h1', { text: 'Dashboard' }),
    el('form', { class: 'toolbar', role: 'search', onsubmit: e => { e.preventDefault(); first(); } },
      ...labelled('Edge', filter), ...labelled('Plugin', plugin), el('button', { type: 'submit', text: 'Filter' }),
      prev, next, count),
    grid,
    el('div', { class: 'dash-lower' }, chartCard,
      el('section', { class: 'card', 'aria-label': 'Recent notifications' }, el('h2', { text: 'Recent notifications' }), recent))));

  let cursors = [null];  // the `after` of each page seen, for Previous
  let pageIndex = 0;
  let edges = {};
  const data = new Map();
  const dirty = new Set();
  let alive = true;

  async function load() {
    try {
      const page = await edgePage({ limit: PAGE, after: cursors[pageIndex], name: filter.value.trim() || null,
        plugin: plugin.value.trim() || null });
      edges = page.edges || {};
      cursors[pageIndex + 1] = page.next;
      prev.disabled = pageIndex === 0;
      next.disabled = !page.next;
      const shown = Object.keys(edges).length;
      count.textContent = `${shown} of ${page.count} edges${pageIndex ? `, page ${pageIndex + 1}` : ''}`;
      for (const name of [...data.keys()]) if (!(name in edges)) data.delete(name);
      draw();
      await Promise.all(Object.keys(edges).map(refreshEdge));
    } catch (err) { count.textContent = err.message; }
  }
  async function refreshEdge(name) {
    const info = edges[name];
    if (!info) return;
    data.set(name, await details(name, info.plugins || {}));
    if (alive) drawEdge(name);
  }
  function draw() {
    grid.replaceChildren(...Object.entries(edges).map(([name, info]) => edgeCard(name, info, data.get(name))));
    if (!Object.keys(edges).length) grid.append(el('p', { class: 'hint', text: 'No edges match.' }));
  }
  function drawEdge(name) {
    const old = grid.querySelector(`[data-edge="${CSS.escape(name)}"]`);
    const card = edgeCard(name, edges[name], data.get(name));
    if (old) old.replaceWith(card); else draw();
  }
  function drawRecent() {
    recent.replaceChildren(...s.recent.slice(0, 20).map(n => el('li', {},
      el('time', { text: new Date(n.time).toLocaleTimeString() }), ' ',
      el('strong', { text: `${n.edge}/${n.plugin}` }), ` ${n.topic} `,
      fmt(n.data.job_id ?? n.data.uid ?? n.data.name ?? ''), ' ', fmt(n.data.state ?? n.data.severity ?? ''))));
    if (!s.recent.length) recent.append(el('li', { class: 'hint', text: 'Nothing yet.' }));
  }
  function first() { cursors = [null]; pageIndex = 0; load(); }
  prev.addEventListener('click', () => { if (pageIndex > 0) { pageIndex--; load(); } });
  next.addEventListener('click', () => { if (cursors[pageIndex + 1]) { pageIndex++; load(); } });

  const timers = [setInterval(() => { for (const name of dirty) refreshEdge(name); dirty.clear(); }, REFRESH_DIRTY),
    setInterval(() => Object.keys(edges).forEach(refreshEdge), REFRESH_ALL)];
  let reload = null;
  drawRecent();
  load();
  return {
    hide: () => { alive = false; timers.forEach(clearInterval); clearTimeout(reload); stopChart(); },
    notify: n => {
      drawRecent();
      note(n);
      const gone = n.topic === 'pool_status' && n.data?.state === 'GONE' && data.get(n.edge)?.pools;
      if (gone) {  // a removed pool: its row goes now, not at the next refresh
        data.get(n.edge).pools = gone.filter(p => p.name !== n.data.name);
        if (alive && n.edge in edges) drawEdge(n.edge);
      }
      if (n.edge in edges) dirty.add(n.edge);
    },
    topology: delta => {
      const touched = [...Object.keys(delta.joined || {}), ...Object.keys(delta.left || {})];
      if (touched.some(name => name in edges) || Object.keys(edges).length < PAGE) {
        reload ??= setTimeout(() => { reload = null; load(); }, 500);  // one reload however many changed
      }
    },
  };
}
