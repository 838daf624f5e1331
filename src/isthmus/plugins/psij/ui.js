// Jobs page: submit through PSI/J, follow states live, read output, cancel.
import { el } from '/static/app.js';

export const name = 'psij';
export const notificationConfig = { topic: 'job_status', idField: 'job_id' };
const pending = {};  // job_id -> notification data that arrived before its row (seed 000, 3.6.4)

export function template() {
  return `<form class="card psij-submit"><h2>Submit a job</h2><div class="form-grid">
    <label for="psij-exe">Executable</label><input id="psij-exe" name="executable" value="/bin/echo" required>
    <label for="psij-args">Arguments</label><input id="psij-args" name="arguments" value="hello">
    <label for="psij-dir">Directory</label><input id="psij-dir" name="directory" placeholder="(a fresh job directory)">
    <label for="psij-executor">Executor</label><select id="psij-executor" name="executor">
      <option>auto</option><option>local</option><option>slurm</option><option>pbs</option><option>lsf</option></select>
    </div><p><button type="submit" class="success">Submit</button></p></form>
    <div class="card"><h2>Jobs</h2><table class="psij-jobs"><thead><tr><th>Job</th><th>State</th><th>Exit</th>
    <th>Command</th><th></th></tr></thead><tbody></tbody></table></div>`;
}

export function css() { return '.psij-jobs td:nth-child(4) { font-family: monospace; }'; }

function setState(page, id, data) {
  const row = page.querySelector(`tr[data-job-id="${CSS.escape(id)}"]`);
  if (!row) { pending[id] = data; return; }
  row.querySelector('.state').replaceChildren(el('span', { class: `badge st-${data.state}`, text: data.state }));
  if (data.exit_code !== undefined && data.exit_code !== null) row.querySelector('.exit').textContent = data.exit_code;
}

function addRow(page, api, job) {
  const tbody = page.querySelector('.psij-jobs tbody');
  if (tbody.querySelector(`tr[data-job-id="${CSS.escape(job.job_id)}"]`)) return;
  const row = el('tr', { 'data-job-id': job.job_id },
    el('td', {}, el('button', { type: 'button', class: 'link', text: job.job_id, onclick: () => showJob(api, job.job_id) })),
    el('td', { class: 'state' }), el('td', { class: 'exit' }),
    el('td', { text: [job.executable, ...(job.arguments || [])].join(' ') }),
    el('td', {}, el('button', { type: 'button', class: 'danger', text: 'Cancel', onclick: () => cancel(api, job.job_id) })));
  tbody.prepend(row);
  setState(page, job.job_id, job);
  if (pending[job.job_id]) { setState(page, job.job_id, pending[job.job_id]); delete pending[job.job_id]; }
}

async function showJob(api, id) {
  const sid = await api.getSession();
  const s = await api.fetch(`job_status/${sid}/${encodeURIComponent(id)}`);
  const body = el('div', {}, el('p', {}, el('span', { class: `badge st-${s.state}`, text: s.state }),
    ` exit ${s.exit_code ?? '–'} · native id ${s.native_id ?? '–'} · ${s.executor}`),
    s.message ? el('p', { class: 'field-error', text: s.message }) : null,
    el('h3', { text: 'stdout' }), el('pre', { class: 'job-stdout', text: s.stdout }),
    el('h3', { text: 'stderr' }), el('pre', { class: 'job-stderr', text: s.stderr }));
  api.showOverlay(`Job ${id}`, body);
}

async function cancel(api, id) {
  try {
    const sid = await api.getSession();
    await api.fetch(`cancel_job/${sid}/${encodeURIComponent(id)}`, { method: 'POST' });
    api.flash(`Cancel requested for ${id}`);
  } catch (err) { api.flash(err.message, false); }
}

export async function init(page, api) {
  page.querySelector('.psij-submit').addEventListener('submit', async event => {
    event.preventDefault();
    const f = event.target;
    const spec = { executable: f.executable.value, arguments: f.arguments.value };
    if (f.directory.value) spec.directory = f.directory.value;
    try {
      const sid = await api.getSession();
      const res = await api.fetch(`submit_job/${sid}`, { method: 'POST', body: { job_spec: spec, executor: f.executor.value } });
      api.registerTask('psij', res.job_id, `${spec.executable} ${spec.arguments}`);
      addRow(page, api, { job_id: res.job_id, state: res.state, executable: spec.executable, arguments: [spec.arguments] });
      api.flash(`Job ${res.job_id} submitted`);
    } catch (err) {
      const details = err.detail?.errors ? ': ' + err.detail.errors.map(e => `${e.field} ${e.problem}`).join('; ') : '';
      api.flash(err.message + details, false);
    }
  });
}

export async function onShow(page, api) {
  const sid = await api.getSession();
  const { jobs } = await api.fetch(`list_jobs/${sid}`);
  for (const job of jobs.slice().reverse()) addRow(page, api, job);
}

export function onNotification(data, page) {
  const id = data.data?.job_id;
  if (id) setState(page, id, data.data);
}
