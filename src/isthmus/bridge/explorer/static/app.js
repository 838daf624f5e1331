// Isthmus Explorer: a single-page app with no build step. Everything shown is set with
// textContent or escaped with esc(); the page runs under a strict Content-Security-Policy.

const $ = (sel, root = document) => root.querySelector(sel);

export function esc(value) {
  return String(value ?? '').replace(/[&<>"'`]/g, c => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;', '`': '&#96;',
  })[c]);
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const state = {
  me: null, edges: {}, menu: [], sessions: new Map(), queueData: {}, tasks: new Map(),
  pages: new Map(), current: null, source: null, lastEventId: null,
  recent: [],  // the last notifications, newest first (the dashboard shows them)
  builtin: null,  // the Explorer's own page on screen (dashboard, jobs, files): gets events too
};

// Read-only access for the Explorer's own page modules (static/pages/*.js).
export function explorerState() { return state; }

// -- HTTP ------------------------------------------------------------------------------------

export async function request(path, options = {}) {
  const opts = { credentials: 'same-origin', ...options, headers: { ...(options.headers || {}) } };
  if (opts.body !== undefined && typeof opts.body === 'object' && !(opts.body instanceof FormData)
      && !(opts.body instanceof Blob) && !(opts.body instanceof ArrayBuffer)) {
    opts.body = JSON.stringify(opts.body);
    opts.headers['content-type'] = 'application/json';
  }
  const resp = await fetch(path, opts);
  if (resp.status === 401 && state.me) {
    // an OIDC session's access token expired: renew it once, then ask for a login
    if (!options.renewed && await renewSession()) return request(path, { ...options, renewed: true });
    showLogin('Your session ended; log in again.');
  }
  return resp;
}

export async function requestJson(path, options = {}) {
  const resp = await request(path, options);
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!resp.ok) {
    const detail = data && typeof data === 'object' && 'detail' in data ? data.detail : data;
    const err = new Error(typeof detail === 'string' ? detail : (detail?.message || JSON.stringify(detail)));
    err.status = resp.status;
    err.detail = detail;
    throw err;
  }
  return data;
}

// -- where requests may go ------------------------------------------------------------------
// An edge's manifest and answers are data from another machine: they decide nothing about
// where the Explorer sends the admin's cookie. Endpoints from ui_config follow the rules of
// isthmus.sdk.ui.endpoint_problem (the same rules, checked by the bridge and the edge too),
// and every plugin request is checked to resolve inside /{edge}/{plugin}/.

const MAX_ENDPOINT = 512;
const SID_RE = /^[A-Za-z0-9][A-Za-z0-9._~-]{0,127}$/;
const METHODS = new Set(['GET', 'POST', 'PUT', 'DELETE']);

function dotSegment(segment) {
  return segment.length <= 6 && ['.', '..'].includes(segment.toLowerCase().replaceAll('%2e', '.'));
}

// Why `endpoint` may not be joined to /{edge}/{plugin}/, or null when it may.
export function endpointProblem(endpoint) {
  if (typeof endpoint !== 'string') return `is not a string (${endpoint === null ? 'null' : typeof endpoint})`;
  if (!endpoint) return 'is empty';
  if ([...endpoint].length > MAX_ENDPOINT) return `is longer than ${MAX_ENDPOINT} characters`;
  for (const ch of endpoint) {
    const code = ch.codePointAt(0);
    if (code <= 0x20 || code === 0x7f) return 'contains a space or control character';
  }
  if (endpoint.includes('\\')) return 'contains a backslash';
  const path = endpoint.replaceAll('{sid}', 'sid').split('?')[0].split('#')[0];
  const lower = path.toLowerCase();
  if (lower.includes('%2f') || lower.includes('%5c')) return "contains an encoded '/' or '\\'";
  if (path.startsWith('/')) return "must be relative to the plugin (no leading '/')";
  const segments = path.split('/');
  if (segments[0].includes(':')) return "looks like a URL with a scheme (':' in the first segment)";
  if (segments.some(dotSegment)) return "contains a '.' or '..' segment";
  return null;
}

// The same-origin path of `path` inside /{edge}/{plugin}/, as the browser will resolve it;
// throws when it would land anywhere else (../, %2e%2e, a backslash, another origin).
export function pluginUrl(edge, plugin, path = '') {
  const base = `/${encodeURIComponent(edge)}/${encodeURIComponent(plugin)}/`;
  const url = new URL(base + String(path), location.origin);
  if (url.origin !== location.origin || !url.pathname.startsWith(base)) {
    throw new Error(`refused: ${JSON.stringify(String(path))} leaves ${base}`);
  }
  return url.pathname + url.search;
}

// `template` (an endpoint from ui_config) with {sid} filled in, or an Error saying why not.
function fillEndpoint(template, sid) {
  const why = endpointProblem(template);
  if (why) throw new Error(`refused endpoint ${JSON.stringify(String(template))}: ${why}`);
  return template.replaceAll('{sid}', encodeURIComponent(sid ?? ''));
}

// -- UI helpers -----------------------------------------------------------------------------

export function flash(message, ok = true) {
  const item = el('div', { class: ok ? 'ok' : 'error', text: message });
  $('#flash').append(item);
  setTimeout(() => item.remove(), ok ? 3000 : 7000);
}

export function showOverlay(title, bodyHtml) {
  $('#overlay-title').textContent = title;
  const body = $('#overlay-body');
  if (bodyHtml instanceof Node) { body.replaceChildren(bodyHtml); } else { body.innerHTML = bodyHtml; }
  $('#overlay').classList.remove('hidden');
  $('#overlay-close').focus();
}

function hideOverlay() { $('#overlay').classList.add('hidden'); }

// States seen in notifications, kept briefly: a job that finishes before its submit answer
// arrives (a fast job, a busy bridge) is registered with the state it already reached.
const recentStates = new Map();
function noteState(key, value) {
  recentStates.delete(key);
  recentStates.set(key, value);
  if (recentStates.size > 500) recentStates.delete(recentStates.keys().next().value);
}

export function registerTask(plugin, id, label) {
  const key = `${plugin}:${id}`;
  state.tasks.set(key, { plugin, id, label: label || id, state: recentStates.get(key) || 'NEW' });
  renderTasks();
}

function renderTasks() {
  const list = $('#taskbar');
  list.replaceChildren(...[...state.tasks.values()].slice(-30).reverse().map(t =>
    el('li', {}, el('span', { class: `badge st-${t.state}`, text: t.state }), ' ', `${t.plugin}: ${t.label}`)));
}

function noteEvent(text) {
  const list = $('#events');
  list.prepend(el('li', { text: `${new Date().toLocaleTimeString()} ${text}` }));
  while (list.children.length > 50) list.lastChild.remove();
}

// -- sessions and the plugin api (seed 000, section 3.6.3) -------------------------------------

export async function getSession(edge, plugin) {
  const key = `${edge}/${plugin}`;
  if (!state.sessions.has(key)) {
    const promise = requestJson(pluginUrl(edge, plugin, 'register_session'), { method: 'POST', body: {} })
      .then(d => {  // the sid goes into URLs: a plain token, never a path
        if (typeof d?.sid !== 'string' || !SID_RE.test(d.sid)) throw new Error(`${edge}/${plugin} answered an invalid session id`);
        return d.sid;
      });
    state.sessions.set(key, promise);
    promise.catch(() => state.sessions.delete(key));
  }
  return state.sessions.get(key);
}

async function disconnectEdge(edge, event) {
  event?.preventDefault?.();
  event?.stopPropagation?.();
  if (!confirm(`Disconnect edge ${edge}?`)) return;
  try {
    await requestJson(`/edge/disconnect/${encodeURIComponent(edge)}`, { method: 'POST' });
    flash(`Edge ${edge} disconnected`);
  } catch (err) { flash(err.message, false); }
}

export function makeApi(edge, plugin) {
  return {
    edgeName: edge,
    pluginName: plugin,
    bridgeUrl: location.origin,
    getSession: (name = plugin) => getSession(edge, name),
    // async, so a refused path is a rejected promise like any other failed request
    fetch: async (path, options) => requestJson(pluginUrl(edge, plugin, path), options),
    fetchRaw: async (path, options) => request(pluginUrl(edge, plugin, path), options),
    flash,
    escHtml: esc,
    showOverlay,
    registerTask: (p, id, label) => registerTask(p || plugin, id, label),
    getQueueData: () => state.queueData[edge],
    setQueueData: data => { state.queueData[edge] = data; },
    getPluginNames: () => Object.keys(state.edges[edge]?.plugins || {}),
    disconnectEdge: event => disconnectEdge(edge, event),
    // who is logged in: { name, role } (role: viewer, user or admin), for pages that show admin controls
    whoami: () => ({ name: state.me?.name, role: state.me?.role }),
  };
}

// -- login ------------------------------------------------------------------------------------

function showLogin(message) {
  state.me = null;
  if (state.source) { state.source.close(); state.source = null; }
  $('#app').classList.add('hidden');
  $('#login').classList.remove('hidden');
  for (const id of ['#logout', '#terminate']) $(id).classList.add('hidden');
  $('#who').textContent = '';
  setStream('offline');
  if (message) flash(message, false);
  $('#token').focus();
  showOidcLogin();
}

// The single sign-on button, when the bridge has auth.oidc (GET /auth/oidc/config).
let oidcConfig = null;
async function oidcEnabled() {
  if (oidcConfig === null) {
    try {
      const resp = await fetch('/auth/oidc/config', { credentials: 'same-origin' });
      oidcConfig = resp.ok ? await resp.json() : { enabled: false };
    } catch { return false; }
  }
  return oidcConfig.enabled === true;
}

async function showOidcLogin() {
  const enabled = await oidcEnabled();
  $('#oidc-login').classList.toggle('hidden', !enabled);
  if (enabled) $('#oidc-button').textContent = `Log in with ${oidcConfig.label || 'single sign-on'}`;
}

// One renewal at a time however many requests saw the 401; true when the session is back.
let renewing = null;
async function renewSession() {
  if (!await oidcEnabled()) return false;
  renewing ??= fetch('/auth/oidc/refresh', { method: 'POST', credentials: 'same-origin' })
    .then(resp => resp.ok, () => false)
    .finally(() => { setTimeout(() => { renewing = null; }, 0); });
  return renewing;
}

async function login(event) {
  event.preventDefault();
  const token = $('#token').value.trim();
  try {
    await requestJson('/auth/login', { method: 'POST', body: { token } });
    $('#token').value = '';
    await start();
  } catch (err) { flash(`Login failed: ${err.message}`, false); }
}

async function logout() {
  await request('/auth/logout', { method: 'POST' });
  state.sessions.clear();
  showLogin();
}

// -- event stream -----------------------------------------------------------------------------

function setStream(text) {
  const badge = $('#stream');
  badge.textContent = text;
  badge.classList.toggle('live', text === 'live');
}

function connectEvents() {
  const source = new EventSource('/events');  // the browser resumes with Last-Event-ID itself
  state.source = source;
  source.onopen = () => setStream('live');
  source.onerror = () => setStream(source.readyState === EventSource.CLOSED ? 'offline' : 'reconnecting');
  source.onmessage = message => {
    state.lastEventId = message.lastEventId;
    let event;
    try { event = JSON.parse(message.data); } catch { return; }
    if (event.topic === 'topology') {
      onTopology(event.data);
    } else if (event.topic === 'notification') {
      onNotification(event.data);
    }
  };
  source.addEventListener('gap', message => {
    noteEvent('some events were missed; refreshing');
    refreshEdges();
  });
}

function onNotification(n) {
  const data = n.data || {};
  state.recent.unshift({ time: Date.now(), edge: n.edge, plugin: n.plugin, topic: n.topic, data });
  if (state.recent.length > 100) state.recent.length = 100;
  state.builtin?.notify?.(n);
  const id = data.job_id ?? data.uid ?? data.name ?? data.id;
  noteEvent(`${n.edge}/${n.plugin} ${n.topic} ${id ?? ''} ${data.state ?? data.severity ?? ''}`);
  if (id !== undefined && data.state) noteState(`${n.plugin}:${id}`, data.state);
  const task = state.tasks.get(`${n.plugin}:${id}`);
  if (task && data.state) { task.state = data.state; renderTasks(); }
  if (n.topic === 'task_status_batch') {
    for (const t of data.tasks || []) {
      noteState(`${n.plugin}:${t.uid}`, t.state);
      const tracked = state.tasks.get(`${n.plugin}:${t.uid}`);
      if (tracked) tracked.state = t.state;
    }
    renderTasks();
  }
  for (const page of state.pages.values()) {
    if (page.edge !== n.edge || page.plugin !== n.plugin) continue;
    page.notify?.({ topic: n.topic, data });
  }
}

// -- navigation -------------------------------------------------------------------------------

// A topology event is a delta: edges that left go at once; joined ones (whose full manifests
// the delta does not carry) are read from /edge/list, at most twice a second however many join.
let edgesReload = null;
function onTopology(delta) {
  state.builtin?.topology?.(delta);
  for (const [name, conn] of Object.entries(delta.left || {})) {
    const known = state.edges[name];
    if (known && (!known.conn || known.conn === conn)) delete state.edges[name];
  }
  if (Object.keys(delta.joined || {}).length) {
    edgesReload ??= setTimeout(async () => {
      edgesReload = null;
      await refreshEdges();
      loadMenu();
    }, 500);
  } else {
    renderNav();
    loadMenu();
  }
}

async function refreshEdges() {
  const edges = {};
  let after = null;
  for (let page = 0; page < 20; page++) {  // 20 pages of 1000: what a page can usefully show
    const query = new URLSearchParams({ limit: '1000' });
    if (after) query.set('after', after);
    const data = await requestJson(`/edge/list?${query}`);
    Object.assign(edges, data.edges || {});
    after = data.next;
    if (!after) break;
  }
  state.edges = edges;
  renderNav();
}

async function loadMenu() {
  try {
    state.menu = (await requestJson('/menu')).sections || [];
  } catch { state.menu = []; }
  renderNav();
}

export function pluginHref(edge, plugin, view) {
  return `#/${encodeURIComponent(edge)}/${encodeURIComponent(plugin)}${view ? '/' + encodeURIComponent(view) : ''}`;
}

// The Explorer's own pages: '#/:name/...' (':' is never in an edge name, so no edge shadows them).
export const PAGES = { dashboard: '#/', jobs: '#/:jobs', files: '#/:files' };
const NAV_EDGES = 100;  // edges listed in the navigation; the dashboard pages through the rest

// Where a menu item leads: the Explorer's Jobs and Files pages for psij and staging, else the
// plugin's own page with the item's view (`/cluster/nodes` -> #/edge/cluster/nodes).
export function menuHref(item) {
  if (item.plugin === 'psij') return PAGES.jobs;
  if (item.plugin === 'staging') return `${PAGES.files}/${encodeURIComponent(item.edge)}`;
  const rest = String(item.path || '').split('/').filter(Boolean).slice(1).join('/');
  return pluginHref(item.edge, item.plugin, rest);
}

function renderNav() {
  const nav = $('#nav');
  const parts = [el('div', { class: 'nav-pages' },
    el('a', { href: PAGES.dashboard, text: 'Dashboard' }), el('a', { href: PAGES.jobs, text: 'Jobs' }),
    el('a', { href: PAGES.files, text: 'Files' }))];
  for (const section of state.menu) {
    const links = (section.items || []).map(item => el('a', {
      href: menuHref(item), class: 'menu-item', 'data-item': item.id, 'data-plugin': item.plugin,
    }, el('span', { text: item.label }), item.edges > 1
      ? el('small', { class: 'hint', text: ` ${item.edges} edges` })
      : el('small', { class: 'hint', text: ` ${item.edge}` })));
    parts.push(el('div', { class: 'menu-section', 'data-section': section.id },
      el('h3', { text: section.label }), ...links));
  }
  const names = Object.keys(state.edges);
  if (names.length) parts.push(el('h2', { class: 'nav-title', text: 'Edges' }));
  for (const edge of names.slice(0, NAV_EDGES)) {
    const info = state.edges[edge];
    const header = el('h3', {}, el('span', { class: 'edge-name', text: edge }));
    if (state.me?.role === 'admin' && edge !== 'bridge') {
      header.append(el('button', { type: 'button', class: 'danger', 'aria-label': `Disconnect ${edge}`,
        onclick: ev => disconnectEdge(edge, ev), text: '⏏' }));
    }
    parts.push(header);
    for (const [plugin, manifest] of Object.entries(info.plugins || {})) {
      const link = el('a', { href: pluginHref(edge, plugin), class: 'plugin-link', 'data-plugin': plugin },
        el('span', { text: manifest.title || plugin }), ' ', el('small', { text: manifest.version || '' }));
      parts.push(link);
      if (manifest.error) parts.push(el('div', { class: 'err', text: manifest.error }));
    }
  }
  if (names.length > NAV_EDGES) {
    parts.push(el('a', { href: PAGES.dashboard, class: 'hint', text: `${names.length - NAV_EDGES} more edges: see the dashboard` }));
  }
  if (!names.length) parts.push(el('p', { class: 'hint', text: 'No edges connected.' }));
  nav.replaceChildren(...parts);
  markActive();
}

function markActive() {
  const here = location.hash.split('?')[0] || '#/';
  for (const a of document.querySelectorAll('#nav a')) {
    const on = a.getAttribute('href') === here;
    a.classList.toggle('active', on);
    if (on) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
}

// -- pages ------------------------------------------------------------------------------------

function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, '').split('?')[0].split('/').filter(Boolean).map(decodeURIComponent);
  return { edge: parts[0], plugin: parts[1], view: parts.slice(2).join('/') || null };
}

// The Explorer's own page modules, loaded when first shown.
const BUILTIN = { '': './pages/dashboard.js', ':jobs': './pages/jobs.js', ':files': './pages/files.js' };

// Each navigation's number: a page that finishes loading after a later navigation is not shown.
let routeCount = 0;

async function route() {
  const mine = ++routeCount;
  markActive();
  const { edge, plugin, view } = parseRoute();
  const main = $('#main');
  for (const page of state.pages.values()) page.hide?.();
  state.builtin?.hide?.();
  state.builtin = null;
  const builtin = BUILTIN[edge ?? ''];
  if (builtin !== undefined && (!plugin || edge?.startsWith(':'))) {
    const mod = await import(builtin);
    if (mine !== routeCount) return;
    const page = mod.render(main, { edge: plugin, rest: view, query: new URLSearchParams(location.hash.split('?')[1] || '') });
    state.builtin = page;
    main.focus();
    return;
  }
  if (!edge || !plugin) { main.replaceChildren(el('p', { text: `No page ${edge}.` })); return; }
  if (plugin === '_config' && view) { await renderConfig(main, edge, view); return; }
  const manifest = state.edges[edge]?.plugins?.[plugin];
  if (!manifest) { main.replaceChildren(el('p', { text: `No plugin ${plugin} on edge ${edge}.` })); return; }
  const key = `${edge}/${plugin}`;
  let page = state.pages.get(key);
  if (!page) {
    page = manifest.ui_module ? await modulePage(edge, plugin, manifest) : generatedPage(edge, plugin, manifest);
    state.pages.set(key, page);
  }
  if (mine !== routeCount) return;
  main.replaceChildren(page.root);
  page.show?.(view);
  main.focus();
}

async function modulePage(edge, plugin, manifest) {
  const mod = await import(`/static/plugins/${encodeURIComponent(plugin)}.js`);
  const api = makeApi(edge, plugin);
  const root = el('section', { class: 'plugin-page', 'data-plugin': plugin });
  if (mod.css) {
    const sheet = new CSSStyleSheet();  // CSSOM is allowed under style-src 'self'
    sheet.replaceSync(mod.css());
    document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
  }
  root.innerHTML = mod.template ? mod.template() : '';  // an installed plugin's own markup
  const header = el('div', { class: 'page-head' }, el('h1', { text: manifest.title || plugin }),
    adminConfigLink(edge, plugin));
  root.prepend(header);
  await mod.init?.(root, api);
  const cfg = mod.notificationConfig;
  return {
    edge, plugin, root,
    show: view => mod.onShow?.(root, api, view),
    hide: () => mod.onHide?.(root, api),  // the page left the screen: stop timers
    notify: n => { if (!cfg || cfg.topic === n.topic || (cfg.topics || []).includes(n.topic)) mod.onNotification?.(n, root, api); },
  };
}

function adminConfigLink(edge, plugin) {
  if (state.me?.role !== 'admin' || !state.edges[edge]?.plugins?.[plugin]?.configurable) return null;
  return el('a', { href: pluginHref(edge, '_config', plugin), class: 'config-link', text: 'Configure' });
}

// -- pages generated from ui_config -------------------------------------------------------------

function fieldInput(field) {
  const id = `f-${field.name}-${Math.random().toString(36).slice(2, 7)}`;
  const common = { id, name: field.name, required: field.required || undefined, placeholder: field.placeholder };
  let input;
  switch (field.type) {
    case 'textarea': case 'json':
      input = el('textarea', common);
      input.value = field.default === undefined || field.default === null ? ''
        : (field.type === 'json' ? JSON.stringify(field.default) : String(field.default));
      break;
    case 'checkbox':
      input = el('input', { ...common, type: 'checkbox', checked: !!field.default });
      break;
    case 'select':
      input = el('select', common);
      for (const opt of field.options || []) {
        const value = typeof opt === 'object' ? opt.value : opt;
        input.append(el('option', { value, text: typeof opt === 'object' ? (opt.label ?? value) : opt }));
      }
      if (field.default !== undefined && field.default !== null) input.value = field.default;
      break;
    default: {
      const type = { number: 'number', integer: 'number', password: 'password', hidden: 'hidden',
        datetime: 'datetime-local' }[field.type] || 'text';
      input = el('input', { ...common, type, min: field.min, max: field.max, step: field.type === 'integer' ? 1 : undefined });
      if (field.default !== undefined && field.default !== null) {
        input.value = Array.isArray(field.default) ? field.default.join(' ') : field.default;
      }
    }
  }
  return { id, input };
}

function readField(field, input) {
  if (field.type === 'checkbox') return input.checked;
  const raw = input.value;
  if (raw === '') return undefined;
  if (field.type === 'number') return Number(raw);
  if (field.type === 'integer') return parseInt(raw, 10);
  if (field.type === 'json') return JSON.parse(raw);
  if (field.type === 'list') return raw.split(/\s+/).filter(Boolean);
  return raw;
}

function generatedPage(edge, plugin, manifest) {
  const ui = manifest.ui_config || {};
  const api = makeApi(edge, plugin);
  const root = el('section', { class: 'plugin-page', 'data-plugin': plugin });
  root.append(el('div', { class: 'page-head' }, el('h1', {}, `${ui.icon || ''} ${ui.title || manifest.title || plugin}`),
    adminConfigLink(edge, plugin)));
  if (ui.description || manifest.description) root.append(el('p', { class: 'hint', text: ui.description || manifest.description }));
  const rows = new Map();
  const notif = ui.notifications;
  const taskTable = el('tbody');

  function upsert(entity) {
    if (!notif) return;
    const id = entity[notif.id_field];
    if (id === undefined) return;
    let row = rows.get(id);
    if (!row) {
      row = el('tr', { 'data-id': id }, el('td', { text: id }), el('td'));
      rows.set(id, row);
      taskTable.prepend(row);
    }
    const st = entity[notif.state_field] ?? '';
    row.children[1].replaceChildren(el('span', { class: `badge st-${st} sev-${st}`, text: st }));
  }

  for (const form of ui.forms || []) {
    const card = el('form', { class: 'card', 'data-form': form.id }, el('h2', { text: form.title || form.id }));
    const grid = el('div', { class: 'form-grid' });
    const inputs = [];
    for (const field of form.fields || []) {
      const { id, input } = fieldInput(field);
      inputs.push([field, input]);
      if (field.type === 'hidden') { card.append(input); continue; }
      grid.append(el('label', { for: id, text: field.label || field.name }), input);
      if (field.options_endpoint !== undefined && field.options_endpoint !== null) {
        const why = endpointProblem(field.options_endpoint);
        if (why) { grid.append(refusal(`options of ${field.name}`, field.options_endpoint, why)); continue; }
        api.fetch(field.options_endpoint).then(options => {
          const list = Array.isArray(options) ? options : Object.values(options || {}).find(Array.isArray) || [];
          input.replaceChildren(...list.map(o => el('option', { value: o.value ?? o.name ?? o, text: o.label ?? o.name ?? o })));
        }).catch(err => flash(err.message, false));
      }
    }
    const result = el('pre', { class: 'result hidden' });
    const submit = form.submit || {};
    const template = submit.endpoint || `${form.id}/{sid}`;
    const method = String(submit.method || 'POST').toUpperCase();
    const why = endpointProblem(template) || (METHODS.has(method) ? null : `uses the method ${method}`);
    const button = el('button', { type: 'submit', class: submit.style || 'primary', text: submit.label || 'Submit',
      disabled: !!why });
    card.append(grid, el('p', {}, button), result);
    if (why) card.append(refusal(`the ${form.id} form's endpoint`, template, why));
    card.addEventListener('submit', async event => {
      event.preventDefault();
      if (why) { flash(`Refused: the endpoint ${why}`, false); return; }
      try {
        const values = {};
        for (const [field, input] of inputs) {
          const value = readField(field, input);
          if (value !== undefined) values[field.name] = value;
        }
        const sid = await api.getSession();
        const endpoint = fillEndpoint(template, sid);
        const query = method === 'GET' ? '?' + new URLSearchParams(values).toString() : '';
        const data = await api.fetch(endpoint + query, method === 'GET' ? { method } : { method, body: values });
        result.classList.remove('hidden');
        result.textContent = JSON.stringify(data, null, 2);
        for (const id of [data?.job_id, data?.uid, ...(data?.uids || []).slice(0, 20)].filter(Boolean)) {
          api.registerTask(plugin, id, id);
          if (notif) upsert({ [notif.id_field]: id, [notif.state_field]: data?.state || 'NEW' });
        }
        flash('Done');
      } catch (err) { flash(err.message, false); }
    });
    root.append(card);
  }

  const pollers = [];
  for (const monitor of ui.monitors || []) {
    const card = el('div', { class: 'card', 'data-monitor': monitor.id }, el('h2', { text: monitor.title || monitor.id }));
    const body = el('div');
    card.append(body);
    root.append(card);
    if (monitor.type === 'task_list') {
      body.append(el('table', {}, el('thead', {}, el('tr', {}, el('th', { text: 'Id' }), el('th', { text: 'State' }))), taskTable));
      if (monitor.empty_text) body.append(el('p', { class: 'hint', text: monitor.empty_text }));
    }
    if (monitor.endpoint === undefined || monitor.endpoint === null || monitor.endpoint === '') continue;
    const why = endpointProblem(monitor.endpoint);
    if (why) { body.append(refusal('this monitor\'s endpoint', monitor.endpoint, why)); continue; }
    const history = [];
    const load = async () => {
      try {
        const sid = monitor.endpoint.includes('{sid}') ? await api.getSession() : '';
        const data = await api.fetch(fillEndpoint(monitor.endpoint, sid));
        renderMonitor(monitor, body, data, history, upsert);
      } catch (err) { body.replaceChildren(el('p', { class: 'field-error', text: err.message })); }
    };
    pollers.push({ load, every: monitor.refresh });
  }
  let timers = [];
  return {
    edge, plugin, root,
    show: () => {
      for (const p of pollers) { p.load(); if (p.every) timers.push(setInterval(p.load, p.every * 1000)); }
    },
    hide: () => { timers.forEach(clearInterval); timers = []; },
    notify: n => {
      if (!notif) return;
      if (n.topic === notif.topic) upsert(n.data);
      if (n.topic === `${notif.topic}_batch`) (n.data.tasks || []).forEach(upsert);
    },
  };
}

// Shown in place of a form or monitor whose endpoint would leave the plugin's namespace.
function refusal(what, endpoint, why) {
  return el('p', { class: 'field-error refused', 'data-refused': String(endpoint).slice(0, 200),
    text: `Refused ${what} ${JSON.stringify(String(endpoint).slice(0, 200))}: it ${why}.` });
}

function firstArray(data) {
  if (Array.isArray(data)) return data;
  return Object.values(data || {}).find(Array.isArray) || [];
}

function renderMonitor(monitor, body, data, history, upsert) {
  if (monitor.type === 'task_list') { firstArray(data).forEach(upsert); return; }
  if (monitor.type === 'raw') { body.replaceChildren(el('pre', { text: JSON.stringify(data, null, 2) })); return; }
  if (monitor.type === 'metrics') {
    const numbers = Object.entries(data || {}).filter(([, v]) => typeof v === 'number' && !/time/.test(String(v)));
    history.push(data);
    while (history.length > 60) history.shift();
    const canvas = el('canvas', { class: 'chart', width: 600, height: 120 });
    body.replaceChildren(el('table', {}, el('tbody', {}, ...numbers.map(([k, v]) =>
      el('tr', {}, el('th', { text: k }), el('td', { text: Number.isInteger(v) ? v : v.toFixed(2) }))))), canvas);
    drawChart(canvas, history, ['cpu_percent', 'memory_percent']);
    return;
  }
  const items = firstArray(data);
  const columns = monitor.columns || Object.keys(items[0] || {});
  body.replaceChildren(items.length ? el('table', {}, el('thead', {}, el('tr', {}, ...columns.map(c => el('th', { text: c })))),
    el('tbody', {}, ...items.map(item => el('tr', {}, ...columns.map(c => el('td', { text: fmt(item[c]) }))))))
    : el('p', { class: 'hint', text: monitor.empty_text || 'Nothing yet.' }));
}

export function fmt(value) {
  if (value === null || value === undefined) return '';
  if (Array.isArray(value)) return value.join(', ');
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

export function drawChart(canvas, history, keys) {
  const ctx = canvas.getContext('2d');
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  const colors = ['#1f6feb', '#2da44e', '#d4a72c', '#cf222e'];
  keys.forEach((key, i) => {
    const values = history.map(d => Number(d?.[key])).filter(v => !Number.isNaN(v));
    if (values.length < 2) return;
    ctx.strokeStyle = colors[i % colors.length];
    ctx.beginPath();
    values.forEach((v, j) => {
      const x = (j / (values.length - 1)) * (w - 4) + 2;
      const y = h - 2 - (Math.max(0, Math.min(100, v)) / 100) * (h - 4);
      if (j === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  });
}

// -- admin: plugin configuration ----------------------------------------------------------------

async function renderConfig(main, edge, plugin) {
  // only a plugin this edge announced as configurable, and only its own config route
  const path = `plugins/${encodeURIComponent(plugin)}/config`;
  if (!state.edges[edge]?.plugins?.[plugin]?.configurable || endpointProblem(path)) {
    main.replaceChildren(el('p', { class: 'field-error', text: `No configurable plugin ${plugin} on edge ${edge}.` }));
    return;
  }
  const base = pluginUrl(edge, '_edge', path);
  let cfg;
  try { cfg = await requestJson(base); } catch (err) { main.replaceChildren(el('p', { class: 'field-error', text: err.message })); return; }
  const props = cfg.schema?.properties || {};
  const form = el('form', { class: 'card config-form' }, el('h2', { text: `Configure ${plugin} on ${edge}` }));
  const grid = el('div', { class: 'form-grid' });
  const inputs = {};
  for (const [key, prop] of Object.entries(props)) {
    const value = cfg.values[key];
    const type = prop.type || (prop.anyOf || []).map(p => p.type).find(t => t && t !== 'null') || 'string';
    let input;
    if (type === 'boolean') input = el('input', { type: 'checkbox', name: key, checked: !!value });
    else if (type === 'array' || type === 'object' || prop.$ref || prop.allOf) { input = el('textarea', { name: key }); input.value = JSON.stringify(value ?? null); }
    else { input = el('input', { name: key, type: type === 'integer' || type === 'number' ? 'number' : 'text', step: type === 'number' ? 'any' : undefined }); input.value = value ?? ''; }
    inputs[key] = { input, type, prop };
    grid.append(el('label', { text: key, title: prop.description || '' }),
      el('div', {}, input, el('div', { class: 'field-error', 'data-error-for': key }),
        el('small', { class: 'hint', text: `from ${cfg.sources[key] || 'default'}` })));
  }
  form.append(grid, el('p', {}, el('button', { type: 'submit', class: 'primary', text: 'Save and reload' })));
  form.addEventListener('submit', async event => {
    event.preventDefault();
    form.querySelectorAll('[data-error-for]').forEach(e => { e.textContent = ''; });
    const values = {};
    try {
      for (const [key, { input, type }] of Object.entries(inputs)) {
        if (type === 'boolean') values[key] = input.checked;
        else if (input.tagName === 'TEXTAREA') values[key] = JSON.parse(input.value || 'null');
        else if (type === 'integer') values[key] = parseInt(input.value, 10);
        else if (type === 'number') values[key] = Number(input.value);
        else values[key] = input.value === '' ? null : input.value;
        if (JSON.stringify(values[key]) === JSON.stringify(cfg.values[key])) delete values[key];
      }
      const saved = await requestJson(base, { method: 'PUT', body: values });
      flash(`Saved: ${saved.reload}`);
    } catch (err) {
      const key = err.detail?.key;
      const target = key && form.querySelector(`[data-error-for="${CSS.escape(key)}"]`);
      if (target) target.textContent = err.detail.reason || err.message;
      flash(err.message, false);
    }
  });
  main.replaceChildren(form);
}

// -- start --------------------------------------------------------------------------------------

async function start() {
  let me;
  try { me = await requestJson('/auth/whoami'); } catch (err) {
    if (err.status !== 401 || !await renewSession()) { showLogin(); return; }
    try { me = await requestJson('/auth/whoami'); } catch { showLogin(); return; }
  }
  state.me = me;
  $('#who').textContent = `${me.name} (${me.role})`;
  $('#login').classList.add('hidden');
  $('#app').classList.remove('hidden');
  $('#logout').classList.remove('hidden');
  $('#terminate').classList.toggle('hidden', me.role !== 'admin');
  await refreshEdges();
  await loadMenu();
  connectEvents();
  await route();
}

window.addEventListener('hashchange', () => { if (state.me) route().catch(err => flash(err.message, false)); });
document.addEventListener('DOMContentLoaded', () => {
  $('#login-form').addEventListener('submit', login);
  $('#logout').addEventListener('click', logout);
  $('#overlay-close').addEventListener('click', hideOverlay);
  $('#overlay').addEventListener('click', e => { if (e.target.id === 'overlay') hideOverlay(); });
  document.addEventListener('keydown', e => { if (e.key === 'Escape') hideOverlay(); });
  $('#terminate').addEventListener('click', async () => {
    if (!confirm('Terminate the bridge? Every client and edge loses it.')) return;
    try { await requestJson('/bridge/terminate', { method: 'POST' }); flash('Bridge terminating'); } catch (err) { flash(err.message, false); }
  });
  start();
});
