// sysinfo page: the host's facts and a live utilisation chart (seed 000, section 3.6 module API).
import { el, fmt, drawChart } from '/static/app.js';

export const name = 'sysinfo';
let timer = null;
const history = [];

export function template() {
  return '<div class="card"><h2>Host</h2><div class="sys-info">Loading…</div></div>'
    + '<div class="card"><h2>Utilisation</h2><canvas class="chart sys-chart" width="600" height="120"></canvas>'
    + '<p class="hint sys-now"></p></div>';
}

export function css() { return '.sys-info table th { width: 12em; }'; }

function gb(bytes) { return `${(bytes / 2 ** 30).toFixed(1)} GiB`; }

export async function init(page, api) {
  const info = await api.fetch('info');
  const rows = [
    ['Host', info.host], ['OS', `${info.os.system} ${info.os.release} (${info.os.machine})`],
    ['CPU', `${info.cpu.model} — ${info.cpu.cores} cores, ${info.cpu.threads} threads`],
    ['Memory', gb(info.memory.total)],
    ['Disks', info.disks.map(d => `${d.mountpoint} ${gb(d.used)} / ${gb(d.total)}`).join('; ')],
    ['GPUs', info.gpus.length ? info.gpus.map(g => g.name).join(', ') : 'none'],
    ['Shared filesystems', info.filesystems.length ? info.filesystems.map(f => `${f.kind} ${f.mountpoint}`).join('; ') : 'none'],
  ];
  page.querySelector('.sys-info').replaceChildren(el('table', {}, el('tbody', {},
    ...rows.map(([k, v]) => el('tr', {}, el('th', { text: k }), el('td', { text: fmt(v) }))))));
}

export async function onShow(page, api) {
  const sid = await api.getSession();
  const tick = async () => {
    if (!page.isConnected) { clearInterval(timer); timer = null; return; }
    const m = await api.fetch(`metrics/${sid}`);
    history.push(m);
    while (history.length > 60) history.shift();
    drawChart(page.querySelector('.sys-chart'), history, ['cpu_percent', 'memory_percent']);
    page.querySelector('.sys-now').textContent = `CPU ${m.cpu_percent.toFixed(0)} % · memory ${m.memory_percent.toFixed(0)} % · load ${m.load.map(l => l.toFixed(2)).join(' ')}`;
  };
  if (!timer) { await tick(); timer = setInterval(tick, 2000); }
}
