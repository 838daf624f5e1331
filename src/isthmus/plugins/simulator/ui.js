// Simulator panel: incident mode, incidents with a duration, overrides with a TTL.
import { el, fmt } from '/static/app.js';

export const name = 'simulator';

export function template() {
  return `<div class="card"><h2>Status</h2><pre class="sim-status"></pre></div>
  <form class="card sim-mode"><h2>Incident mode</h2><label for="sim-mode">Mode </label><select id="sim-mode" name="mode">
    <option>full_ok</option><option>light</option><option>medium</option><option>heavy</option><option>chaos</option></select>
    <button type="submit" class="warning">Set mode</button></form>
  <form class="card sim-incident"><h2>Incident</h2><div class="form-grid">
    <label for="sim-itype">Type</label><select id="sim-itype" name="type"><option>rack_down</option><option>node_down</option>
      <option>drain</option><option>thermal</option></select>
    <label for="sim-target">Node or rack</label><input id="sim-target" name="target" required placeholder="r03 or c007">
    <label for="sim-duration">Duration (s)</label><input id="sim-duration" name="duration" type="number" value="300">
    </div><p><button type="submit" class="warning">Start incident</button></p><ul class="sim-incidents"></ul></form>
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

export function css() { return ''; }

async function refresh(page, api) {
  page.querySelector('.sim-status').textContent = JSON.stringify(await api.fetch('status'), null, 2);
  const { incidents } = await api.fetch('incidents');
  page.querySelector('.sim-incidents').replaceChildren(...incidents.map(i => el('li', { text: `${i.type} on ${i.target} (${fmt(i.expires_in)} s left)` })));
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

export async function onShow(page, api) { await refresh(page, api); }
