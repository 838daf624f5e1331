// Queues page: partitions with free/total, my jobs (cancel), allocations.
import { el, fmt } from '/static/app.js';

export const name = 'queue_info';

export function template() {
  return '<div class="card"><h2>Partitions</h2><div class="qi-parts">Loading…</div></div>'
    + '<div class="card"><h2>My jobs</h2><div class="qi-jobs"></div></div>'
    + '<div class="card"><h2>Allocations</h2><div class="qi-allocs"></div></div>';
}

export function css() { return ''; }

function table(columns, rows) {
  return el('table', {}, el('thead', {}, el('tr', {}, ...columns.map(c => el('th', { text: c[0] })))),
    el('tbody', {}, ...rows.map(r => el('tr', {}, ...columns.map(c => el('td', {}, c[1](r)))))));
}

export async function init() {}

export async function onShow(page, api) {
  const sid = await api.getSession();
  const info = await api.fetch(`get_info/${sid}`);
  api.setQueueData(info);
  page.querySelector('.qi-parts').replaceChildren(table([
    ['Partition', p => p.name + (p.default ? ' (default)' : '')], ['State', p => p.state],
    ['Free nodes', p => `${p.idle_nodes} / ${p.total_nodes}`], ['Free CPUs', p => `${p.idle_cpus} / ${p.total_cpus}`],
    ['Free GPUs', p => `${p.idle_gpus} / ${p.total_gpus}`], ['Max time', p => p.max_time ? `${p.max_time / 3600} h` : '∞'],
  ], info.partitions));
  const { jobs } = await api.fetch(`list_all_jobs/${sid}`);
  page.querySelector('.qi-jobs').replaceChildren(jobs.length ? table([
    ['Job', j => j.job_id], ['Name', j => j.name], ['Partition', j => j.partition],
    ['State', j => el('span', { class: `badge st-${j.state}`, text: j.state })], ['Nodes', j => fmt(j.nodes)],
    ['', j => el('button', { type: 'button', class: 'danger', text: 'Cancel', onclick: async () => {
      try { await api.fetch(`cancel_job/${sid}`, { method: 'POST', body: { job_id: j.job_id } }); api.flash(`Cancelled ${j.job_id}`); onShow(page, api); }
      catch (err) { api.flash(err.message, false); }
    } })],
  ], jobs) : el('p', { class: 'hint', text: 'No jobs of yours in the queue.' }));
  const { allocations } = await api.fetch(`list_allocations/${sid}`);
  page.querySelector('.qi-allocs').replaceChildren(allocations.length ? table([
    ['Account', a => a.account], ['Partition', a => a.partition || 'any'], ['QOS', a => fmt(a.qos)],
    ['Limits', a => fmt(a.limits)],
  ], allocations) : el('p', { class: 'hint', text: 'No allocations reported by this scheduler.' }));
}
