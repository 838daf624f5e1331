// Pilots page: pools with their pilots (batch job, child edge, state, tasks on it) and queue;
// create a pool, cancel one. Live through pool_status events; every value is set as text.
import { el } from '/static/app.js';

export const name = 'pilots';
export const notificationConfig = { topic: 'pool_status', idField: 'name' };
const STATES = ['PENDING', 'RUNNING', 'DONE', 'FAILED', 'CANCELLED'];

export function template() {
  return `<form class="card pilots-create"><h2>Create a pool</h2><div class="form-grid">
    <label for="pl-name">Name</label><input id="pl-name" name="name" required pattern="[A-Za-z0-9][A-Za-z0-9_-]{0,23}">
    <label for="pl-max">Pilots at most</label><input id="pl-max" name="max_size" type="number" min="1" value="2">
    <label for="pl-min">Pilots at least</label><input id="pl-min" name="min_size" type="number" min="0" value="0">
    <label for="pl-cores">Cores per pilot</label><input id="pl-cores" name="cores" type="number" min="1" value="1">
    <label for="pl-wall">Walltime</label><input id="pl-wall" name="walltime" value="00:30:00">
    <label for="pl-part">Partition</label><input id="pl-part" name="partition" placeholder="(the default)">
    </div><p><button type="submit" class="success">Create</button></p></form>
    <div class="card"><h2>Pools</h2><p class="pl-empty hint">No pools yet.</p><div class="pl-pools"></div></div>`;
}

export function css() {
  return `.pl-pool { border-top: 1px solid var(--line); padding: 8px 0; }
  .pl-pool header { display: flex; flex-wrap: wrap; gap: 10px; align-items: baseline; }
  .pl-pool table td:nth-child(2) { font-family: monospace; }`;
}

function pilotRows(pool) {
  if (!pool.pilots?.length) return el('p', { class: 'hint', text: 'No pilots now (the pool grows when tasks wait).' });
  return el('table', { class: 'pl-pilots' },
    el('thead', {}, el('tr', {}, ...['Batch job', 'Child edge', 'State', 'Tasks on it', 'Note']
      .map(text => el('th', { text })))),
    el('tbody', {}, ...pool.pilots.map(p => el('tr', {},
      el('td', { text: p.native_id ?? '–' }), el('td', { text: p.edge ?? '–' }),
      el('td', {}, el('span', { class: `badge st-${p.state}`, text: p.state })),
      el('td', { text: String(p.running ?? 0) }), el('td', { text: p.reason ?? '' })))));
}

function poolCard(api, pool) {
  const counts = pool.counts ? STATES.map(s => `${s.toLowerCase()} ${pool.counts[s] ?? 0}`).join(' · ') : '';
  const spec = pool.spec ? `${pool.spec.min_size}–${pool.spec.max_size} pilots of ${pool.spec.cores} cores` : '';
  return el('section', { class: 'pl-pool', 'data-pool': pool.name },
    el('header', {}, el('h3', { text: pool.name }),
      el('span', { class: `badge st-${pool.state}`, text: pool.state }),
      el('span', { text: `${pool.queued} queued · ${pool.running} running` }),
      el('span', { class: 'hint', text: [spec, counts].filter(Boolean).join(' · ') }),
      pool.state === 'ACTIVE' ? el('button', { type: 'button', class: 'danger', text: 'Cancel pool',
        onclick: () => cancel(api, pool.name) }) : null),
    pilotRows(pool));
}

function render(page, api, pools) {
  const box = page.querySelector('.pl-pools');
  box.replaceChildren(...pools.map(pool => poolCard(api, pool)));
  page.querySelector('.pl-empty').hidden = pools.length > 0;
}

async function refresh(page, api) {
  const { pools } = await api.fetch('list_pools');
  render(page, api, pools);
}

async function cancel(api, poolName) {
  try {
    const sid = await api.getSession();
    await api.fetch(`cancel_pool/${sid}/${encodeURIComponent(poolName)}`, { method: 'POST' });
    api.flash(`Pool ${poolName} cancelled: its pilot jobs are being cancelled`);
  } catch (err) { api.flash(err.message, false); }
}

export async function init(page, api) {
  page.querySelector('.pilots-create').addEventListener('submit', async event => {
    event.preventDefault();
    const f = event.target;
    const spec = { name: f.name.value, max_size: Number(f.max_size.value), min_size: Number(f.min_size.value),
      cores: Number(f.cores.value), walltime: f.walltime.value };
    if (f.partition.value) spec.partition = f.partition.value;
    try {
      const sid = await api.getSession();
      await api.fetch(`create_pool/${sid}`, { method: 'POST', body: spec });
      api.flash(`Pool ${spec.name} created`);
      await refresh(page, api);
    } catch (err) {
      const details = err.detail?.errors ? ': ' + err.detail.errors.map(e => `${e.field} ${e.problem}`).join('; ') : '';
      api.flash(err.message + details, false);
    }
  });
}

export async function onShow(page, api) { await refresh(page, api); }

export function onNotification(data, page, api) {
  const pool = data.data;
  if (!pool?.name) return;
  const box = page.querySelector('.pl-pools');
  const old = box.querySelector(`section[data-pool="${CSS.escape(pool.name)}"]`);
  if (pool.state === 'GONE') {  // cancelled and forgotten: its last word
    old?.remove();
    page.querySelector('.pl-empty').hidden = box.childElementCount > 0;
    return;
  }
  const card = poolCard(api, pool);
  if (old) old.replaceWith(card); else box.append(card);
  page.querySelector('.pl-empty').hidden = true;
}
