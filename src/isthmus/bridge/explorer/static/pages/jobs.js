// Jobs: my jobs (an admin's: everyone's) from psij's durable records on every edge that runs
// it, filtered by state and edge, live (job_status events), with an output tail that follows
// a running job, cancel, resubmit, and a composer whose templates are kept in localStorage
// (this browser only; templates hold a job description, never a credential).

import { el, explorerState, flash, registerTask } from '../app.js';
import { FINAL_JOB, badge, call, edgesWith, labelled, table, when } from './common.js';

const STATES = ['NEW', 'PENDING', 'HELD', 'RUNNING', 'DONE', 'FAILED', 'CANCELLED', 'UNKNOWN'];
const EDGES_FOR_ALL = 50;  // "all edges" reads this many; pick an edge for the others
const TAIL_EVERY = 1000;
const TAIL_KEEP = 256 * 1024;  // characters of output kept on screen per stream
const TEMPLATES = 'isthmus.jobTemplates';

function loadTemplates() {
  try { return JSON.parse(localStorage.getItem(TEMPLATES) || '{}') || {}; } catch { return {}; }
}

function saveTemplates(templates) { localStorage.setItem(TEMPLATES, JSON.stringify(templates)); }

function input(name, attrs = {}) { return el('input', { name, ...attrs }); }

// One argument as a POSIX shell word (what Python's shlex.quote does): the edge splits the
// composer's Arguments field like a shell, so a resubmitted job gets back the very same list.
function shellWord(value) {
  const text = String(value);
  if (text === '') return "''";
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replaceAll("'", `'"'"'`)}'`;
}

export function render(main, route) {
  const s = explorerState();
  const edgeFilter = el('select', { name: 'edge' }, el('option', { value: '', text: 'All edges' }));
  const stateFilter = el('select', { name: 'state' }, el('option', { value: '', text: 'Any state' }),
    el('option', { value: 'active', text: 'Not finished' }), ...STATES.map(x => el('option', { value: x, text: x })));
  const tbody = el('tbody');
  const status = el('span', { class: 'hint', role: 'status' });
  const detail = el('section', { class: 'card job-detail hidden', 'aria-label': 'Job detail' });

  // -- composer
  const composer = el('form', { class: 'card composer', 'aria-label': 'Job composer' });
  const f = {
    edge: el('select', { name: 'edge', required: true }),
    name: input('name', { maxlength: 200 }),
    executable: input('executable', { required: true, value: '/bin/echo' }),
    arguments: input('arguments', { value: 'hello' }),
    executor: el('select', { name: 'executor' }, ...['auto', 'local', 'slurm', 'pbs', 'lsf', 'flux'].map(x => el('option', { value: x, text: x }))),
    queue: input('queue'),
    nodes: input('nodes', { type: 'number', min: 1 }),
    duration: input('duration', { placeholder: 'seconds or HH:MM:SS', value: '600' }),
  };
  const templateSelect = el('select', { name: 'template' }, el('option', { value: '', text: 'Templates…' }));
  const templateName = input('template-name', { placeholder: 'template name' });
  function drawTemplates() {
    const names = Object.keys(loadTemplates()).sort();
    templateSelect.replaceChildren(el('option', { value: '', text: names.length ? 'Templates…' : 'No templates yet' }),
      ...names.map(n => el('option', { value: n, text: n })));
  }
  function formValues() {
    return Object.fromEntries(Object.entries(f).filter(([k]) => k !== 'edge').map(([k, c]) => [k, c.value]));
  }
  function fill(values) {
    for (const [k, v] of Object.entries(values)) if (f[k] && v !== undefined && v !== null) f[k].value = v;
  }
  templateSelect.addEventListener('change', () => {
    const t = loadTemplates()[templateSelect.value];
    if (t) { fill(t); templateName.value = templateSelect.value; }
  });
  const grid = el('div', { class: 'form-grid' },
    ...labelled('Edge', f.edge), ...labelled('Name', f.name), ...labelled('Executable', f.executable),
    ...labelled('Arguments', f.arguments), ...labelled('Executor', f.executor), ...labelled('Queue', f.queue),
    ...labelled('Nodes', f.nodes), ...labelled('Walltime', f.duration));
  composer.append(el('h2', { text: 'New job' }),
    el('div', { class: 'toolbar' }, ...labelled('Template', templateSelect), ...labelled('Save as', templateName),
      el('button', { type: 'button', text: 'Save template', onclick: () => {
        const key = templateName.value.trim();
        if (!key) { flash('Name the template first', false); templateName.focus(); return; }
        saveTemplates({ ...loadTemplates(), [key]: formValues() });
        drawTemplates();
        templateSelect.value = key;
        flash(`Template ${key} saved in this browser`);
      } }),
      el('button', { type: 'button', class: 'danger', text: 'Delete template', onclick: () => {
        const all = loadTemplates();
        if (!all[templateSelect.value]) return;
        delete all[templateSelect.value];
        saveTemplates(all);
        drawTemplates();
      } })),
    grid, el('p', {}, el('button', { type: 'submit', class: 'primary', text: 'Submit job' })),
    el('div', { class: 'field-error composer-errors', role: 'alert' }));
  composer.addEventListener('submit', async event => {
    event.preventDefault();
    const errors = composer.querySelector('.composer-errors');
    errors.textContent = '';
    const v = formValues();
    const attributes = {};
    if (v.queue) attributes.queue_name = v.queue;
    if (v.nodes) attributes.node_count = parseInt(v.nodes, 10);
    if (v.duration) attributes.duration = /^\d+$/.test(v.duration) ? parseInt(v.duration, 10) : v.duration;
    const spec = { executable: v.executable, arguments: v.arguments, attributes };
    if (v.name) spec.name = v.name;
    try {
      const res = await call(f.edge.value, 'psij', 'submit_job/{sid}', { method: 'POST', body: { job_spec: spec, executor: v.executor } });
      registerTask('psij', res.job_id, v.name || v.executable);
      flash(`Job ${res.job_id} submitted to ${f.edge.value}`);
      const row = { job_id: res.job_id, state: res.state, executor: res.executor, name: v.name || null,
        executable: v.executable, owner: s.me?.name, submitted: Date.now() / 1000 };
      upsert(f.edge.value, row);
      select(f.edge.value, res.job_id);
    } catch (err) {
      const list = err.detail?.errors;
      errors.textContent = Array.isArray(list) ? list.map(e => `${e.field}: ${e.problem}`).join('; ') : err.message;
    }
  });

  main.replaceChildren(el('section', { class: 'jobs-page' },
    el('h1', { text: s.me?.role === 'admin' ? 'Jobs (everyone’s)' : 'My jobs' }),
    el('form', { class: 'toolbar', onsubmit: e => { e.preventDefault(); load(); } },
      ...labelled('Edge', edgeFilter), ...labelled('State', stateFilter),
      el('button', { type: 'submit', text: 'Refresh' }), status),
    table(['Edge', 'Job', 'Name', 'Command', 'State', 'Submitted', 'Owner', ''], tbody, 'Jobs'),
    detail, composer));

  const jobs = new Map();  // `${edge}/${id}` -> record
  let selected = null;
  let tail = null;

  function visible(rec) {
    const want = stateFilter.value;
    if (edgeFilter.value && rec.edge !== edgeFilter.value) return false;
    if (want === 'active') return !FINAL_JOB.has(rec.state);
    return !want || rec.state === want;
  }
  function rowOf(rec) {
    const key = `${rec.edge}/${rec.job_id}`;
    return el('tr', { 'data-job': rec.job_id, 'data-edge': rec.edge, class: selected === key ? 'selected' : '' },
      el('td', { text: rec.edge }),
      el('td', {}, el('button', { type: 'button', class: 'link', text: rec.job_id, 'aria-label': `Show job ${rec.job_id}`,
        onclick: () => select(rec.edge, rec.job_id) })),
      el('td', { text: rec.name || '' }),
      el('td', { class: 'cmd', text: [rec.executable, ...(rec.arguments || [])].join(' ') }),
      el('td', { class: 'job-state' }, badge(rec.state)),
      el('td', { text: when(rec.submitted) }), el('td', { text: rec.owner || '' }),
      el('td', {}, FINAL_JOB.has(rec.state) ? null
        : el('button', { type: 'button', class: 'danger', text: 'Cancel', 'aria-label': `Cancel job ${rec.job_id}`,
          onclick: () => cancel(rec) })));
  }
  function draw() {
    const rows = [...jobs.values()].filter(visible).sort((a, b) => (b.submitted || 0) - (a.submitted || 0));
    tbody.replaceChildren(...rows.slice(0, 500).map(rowOf));
    if (!status.dataset.error) status.textContent = `${rows.length} of ${jobs.size} jobs shown`;
    if (!rows.length) tbody.append(el('tr', {}, el('td', { colspan: 8, class: 'hint', text: 'No jobs.' })));
  }
  function upsert(edge, rec) {
    const key = `${edge}/${rec.job_id}`;
    jobs.set(key, { ...(jobs.get(key) || {}), ...rec, edge });
    draw();
  }

  async function load() {
    status.textContent = 'Loading…';
    const edges = edgeFilter.value ? [edgeFilter.value] : [...edgeFilter.options].map(o => o.value).filter(Boolean).slice(0, EDGES_FOR_ALL);
    const results = await Promise.allSettled(edges.map(async edge => {
      const data = await call(edge, 'psij', 'list_jobs/{sid}?limit=500');
      for (const j of data.jobs || []) jobs.set(`${edge}/${j.job_id}`, { ...j, edge });
    }));
    const failed = results.filter(r => r.status === 'rejected').map(r => r.reason.message);
    if (failed.length) status.dataset.error = 'true'; else delete status.dataset.error;
    status.textContent = failed.length ? `Some edges did not answer: ${failed.join('; ')}` : '';
    draw();
  }

  async function cancel(rec) {
    try {
      await call(rec.edge, 'psij', `cancel_job/{sid}/${encodeURIComponent(rec.job_id)}`, { method: 'POST' });
      flash(`Cancel requested for ${rec.job_id}`);
    } catch (err) { flash(err.message, false); }
  }

  function stopTail() { if (tail) { clearTimeout(tail.timer); tail.stopped = true; tail = null; } }

  function select(edge, id) {
    stopTail();
    selected = `${edge}/${id}`;
    draw();
    const out = el('pre', { class: 'job-stdout', 'aria-label': 'Standard output', tabindex: 0 });
    const err = el('pre', { class: 'job-stderr', 'aria-label': 'Standard error', tabindex: 0 });
    const head = el('div', { class: 'job-head' });
    detail.replaceChildren(el('h2', { text: `Job ${id} on ${edge}` }), head,
      el('h3', { text: 'Output' }), out, el('h3', { text: 'Errors' }), err);
    detail.classList.remove('hidden');
    const t = { edge, id, so: 0, se: 0, stopped: false, timer: null };
    tail = t;
    const step = async () => {
      if (t.stopped) return;
      let rec;
      try {
        rec = await call(edge, 'psij', `job_status/{sid}/${encodeURIComponent(id)}?stdout_offset=${t.so}&stderr_offset=${t.se}`);
      } catch (e) { head.replaceChildren(el('p', { class: 'field-error', text: e.message })); return; }
      if (t.stopped) return;
      append(out, rec.stdout); append(err, rec.stderr);
      const grew = rec.stdout_offset !== t.so || rec.stderr_offset !== t.se;
      t.so = rec.stdout_offset; t.se = rec.stderr_offset;
      const { stdout, stderr, ...fields } = rec;
      upsert(edge, fields);
      drawHead(head, edge, rec);
      if (!FINAL_JOB.has(rec.state) || grew) t.timer = setTimeout(step, TAIL_EVERY);  // follows while it runs
      else out.dataset.final = 'true';
    };
    step();
  }

  function append(pre, text) {
    if (!text) return;
    pre.textContent = (pre.textContent + text).slice(-TAIL_KEEP);
    pre.dataset.length = String(pre.textContent.length);
    pre.scrollTop = pre.scrollHeight;
  }

  function drawHead(head, edge, rec) {
    head.replaceChildren(el('dl', { class: 'facts' },
      el('dt', { text: 'State' }), el('dd', { class: 'detail-state' }, badge(rec.state)),
      el('dt', { text: 'Exit code' }), el('dd', { text: rec.exit_code ?? '' }),
      el('dt', { text: 'Executor' }), el('dd', { text: `${rec.executor} ${rec.native_id ?? ''}` }),
      el('dt', { text: 'Command' }), el('dd', { text: [rec.executable, ...(rec.arguments || [])].join(' ') }),
      el('dt', { text: 'Message' }), el('dd', { text: rec.message || '' })),
    el('p', {},
      FINAL_JOB.has(rec.state) ? null : el('button', { type: 'button', class: 'danger', text: 'Cancel job', onclick: () => cancel({ ...rec, edge }) }),
      ' ', el('button', { type: 'button', text: 'Resubmit…', onclick: () => {
        const a = rec.attributes || {};
        fill({ name: rec.name || '', executable: rec.executable, arguments: (rec.arguments || []).map(shellWord).join(' '),
          executor: rec.executor, queue: a.queue_name ?? '', nodes: a.node_count ?? '', duration: a.duration ?? '' });
        f.edge.value = edge;
        f.executable.focus();
        flash('The composer holds that job; change it and submit');
      } })));
  }

  edgesWith('psij').then(names => {
    for (const name of names) {
      edgeFilter.append(el('option', { value: name, text: name }));
      f.edge.append(el('option', { value: name, text: name }));
    }
    if (route.edge && names.includes(route.edge)) { edgeFilter.value = route.edge; f.edge.value = route.edge; }
    if (!names.length) status.textContent = 'No edge runs the psij plugin.';
    load();
  }).catch(err => { status.textContent = err.message; });
  drawTemplates();
  edgeFilter.addEventListener('change', () => { draw(); if (edgeFilter.value) f.edge.value = edgeFilter.value; load(); });
  stateFilter.addEventListener('change', draw);

  return {
    hide: stopTail,
    notify: n => {
      if (n.plugin !== 'psij' || n.topic !== 'job_status' || !n.data?.job_id) return;
      upsert(n.edge, { job_id: n.data.job_id, state: n.data.state, exit_code: n.data.exit_code, message: n.data.message });
    },
  };
}
