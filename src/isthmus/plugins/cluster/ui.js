// Cluster pages: summary bars, room view (racks as elevations, nodes coloured by severity),
// partition table, node list filterable by state, node detail with its jobs.
import { el, fmt } from '/static/app.js';

export const name = 'cluster';
export const notificationConfig = { topic: 'cluster', idField: 'name' };
const SEVERITIES = ['OK', 'UNKNOWN', 'WARN', 'CRIT'];

export function template() {
  return `<div class="card"><h2>Summary</h2><div class="cl-bars bars" role="img" aria-label="nodes by severity"></div>
    <p class="cl-counts hint"></p><p class="cl-asof hint" aria-live="polite"></p></div>
    <div class="card"><h2>Rooms</h2><div class="cl-rooms" role="tablist"></div><div class="cl-room"></div></div>
    <div class="card"><h2>Partitions</h2><div class="cl-parts"></div></div>
    <div class="card"><h2>Nodes</h2><label for="cl-state">State </label><select id="cl-state" class="cl-state">
      <option value="">all</option><option>idle</option><option>allocated</option><option>mixed</option>
      <option>draining</option><option>drained</option><option>down</option><option>maint</option>
      <option>reserved</option><option>unknown</option></select><div class="cl-nodes"></div></div>`;
}

export function css() { return '.cl-rooms button.active { border-color: var(--accent); } .cl-nodes { max-height: 420px; overflow: auto; }'; }

let currentRoom = null;

// Answers come from a snapshot: say when its data was read (as_of, unix seconds; age, seconds).
function asOf(s) {
  if (typeof s.as_of !== 'number' || !Number.isFinite(s.as_of)) return '';
  const age = typeof s.age === 'number' && Number.isFinite(s.age) ? Math.round(s.age) : 0;
  return `as of ${new Date(s.as_of * 1000).toLocaleTimeString()}` + (age >= 1 ? ` (${age} s old when fetched)` : '');
}

async function summary(page, api) {
  const s = await api.fetch('summary');
  const bars = page.querySelector('.cl-bars');
  bars.replaceChildren(...SEVERITIES.filter(k => s.by_severity[k]).map(k => {
    const span = el('span', { class: `sev-${k}`, title: `${k}: ${s.by_severity[k]}` });
    span.style.width = `${(100 * s.by_severity[k]) / Math.max(1, s.total)}%`;
    return span;
  }));
  page.querySelector('.cl-counts').textContent = `${s.total} nodes · ` + SEVERITIES.map(k => `${k} ${s.by_severity[k]}`).join(' · ');
  const stamp = page.querySelector('.cl-asof');
  stamp.textContent = asOf(s);  // text, never markup
  stamp.dataset.asOf = String(s.as_of ?? '');
}

async function showNode(api, nodeName) {
  const n = await api.fetch(`node/${encodeURIComponent(nodeName)}`);
  const body = el('div', { class: 'node-detail' },
    el('p', {}, el('span', { class: `sev sev-${n.severity}`, text: n.severity }), ` ${n.state}`,
      n.reason ? ` — ${n.reason}` : ''),
    el('p', { text: `${n.site || '?'} / ${n.room || '?'} / rack ${n.rack || '?'} slot ${n.slot ?? '?'} · partitions ${fmt(n.partitions)}` }),
    el('p', { text: `CPUs ${n.cpus_alloc}/${n.cpus} · GPUs ${n.gpus_alloc}/${n.gpus} · metrics ${fmt(n.metrics)}` }),
    el('p', { class: 'hint cl-node-asof', text: asOf(n) }),
    el('h3', { text: `Jobs (${n.jobs.length})` }),
    el('table', {}, el('tbody', {}, ...n.jobs.map(j => el('tr', {}, el('td', { text: j.job_id }), el('td', { text: j.name }),
      el('td', { text: j.user }), el('td', { text: j.state }))))));
  api.showOverlay(`Node ${nodeName}`, body);
}

async function room(page, api, roomId) {
  currentRoom = roomId;
  for (const b of page.querySelectorAll('.cl-rooms button')) b.classList.toggle('active', b.dataset.room === roomId);
  const r = await api.fetch(`room/${encodeURIComponent(roomId)}`);
  const racks = el('div', { class: 'racks' }, ...r.racks.map(rack => el('div', { class: `rack sev-border-${rack.severity}`, 'data-rack': rack.id },
    el('h4', {}, `${rack.name} `, el('span', { class: `sev sev-${rack.severity}`, text: rack.severity })),
    el('div', { class: 'slots' }, ...rack.nodes.map(n => el('button', {
      type: 'button', class: `slot sev-${n.severity}`, 'data-node': n.name, 'data-severity': n.severity,
      title: `${n.name} slot ${n.slot}: ${n.state} (${n.severity})`, 'aria-label': `${n.name} ${n.state} ${n.severity}`,
      onclick: () => showNode(api, n.name),
    }))))));
  page.querySelector('.cl-room').replaceChildren(el('p', {}, `${r.name} `, el('span', { class: `sev sev-${r.severity}`, text: r.severity })), racks);
}

async function nodes(page, api) {
  const state = page.querySelector('.cl-state').value;
  const { nodes: list } = await api.fetch('nodes' + (state ? `?state=${encodeURIComponent(state)}` : ''));
  page.querySelector('.cl-nodes').replaceChildren(el('table', {}, el('thead', {}, el('tr', {},
    ...['Node', 'State', 'Health', 'Rack', 'Jobs', 'Reason'].map(h => el('th', { text: h })))),
    el('tbody', {}, ...list.slice(0, 600).map(n => el('tr', { 'data-node': n.name },
      el('td', {}, el('button', { type: 'button', text: n.name, onclick: () => showNode(api, n.name) })),
      el('td', { text: n.state }), el('td', {}, el('span', { class: `sev sev-${n.severity}`, text: n.severity })),
      el('td', { text: `${n.rack ?? ''}:${n.slot ?? ''}` }), el('td', { text: n.jobs.length }), el('td', { text: n.reason || '' }))))));
}

async function partitions(page, api) {
  const { partitions: parts } = await api.fetch('partitions');
  page.querySelector('.cl-parts').replaceChildren(el('table', {}, el('thead', {}, el('tr', {},
    ...['Partition', 'Health', 'Nodes free/total', 'CPUs free/total', 'GPUs free/total'].map(h => el('th', { text: h })))),
    el('tbody', {}, ...parts.map(p => el('tr', {}, el('td', { text: p.name }),
      el('td', {}, el('span', { class: `sev sev-${p.severity}`, text: p.severity })),
      el('td', { text: `${p.idle_nodes}/${p.total_nodes}` }), el('td', { text: `${p.idle_cpus}/${p.total_cpus}` }),
      el('td', { text: `${p.idle_gpus}/${p.total_gpus}` }))))));
}

export async function init(page, api) {
  page.querySelector('.cl-state').addEventListener('change', () => nodes(page, api));
  const { rooms } = await api.fetch('rooms');
  page.querySelector('.cl-rooms').replaceChildren(...rooms.map(r => el('button', {
    type: 'button', role: 'tab', 'data-room': r.id, onclick: () => room(page, api, r.id),
  }, `${r.name} `, el('span', { class: `sev sev-${r.severity}`, text: r.severity }))));
  if (rooms.length) currentRoom = rooms[0].id;
}

export async function onShow(page, api) {
  await Promise.all([summary(page, api), currentRoom ? room(page, api, currentRoom) : null, partitions(page, api), nodes(page, api)]);
}

let refresh = null;
export function onNotification(data, page, api) {
  clearTimeout(refresh);  // many changes arrive together: redraw once
  refresh = setTimeout(() => onShow(page, api), 300);
}
