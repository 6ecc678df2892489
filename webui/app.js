// ringseed's web UI: a single page that speaks only the qBittorrent Web API v2 (the same page
// runs against ringseed and against qbittorrent-nox as its alternative UI).
//
// Everything from the server (torrent names, tracker messages, paths, peer clients) is a
// stranger's text: it reaches the page only as text nodes (textContent) and attribute values,
// never parsed as markup. The page loads nothing from elsewhere (CSP default-src 'self').
'use strict';

(() => {
  const API = 'api/v2/';
  const POLL_MS = 1500;
  const DETAILS_MS = 3000;
  const MAX_ETA = 8640000;

  // ---------------------------------------------------------------------------------------
  // small DOM helpers

  const $ = (id) => document.getElementById(id);

  /** An element with attributes/properties and children (strings become text nodes). */
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (v === undefined || v === null) continue;
        if (k === 'class') e.className = v;
        else if (k === 'text') e.textContent = v;
        else if (k.startsWith('data-')) e.setAttribute(k, String(v));
        else if (k in e) e[k] = v;
        else e.setAttribute(k, String(v));
      }
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  // ---------------------------------------------------------------------------------------
  // formatting (pure)

  const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  function size(n) {
    if (typeof n !== 'number' || !isFinite(n) || n < 0) return '–';
    let i = 0;
    while (n >= 1024 && i < UNITS.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(n) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + ' ' + UNITS[i];
  }
  const rate = (n) => (typeof n === 'number' && n > 0 ? size(n) + '/s' : '0 B/s');
  function duration(s) {
    if (typeof s !== 'number' || s < 0 || s >= MAX_ETA) return '∞';
    if (s < 60) return Math.floor(s) + 's';
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    if (d > 0) return d + 'd ' + h + 'h';
    if (h > 0) return h + 'h ' + m + 'm';
    return m + 'm ' + Math.floor(s % 60) + 's';
  }
  const date = (t) => (typeof t === 'number' && t > 0 ? new Date(t * 1000).toLocaleString() : '–');
  const ratio = (r) => (typeof r !== 'number' ? '–' : r < 0 ? '∞' : r.toFixed(2));
  const percent = (p) => (typeof p === 'number' ? (Math.floor(p * 1000) / 10).toFixed(1) + '%' : '–');

  // qBittorrent's state strings (4.x and 5.x) as a person reads them, and the group that
  // colours them.
  const STATES = {
    uploading: ['Seeding', 'up'],
    stalledUP: ['Seeding (idle)', 'up'],
    forcedUP: ['Seeding [forced]', 'up'],
    queuedUP: ['Queued to seed', 'queued'],
    checkingUP: ['Checking', 'checking'],
    pausedUP: ['Stopped (complete)', 'stopped'],
    stoppedUP: ['Stopped (complete)', 'stopped'],
    downloading: ['Downloading', 'down'],
    forcedDL: ['Downloading [forced]', 'down'],
    metaDL: ['Fetching metadata', 'down'],
    forcedMetaDL: ['Fetching metadata [forced]', 'down'],
    stalledDL: ['Stalled', 'stalled'],
    queuedDL: ['Queued to download', 'queued'],
    checkingDL: ['Checking', 'checking'],
    pausedDL: ['Stopped', 'stopped'],
    stoppedDL: ['Stopped', 'stopped'],
    checkingResumeData: ['Checking resume data', 'checking'],
    moving: ['Moving', 'checking'],
    allocating: ['Allocating', 'checking'],
    missingFiles: ['Missing files', 'error'],
    error: ['Error', 'error'],
  };
  const stateLabel = (s) => (STATES[s] ? STATES[s][0] : (s ? String(s) : 'Unknown'));
  const stateGroup = (s) => (STATES[s] ? STATES[s][1] : 'unknown');

  // The status filters, with qBittorrent's memberships (base/torrentfilter.cpp).
  const SEEDING = new Set(['uploading', 'stalledUP', 'checkingUP', 'queuedUP', 'forcedUP']);
  const STOPPED = new Set(['pausedUP', 'pausedDL', 'stoppedUP', 'stoppedDL']);
  const DOWNLOADING = new Set(['downloading', 'metaDL', 'forcedMetaDL', 'stalledDL', 'checkingDL',
    'pausedDL', 'stoppedDL', 'queuedDL', 'forcedDL']);
  const ACTIVE = new Set(['metaDL', 'forcedMetaDL', 'downloading', 'forcedDL', 'uploading',
    'forcedUP', 'moving']);
  const FILTERS = [
    ['all', 'All', () => true],
    ['downloading', 'Downloading', (t) => DOWNLOADING.has(t.state)],
    ['seeding', 'Seeding', (t) => SEEDING.has(t.state)],
    ['completed', 'Completed', (t) => SEEDING.has(t.state) || t.state === 'pausedUP' || t.state === 'stoppedUP'],
    ['stopped', 'Stopped', (t) => STOPPED.has(t.state)],
    ['active', 'Active', (t) => ACTIVE.has(t.state) || (t.state === 'stalledDL' && t.upspeed > 0)],
    ['errored', 'Errored', (t) => t.state === 'error' || t.state === 'missingFiles'],
  ];

  const tagsOf = (t) => (t.tags ? String(t.tags).split(',').map((s) => s.trim()).filter(Boolean) : []);

  // The list's columns: key, heading, cell text, sort value, extra class.
  const COLUMNS = [
    ['name', 'Name', (t) => t.name, (t) => String(t.name || '').toLowerCase(), 'name'],
    ['size', 'Size', (t) => size(t.size), (t) => t.size, 'num'],
    ['state', 'Status', (t) => stateLabel(t.state), (t) => stateLabel(t.state), 'state'],
    ['progress', 'Progress', null, (t) => t.progress, 'progress'],
    ['dlspeed', 'Down', (t) => (t.dlspeed > 0 ? rate(t.dlspeed) : ''), (t) => t.dlspeed, 'num'],
    ['upspeed', 'Up', (t) => (t.upspeed > 0 ? rate(t.upspeed) : ''), (t) => t.upspeed, 'num'],
    ['ratio', 'Ratio', (t) => ratio(t.ratio), (t) => t.ratio, 'num'],
    ['eta', 'ETA', (t) => (t.eta >= MAX_ETA || t.progress >= 1 ? '∞' : duration(t.eta)), (t) => t.eta, 'num'],
    ['num_seeds', 'Seeds', (t) => `${t.num_seeds ?? 0} (${t.num_complete ?? 0})`, (t) => t.num_seeds, 'num'],
    ['num_leechs', 'Peers', (t) => `${t.num_leechs ?? 0} (${t.num_incomplete ?? 0})`, (t) => t.num_leechs, 'num'],
    ['category', 'Category', (t) => t.category || '', (t) => String(t.category || '').toLowerCase(), ''],
    ['tags', 'Tags', (t) => tagsOf(t).join(', '), (t) => String(t.tags || '').toLowerCase(), ''],
    ['added_on', 'Added', (t) => date(t.added_on), (t) => t.added_on, 'date'],
  ];

  // ---------------------------------------------------------------------------------------
  // state

  const S = {
    version: '',          // app/version
    api: [0, 0, 0],       // app/webapiVersion, parsed
    rid: 0,
    torrents: new Map(),  // hash -> torrent object (sync/maindata's, plus .hash)
    categories: new Map(),
    tags: new Set(),
    server: {},
    selected: new Set(),
    anchor: null,         // the row a shift-click extends from
    sortKey: localStorage.getItem('rs.sortKey') || 'added_on',
    sortDesc: localStorage.getItem('rs.sortDesc') !== 'false',
    filter: 'all',
    category: null,       // null all, '' uncategorised, else a name
    tag: null,            // null all, '' untagged, else a tag
    search: '',
    tab: 'general',
    pollTimer: 0,
    detailsTimer: 0,
    rows: new Map(),      // hash -> <tr>
    visible: [],          // hashes in display order
    running: false,
    polling: false,       // a sync/maindata request is in flight
    pollAgain: false,     // and another was asked for meanwhile
    detailsGen: 0,        // the latest details request; older answers are dropped
    filtersKey: '',       // what the filter lists show now (redrawn only when it changes)
    earnings: null,       // ringseed's BTT earnings (ringseed/earnings), null elsewhere
    earningsAt: 0,        // when they were last read (ms)
  };

  // ---------------------------------------------------------------------------------------
  // the API

  class HttpError extends Error {
    constructor(status, text) { super(text || `HTTP ${status}`); this.status = status; }
  }

  /** POSTs (or GETs) a Web API method; answers the response text, throws HttpError. */
  async function call(method, params, opts = {}) {
    const init = { method: opts.get ? 'GET' : 'POST', credentials: 'same-origin', cache: 'no-store' };
    let url = API + method;
    if (opts.get) {
      if (params) url += '?' + new URLSearchParams(params).toString();
    } else if (params instanceof FormData) {
      init.body = params;
    } else {
      init.body = new URLSearchParams(params || {});
    }
    const r = await fetch(url, init);
    const text = await r.text();
    if (!r.ok) {
      if (r.status === 403 && S.running && method !== 'auth/login') loggedOut('Your session ended: log in again.');
      throw new HttpError(r.status, text.slice(0, 300));
    }
    return text;
  }
  async function callJson(method, params, opts) {
    const text = await call(method, params, opts);
    return text ? JSON.parse(text) : null;
  }

  const apiAtLeast = (maj, min) => S.api[0] > maj || (S.api[0] === maj && S.api[1] >= min);
  // Web API 2.11 (qBittorrent 5.0) renamed pause/resume to stop/start.
  const verb = (what) => (apiAtLeast(2, 11) ? what : { stop: 'pause', start: 'resume' }[what]);

  // ---------------------------------------------------------------------------------------
  // login / logout

  function showLogin(message) {
    $('app-view').hidden = true;
    $('login-view').hidden = false;
    $('login-error').textContent = message || '';
    const user = $('login-user');
    (user.value ? $('login-pass') : user).focus();
  }

  function loggedOut(message) {
    S.running = false;
    clearTimeout(S.pollTimer);
    clearTimeout(S.detailsTimer);
    showLogin(message);
  }

  async function login(ev) {
    ev.preventDefault();
    const btn = $('login-submit');
    btn.disabled = true;
    $('login-error').textContent = '';
    try {
      const text = await call('auth/login', { username: $('login-user').value, password: $('login-pass').value });
      if (text.trim() === 'Ok.' || text.trim() === '') {
        $('login-pass').value = '';
        await start();
      } else {
        showLogin('Wrong username or password.');
      }
    } catch (e) {
      showLogin(e.status === 401 ? 'Wrong username or password.' : (e.message || 'Login failed.'));
    } finally {
      btn.disabled = false;
    }
  }

  async function logout() {
    try { await call('auth/logout'); } catch (e) { /* the session ends either way */ }
    loggedOut('');
  }

  /** After a login (or with a session already): reads the version, then starts polling. */
  async function start() {
    const v = await call('app/webapiVersion', null, { get: true });
    S.api = v.trim().split('.').map((x) => parseInt(x, 10) || 0);
    try { S.version = (await call('app/version', null, { get: true })).trim(); } catch (e) { S.version = ''; }
    $('st-version').textContent = `${S.version} · Web API ${v.trim()}`;
    $('login-view').hidden = true;
    $('app-view').hidden = false;
    S.running = true;
    S.rid = 0;
    S.earnings = undefined; // unknown until asked: ringseed answers, qBittorrent says 404
    S.earningsAt = 0;
    S.torrents.clear();
    S.rows.clear();
    $('torrents-body').replaceChildren();
    poll();
    $('torrents').focus();
  }

  // ---------------------------------------------------------------------------------------
  // polling sync/maindata

  /** Merges one sync/maindata answer (full or delta) into S. */
  function merge(d) {
    if (d.full_update) {
      S.torrents.clear();
      S.categories.clear();
      S.tags.clear();
      S.server = {};
    }
    for (const [h, t] of Object.entries(d.torrents || {})) {
      const old = S.torrents.get(h);
      S.torrents.set(h, Object.assign(old || { hash: h }, t));
    }
    for (const h of d.torrents_removed || []) {
      S.torrents.delete(h);
      S.selected.delete(h);
    }
    for (const [n, c] of Object.entries(d.categories || {})) {
      S.categories.set(n, Object.assign(S.categories.get(n) || { name: n }, c));
    }
    for (const n of d.categories_removed || []) S.categories.delete(n);
    for (const t of d.tags || []) S.tags.add(t);
    for (const t of d.tags_removed || []) S.tags.delete(t);
    if (d.server_state) Object.assign(S.server, d.server_state);
    if (typeof d.rid === 'number') S.rid = d.rid;
  }

  /** ringseed's BTT earnings, every 10 s; a server without the method (qBittorrent) is not
   *  asked again. */
  async function readEarnings() {
    if (S.earnings === null || Date.now() - S.earningsAt < 10000) return;
    S.earningsAt = Date.now();
    try {
      S.earnings = await callJson('ringseed/earnings', null, { get: true });
    } catch (e) {
      if (e instanceof HttpError && e.status === 404) S.earnings = null;
    }
  }

  // One poll at a time (each answer's rid is the next request's): a poll asked for while one
  // is in flight (after an action) runs right after it instead of alongside.
  async function poll() {
    if (!S.running) return;
    if (S.polling) { S.pollAgain = true; return; }
    S.polling = true;
    S.pollAgain = false;
    clearTimeout(S.pollTimer);
    try {
      const d = await callJson('sync/maindata', { rid: S.rid }, { get: true });
      if (d && typeof d === 'object') merge(d);
      if (!('dl_info_speed' in S.server)) {
        // A server whose maindata carries no server_state: the rates from transfer/info.
        Object.assign(S.server, await callJson('transfer/info', null, { get: true }));
      }
      await readEarnings();
      $('st-error').textContent = '';
      render();
    } catch (e) {
      if (!S.running) return;
      $('st-error').textContent = 'Server unreachable: ' + (e.message || e);
    } finally {
      S.polling = false;
    }
    if (!S.running) return;
    const every = Number(S.server.refresh_interval) || POLL_MS;
    clearTimeout(S.pollTimer);
    S.pollTimer = setTimeout(poll, S.pollAgain ? 0 : Math.min(Math.max(every, 500), 5000));
  }

  // ---------------------------------------------------------------------------------------
  // rendering the list

  function matches(t) {
    const f = FILTERS.find((x) => x[0] === S.filter);
    if (f && !f[2](t)) return false;
    if (S.category !== null && (t.category || '') !== S.category) return false;
    if (S.tag !== null) {
      const tags = tagsOf(t);
      if (S.tag === '' ? tags.length > 0 : !tags.includes(S.tag)) return false;
    }
    if (S.search) {
      const words = S.search.toLowerCase().split(/\s+/).filter(Boolean);
      const name = String(t.name || '').toLowerCase();
      if (!words.every((w) => name.includes(w))) return false;
    }
    return true;
  }

  function compare(a, b) {
    const col = COLUMNS.find((c) => c[0] === S.sortKey) || COLUMNS[0];
    const x = col[3](a), y = col[3](b);
    let r = 0;
    if (typeof x === 'number' && typeof y === 'number') r = x - y;
    else r = String(x ?? '').localeCompare(String(y ?? ''));
    if (r === 0) r = String(a.name || '').localeCompare(String(b.name || ''));
    return S.sortDesc ? -r : r;
  }

  function renderHead() {
    const row = $('torrents-head');
    row.replaceChildren();
    for (const [key, title, , , cls] of COLUMNS) {
      const sorted = key === S.sortKey;
      const th = el('th', { class: cls, scope: 'col', 'data-key': key,
        'aria-sort': sorted ? (S.sortDesc ? 'descending' : 'ascending') : 'none' },
      el('button', { type: 'button', class: 'sort', text: title + (sorted ? (S.sortDesc ? ' ▾' : ' ▴') : '') }));
      th.firstChild.addEventListener('click', () => {
        if (S.sortKey === key) S.sortDesc = !S.sortDesc;
        else { S.sortKey = key; S.sortDesc = !['name', 'state', 'category', 'tags'].includes(key); }
        localStorage.setItem('rs.sortKey', S.sortKey);
        localStorage.setItem('rs.sortDesc', String(S.sortDesc));
        renderHead();
        render();
      });
      row.append(th);
    }
  }

  function newRow(h) {
    const tr = el('tr', { 'data-hash': h, tabIndex: -1 });
    for (const [key, , , , cls] of COLUMNS) {
      const td = el('td', { class: cls, 'data-col': key });
      if (key === 'progress') {
        const bar = el('span', { class: 'bar' });
        td.append(el('span', { class: 'meter' }, bar), el('span', { class: 'pct' }));
      }
      tr.append(td);
    }
    tr.addEventListener('click', (ev) => clickRow(h, ev));
    tr.addEventListener('dblclick', () => { selectOnly(h); showTab('general'); });
    return tr;
  }

  function fillRow(tr, t) {
    tr.dataset.state = t.state || '';
    tr.dataset.group = stateGroup(t.state);
    const cells = tr.children;
    COLUMNS.forEach(([key, , text], i) => {
      const td = cells[i];
      if (key === 'progress') {
        const p = Math.max(0, Math.min(1, Number(t.progress) || 0));
        td.firstChild.firstChild.style.width = (p * 100).toFixed(1) + '%';
        td.lastChild.textContent = percent(p);
        td.dataset.value = String(p);
        return;
      }
      const v = text(t);
      if (td.textContent !== v) td.textContent = v;
      if (key === 'name' || key === 'tags') td.title = v;
    });
    tr.classList.toggle('selected', S.selected.has(t.hash));
    tr.setAttribute('aria-selected', S.selected.has(t.hash) ? 'true' : 'false');
  }

  function render() {
    const list = [...S.torrents.values()].filter(matches).sort(compare);
    const body = $('torrents-body');
    for (const [h, tr] of S.rows) {
      if (!S.torrents.has(h)) { tr.remove(); S.rows.delete(h); }
    }
    const shown = new Set(list.map((t) => t.hash));
    for (const [h, tr] of S.rows) if (!shown.has(h)) tr.remove();
    let prev = null;
    for (const t of list) {
      let tr = S.rows.get(t.hash);
      if (!tr) { tr = newRow(t.hash); S.rows.set(t.hash, tr); }
      fillRow(tr, t);
      const want = prev ? prev.nextSibling : body.firstChild;
      if (want !== tr) body.insertBefore(tr, want);
      prev = tr;
    }
    S.visible = list.map((t) => t.hash);
    $('empty').hidden = list.length > 0;
    $('empty').textContent = S.torrents.size ? 'No torrent matches the filters.' : 'No torrents yet: add one.';
    renderFilters();
    renderStatus();
    updateButtons();
  }

  function filterItem(list, label, count, active, onPick, attrs) {
    const b = el('button', Object.assign({ type: 'button', class: active ? 'active' : '' }, attrs || {}),
      el('span', { class: 'label', text: label }), el('span', { class: 'count', text: String(count) }));
    b.setAttribute('aria-pressed', active ? 'true' : 'false');
    b.addEventListener('click', () => { onPick(); render(); });
    list.append(el('li', null, b));
  }

  function renderFilters() {
    const all = [...S.torrents.values()];
    // Redrawn only when a count, a name or the choice changed, so keyboard focus on a filter
    // survives the polls.
    const key = JSON.stringify([S.filter, S.category, S.tag, [...S.categories.keys()], [...S.tags],
      all.map((t) => [t.state, t.upspeed > 0, t.category, t.tags])]);
    if (key === S.filtersKey) return;
    S.filtersKey = key;
    const focused = document.activeElement && document.activeElement.closest('.filters button');
    const refocus = focused ? [...focused.attributes].find((x) => x.name.startsWith('data-')) : null;
    const st = $('filter-state');
    st.replaceChildren();
    for (const [key, label, pred] of FILTERS) {
      filterItem(st, label, all.filter(pred).length, S.filter === key, () => { S.filter = key; }, { 'data-filter': key });
    }
    const cat = $('filter-category');
    cat.replaceChildren();
    filterItem(cat, 'All', all.length, S.category === null, () => { S.category = null; }, { 'data-category': '*' });
    filterItem(cat, 'Uncategorised', all.filter((t) => !t.category).length, S.category === '', () => { S.category = ''; }, { 'data-category': '' });
    const names = new Set([...S.categories.keys(), ...all.map((t) => t.category).filter(Boolean)]);
    for (const n of [...names].sort((a, b) => a.localeCompare(b))) {
      filterItem(cat, n, all.filter((t) => t.category === n).length, S.category === n, () => { S.category = n; }, { 'data-category': n });
    }
    if (S.category && !names.has(S.category)) S.category = null;
    const tg = $('filter-tag');
    tg.replaceChildren();
    filterItem(tg, 'All', all.length, S.tag === null, () => { S.tag = null; }, { 'data-tag': '*' });
    filterItem(tg, 'Untagged', all.filter((t) => tagsOf(t).length === 0).length, S.tag === '', () => { S.tag = ''; }, { 'data-tag': '' });
    const tags = new Set([...S.tags, ...all.flatMap(tagsOf)]);
    for (const n of [...tags].sort((a, b) => a.localeCompare(b))) {
      filterItem(tg, n, all.filter((t) => tagsOf(t).includes(n)).length, S.tag === n, () => { S.tag = n; }, { 'data-tag': n });
    }
    if (refocus) {
      const again = [...document.querySelectorAll('.filters button')].find((x) => x.getAttribute(refocus.name) === refocus.value);
      if (again) again.focus();
    }
  }

  function renderStatus() {
    const s = S.server;
    const conn = s.connection_status || '';
    $('st-conn').textContent = conn ? '● ' + conn : '';
    $('st-conn').className = 'conn-' + conn;
    $('st-dl').textContent = `↓ ${rate(s.dl_info_speed)} (${size(s.dl_info_data ?? 0)})`;
    $('st-ul').textContent = `↑ ${rate(s.up_info_speed)} (${size(s.up_info_data ?? 0)})`;
    $('st-peers').textContent = typeof s.total_peer_connections === 'number' ? `${s.total_peer_connections} peers` : '';
    $('st-count').textContent = `${S.visible.length} of ${S.torrents.size} torrents` + (S.selected.size ? `, ${S.selected.size} selected` : '');
    const e = S.earnings;
    $('st-earned').textContent = e && e.enabled
      ? `${Number(e.earned_btt).toFixed(4)} BTT earned (${size(e.bytes_sold)} sold)`
      : '';
  }

  // ---------------------------------------------------------------------------------------
  // selection and keyboard

  function selectOnly(h) {
    S.selected = new Set(h ? [h] : []);
    S.anchor = h;
    afterSelect();
  }

  function clickRow(h, ev) {
    if (ev.shiftKey && S.anchor && S.visible.includes(S.anchor)) {
      const a = S.visible.indexOf(S.anchor), b = S.visible.indexOf(h);
      const [lo, hi] = a < b ? [a, b] : [b, a];
      if (!(ev.ctrlKey || ev.metaKey)) S.selected.clear();
      for (const x of S.visible.slice(lo, hi + 1)) S.selected.add(x);
    } else if (ev.ctrlKey || ev.metaKey) {
      if (S.selected.has(h)) S.selected.delete(h); else S.selected.add(h);
      S.anchor = h;
    } else {
      S.selected = new Set([h]);
      S.anchor = h;
    }
    afterSelect();
  }

  function afterSelect() {
    for (const [h, tr] of S.rows) {
      tr.classList.toggle('selected', S.selected.has(h));
      tr.setAttribute('aria-selected', S.selected.has(h) ? 'true' : 'false');
    }
    const focus = S.anchor && S.rows.get(S.anchor);
    if (focus) { focus.scrollIntoView({ block: 'nearest' }); }
    updateButtons();
    renderStatus();
    loadDetails();
  }

  function updateButtons() {
    const none = S.selected.size === 0;
    for (const id of ['btn-start', 'btn-stop', 'btn-recheck', 'btn-remove']) $(id).disabled = none;
  }

  function onKey(ev) {
    if (!S.running || $('add-dialog').open || $('remove-dialog').open) return;
    const typing = ev.target instanceof HTMLInputElement || ev.target instanceof HTMLTextAreaElement || ev.target instanceof HTMLSelectElement;
    if (typing) {
      if (ev.key === 'Escape' && ev.target.id === 'search') { ev.target.value = ''; S.search = ''; render(); $('torrents').focus(); }
      return;
    }
    if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
      if (!S.visible.length) return;
      const i = S.anchor ? S.visible.indexOf(S.anchor) : -1;
      const j = ev.key === 'ArrowDown' ? Math.min(S.visible.length - 1, i + 1) : Math.max(0, i - 1);
      if (ev.shiftKey && S.anchor) { S.selected.add(S.visible[j]); S.anchor = S.visible[j]; afterSelect(); } else selectOnly(S.visible[j]);
      ev.preventDefault();
    } else if (ev.key === 'a' && (ev.ctrlKey || ev.metaKey)) {
      S.selected = new Set(S.visible);
      afterSelect();
      ev.preventDefault();
    } else if (ev.key === 'Delete' && S.selected.size) {
      openRemove();
    } else if (ev.key === '/') {
      $('search').focus();
      ev.preventDefault();
    } else if (ev.key === 'a' && !ev.ctrlKey && !ev.metaKey && !ev.altKey) {
      openAdd();
      ev.preventDefault();
    } else if (ev.key === 's' && S.selected.size) {
      act('start');
    } else if (ev.key === 'p' && S.selected.size) {
      act('stop');
    } else if (ev.key === 'Escape') {
      selectOnly(null);
    }
  }

  // ---------------------------------------------------------------------------------------
  // actions

  async function act(what) {
    const hashes = [...S.selected].join('|');
    if (!hashes) return;
    try {
      await call('torrents/' + (what === 'stop' || what === 'start' ? verb(what) : what), { hashes });
      $('st-error').textContent = '';
    } catch (e) {
      $('st-error').textContent = `${what} failed: ${e.message}`;
    }
    poll();
  }

  function openRemove() {
    const n = S.selected.size;
    if (!n) return;
    const one = n === 1 ? S.torrents.get([...S.selected][0]) : null;
    $('remove-text').textContent = one ? `Remove “${one.name}”?` : `Remove ${n} torrents?`;
    $('remove-files').checked = false;
    $('remove-error').textContent = '';
    $('remove-dialog').showModal();
    $('remove-cancel').focus();
  }

  async function submitRemove(ev) {
    ev.preventDefault();
    const hashes = [...S.selected].join('|');
    try {
      await call('torrents/delete', { hashes, deleteFiles: $('remove-files').checked ? 'true' : 'false' });
      $('remove-dialog').close();
      S.selected.clear();
      afterSelect();
      poll();
    } catch (e) {
      $('remove-error').textContent = 'Remove failed: ' + e.message;
    }
  }

  function openAdd() {
    const form = $('add-form');
    form.reset();
    $('add-error').textContent = '';
    const sel = $('add-category');
    sel.replaceChildren(el('option', { value: '', text: '(none)' }));
    for (const n of [...S.categories.keys()].sort((a, b) => a.localeCompare(b))) sel.append(el('option', { value: n, text: n }));
    if (S.category) sel.value = S.category;
    $('add-dialog').showModal();
    $('add-files').focus();
  }

  async function submitAdd(ev) {
    ev.preventDefault();
    const files = $('add-files').files;
    const urls = $('add-urls').value.trim();
    if (!files.length && !urls) {
      $('add-error').textContent = 'Choose a .torrent file or give a magnet link.';
      return;
    }
    const fd = new FormData();
    for (const f of files) fd.append('torrents', f, f.name);
    if (urls) fd.append('urls', urls);
    const put = (k, v) => { if (v) fd.append(k, v); };
    put('savepath', $('add-savepath').value.trim());
    put('category', $('add-category').value);
    put('tags', $('add-tags').value.trim());
    // Both dialects' names, as qbittorrent-api sends them: 4.x reads `paused`, 5.x `stopped`.
    const paused = $('add-paused').checked ? 'true' : 'false';
    fd.append('paused', paused);
    fd.append('stopped', paused);
    if ($('add-skip').checked) fd.append('skip_checking', 'true');
    $('add-submit').disabled = true;
    try {
      const text = (await call('torrents/add', fd)).trim();
      if (text === 'Fails.') {
        $('add-error').textContent = 'The server added nothing (a duplicate, or nothing it could read).';
      } else {
        $('add-dialog').close();
        poll();
      }
    } catch (e) {
      $('add-error').textContent = `Adding failed (${e.status || ''}): ${e.message}`;
    } finally {
      $('add-submit').disabled = false;
    }
  }

  // ---------------------------------------------------------------------------------------
  // the details pane

  function showTab(tab) {
    S.tab = tab;
    for (const b of document.querySelectorAll('#details [role=tab]')) {
      b.setAttribute('aria-selected', b.dataset.tab === tab ? 'true' : 'false');
    }
    loadDetails();
  }

  function table(headings, rows, cls) {
    return el('table', { class: 'grid ' + (cls || '') },
      el('thead', null, el('tr', null, ...headings.map((h) => el('th', { text: h })))),
      el('tbody', null, ...rows.map((r) => el('tr', null, ...r.map((c) => (c instanceof Node ? el('td', null, c) : el('td', { text: c === undefined || c === null ? '' : String(c) })))))));
  }

  function meter(p) {
    const bar = el('span', { class: 'bar' });
    bar.style.width = (Math.max(0, Math.min(1, Number(p) || 0)) * 100).toFixed(1) + '%';
    return el('span', { class: 'cellbar' }, el('span', { class: 'meter' }, bar), el('span', { class: 'pct', text: percent(p) }));
  }

  const TRACKER_STATUS = ['Disabled', 'Not contacted', 'Working', 'Updating', 'Not working', 'Tracker error', 'Unreachable'];
  const PRIORITY = { 0: 'Skip', 1: 'Normal', 6: 'High', 7: 'Maximum' };
  const num = (n) => (typeof n === 'number' && n >= 0 ? String(n) : '–');

  async function loadDetails() {
    clearTimeout(S.detailsTimer);
    const gen = ++S.detailsGen;
    const body = $('details-body');
    if (S.selected.size !== 1) {
      body.replaceChildren(el('p', { class: 'hint', text: S.selected.size ? `${S.selected.size} torrents selected.` : 'Select a torrent to see its details.' }));
      return;
    }
    const h = [...S.selected][0];
    const tab = S.tab;
    let node;
    try {
      if (tab === 'general') {
        const p = await callJson('torrents/properties', { hash: h });
        const t = S.torrents.get(h) || {};
        const dl = el('dl', { class: 'props' });
        const add = (k, v) => dl.append(el('dt', { text: k }), el('dd', { text: v }));
        add('Name', t.name || '');
        add('Status', stateLabel(t.state));
        add('Progress', percent(t.progress));
        add('Total size', size(p.total_size));
        add('Pieces', p.pieces_num >= 0 ? `${p.pieces_have} of ${p.pieces_num} × ${size(p.piece_size)}` : '–');
        add('Save path', p.save_path || '');
        add('Downloaded', `${size(p.total_downloaded)} (${size(p.total_downloaded_session)} this session)`);
        add('Uploaded', `${size(p.total_uploaded)} (${size(p.total_uploaded_session)} this session)`);
        add('Ratio', ratio(p.share_ratio));
        add('Rates', `↓ ${rate(p.dl_speed)}  ↑ ${rate(p.up_speed)}`);
        add('Connections', `${num(p.nb_connections)} (limit ${num(p.nb_connections_limit)})`);
        add('Seeds', `${num(p.seeds)} of ${num(p.seeds_total)}`);
        add('Peers', `${num(p.peers)} of ${num(p.peers_total)}`);
        add('Wasted', size(p.total_wasted));
        add('Time active', duration(p.time_elapsed));
        add('Seeding time', duration(p.seeding_time));
        add('ETA', duration(p.eta));
        add('Next announce', duration(p.reannounce));
        add('Added', date(p.addition_date));
        add('Completed', date(p.completion_date));
        add('Created', date(p.creation_date) + (p.created_by ? ' by ' + p.created_by : ''));
        add('Comment', p.comment || '');
        add('Category', t.category || '');
        add('Tags', tagsOf(t).join(', '));
        add('Info-hash v1', p.infohash_v1 || t.infohash_v1 || h);
        if (p.infohash_v2 || t.infohash_v2) add('Info-hash v2', p.infohash_v2 || t.infohash_v2);
        node = dl;
      } else if (tab === 'files') {
        const files = await callJson('torrents/files', { hash: h });
        node = files.length
          ? table(['Name', 'Size', 'Progress', 'Priority'], files.map((f) => [f.name, size(f.size), meter(f.progress), PRIORITY[f.priority] ?? String(f.priority)]), 'files')
          : el('p', { class: 'hint', text: 'No file list yet (the metadata has not arrived).' });
      } else if (tab === 'trackers') {
        const trs = await callJson('torrents/trackers', { hash: h });
        node = table(['URL', 'Status', 'Tier', 'Peers', 'Seeds', 'Leechers', 'Downloaded', 'Message'],
          trs.map((t) => [t.url, TRACKER_STATUS[t.status] ?? String(t.status), t.tier < 0 ? '' : t.tier,
            num(t.num_peers), num(t.num_seeds), num(t.num_leeches), num(t.num_downloaded), t.msg]), 'trackers');
      } else {
        const d = await callJson('sync/torrentPeers', { hash: h, rid: 0 }, { get: true });
        const peers = Object.entries((d && d.peers) || {});
        node = peers.length
          ? table(['Address', 'Client', 'Flags', 'Progress', 'Down', 'Up', 'Downloaded', 'Uploaded'],
            peers.map(([k, p]) => [k, p.client || '', p.flags || '', meter(p.progress), rate(p.dl_speed), rate(p.up_speed), size(p.downloaded), size(p.uploaded)]), 'peers')
          : el('p', { class: 'hint', text: 'No peers connected.' });
      }
    } catch (e) {
      if (e.status === 404) node = el('p', { class: 'hint', text: 'This torrent is gone.' });
      else node = el('p', { class: 'error', text: `Could not load ${tab}: ${e.message}` });
    }
    // Only the latest request for the current selection and tab may draw.
    if (gen === S.detailsGen && S.running) {
      body.replaceChildren(node);
      body.dataset.hash = h;
      body.dataset.tab = tab;
      S.detailsTimer = setTimeout(loadDetails, DETAILS_MS);
    }
  }

  // ---------------------------------------------------------------------------------------
  // wiring

  function init() {
    renderHead();
    $('login-form').addEventListener('submit', login);
    $('btn-logout').addEventListener('click', logout);
    $('btn-add').addEventListener('click', openAdd);
    $('btn-start').addEventListener('click', () => act('start'));
    $('btn-stop').addEventListener('click', () => act('stop'));
    $('btn-recheck').addEventListener('click', () => act('recheck'));
    $('btn-remove').addEventListener('click', openRemove);
    $('add-form').addEventListener('submit', submitAdd);
    $('add-cancel').addEventListener('click', () => $('add-dialog').close());
    $('remove-form').addEventListener('submit', submitRemove);
    $('remove-cancel').addEventListener('click', () => $('remove-dialog').close());
    $('search').addEventListener('input', (ev) => { S.search = ev.target.value; render(); });
    for (const b of document.querySelectorAll('#details [role=tab]')) {
      b.addEventListener('click', () => showTab(b.dataset.tab));
    }
    $('torrents').tabIndex = 0;
    document.addEventListener('keydown', onKey);
    // A session may already exist (a reload): try it, else show the login form.
    start().catch((e) => showLogin(e.status === 403 || e.status === 401 ? '' : 'Server unreachable: ' + e.message));
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
