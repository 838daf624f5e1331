// Workflows page: submit a YAML/JSON workflow, list workflows, draw one as a graph of steps
// (SVG, one column per depth in the DAG) whose states follow the workflow_status events.
// Every text from the bridge goes in through textContent or SVG text nodes, never as markup.
import { el } from '/static/app.js';

export const name = 'workflows';
export const notificationConfig = { topic: 'workflow_status', idField: 'workflow' };
const SVG = 'http://www.w3.org/2000/svg';
const BOX_W = 150, BOX_H = 46, GAP_X = 60, GAP_Y = 18;
let shown = null;  // the workflow drawn now: { id, nodes: Map(step -> svg group) }

export function template() {
  return `<form class="card wf-submit"><h2>Submit a workflow</h2>
    <label for="wf-doc">Document (YAML or JSON)</label>
    <textarea id="wf-doc" name="document" rows="10" spellcheck="false" required></textarea>
    <label for="wf-params">Parameters (JSON)</label><input id="wf-params" name="params" placeholder='{"n": 4}'>
    <p><button type="submit" class="success">Submit</button></p></form>
    <div class="card"><h2>Workflows</h2><table class="wf-list"><thead><tr><th>Workflow</th><th>Name</th>
    <th>State</th><th></th></tr></thead><tbody></tbody></table></div>
    <div class="card wf-graph-card"><h2 class="wf-title">Graph</h2><p class="wf-error field-error" aria-live="polite"></p>
    <div class="wf-graph" role="img" aria-label="workflow steps"></div><div class="wf-steps"></div></div>`;
}

export function css() {
  return `.wf-submit textarea { width: 100%; font-family: monospace; }
  .wf-graph { overflow: auto; } .wf-graph svg text { font: 12px sans-serif; fill: #fff; }
  .wf-graph rect { stroke: var(--line); rx: 6; } .wf-graph line { stroke: var(--fg); stroke-width: 1.5; }
  .wf-s-PENDING rect, .wf-s-SKIPPED rect { fill: #6e7781; } .wf-s-RUNNING rect, .wf-s-RETRYING rect { fill: #0969da; }
  .wf-s-DONE rect { fill: #1a7f37; } .wf-s-FAILED rect { fill: #cf222e; } .wf-s-CANCELLED rect { fill: #9a6700; }`;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

// depth of each step = 1 + the deepest of its needs; columns by depth
function layout(status) {
  const depth = {};
  for (const id of status.order) {
    const needs = status.steps[id].needs || [];
    depth[id] = needs.length ? 1 + Math.max(...needs.map(n => depth[n] ?? 0)) : 0;
  }
  const rows = {}, pos = {};
  for (const id of status.order) {
    const d = depth[id];
    rows[d] = (rows[d] || 0) + 1;
    pos[id] = { x: 10 + d * (BOX_W + GAP_X), y: 10 + (rows[d] - 1) * (BOX_H + GAP_Y) };
  }
  const width = 20 + (Math.max(0, ...Object.values(depth)) + 1) * (BOX_W + GAP_X);
  const height = 20 + Math.max(1, ...Object.values(rows)) * (BOX_H + GAP_Y);
  return { pos, width, height };
}

function setStep(group, state, attempt) {
  group.setAttribute('class', `wf-step wf-s-${state}`);
  group.querySelector('.wf-state').textContent = attempt > 1 ? `${state} (try ${attempt})` : state;
  group.querySelector('title').textContent = `${group.dataset.step}: ${state}`;
}

function draw(page, status) {
  const { pos, width, height } = layout(status);
  const root = svg('svg', { width, height, viewBox: `0 0 ${width} ${height}` });
  for (const id of status.order) {
    for (const need of status.steps[id].needs || []) {
      root.append(svg('line', { x1: pos[need].x + BOX_W, y1: pos[need].y + BOX_H / 2, x2: pos[id].x, y2: pos[id].y + BOX_H / 2 }));
    }
  }
  const nodes = new Map();
  for (const id of status.order) {
    const step = status.steps[id];
    const g = svg('g', { transform: `translate(${pos[id].x},${pos[id].y})`, tabindex: 0 });
    g.dataset.step = id;
    g.append(svg('title', {}, id), svg('rect', { width: BOX_W, height: BOX_H }),
      svg('text', { x: 8, y: 18 }, `${id} · ${step.kind}`.slice(0, 24)),
      svg('text', { x: 8, y: 36, class: 'wf-state' }, ''));
    setStep(g, step.state, step.attempt);
    nodes.set(id, g);
    root.append(g);
  }
  page.querySelector('.wf-graph').replaceChildren(root);
  page.querySelector('.wf-title').textContent = `${status.name} · ${status.id} · ${status.state}`;
  page.querySelector('.wf-error').textContent = status.error || '';
  const rows = status.order.map(id => {
    const s = status.steps[id];
    return el('tr', {}, el('td', { text: id }), el('td', { text: (s.edges || []).join(' → ') }),
      el('td', { text: s.state }), el('td', { text: s.error || '' }));
  });
  page.querySelector('.wf-steps').replaceChildren(el('table', {}, el('thead', {}, el('tr', {},
    el('th', { text: 'Step' }), el('th', { text: 'Edge' }), el('th', { text: 'State' }), el('th', { text: 'Error' }))),
  el('tbody', {}, rows)));
  shown = { id: status.id, nodes };
}

async function show(page, api, id) {
  try {
    const sid = await api.getSession();
    draw(page, await api.fetch(`workflow_status/${sid}/${encodeURIComponent(id)}`));
  } catch (err) { api.flash(err.message, false); }
}

function addRow(page, api, wf) {
  const tbody = page.querySelector('.wf-list tbody');
  let row = tbody.querySelector(`tr[data-wf="${CSS.escape(wf.id)}"]`);
  if (!row) {
    row = el('tr', { 'data-wf': wf.id },
      el('td', {}, el('button', { type: 'button', class: 'link', text: wf.id, onclick: () => show(page, api, wf.id) })),
      el('td', { text: wf.name || '' }), el('td', { class: 'state' }),
      el('td', {}, el('button', { type: 'button', class: 'danger', text: 'Cancel', onclick: () => cancel(api, wf.id) })));
    tbody.prepend(row);
  }
  row.querySelector('.state').replaceChildren(el('span', { class: `badge st-${wf.state}`, text: wf.state }));
}

async function cancel(api, id) {
  try {
    const sid = await api.getSession();
    const res = await api.fetch(`cancel_workflow/${sid}/${encodeURIComponent(id)}`, { method: 'POST' });
    api.flash(`Workflow ${id}: ${res.state}`);
  } catch (err) { api.flash(err.message, false); }
}

export async function init(page, api) {
  page.querySelector('.wf-submit').addEventListener('submit', async event => {
    event.preventDefault();
    const f = event.target;
    try {
      const params = f.params.value.trim() ? JSON.parse(f.params.value) : {};
      const sid = await api.getSession();
      const res = await api.fetch(`submit_workflow/${sid}`, { method: 'POST', body: { document: f.document.value, params } });
      addRow(page, api, { id: res.workflow_id, name: res.name, state: 'RUNNING' });
      await show(page, api, res.workflow_id);
      api.flash(`Workflow ${res.workflow_id} submitted`);
    } catch (err) {
      const details = err.detail?.errors ? ': ' + err.detail.errors.map(e => `${e.field} ${e.problem}`).join('; ') : '';
      api.flash((err.detail?.message || err.message) + details, false);
    }
  });
}

export async function onShow(page, api) {
  const sid = await api.getSession();
  const { workflows } = await api.fetch(`list_workflows/${sid}?limit=100`);
  for (const wf of workflows.slice().reverse()) addRow(page, api, wf);
}

export function onNotification(data, page, api) {
  const d = data.data || {};
  if (!d.workflow) return;
  if (d.step === null || d.step === undefined) {
    addRow(page, api, { id: d.workflow, name: d.name, state: d.workflow_state });
    if (shown && shown.id === d.workflow) show(page, api, d.workflow);
    return;
  }
  addRow(page, api, { id: d.workflow, name: d.name, state: d.workflow_state });
  const group = shown && shown.id === d.workflow ? shown.nodes.get(d.step) : null;
  if (group) setStep(group, d.state, d.attempt || 0);
}
