// Helpers the Explorer's own pages share: plugin calls under the page's session, edge pages,
// formatting. Every request goes through app.js (pluginUrl keeps it inside /{edge}/{plugin}/).

import { el, getSession, pluginUrl, requestJson } from '../app.js';

// GET/POST `path` of `plugin` on `edge`; '{sid}' in `path` becomes the Explorer's session there.
export async function call(edge, plugin, path, options = {}) {
  const sid = path.includes('{sid}') ? await getSession(edge, plugin) : '';
  return requestJson(pluginUrl(edge, plugin, path.replaceAll('{sid}', encodeURIComponent(sid))), options);
}

// One page of edges (summaries: titles and versions, no manifests) in name order.
export async function edgePage({ limit = 25, after = null, name = null, plugin = null } = {}) {
  const query = new URLSearchParams({ view: 'summary', limit: String(limit) });
  if (after) query.set('after', after);
  if (name) query.set('name', name.includes('*') || name.includes('?') ? name : `*${name}*`);
  if (plugin) query.set('plugin', plugin);
  return requestJson(`/edge/list?${query}`);
}

// Names of (at most `limit`) edges that run `plugin`: what the Jobs and Files pages offer.
export async function edgesWith(plugin, limit = 500) {
  const data = await edgePage({ plugin, limit });
  return Object.keys(data.edges || {});
}

export function size(bytes) {
  if (bytes === null || bytes === undefined) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = Number(bytes);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit++; }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

export function when(seconds) {
  if (!seconds) return '';
  return new Date(seconds * 1000).toLocaleString();
}

export function badge(stateName) {
  const text = String(stateName ?? '');
  return el('span', { class: `badge st-${text} sev-${text}`, text });
}

// A labelled control: <label for=id>text</label><control id=id>.
export function labelled(text, control) {
  if (!control.id) control.id = `c-${Math.random().toString(36).slice(2, 9)}`;
  return [el('label', { for: control.id, text }), control];
}

export function table(headers, body, caption) {
  // focusable, so a table wider than a phone can be scrolled from the keyboard
  return el('div', { class: 'scroll', tabindex: 0, role: 'region', 'aria-label': caption || headers.join(', ') }, el('table', {},
    caption ? el('caption', { class: 'sr-only', text: caption }) : null,
    el('thead', {}, el('tr', {}, ...headers.map(h => el('th', { scope: 'col', text: h })))), body));
}

export const FINAL_JOB = new Set(['DONE', 'FAILED', 'CANCELED', 'CANCELLED', 'COMPLETED']);
