// Files: a browser over an edge's staging sandbox — list, mkdir, delete, download, and
// uploads that stream in slices (each slice one PUT at its offset, hashed as it goes, so
// neither side holds the file; an interrupted upload resumes from the edge's partial_size),
// committed with size and SHA-256 so the edge keeps the file only if both match.

import { el, flash, getSession, pluginUrl, request } from '../app.js';
import { call, edgesWith, labelled, size, table, when } from './common.js';
import { Sha256 } from './sha256.js';

const SLICE = 8 * 1024 * 1024;
const RETRIES = 3;

function join(dir, name) { return dir.endsWith('/') ? dir + name : `${dir}/${name}`; }

function parent(path) {
  const trimmed = path.replace(/\/+$/, '');
  const cut = trimmed.lastIndexOf('/');
  return cut <= 0 ? '/' : trimmed.slice(0, cut);
}

// PUT one slice with progress events (fetch cannot report upload progress).
function putSlice(url, body, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('PUT', url);
    xhr.withCredentials = true;
    xhr.setRequestHeader('content-type', 'application/octet-stream');
    xhr.upload.onprogress = e => onProgress(e.loaded);
    xhr.onload = () => {
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch { data = xhr.responseText; }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else {
        const err = new Error(typeof data?.detail === 'string' ? data.detail : data?.detail?.message || `upload failed (${xhr.status})`);
        err.status = xhr.status;
        err.detail = data?.detail;
        reject(err);
      }
    };
    xhr.onerror = () => reject(new Error('the connection broke during the upload'));
    xhr.send(body);
  });
}

async function hashPrefix(file, upTo, hasher) {
  for (let at = 0; at < upTo; at += SLICE) {
    hasher.update(await file.slice(at, Math.min(upTo, at + SLICE)).arrayBuffer());
  }
}

export function render(main, route) {
  const edgeSelect = el('select', { name: 'edge' });
  const pathInput = el('input', { name: 'path', value: route.query.get('path') || '~', size: 40 });
  const tbody = el('tbody');
  const where = el('p', { class: 'hint', role: 'status' });
  const fileInput = el('input', { type: 'file', name: 'upload' });
  const progress = el('progress', { class: 'upload-progress', max: 1, value: 0, 'aria-label': 'Upload progress' });
  const progressText = el('span', { class: 'upload-text', role: 'status' });
  const dirName = el('input', { name: 'dirname', placeholder: 'new folder name' });
  const verified = el('p', { class: 'checksum-result', role: 'status' });
  let cwd = null;

  main.replaceChildren(el('section', { class: 'files-page' },
    el('h1', { text: 'Files' }),
    el('form', { class: 'toolbar', onsubmit: e => { e.preventDefault(); list(pathInput.value.trim() || '~'); } },
      ...labelled('Edge', edgeSelect), ...labelled('Folder', pathInput), el('button', { type: 'submit', text: 'Open' }),
      el('button', { type: 'button', text: 'Up', onclick: () => cwd && list(parent(cwd)) })),
    where,
    table(['Name', 'Type', 'Size', 'Modified', 'SHA-256', ''], tbody, 'Folder contents'),
    el('section', { class: 'card', 'aria-label': 'Upload' }, el('h2', { text: 'Upload' }),
      el('form', { class: 'toolbar upload-form', onsubmit: e => { e.preventDefault(); upload(); } },
        ...labelled('File', fileInput), el('button', { type: 'submit', class: 'primary', text: 'Upload' })),
      el('div', { class: 'progress-row' }, progress, progressText), verified),
    el('section', { class: 'card', 'aria-label': 'New folder' }, el('h2', { text: 'New folder' }),
      el('form', { class: 'toolbar', onsubmit: e => { e.preventDefault(); mkdir(); } },
        ...labelled('Name', dirName), el('button', { type: 'submit', text: 'Create' })))));

  const edge = () => edgeSelect.value;

  async function list(path) {
    try {
      const data = await call(edge(), 'staging', `list/{sid}?path=${encodeURIComponent(path)}`);
      cwd = data.path;
      pathInput.value = cwd;
      where.textContent = `${edge()}:${cwd} — ${data.entries.length} entries`;
      tbody.replaceChildren(...data.entries.map(entry => row(entry)));
      if (!data.entries.length) tbody.append(el('tr', {}, el('td', { colspan: 6, class: 'hint', text: 'Empty folder.' })));
    } catch (err) { where.textContent = err.message; tbody.replaceChildren(); }
  }

  function row(entry) {
    const path = join(cwd, entry.name);
    const sum = el('td', { class: 'sha' });
    const name = entry.type === 'dir'
      ? el('button', { type: 'button', class: 'link', text: `${entry.name}/`, onclick: () => list(path) })
      : el('span', { text: entry.name });
    const actions = el('td', { class: 'actions' });
    if (entry.type === 'file') {
      actions.append(el('button', { type: 'button', text: 'Download', 'aria-label': `Download ${entry.name}`, onclick: () => download(path, entry.name) }),
        el('button', { type: 'button', text: 'Checksum', 'aria-label': `SHA-256 of ${entry.name}`, onclick: async () => {
          sum.textContent = '…';
          try { sum.textContent = (await call(edge(), 'staging', `checksum/{sid}?path=${encodeURIComponent(path)}`)).sha256; } catch (err) { sum.textContent = err.message; }
        } }));
    }
    actions.append(el('button', { type: 'button', class: 'danger', text: 'Delete', 'aria-label': `Delete ${entry.name}`, onclick: () => remove(path, entry) }));
    return el('tr', { 'data-name': entry.name, 'data-type': entry.type },
      el('td', {}, name), el('td', { text: entry.type }), el('td', { text: entry.type === 'dir' ? '' : size(entry.size), title: `${entry.size} bytes` }),
      el('td', { text: when(entry.mtime) }), sum, actions);
  }

  async function remove(path, entry) {
    if (!confirm(`Delete ${path}?`)) return;
    try {
      await call(edge(), 'staging', 'remove/{sid}', { method: 'POST', body: { path: entry.type === 'dir' ? `${path}/` : path } });
      flash(`Deleted ${entry.name}`);
      list(cwd);
    } catch (err) { flash(err.message, false); }
  }

  async function mkdir() {
    const name = dirName.value.trim();
    if (!name || name.includes('/')) { flash('Give a folder name without "/"', false); return; }
    try {
      await call(edge(), 'staging', 'mkdir/{sid}', { method: 'POST', body: { path: join(cwd, name) } });
      dirName.value = '';
      list(cwd);
    } catch (err) { flash(err.message, false); }
  }

  function showProgress(done, total, what) {
    progress.max = total || 1;
    progress.value = done;
    progressText.textContent = `${what} ${size(done)} of ${size(total)} (${total ? Math.floor(100 * done / total) : 100} %)`;
  }

  async function upload() {
    const file = fileInput.files?.[0];
    if (!file || !cwd) { flash('Choose a file and open a folder first', false); return; }
    const dest = join(cwd, file.name);
    const q = `path=${encodeURIComponent(dest)}`;
    verified.textContent = '';
    try {
      const kept = (await call(edge(), 'staging', `partial/{sid}?${q}`)).partial_size || 0;
      let offset = kept <= file.size ? kept : 0;
      let hasher = new Sha256();
      await hashPrefix(file, offset, hasher);  // resuming: the hash of what the edge already has
      if (offset) flash(`Resuming ${file.name} at ${size(offset)}`);
      const sid = await getSession(edge(), 'staging');
      let failures = 0;
      let first = true;
      while (offset < file.size || first) {  // an empty file is one empty PUT
        first = false;
        const end = Math.min(file.size, offset + SLICE);
        const slice = await file.slice(offset, end).arrayBuffer();
        try {
          const url = pluginUrl(edge(), 'staging', `upload/${encodeURIComponent(sid)}?${q}&offset=${offset}`);
          await putSlice(url, slice, loaded => showProgress(offset + loaded, file.size, 'Uploading'));
        } catch (err) {
          if (++failures > RETRIES) throw err;
          const at = err.detail?.partial_size ?? (await call(edge(), 'staging', `partial/{sid}?${q}`)).partial_size ?? 0;
          flash(`Upload interrupted (${err.message}); resuming at ${size(at)}`, false);
          offset = at;
          hasher = new Sha256();  // the hash again, up to where the edge is
          await hashPrefix(file, offset, hasher);
          continue;
        }
        hasher.update(slice);
        offset = end;
        showProgress(offset, file.size, 'Uploading');
      }
      const digest = hasher.hex();
      const done = await call(edge(), 'staging', 'commit/{sid}', { method: 'POST', body: { path: dest, size: file.size, sha256: digest } });
      progressText.textContent = `Uploaded ${file.name}: ${size(done.size)}`;
      verified.textContent = `SHA-256 ${done.sha256} (verified by the edge)`;
      verified.dataset.sha256 = done.sha256;
      flash(`Uploaded ${file.name}`);
      list(cwd);
    } catch (err) { progressText.textContent = `Upload stopped: ${err.message}`; flash(err.message, false); }
  }

  async function download(path, name) {
    try {
      const sid = await getSession(edge(), 'staging');
      const resp = await request(pluginUrl(edge(), 'staging', `download/${encodeURIComponent(sid)}?path=${encodeURIComponent(path)}`));
      if (!resp.ok) throw new Error(`download failed (${resp.status}): ${(await resp.text()).slice(0, 200)}`);
      const total = Number(resp.headers.get('x-isthmus-size') || resp.headers.get('content-length') || 0);
      const reader = resp.body.getReader();
      const parts = [];
      const hasher = new Sha256();
      let got = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        parts.push(value);
        hasher.update(value);
        got += value.length;
        showProgress(got, total, 'Downloading');
      }
      const digest = hasher.hex();
      verified.textContent = `Downloaded ${name}: SHA-256 ${digest}`;
      verified.dataset.sha256 = digest;
      const url = URL.createObjectURL(new Blob(parts, { type: 'application/octet-stream' }));
      const a = el('a', { href: url, download: name, class: 'hidden' });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    } catch (err) { flash(err.message, false); }
  }

  edgesWith('staging').then(names => {
    edgeSelect.replaceChildren(...names.map(n => el('option', { value: n, text: n })));
    if (route.edge && names.includes(route.edge)) edgeSelect.value = route.edge;
    if (!names.length) { where.textContent = 'No edge runs the staging plugin.'; return; }
    list(pathInput.value);
  }).catch(err => { where.textContent = err.message; });
  edgeSelect.addEventListener('change', () => { location.hash = `#/:files/${encodeURIComponent(edge())}`; });
  return {};
}
