// Files: a browser over an edge's staging sandbox — list, mkdir, delete, download, and
// uploads that stream in slices (each slice one PUT at its offset, hashed as it goes, so
// neither side holds the file), committed with size and SHA-256 so the edge keeps the file
// only if both match. A slice that breaks is retried by itself after a pause, from the edge's
// partial_size (what really arrived, which may end inside the slice); when the retries run
// out the page says where it stopped and offers Resume, which continues from the edge's
// partial_size again. Choosing the same file later and pressing Upload resumes too.

import { el, flash, getSession, pluginUrl, request } from '../app.js';
import { call, edgesWith, labelled, size, table, when } from './common.js';
import { Sha256 } from './sha256.js';

const SLICE = 8 * 1024 * 1024;
const RETRY_DELAYS = [1000, 2000, 4000];  // ms before each automatic retry of a broken slice

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

// Worth trying again: the connection broke (no status), the bridge or edge failed (5xx), the
// edge's offset differs or an old upload is still winding down (409), a timeout (408, 429).
function retryable(err) {
  return !err.status || err.status >= 500 || [408, 409, 429].includes(err.status);
}

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

async function hashPrefix(file, upTo, hasher, onProgress = () => {}) {
  for (let at = 0; at < upTo; at += SLICE) {
    hasher.update(await file.slice(at, Math.min(upTo, at + SLICE)).arrayBuffer());
    onProgress(Math.min(upTo, at + SLICE));
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
  const uploadButton = el('button', { type: 'submit', class: 'primary', text: 'Upload' });
  // after an upload stopped: continues it from what the edge kept
  const resumeButton = el('button', { type: 'button', class: 'primary resume-upload hidden', text: 'Resume',
    onclick: () => stopped && upload(stopped) });
  let cwd = null;
  let stopped = null;  // { file, edge, dest } of the upload that stopped
  let busy = false;
  let listings = 0;  // folder listings asked for

  main.replaceChildren(el('section', { class: 'files-page' },
    el('h1', { text: 'Files' }),
    el('form', { class: 'toolbar', onsubmit: e => { e.preventDefault(); list(pathInput.value.trim() || '~'); } },
      ...labelled('Edge', edgeSelect), ...labelled('Folder', pathInput), el('button', { type: 'submit', text: 'Open' }),
      el('button', { type: 'button', text: 'Up', onclick: () => cwd && list(parent(cwd)) })),
    where,
    table(['Name', 'Type', 'Size', 'Modified', 'SHA-256', ''], tbody, 'Folder contents'),
    el('section', { class: 'card', 'aria-label': 'Upload' }, el('h2', { text: 'Upload' }),
      el('form', { class: 'toolbar upload-form', onsubmit: e => { e.preventDefault(); upload(); } },
        ...labelled('File', fileInput), uploadButton),
      el('div', { class: 'progress-row' }, progress, progressText, resumeButton), verified),
    el('section', { class: 'card', 'aria-label': 'New folder' }, el('h2', { text: 'New folder' }),
      el('form', { class: 'toolbar', onsubmit: e => { e.preventDefault(); mkdir(); } },
        ...labelled('Name', dirName), el('button', { type: 'submit', text: 'Create' })))));

  const edge = () => edgeSelect.value;

  async function list(path) {
    const mine = ++listings;  // only the last folder asked for is shown, whichever answer comes last
    const typed = pathInput.value;
    try {
      const data = await call(edge(), 'staging', `list/{sid}?path=${encodeURIComponent(path)}`);
      if (mine !== listings) return;
      cwd = data.path;
      if (pathInput.value === typed) pathInput.value = cwd;  // never over what was typed meanwhile
      where.textContent = `${edge()}:${cwd} — ${data.entries.length} entries`;
      tbody.replaceChildren(...data.entries.map(entry => row(entry)));
      if (!data.entries.length) tbody.append(el('tr', {}, el('td', { colspan: 6, class: 'hint', text: 'Empty folder.' })));
    } catch (err) {
      if (mine === listings) { where.textContent = err.message; tbody.replaceChildren(); }
    }
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
        el('button', { type: 'button', text: 'Checksum', 'aria-label': `Checksum of ${entry.name} (SHA-256)`, onclick: async () => {
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

  // Upload the chosen file into the open folder, or (`again`) continue one that stopped.
  async function upload(again = null) {
    if (busy) return;
    const file = again ? again.file : fileInput.files?.[0];
    if (!file || (!again && !cwd)) { flash('Choose a file and open a folder first', false); return; }
    const edgeName = again ? again.edge : edge();
    const dest = again ? again.dest : join(cwd, file.name);
    const q = `path=${encodeURIComponent(dest)}`;
    const kept = async () => (await call(edgeName, 'staging', `partial/{sid}?${q}`)).partial_size || 0;
    busy = true;
    uploadButton.disabled = true;
    resumeButton.classList.add('hidden');
    delete progressText.dataset.state;
    verified.textContent = '';
    let offset = 0;
    try {
      const atEdge = await kept();
      offset = atEdge <= file.size ? atEdge : 0;
      let hasher = new Sha256();
      if (offset) {  // resuming: the hash of what the edge already has
        flash(`Resuming ${file.name} at ${size(offset)}`);
        await hashPrefix(file, offset, hasher, done => showProgress(done, file.size, 'Checking what the edge kept:'));
      }
      const sid = await getSession(edgeName, 'staging');
      let failures = 0;
      let first = true;
      while (offset < file.size || first) {  // an empty file is one empty PUT
        first = false;
        const end = Math.min(file.size, offset + SLICE);
        const slice = await file.slice(offset, end).arrayBuffer();
        try {
          const url = pluginUrl(edgeName, 'staging', `upload/${encodeURIComponent(sid)}?${q}&offset=${offset}`);
          await putSlice(url, slice, loaded => showProgress(offset + loaded, file.size, 'Uploading'));
        } catch (err) {
          if (failures >= RETRY_DELAYS.length || !retryable(err)) throw err;
          const pause = RETRY_DELAYS[failures++];
          progressText.textContent = `Upload interrupted at ${size(offset)} (${err.message}); trying again in `
            + `${pause / 1000} s (${failures} of ${RETRY_DELAYS.length})`;
          await sleep(pause);
          let at = offset;  // the edge out of reach: the same slice again (a wrong offset is answered with the right one)
          try { at = err.detail?.partial_size ?? await kept(); } catch { /* keep `offset` */ }
          if (at > file.size) at = 0;
          if (at >= offset && at <= end) hasher.update(slice.slice(0, at - offset));  // part of this slice arrived
          else { hasher = new Sha256(); await hashPrefix(file, at, hasher); }
          offset = at;
          showProgress(offset, file.size, 'Resuming at');
          continue;
        }
        failures = 0;
        hasher.update(slice);
        offset = end;
        showProgress(offset, file.size, 'Uploading');
      }
      const digest = hasher.hex();
      const done = await call(edgeName, 'staging', 'commit/{sid}', { method: 'POST', body: { path: dest, size: file.size, sha256: digest } });
      stopped = null;
      progressText.textContent = `Uploaded ${file.name}: ${size(done.size)}`;
      verified.textContent = `SHA-256 ${done.sha256} (verified by the edge)`;
      verified.dataset.sha256 = done.sha256;
      flash(`Uploaded ${file.name}`);
      if (cwd) list(cwd);
    } catch (err) {
      stopped = { file, edge: edgeName, dest };
      let atEdge = null;
      try { atEdge = await kept(); } catch { /* the edge is out of reach */ }
      const worth = retryable(err);  // a refusal (403, 404, 413, 422) would only be refused again
      const what = !worth ? 'Fix the cause, then upload again.'
        : atEdge ? `The edge keeps the ${size(atEdge)} it received: press Resume to continue from there.`
          : 'Press Resume to try again.';
      progressText.textContent = `Upload of ${file.name} stopped at ${size(atEdge ?? offset)} of ${size(file.size)}: `
        + `${String(err.message).replace(/\.$/, '')}. ${what}`;
      if (atEdge !== null) { progress.max = file.size || 1; progress.value = atEdge; }
      progressText.dataset.state = 'stopped';
      resumeButton.classList.toggle('hidden', !worth);
      resumeButton.setAttribute('aria-label', `Resume the upload of ${file.name}`);
      flash(`Upload of ${file.name} stopped: ${err.message}`, false);
    } finally {
      busy = false;
      uploadButton.disabled = false;
    }
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
