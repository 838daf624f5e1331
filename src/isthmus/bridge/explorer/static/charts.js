// Charts for plugin pages: time series drawn by uPlot (vendored, MIT; canvas) and hand-made SVG
// sparklines. Both work under the Explorer's CSP: uPlot sets styles through CSSOM, our own
// rules go in a constructed sheet, and every label is text (textContent, aria-label).
//
// More than MANY series (500 nodes' temperatures) are drawn as their max, mean and min over a
// shaded band, and the summary names which series is highest now: 500 crossing lines are
// unreadable, and drawing them costs ~80 ms a frame in chromium (measured: 500 × 360 samples);
// the band costs one pass over the values and three paths.
import uPlot from './vendor/uplot/uPlot.esm.js';

const PALETTE = ['#1f6feb', '#cf222e', '#1a7f37', '#9a6700', '#8250df', '#bf3989', '#0a7e8c', '#6e7781'];
const MANY = 12;  // above this many series: drawn as max / mean / min (see the top)
const SVG = 'http://www.w3.org/2000/svg';

let styled = false;
function ensureStyles() {
  if (styled) return;
  styled = true;
  const link = document.createElement('link');
  link.rel = 'stylesheet';
  link.href = '/static/vendor/uplot/uPlot.min.css';
  document.head.append(link);
  const sheet = new CSSStyleSheet();
  sheet.replaceSync(`.ts-chart { margin: 0 0 12px; min-width: 0; }
    .ts-chart figcaption { font-weight: 600; margin-bottom: 4px; }
    .ts-chart .ts-summary { color: var(--muted, #5d6670); font-size: 12px; margin: 2px 0 0; }
    .ts-chart .uplot { font-family: inherit; }
    .ts-chart .u-legend { font-size: 12px; }
    svg.sparkline { vertical-align: middle; color: var(--accent, #1f6feb); overflow: visible; }`);
  document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
}

function finite(values) { return values.filter(v => typeof v === 'number' && Number.isFinite(v)); }

function round(v) { return Math.abs(v) >= 100 ? Math.round(v) : Math.round(v * 10) / 10; }

// Many series as three: per sample, the max, mean and min of the values that are there.
function aggregate(data) {
  const xs = data[0] || [];
  const max = new Array(xs.length).fill(null), mean = new Array(xs.length).fill(null), min = new Array(xs.length).fill(null);
  for (let i = 0; i < xs.length; i++) {
    let hi = -Infinity, lo = Infinity, sum = 0, count = 0;
    for (let s = 1; s < data.length; s++) {
      const v = data[s][i];
      if (typeof v !== 'number' || !Number.isFinite(v)) continue;
      if (v > hi) hi = v;
      if (v < lo) lo = v;
      sum += v;
      count++;
    }
    if (count) { max[i] = hi; mean[i] = sum / count; min[i] = lo; }
  }
  return [xs, max, mean, min];
}

// The series whose latest value is highest (its label and value), for the many-series summary.
function highest(series, data) {
  let best = null;
  for (let s = 1; s < data.length; s++) {
    const col = data[s];
    const v = col[col.length - 1];
    if (typeof v === 'number' && Number.isFinite(v) && (!best || v > best.value)) best = { label: series[s - 1].label, value: v };
  }
  return best;
}

// One sentence for screen readers: what is drawn, over how long, and the latest values.
function describe(title, series, data) {
  const xs = data[0] || [];
  if (!xs.length) return `${title}: no samples yet.`;
  const minutes = Math.round((xs[xs.length - 1] - xs[0]) / 60);
  const span = `${xs.length} samples over ${minutes} min`;
  if (series.length > MANY) {
    const top = highest(series, data);
    const unit = series[0]?.unit ? ` ${series[0].unit}` : '';
    return `${title}: ${series.length} series drawn as max, mean and min, ${span}` +
      (top ? `; highest now ${top.label} at ${round(top.value)}${unit}.` : '.');
  }
  if (series.length > 4) return `${title}: ${series.length} series, ${span}.`;
  const latest = series.map((s, i) => {
    const vals = finite(data[i + 1] || []);
    if (!vals.length) return `${s.label} no data`;
    const unit = s.unit ? ` ${s.unit}` : '';
    return `${s.label} ${round(vals[vals.length - 1])}${unit} (min ${round(Math.min(...vals))}, max ${round(Math.max(...vals))})`;
  });
  return `${title}: ${span}; latest ${latest.join('; ')}.`;
}

// uPlot wants null for gaps; the history API sends null already, NaN from elsewhere is mapped.
function clean(data) { return data.map((col, i) => (i === 0 ? col : col.map(v => (Number.isFinite(v) ? v : null)))); }

export function timeSeries(container, { title, series, data, height = 200 }) {
  ensureStyles();
  const figure = document.createElement('figure');
  figure.className = 'ts-chart';
  const caption = document.createElement('figcaption');
  caption.textContent = title;
  const plot = document.createElement('div');
  plot.setAttribute('aria-hidden', 'true');  // the canvas says nothing; the summary below does
  const summary = document.createElement('p');
  summary.className = 'ts-summary';
  summary.setAttribute('aria-live', 'off');
  figure.append(caption, plot, summary);
  container.replaceChildren(figure);
  const many = series.length > MANY;
  const units = [...new Set(series.map(s => s.unit || ''))];
  const unit = units.length === 1 ? units[0] : '';
  const drawn = many ? ['max', 'mean', 'min'].map(k => ({ label: `${k} of ${series.length}`, unit })) : series;
  const opts = {
    width: Math.max(200, container.clientWidth || 600),
    height,
    scales: { x: { time: true } },
    series: [{}, ...drawn.map((s, i) => ({
      label: s.unit ? `${s.label} (${s.unit})` : s.label,
      stroke: many ? ['#cf222e', '#1f6feb', '#1a7f37'][i] : PALETTE[i % PALETTE.length],
      width: many && i !== 1 ? 1 : 1.5,
      points: { show: false },
      value: (u, v) => (v === null || v === undefined ? '–' : `${round(v)}${s.unit ? ' ' + s.unit : ''}`),
    }))],
    bands: many ? [{ series: [1, 3], fill: 'rgba(31, 111, 235, 0.12)' }] : [],
    axes: [{}, { label: unit, size: 56 }],
  };
  let current = clean(data);
  const chart = new uPlot(opts, many ? aggregate(current) : current, plot);
  const mark = () => {
    const xs = current[0] || [];
    figure.dataset.points = String(xs.length);
    figure.dataset.series = String(series.length);
    figure.dataset.lastX = xs.length ? String(xs[xs.length - 1]) : '';
    figure.dataset.lastY = JSON.stringify(many ? [] : current.slice(1).map(col => col[col.length - 1] ?? null));
    summary.textContent = describe(title, series, current);
  };
  mark();
  const resize = new ResizeObserver(() => {
    const width = Math.max(200, container.clientWidth);
    if (width && Math.abs(width - chart.width) > 2) chart.setSize({ width, height });
  });
  resize.observe(container);
  return {
    update(next) {
      current = clean(next);
      chart.setData(many ? aggregate(current) : current);
      mark();
    },
    destroy() { resize.disconnect(); chart.destroy(); },
  };
}

export function sparkline(values, { width = 120, height = 28, label = 'values' } = {}) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('class', 'sparkline');
  svg.setAttribute('width', String(width));
  svg.setAttribute('height', String(height));
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('role', 'img');
  const vals = finite(values);
  if (!vals.length) {
    svg.setAttribute('aria-label', `${label}: no samples yet`);
    return svg;
  }
  const lo = Math.min(...vals), hi = Math.max(...vals);
  svg.setAttribute('aria-label', `${label}: latest ${round(vals[vals.length - 1])}, min ${round(lo)}, max ${round(hi)}, ${values.length} samples`);
  const span = hi - lo || 1;
  const step = values.length > 1 ? (width - 2) / (values.length - 1) : 0;
  let run = [];
  const flush = () => {  // a gap (null/NaN) ends one polyline; the next value starts another
    if (run.length) {
      const line = document.createElementNS(SVG, 'polyline');
      line.setAttribute('points', run.join(' '));
      line.setAttribute('fill', 'none');
      line.setAttribute('stroke', 'currentColor');
      line.setAttribute('stroke-width', '1.5');
      svg.append(line);
    }
    run = [];
  };
  values.forEach((v, i) => {
    if (typeof v !== 'number' || !Number.isFinite(v)) { flush(); return; }
    run.push(`${(1 + i * step).toFixed(1)},${(height - 2 - ((v - lo) / span) * (height - 4)).toFixed(1)}`);
  });
  if (run.length === 1) run.push(run[0]);  // one point still draws a dot-sized line
  flush();
  return svg;
}
