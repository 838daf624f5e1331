// Task throughput while a batch runs: tasks finished per second, from the tasks plugin's
// task_status / task_status_batch events (no polling), drawn with charts.js.

import { el } from '../app.js';

const WINDOW = 300;  // seconds kept and drawn
const FINAL = new Set(['DONE', 'FAILED', 'CANCELLED']);

export function throughputCard() {
  const chartBox = el('div', { class: 'chart-box', 'data-chart': 'throughput' });
  const total = el('span', { class: 'hint', role: 'status', 'data-total': '0', text: 'No tasks finished yet.' });
  const card = el('section', { class: 'card throughput', 'aria-label': 'Task throughput' },
    el('h2', { text: 'Task throughput' }), total, chartBox);
  const buckets = new Map();  // whole second -> tasks finished in it
  let finished = 0;
  let chart = null;
  let failed = false;

  async function ensureChart(data) {
    if (failed) return;
    try {
      const { timeSeries } = await import('../charts.js');
      chart ??= timeSeries(chartBox, { title: 'Tasks finished per second', series: [{ label: 'finished', unit: 'tasks/s' }], data });
    } catch (err) {
      failed = true;
      chartBox.replaceChildren(el('p', { class: 'field-error', text: `The chart cannot load: ${err.message}` }));
    }
  }

  function series() {
    const now = Math.floor(Date.now() / 1000);
    const xs = [];
    const ys = [];
    for (let t = now - WINDOW + 1; t <= now; t++) { xs.push(t); ys.push(buckets.get(t) || 0); }
    for (const t of buckets.keys()) if (t <= now - WINDOW) buckets.delete(t);
    return [xs, ys];
  }

  // one redraw a second however many events came (the time axis moves on without events too)
  const timer = setInterval(() => { if (chart) chart.update(series()); }, 1000);
  ensureChart(series());

  function note(n) {
    if (n.plugin !== 'tasks' || !n.topic?.startsWith('task_status')) return;
    const list = n.topic === 'task_status_batch' ? (n.data.tasks || []) : [n.data];
    const done = list.filter(t => FINAL.has(t.state)).length;
    if (!done) return;
    const second = Math.floor(Date.now() / 1000);
    buckets.set(second, (buckets.get(second) || 0) + done);
    finished += done;
    total.dataset.total = String(finished);
    total.textContent = `${finished} tasks finished since this page opened`;
  }

  return { card, note, stop: () => clearInterval(timer) };
}
