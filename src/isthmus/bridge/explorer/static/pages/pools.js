// The dashboard's pilot pools of one edge: from one pilots `list_pools` answer (the caller's
// pools; an admin's: everyone's), each pool's name, pilots running / at most, tasks queued.

import { el, pluginHref } from '../app.js';
import { table } from './common.js';

const SHOWN = 10;  // rows on a card; the Pilots page has the rest

// A pilot is running once its child edge answers and takes tasks (READY).
export function poolFigures(pool) {
  return {
    name: String(pool.name),
    pilots: (pool.pilots || []).filter(p => p.state === 'READY').length,
    max: pool.spec?.max_size ?? 0,
    queued: pool.queued ?? 0,
    cancelled: pool.state === 'CANCELLED',
  };
}

export function poolsTable(edge, pools) {
  const rows = pools.map(poolFigures).sort((a, b) => a.name.localeCompare(b.name));
  const body = el('tbody', {}, ...rows.slice(0, SHOWN).map(p => el('tr', { 'data-pool': p.name },
    el('th', { scope: 'row' }, p.name, p.cancelled ? el('span', { class: 'hint', text: ' (cancelling)' }) : null),
    el('td', {}, el('span', { class: 'pilots', text: String(p.pilots) }), ' / ',
      el('span', { class: 'max', text: String(p.max) })),
    el('td', { class: 'queued', text: String(p.queued) }))));
  const more = rows.length > SHOWN
    ? el('p', { class: 'hint' }, `and ${rows.length - SHOWN} more on the `,
      el('a', { href: pluginHref(edge, 'pilots'), text: 'Pilots page' }))
    : null;
  return [table(['Pool', 'Pilots running / max', 'Tasks queued'], body, `Pilot pools on ${edge}`), more];
}
