// Simulator panel: status as a readable panel, incidents with the time they have left (counting
// down between refreshes), incident mode, incidents with a duration, overrides with a TTL.
import { el, fmt } from '/static/app.js';

export const name = 'simulator';
const REFRESH = 5;  // seconds between reads of status, incidents and overrides
export function template() {
  return `<div class="card"><h2>Status</h2><div class="sim-status" aria-live="polite"></div></div>
  <div class="card"><h2>Active incidents</h2><table class="sim-active"><thead><tr><th scope="col">Incident</th>
    <th scope="col">Type</th><th scope="col">Target</th><th scope="col">Time left</th></tr></thead><tbody></tbody></table>
    <p class="sim-none hint">No incidents.</p></div>
  <form class="card sim-mode"><h2>Incident mode</h2><label for="sim-mode">Mode </label><select id="sim-mode" name="mode">
    <option>full_ok</option><option>light</option><option>medium</option><option>heavy</option><option>chaos</option></select>
    <button type="submit" class="warning">Set mode</button></form>
  <form class="card sim-incident"><h2>Incident</h2><div class="form-grid">
    <label for="sim-itype">Type</label><select id="sim-itype" name="type"><option>rack_down</option><option>node_down</option>
      <option>drain</option><option>thermal</option></select>
    <label for="sim-target">Node or rack</label><input id="sim-target" name="target" required placeholder="r03 or c007">
    <label for="sim-duration">Duration (s)</label><input id="sim-duration" name="duration" type="number" value="300">
    </div><p><button type="submit" class="warning">Start incident</button></p></form>
  <form class="card sim-override"><h2>Overrides</h2><div class="form-grid">
    <label for="sim-ot">Node or rack</label><input id="sim-ot" name="target" required placeholder="c010">
    <label for="sim-kind">Kind</label><select id="sim-kind" name="kind"><option>metric</option><option>state</option></select>
    <label for="sim-key">Metric</label><select id="sim-key" name="key"><option>temperature</option><option>power</option>
      <option>load</option><option>cpu_util</option></select>
    <label for="sim-value">Value</label><input id="sim-value" name="value" required placeholder="95 or down">
    <label for="sim-ttl">TTL (s)</label><input id="sim-ttl" name="ttl" type="number" value="600">
    </div><p><button type="submit">Add override</button> <button type="button" class="danger sim-clear">Delete all</button></p>
    <table class="sim-overrides"><tbody></tbody></table></form>`;
}

export function css() {
  return `.sim-stats { display: grid; grid-template-columns: repeat(auto-fit, minmax(9em, 1fr)); gap: 8px; margin: 0; }
  .sim-stats div { border: 1px solid var(--line); border-radius: 8px; padding: 6px 10px; }
  .sim-stats dt { color: var(--muted); font-size: 12px; } .sim-stats dd { margin: 0; font-size: 20px; font-weight: 600; }
  .sim-states { margin-top: 8px; } .sim-hostlist { overflow-wrap: anywhere; }
  .sim-active td.sim-left { font-variant-numeric: tabular-nums; }`;
}

function secondsLeft(s) {
  if (s === null || s === undefined) return 'until cleared';
  const v = Math.max(0, Math.round(s));
  return v >= 120 ? `${Math.floor(v / 60)} min ${v % 60} s` : `${v} s`;
}

function statusPanel(s) {
  const stat = (label, value) => el('div', {}, el('dt', { text: label }), el('dd', { text: String(value) }));
  const jobs = s.jobs || {};
  const states = Object.entries(s.node_states || {}).sort((a, b) => b[1] - a[1]);
  return [
    el('dl', { class: 'sim-stats' }, stat('Mode', s.mode), stat('Simulated time', new Date(s.time * 1000).toLocaleString()),
      stat('Nodes', s.nodes), stat('Racks', s.racks), stat('Rooms', s.rooms), stat('Running jobs', jobs.RUNNING ?? 0),
      stat('Pending jobs', jobs.PENDING ?? 0), stat('Incidents', s.incidents), stat('Overrides', s.overrides),
      stat('Drains', s.drains), stat('Seed', s.seed)),
    el('table', { class: 'sim-states' }, el('thead', {}, el('tr', {}, el('th', { scope: 'col', text: 'Node state' }),
      el('th', { scope: 'col', text: 'Nodes' }))), el('tbody', {}, ...states.map(([k, v]) => el('tr', { 'data-state': k },
      el('td', { text: k }), el('td', { text: String(v) }))))),
    el('p', { class: 'hint sim-hostlist', text: `Node names: ${s.hostlist}` }),
  ];
}

// Incidents' time left, counted down locally between reads (simulated seconds at the configured speed).
let incidents = [];
let readAt = 0;
function renderIncidents(page) {
  const elapsed = (Date.now() - readAt) / 1000;
  page.querySelector('.sim-active tbody').replaceChildren(...incidents.map(i => el('tr', { 'data-incident': i.id },
    el('td', { text: i.id }), el('td', { text: i.type.replace('_', ' ') }), el('td', { text: i.target }),
    el('td', { class: 'sim-left', text: secondsLeft(i.expires_in === null ? null : i.expires_in - elapsed) }))));
  page.querySelector('.sim-none').classList.toggle('hidden', incidents.length > 0);
}

async function refresh(page, api) {
  const [status, active] = await Promise.all([api.fetch('status'), api.fetch('incidents')]);
  page.querySelector('.sim-status').replaceChildren(...statusPanel(status));
  incidents = active.incidents;
  readAt = Date.now();
  renderIncidents(page);
  const { overrides } = await api.fetch('overrides');
  page.querySelector('.sim-overrides tbody').replaceChildren(...overrides.map(o => el('tr', { 'data-override': o.id },
    el('td', { text: o.target }), el('td', { text: `${o.key} = ${o.value}` }), el('td', { text: `${fmt(o.expires_in)} s` }),
    el('td', {}, el('button', { type: 'button', class: 'danger', text: 'Delete', onclick: async () => {
      await api.fetch(`overrides/${encodeURIComponent(o.id)}`, { method: 'DELETE' }); refresh(page, api);
    } })))));
}

async function act(api, page, path, body, done) {
  try { await api.fetch(path, { method: 'POST', body }); api.flash(done); await refresh(page, api); }
  catch (err) { api.flash(err.message, false); }
}

export async function init(page, api) {
  page.querySelector('.sim-mode').addEventListener('submit', e => { e.preventDefault();
    act(api, page, 'set_incident_mode', { mode: e.target.mode.value }, `Mode ${e.target.mode.value}`); });
  page.querySelector('.sim-incident').addEventListener('submit', e => { e.preventDefault(); const f = e.target;
    act(api, page, 'incident', { type: f.type.value, target: f.target.value, duration: Number(f.duration.value) }, 'Incident started'); });
  page.querySelector('.sim-override').addEventListener('submit', e => { e.preventDefault(); const f = e.target;
    const value = f.kind.value === 'metric' ? Number(f.value.value) : f.value.value;
    act(api, page, 'overrides', { target: f.target.value, kind: f.kind.value, key: f.kind.value === 'state' ? 'state' : f.key.value,
      value, ttl: Number(f.ttl.value) }, 'Override added'); });
  page.querySelector('.sim-clear').addEventListener('click', async () => {
    await api.fetch('overrides', { method: 'DELETE' }); refresh(page, api); });
}

let timer = null;
export async function onShow(page, api) {
  clearInterval(timer);
  await refresh(page, api);
  let ticks = 0;
  timer = setInterval(() => {  // live while on screen; a page that was left stops its own timer
    if (!page.isConnected) { clearInterval(timer); return; }
    renderIncidents(page);
    if (++ticks % REFRESH === 0) refresh(page, api).catch(() => {});
  }, 1000);
}
