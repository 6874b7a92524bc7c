// Ferry operator console: front end.
// Plain browser JavaScript, no build step. Talks to `ferry console`:
//   GET  /api/cluster                      (polled every 500 ms)
//   POST /api/move     {"vm","to"}
//   POST /api/evacuate {"host"}
//   POST /api/drill    {"fault","target"}
// POSTs carry "Authorization: Bearer <token>"; the token comes from ?token=... in the URL,
// from localStorage, or from the token box in the header.
'use strict';

(() => {
  const POLL_MS = 500;
  const FETCH_TIMEOUT_MS = 4000;
  const TOKEN_KEY = 'ferry.console.token';
  const HISTORY_ROWS = 50;
  const DONE_SHOW_MS = 60000;       // how long a finished move stays in the moves panel
  const DONE_WAIT_MS = 15000;       // how long to wait for a finished move's history record
  const KIND_COLORS = { migration: '#3b82f6', failover: '#f59e0b', drill: '#ef4444' };

  // ------------------------------------------------------------------ state
  const state = {
    token: '',
    data: null,            // last /api/cluster reply
    dragging: null,        // {vm, from} while a drag is in progress
    pendingMoves: new Map(), // vm -> {to, t} requested here, not yet seen as a move
    tracked: new Map(),    // vm -> {to, from, baseline, started, ended, final}
    chart: null,
    chartSig: '',
    historySig: '',
    drillTargetsSig: '',
    armedEvacuate: null,   // {host, until}
    drillWasRunning: false,
    hostsDirty: false,
  };

  const $ = (sel, root = document) => root.querySelector(sel);

  // ------------------------------------------------------------------ helpers
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === null || v === undefined || v === false) continue;
        if (k === 'class') el.className = v;
        else if (k === 'style') el.style.cssText = v;   // CSSOM: allowed under a strict CSP
        else if (k === 'text') el.textContent = v;
        else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
        else el.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function setText(el, text) {
    const s = String(text);
    if (el && el.textContent !== s) el.textContent = s;
  }

  function setClass(el, cls) {
    if (el && el.className !== cls) el.className = cls;
  }

  const isNum = (v) => typeof v === 'number' && Number.isFinite(v);

  function fmtNum(v, digits = 1) {
    if (!isNum(v)) return '–';
    if (Math.abs(v) >= 100 || Number.isInteger(v)) return Math.round(v).toLocaleString('en-US');
    return v.toFixed(digits);
  }

  function fmtBytes(v) {
    if (!isNum(v)) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    let x = v;
    while (Math.abs(x) >= 1024 && i < units.length - 1) { x /= 1024; i++; }
    return (i === 0 ? String(Math.round(x)) : x.toFixed(x >= 100 ? 0 : 1)) + ' ' + units[i];
  }

  function fmtRate(v) {
    if (!isNum(v)) return '–';
    const units = ['B/s', 'kB/s', 'MB/s', 'GB/s'];
    let i = 0;
    let x = v;
    while (Math.abs(x) >= 1000 && i < units.length - 1) { x /= 1000; i++; }
    return (i === 0 ? String(Math.round(x)) : x.toFixed(x >= 100 ? 0 : 1)) + ' ' + units[i];
  }

  function fmtMBps(v) {
    if (!isNum(v)) return '–';
    return (v / 1e6).toFixed(v >= 1e8 ? 0 : 1) + ' MB/s';
  }

  function fmtMs(v) {
    if (!isNum(v)) return '–';
    return (v >= 100 ? Math.round(v) : v.toFixed(1)) + ' ms';
  }

  function fmtTime(tms) {
    if (!isNum(tms)) return '–';
    const d = new Date(tms);
    const p = (n, w = 2) => String(n).padStart(w, '0');
    return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }

  function pct(v) {
    return isNum(v) ? Math.max(0, Math.min(100, v)) : 0;
  }

  // ------------------------------------------------------------------ token
  function initToken() {
    const params = new URLSearchParams(location.search);
    const fromUrl = params.get('token');
    let stored = '';
    try { stored = localStorage.getItem(TOKEN_KEY) || ''; } catch (_) { /* storage off */ }
    state.token = fromUrl || stored || '';
    if (fromUrl) {
      try { localStorage.setItem(TOKEN_KEY, fromUrl); } catch (_) { /* ignore */ }
    }
    const input = $('#token-input');
    input.value = state.token;
    $('#token-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      state.token = input.value.trim();
      try {
        if (state.token) localStorage.setItem(TOKEN_KEY, state.token);
        else localStorage.removeItem(TOKEN_KEY);
      } catch (_) { /* ignore */ }
      status(state.token ? 'Action token set.' : 'Action token cleared: actions will be refused.',
        state.token ? 'ok' : 'warn');
    });
  }

  // ------------------------------------------------------------------ status line
  let statusTimer = null;
  function status(msg, kind = 'info', sticky = false) {
    const el = $('#status-line');
    el.textContent = msg;
    el.className = 'status-line status-' + kind;
    el.dataset.kind = kind;
    if (statusTimer) clearTimeout(statusTimer);
    statusTimer = null;
    if (!sticky && kind !== 'error') {
      statusTimer = setTimeout(() => {
        if (el.textContent === msg) el.className = 'status-line status-idle';
      }, 15000);
    }
  }

  // ------------------------------------------------------------------ HTTP
  async function fetchJson(url, opts = {}) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    try {
      const res = await fetch(url, { ...opts, signal: ctl.signal, cache: 'no-store' });
      let body = null;
      const text = await res.text();
      try { body = text ? JSON.parse(text) : null; } catch (_) { body = { error: text.trim() }; }
      return { status: res.status, ok: res.ok, body };
    } finally {
      clearTimeout(timer);
    }
  }

  async function post(path, payload, what) {
    if (!state.token) {
      status(`${what}: no action token. Open the console with ?token=... or paste the token in the box at the top right.`, 'error');
      return false;
    }
    let r;
    try {
      r = await fetchJson(path, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'Authorization': 'Bearer ' + state.token },
        body: JSON.stringify(payload),
      });
    } catch (e) {
      status(`${what}: request failed (${e.name === 'AbortError' ? 'timed out' : e.message}).`, 'error');
      return false;
    }
    if (r.status === 401 || r.status === 403) {
      status(`${what}: not authorized (HTTP ${r.status}). The action token is missing or wrong: paste the right one in the token box at the top right.`, 'error');
      return false;
    }
    const body = r.body || {};
    if (!r.ok || body.ok === false) {
      status(`${what}: refused (HTTP ${r.status})${body.error ? ': ' + body.error : ''}`, 'error');
      return false;
    }
    status(`${what}: accepted.`, 'ok');
    return true;
  }

  // ------------------------------------------------------------------ polling
  let consecutiveFailures = 0;
  async function poll() {
    const started = performance.now();
    try {
      const headers = state.token ? { 'Authorization': 'Bearer ' + state.token } : {};
      const r = await fetchJson('/api/cluster', { headers });
      if (!r.ok || !r.body || !Array.isArray(r.body.hosts)) {
        throw new Error(`HTTP ${r.status}${r.body && r.body.error ? ': ' + r.body.error : ''}`);
      }
      if (consecutiveFailures > 0) status('Connection to the console server restored.', 'ok');
      else if (!state.data && state.token) status(`Connected to cluster ${r.body.cluster || ''} (seen from ${r.body.seen_from || '?'}).`, 'ok');
      consecutiveFailures = 0;
      setClass($('#conn'), 'conn conn-ok');
      $('#conn').title = 'connected: last update ' + new Date().toLocaleTimeString();
      state.data = r.body;
      render();
    } catch (e) {
      consecutiveFailures++;
      setClass($('#conn'), 'conn conn-bad');
      if (consecutiveFailures === 1 || consecutiveFailures % 10 === 0) {
        status(`Cannot read cluster state: ${e.name === 'AbortError' ? 'timed out' : e.message}. Retrying…`, 'error');
      }
    } finally {
      const wait = Math.max(50, POLL_MS - (performance.now() - started));
      setTimeout(poll, wait);
    }
  }

  // ------------------------------------------------------------------ render
  function render() {
    const d = state.data;
    if (!d) return;
    renderHeader(d);
    updateTracking(d);
    if (state.dragging) state.hostsDirty = true;   // never touch the host cards mid-drag
    else renderHosts(d);
    renderMoves(d);
    renderDrill(d);
    renderHistory(d);
  }

  function renderHeader(d) {
    setText($('#cluster-name'), d.cluster || '(unnamed cluster)');
    setText($('#seen-from'), d.seen_from || '–');
    const q = $('#quorum-badge');
    setText(q, d.quorate ? 'quorate' : 'NO QUORUM');
    setClass(q, 'badge ' + (d.quorate ? 'badge-ok' : 'badge-bad'));
    const members = Array.isArray(d.members) ? d.members : [];
    setText($('#members'), members.length ? members.join(', ') : 'none');
    document.title = `Ferry · ${d.cluster || 'console'}${d.quorate ? '' : ' · NO QUORUM'}`;
  }

  function hostHealth(host, d) {
    if (host.member === false) return 'down';
    const hh = String(host.health || 'ok');
    if (!d.quorate && hh === 'ok') return 'no-quorum';
    return hh;
  }

  function buildHostCard(name) {
    const sec = h('section', { class: 'host card', 'data-host': name },
      h('div', { class: 'host-head' },
        h('div', { class: 'host-title' },
          h('span', { class: 'host-name', text: name }),
          h('span', { class: 'badge', 'data-f': 'health' })),
        h('button', { class: 'btn btn-small btn-warn', type: 'button', 'data-evacuate': name, text: 'Evacuate' })),
      h('div', { class: 'host-sub', 'data-f': 'sub' }),
      h('div', { class: 'meter' },
        h('span', { class: 'meter-label', text: 'CPU' }),
        h('div', { class: 'bar' }, h('div', { class: 'bar-fill', 'data-f': 'cpu-bar' })),
        h('span', { class: 'meter-val', 'data-f': 'cpu' })),
      h('div', { class: 'meter' },
        h('span', { class: 'meter-label', text: 'Mem' }),
        h('div', { class: 'bar' }, h('div', { class: 'bar-fill', 'data-f': 'mem-bar' })),
        h('span', { class: 'meter-val', 'data-f': 'mem' })),
      h('div', { class: 'host-mig' },
        h('span', { class: 'muted', text: 'migration bandwidth ' }),
        h('strong', { 'data-f': 'mig' })),
      h('div', { class: 'vm-list', 'data-f': 'vms' }),
      h('div', { class: 'drop-hint', text: 'Drop to move here' }));

    sec.addEventListener('dragover', onHostDragOver);
    sec.addEventListener('dragenter', onHostDragOver);
    sec.addEventListener('dragleave', onHostDragLeave);
    sec.addEventListener('drop', onHostDrop);
    $('[data-evacuate]', sec).addEventListener('click', () => onEvacuate(name));
    return sec;
  }

  function buildVmCard(name) {
    const el = h('div', { class: 'vm', draggable: 'true', 'data-vm': name },
      h('div', { class: 'vm-head' },
        h('span', { class: 'vm-name', text: name }),
        h('span', { class: 'badge', 'data-f': 'state' })),
      h('div', { class: 'vm-moving', 'data-f': 'moving', hidden: true }),
      h('dl', { class: 'vm-stats' },
        h('dt', { text: 'gen' }), h('dd', { 'data-f': 'gen' }),
        h('dt', { text: 'vCPUs' }), h('dd', { 'data-f': 'vcpus' }),
        h('dt', { text: 'mem' }), h('dd', { 'data-f': 'mem' }),
        h('dt', { text: 'CPU' }), h('dd', { 'data-f': 'cpu' }),
        h('dt', { text: 'dirty' }), h('dd', { 'data-f': 'dirty' }),
        h('dt', { text: 'disk' }), h('dd', { 'data-f': 'disk' }),
        h('dt', { text: 'net' }), h('dd', { 'data-f': 'net' })),
      h('div', { class: 'vm-prot', 'data-f': 'prot' }));
    el.addEventListener('dragstart', onVmDragStart);
    el.addEventListener('dragend', onVmDragEnd);
    return el;
  }

  const field = (root, f) => root.querySelector(`[data-f="${f}"]`);

  function renderHosts(d) {
    state.hostsDirty = false;
    const container = $('#hosts');
    const hosts = d.hosts || [];
    const vms = d.vms || [];
    const wanted = new Set(hosts.map((x) => x.name));

    // Remove host cards that are gone.
    for (const sec of [...container.querySelectorAll('section.host[data-host]')]) {
      if (!wanted.has(sec.dataset.host)) sec.remove();
    }
    // Create / order / update host cards.
    let prev = null;
    for (const host of hosts) {
      let sec = container.querySelector(`section.host[data-host="${CSS.escape(host.name)}"]`);
      if (!sec) sec = buildHostCard(host.name);
      const expectedPos = prev ? prev.nextElementSibling : container.firstElementChild;
      if (expectedPos !== sec) container.insertBefore(sec, expectedPos);
      prev = sec;
      updateHostCard(sec, host, d);
    }

    // Unplaced VMs (host "" or a host that is not listed).
    const unplaced = vms.filter((v) => !v.host || !wanted.has(v.host));
    let un = container.querySelector('section.unplaced');
    if (unplaced.length) {
      if (!un) {
        un = h('section', { class: 'unplaced card' },
          h('div', { class: 'host-head' }, h('span', { class: 'host-name', text: 'Not running' })),
          h('div', { class: 'host-sub', text: 'VMs that no host is running now' }),
          h('div', { class: 'vm-list', 'data-f': 'vms' }));
      }
      container.append(un);
    } else if (un) {
      un.remove();
      un = null;
    }

    // Place VM cards (moving existing nodes keeps them stable).
    const byName = new Map();
    for (const el of document.querySelectorAll('.vm[data-vm]')) byName.set(el.dataset.vm, el);
    const seen = new Set();
    const listFor = (v) => {
      if (v.host && wanted.has(v.host)) {
        return field(container.querySelector(`section.host[data-host="${CSS.escape(v.host)}"]`), 'vms');
      }
      return un ? field(un, 'vms') : null;
    };
    const lastInList = new Map();
    for (const v of vms) {
      seen.add(v.name);
      let el = byName.get(v.name);
      if (!el) el = buildVmCard(v.name);
      const list = listFor(v);
      if (!list) continue;
      const after = lastInList.get(list) || null;
      const expected = after ? after.nextElementSibling : list.firstElementChild;
      if (el.parentElement !== list || expected !== el) list.insertBefore(el, expected);
      lastInList.set(list, el);
      updateVmCard(el, v);
    }
    for (const [name, el] of byName) if (!seen.has(name)) el.remove();
    // Empty placeholders.
    for (const sec of container.querySelectorAll('section.host')) {
      const list = field(sec, 'vms');
      sec.classList.toggle('empty-host', list.children.length === 0);
    }
  }

  function updateHostCard(sec, host, d) {
    const health = hostHealth(host, d);
    const badge = field(sec, 'health');
    setText(badge, health);
    setClass(badge, 'badge ' + ({ ok: 'badge-ok', down: 'badge-bad', evacuating: 'badge-warn', 'no-quorum': 'badge-bad' }[health] || 'badge-warn'));
    sec.classList.toggle('host-down', health === 'down');
    sec.classList.toggle('host-evacuating', health === 'evacuating');

    const bits = [];
    if (host.address) bits.push(host.address);
    if (isNum(host.cpus)) bits.push(`${host.cpus} CPU${host.cpus === 1 ? '' : 's'}`);
    if (isNum(host.mem_total_bytes)) bits.push(fmtBytes(host.mem_total_bytes) + ' RAM');
    if (host.member === false) bits.push('not a member');
    setText(field(sec, 'sub'), bits.join(' · '));

    const cpu = pct(host.cpu_pct);
    field(sec, 'cpu-bar').style.width = cpu + '%';
    setClass(field(sec, 'cpu-bar'), 'bar-fill ' + levelClass(cpu));
    setText(field(sec, 'cpu'), isNum(host.cpu_pct) ? host.cpu_pct.toFixed(1) + ' %' : '–');

    let memPct = host.mem_pct;
    if (!isNum(memPct) && isNum(host.mem_used_bytes) && host.mem_total_bytes > 0) {
      memPct = 100 * host.mem_used_bytes / host.mem_total_bytes;
    }
    const mem = pct(memPct);
    field(sec, 'mem-bar').style.width = mem + '%';
    setClass(field(sec, 'mem-bar'), 'bar-fill ' + levelClass(mem));
    setText(field(sec, 'mem'), isNum(memPct) ? memPct.toFixed(1) + ' %' : '–');
    field(sec, 'mem').parentElement.title = isNum(host.mem_used_bytes)
      ? `${fmtBytes(host.mem_used_bytes)} of ${fmtBytes(host.mem_total_bytes)}` : '';

    setText(field(sec, 'mig'), fmtMBps(host.migration_bytes_per_s));
    const btn = $('[data-evacuate]', sec);
    const armed = state.armedEvacuate && state.armedEvacuate.host === host.name && state.armedEvacuate.until > Date.now();
    setText(btn, armed ? 'Confirm evacuate' : 'Evacuate');
    btn.classList.toggle('armed', !!armed);
    btn.disabled = host.member === false;
  }

  function levelClass(p) {
    return p >= 90 ? 'lvl-high' : p >= 70 ? 'lvl-mid' : 'lvl-low';
  }

  function updateVmCard(el, v) {
    const st = field(el, 'state');
    const s = String(v.state || 'unknown');
    setText(st, s);
    setClass(st, 'badge ' + (s === 'running' ? 'badge-ok' : /fail|dead|lost|crash|stop/.test(s) ? 'badge-bad' : 'badge-warn'));
    setText(field(el, 'gen'), isNum(v.generation) ? v.generation : '–');
    setText(field(el, 'vcpus'), isNum(v.vcpus) ? v.vcpus : '–');
    setText(field(el, 'mem'), fmtBytes(v.mem_bytes));
    setText(field(el, 'cpu'), isNum(v.cpu_pct) ? v.cpu_pct.toFixed(1) + ' %' : '–');
    setText(field(el, 'dirty'), isNum(v.dirty_pages_per_s) ? fmtNum(v.dirty_pages_per_s) + ' pg/s' : '–');
    setText(field(el, 'disk'), fmtRate(v.disk_bytes_per_s));
    setText(field(el, 'net'), fmtRate(v.net_bytes_per_s));

    const p = v.protection;
    const prot = field(el, 'prot');
    if (p && typeof p === 'object') {
      const ps = String(p.state || 'unknown');
      const parts = [`protection: ${ps}`];
      if (p.standby_host) parts.push(`standby ${p.standby_host}`);
      if (isNum(p.lag_ms)) parts.push(`lag ${fmtMs(p.lag_ms)}`);
      setText(prot, parts.join(' · '));
      setClass(prot, 'vm-prot ' + (ps === 'protected' ? 'prot-ok' : 'prot-warn'));
    } else {
      setText(prot, 'unprotected');
      setClass(prot, 'vm-prot prot-none');
    }

    const moving = field(el, 'moving');
    const pend = state.pendingMoves.get(v.name);
    if (v.move) {
      moving.hidden = false;
      setText(moving, `moving → ${v.move.to || '?'} (${v.move.phase || '…'})`);
    } else if (pend) {
      moving.hidden = false;
      setText(moving, `move to ${pend.to} requested…`);
    } else {
      moving.hidden = true;
    }
    el.classList.toggle('vm-in-move', !!(v.move || pend));
    el.title = `${v.name} on ${v.host || 'no host'}: drag onto another host to live-migrate`;
  }

  // ------------------------------------------------------------------ drag and drop
  function onVmDragStart(ev) {
    const el = ev.currentTarget;
    const vm = el.dataset.vm;
    const v = (state.data && state.data.vms || []).find((x) => x.name === vm);
    state.dragging = { vm, from: v ? v.host : '' };
    ev.dataTransfer.setData('text/plain', vm);
    ev.dataTransfer.effectAllowed = 'move';
    el.classList.add('dragging');
    document.body.classList.add('is-dragging');
  }

  function onVmDragEnd(ev) {
    ev.currentTarget.classList.remove('dragging');
    document.body.classList.remove('is-dragging');
    clearDropHighlights();
    state.dragging = null;
    if (state.hostsDirty && state.data) renderHosts(state.data);
  }

  function clearDropHighlights() {
    for (const s of document.querySelectorAll('section.host.drop-target, section.host.drop-same')) {
      s.classList.remove('drop-target', 'drop-same');
    }
  }

  function onHostDragOver(ev) {
    const sec = ev.currentTarget;
    const types = ev.dataTransfer ? Array.from(ev.dataTransfer.types || []) : [];
    if (!state.dragging && !types.includes('text/plain')) return;
    ev.preventDefault();
    const same = state.dragging && state.dragging.from === sec.dataset.host;
    ev.dataTransfer.dropEffect = same ? 'none' : 'move';
    for (const s of document.querySelectorAll('section.host.drop-target, section.host.drop-same')) {
      if (s !== sec) s.classList.remove('drop-target', 'drop-same');
    }
    sec.classList.toggle('drop-target', !same);
    sec.classList.toggle('drop-same', !!same);
  }

  function onHostDragLeave(ev) {
    const sec = ev.currentTarget;
    if (ev.relatedTarget && sec.contains(ev.relatedTarget)) return;
    sec.classList.remove('drop-target', 'drop-same');
  }

  function onHostDrop(ev) {
    ev.preventDefault();
    const sec = ev.currentTarget;
    const to = sec.dataset.host;
    const vm = (ev.dataTransfer && ev.dataTransfer.getData('text/plain')) || (state.dragging && state.dragging.vm);
    clearDropHighlights();
    if (!vm) return;
    const v = (state.data && state.data.vms || []).find((x) => x.name === vm);
    if (!v) { status(`Move: unknown VM "${vm}".`, 'error'); return; }
    if (v.host === to) return;  // dropped back on its own host: nothing to do
    requestMove(vm, to, v.host);
  }

  async function requestMove(vm, to, from) {
    status(`Moving ${vm} → ${to}: sending request…`, 'info', true);
    const baseline = latestHistoryT(vm);
    state.pendingMoves.set(vm, { to, t: Date.now() });
    if (state.data) render();
    const ok = await post('/api/move', { vm, to }, `Move ${vm} → ${to}`);
    if (!ok) {
      state.pendingMoves.delete(vm);
    } else {
      status(`Move ${vm} → ${to}: accepted, migrating…`, 'ok');
      const cur = state.tracked.get(vm);
      if (!cur || cur.ended) {
        state.tracked.set(vm, { to, from: from || '', baseline, started: Date.now(), ended: null, final: null, seenMove: false });
      }
    }
    if (state.data) render();
  }

  // ------------------------------------------------------------------ evacuate
  async function onEvacuate(host) {
    const now = Date.now();
    if (!state.armedEvacuate || state.armedEvacuate.host !== host || state.armedEvacuate.until < now) {
      state.armedEvacuate = { host, until: now + 5000 };
      status(`Click "Confirm evacuate" within 5 s to live-migrate every VM off ${host}.`, 'warn');
      if (state.data && !state.dragging) renderHosts(state.data);
      return;
    }
    state.armedEvacuate = null;
    if (state.data && !state.dragging) renderHosts(state.data);
    await post('/api/evacuate', { host }, `Evacuate ${host}`);
  }

  // ------------------------------------------------------------------ moves panel
  function latestHistoryT(vm) {
    let t = -Infinity;
    for (const e of (state.data && state.data.history) || []) {
      if (e.vm === vm && isNum(e.t_ms) && e.t_ms > t) t = e.t_ms;
    }
    return t;
  }

  function updateTracking(d) {
    const now = Date.now();
    const vms = d.vms || [];
    for (const v of vms) {
      if (v.move) {
        state.pendingMoves.delete(v.name);
        let tr = state.tracked.get(v.name);
        if (!tr || tr.ended) {
          tr = { to: v.move.to, from: v.host, baseline: latestHistoryT(v.name), started: now, ended: null, final: null, seenMove: true };
          state.tracked.set(v.name, tr);
        }
        tr.seenMove = true;
        tr.to = v.move.to || tr.to;
        tr.last = v.move;
      }
    }
    for (const [vm, tr] of state.tracked) {
      const v = vms.find((x) => x.name === vm);
      if (v && v.move) continue;
      // No move in flight for this VM now: it ended (or has not shown up yet).
      if (!tr.final) {
        const entries = (d.history || []).filter((e) => e.vm === vm && isNum(e.t_ms) && e.t_ms > tr.baseline);
        const mig = entries.find((e) => e.kind === 'migration') || entries[0];
        if (mig) {
          tr.final = mig;
          const gap = isNum(mig.client_gap_ms) ? `client gap ${fmtMs(mig.client_gap_ms)}` : 'client gap: not measured';
          status(`${vm} → ${mig.to || tr.to}: ${mig.kind === 'migration' ? 'migrated' : mig.kind}, downtime ${fmtMs(mig.downtime_ms)}, ${gap}.`, 'ok');
          tr.ended = tr.ended || now;
          state.pendingMoves.delete(vm);
        } else if (!tr.seenMove && v && v.host === tr.to) {
          tr.ended = tr.ended || now;  // landed before we saw it in flight; wait for history
        } else if (tr.seenMove) {
          tr.ended = tr.ended || now;
        }
      }
      if (tr.ended && now - tr.ended > DONE_SHOW_MS) state.tracked.delete(vm);
      else if (!tr.ended && now - tr.started > 5 * 60000) state.tracked.delete(vm);
    }
    for (const [vm, p] of state.pendingMoves) {
      const v = vms.find((x) => x.name === vm);
      if ((v && v.host === p.to) || now - p.t > 30000) state.pendingMoves.delete(vm);
    }
  }

  function renderMoves(d) {
    const box = $('#moves');
    const rows = [];
    for (const v of d.vms || []) {
      if (!v.move) continue;
      const m = v.move;
      const total = isNum(m.total_bytes) ? m.total_bytes : null;
      const left = isNum(m.bytes_left) ? m.bytes_left : null;
      const progress = total && total > 0 && left !== null ? Math.max(0, Math.min(1, 1 - left / total)) : null;
      rows.push(h('div', { class: 'move card-inner', 'data-move': v.name },
        h('div', { class: 'move-title' },
          h('strong', { text: `${v.name} → ${m.to || '?'}` }),
          h('span', { class: 'badge badge-info', text: m.phase || '…' }),
          h('span', { class: 'muted', text: v.host ? `from ${v.host}` : '' })),
        h('div', { class: 'bar bar-wide' + (progress === null ? ' bar-indet' : '') },
          h('div', { class: 'bar-fill lvl-info', style: `width:${progress === null ? 100 : (progress * 100).toFixed(1)}%` })),
        h('div', { class: 'move-figs' },
          fig('progress', progress === null ? '–' : (progress * 100).toFixed(1) + ' %'),
          fig('bytes left', fmtBytes(left)),
          fig('rate', fmtRate(m.rate_bytes_per_s)),
          fig('dirty rate', isNum(m.dirty_pages_per_s) ? fmtNum(m.dirty_pages_per_s) + ' pg/s' : '–'),
          fig('predicted downtime', fmtMs(m.predicted_downtime_ms)))));
    }
    // Finished (or finishing) moves tracked from this page.
    const now = Date.now();
    for (const [vm, tr] of state.tracked) {
      const v = (d.vms || []).find((x) => x.name === vm);
      if (v && v.move) continue;
      if (tr.final) {
        const e = tr.final;
        const ok = !/fail|error|abort/i.test(String(e.detail || ''));
        rows.push(h('div', { class: 'move move-done card-inner' + (ok ? '' : ' move-failed'), 'data-move-done': vm },
          h('div', { class: 'move-title' },
            h('strong', { text: `${vm} → ${e.to || tr.to}` }),
            h('span', { class: 'badge ' + (ok ? 'badge-ok' : 'badge-bad'), text: ok ? 'done' : 'ended' }),
            h('span', { class: 'muted', text: fmtTime(e.t_ms) })),
          h('div', { class: 'move-figs' },
            fig('downtime', fmtMs(e.downtime_ms)),
            fig('client gap', isNum(e.client_gap_ms) ? fmtMs(e.client_gap_ms) : 'not measured'),
            e.detail ? fig('detail', String(e.detail)) : null)));
      } else if (tr.ended || (v && v.host === tr.to)) {
        const waited = now - (tr.ended || now);
        rows.push(h('div', { class: 'move move-done card-inner', 'data-move-done': vm },
          h('div', { class: 'move-title' },
            h('strong', { text: `${vm} → ${tr.to}` }),
            h('span', { class: 'badge badge-warn', text: waited > DONE_WAIT_MS ? 'ended' : 'finishing…' })),
          h('div', { class: 'move-figs' },
            waited > DONE_WAIT_MS
              ? fig('result', v && v.host === tr.to ? `now on ${tr.to}; no history record` : `still on ${v ? v.host || 'no host' : '?'}; no history record`)
              : fig('result', 'waiting for final figures…'))));
      } else if (state.pendingMoves.has(vm)) {
        rows.push(h('div', { class: 'move card-inner', 'data-move-pending': vm },
          h('div', { class: 'move-title' },
            h('strong', { text: `${vm} → ${tr.to}` }),
            h('span', { class: 'badge badge-info', text: 'requested' }))));
      }
    }
    box.replaceChildren(...(rows.length ? rows : [h('p', { class: 'empty', text: 'No migration in progress.' })]));
  }

  function fig(label, value) {
    return h('span', { class: 'fig' }, h('span', { class: 'fig-label', text: label }), h('span', { class: 'fig-val', text: value }));
  }

  // ------------------------------------------------------------------ drill
  function initDrill() {
    $('#drill-fault').addEventListener('change', () => {
      state.drillTargetsSig = '';
      if (state.data) renderDrill(state.data);
    });
    $('#drill-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const fault = $('#drill-fault').value;
      const target = $('#drill-target').value;
      if (!target) { status('Drill: pick a target first.', 'error'); return; }
      $('#drill-run').disabled = true;
      status(`Drill ${fault} on ${target}: starting…`, 'info', true);
      await post('/api/drill', { fault, target }, `Drill ${fault} on ${target}`);
      if (state.data) renderDrill(state.data);
    });
  }

  function renderDrill(d) {
    const fault = $('#drill-fault').value;
    const names = fault === 'kill-vm'
      ? (d.vms || []).map((v) => v.name)
      : (d.hosts || []).map((x) => x.name);
    const sig = fault + '|' + names.join(',');
    const sel = $('#drill-target');
    if (sig !== state.drillTargetsSig) {
      const keep = sel.value;
      sel.replaceChildren(...names.map((n) => h('option', { value: n, text: n })));
      if (names.includes(keep)) sel.value = keep;
      state.drillTargetsSig = sig;
    }

    const drill = d.drill || {};
    const running = !!drill.running;
    if (state.drillWasRunning && !running) {
      const sc = drill.scorecard || {};
      if (drill.error) status(`Drill ended with an error: ${drill.error}`, 'error');
      else status(`Drill finished${isNum(sc.rto_ms) ? `: RTO ${fmtMs(sc.rto_ms)}` : ''}${isNum(sc.lost_writes) ? `, lost writes ${sc.lost_writes}` : ''}${typeof sc.split_brain === 'boolean' ? `, split brain ${sc.split_brain ? 'YES' : 'no'}` : ''}.`, sc.split_brain || sc.lost_writes > 0 ? 'error' : 'ok');
    }
    state.drillWasRunning = running;
    $('#drill-run').disabled = running;
    const st = $('#drill-state');
    setText(st, running ? 'running…' : (drill.scorecard ? 'idle · latest scorecard below' : 'idle'));
    setClass(st, 'drill-state' + (running ? ' running' : ''));

    const err = $('#drill-error');
    if (drill.error) {
      err.hidden = false;
      setText(err, 'error: ' + drill.error);
    } else {
      err.hidden = true;
    }

    const table = $('#drill-scorecard');
    const sc = drill.scorecard;
    if (sc && typeof sc === 'object') {
      const sig2 = JSON.stringify(sc);
      if (table.dataset.sig !== sig2) {
        table.dataset.sig = sig2;
        const rows = Object.entries(sc).map(([k, v]) => {
          let text;
          let cls = '';
          if (v === null || v === undefined) text = '–';
          else if (typeof v === 'boolean') {
            text = v ? 'yes' : 'no';
            if ((k === 'split_brain' && v) || (k === 'ok' && !v) || (k === 'passed' && !v)) cls = 'bad';
            else if (k === 'split_brain' || k === 'ok' || k === 'passed') cls = 'good';
          } else if (typeof v === 'number') {
            text = Number.isInteger(v) ? String(v) : v.toFixed(2);
            if (k === 'lost_writes') cls = v > 0 ? 'bad' : 'good';
          } else if (typeof v === 'object') text = JSON.stringify(v);
          else text = String(v);
          return h('tr', null, h('th', { text: k }), h('td', { class: cls, text }));
        });
        table.tBodies[0].replaceChildren(...rows);
      }
      table.hidden = false;
    } else {
      table.hidden = true;
      table.dataset.sig = '';
    }
  }

  // ------------------------------------------------------------------ history
  function renderHistory(d) {
    const hist = Array.isArray(d.history) ? d.history : [];
    const sig = hist.length + '|' + hist.map((e) => `${e.t_ms}:${e.kind}:${e.vm}:${e.downtime_ms}:${e.client_gap_ms}`).join(',');
    if (sig === state.historySig) return;
    state.historySig = sig;

    const sorted = hist.slice().sort((a, b) => (b.t_ms || 0) - (a.t_ms || 0));
    const tbody = $('#history-table').tBodies[0];
    const rows = sorted.slice(0, HISTORY_ROWS).map((e) => h('tr', { class: 'kind-' + (e.kind || 'other') },
      h('td', { class: 'mono', text: fmtTime(e.t_ms) }),
      h('td', null, h('span', { class: 'kind-dot', style: `background:${KIND_COLORS[e.kind] || '#94a3b8'}` }), String(e.kind || '')),
      h('td', { text: e.vm || '–' }),
      h('td', { text: `${e.from || '–'} → ${e.to || '–'}` }),
      h('td', { class: 'num', text: isNum(e.downtime_ms) ? e.downtime_ms.toFixed(1) : '–' }),
      h('td', { class: 'num', text: isNum(e.client_gap_ms) ? e.client_gap_ms.toFixed(1) : 'not measured' }),
      h('td', { class: 'detail', text: e.detail || '', title: e.detail || '' })));
    tbody.replaceChildren(...(rows.length ? rows
      : [h('tr', null, h('td', { colspan: 7, class: 'empty', text: 'No migrations, failovers or drills yet.' }))]));
    renderChart(sorted.slice().reverse());
  }

  function renderChart(events) {
    const canvas = $('#history-chart');
    if (typeof window.Chart !== 'function') {
      canvas.replaceWith(h('p', { class: 'empty', id: 'history-chart', text: 'Chart unavailable (/vendor/chart.umd.js did not load).' }));
      return;
    }
    const kinds = ['migration', 'failover', 'drill'];
    const datasets = kinds.map((k) => ({
      label: k === 'drill' ? 'drill (RTO)' : k,
      data: events.filter((e) => e.kind === k && isNum(e.t_ms) && isNum(e.downtime_ms))
        .map((e) => ({ x: e.t_ms, y: e.downtime_ms, vm: e.vm, from: e.from, to: e.to })),
      borderColor: KIND_COLORS[k],
      backgroundColor: KIND_COLORS[k] + '99',
      showLine: true,
      tension: 0.15,
      pointRadius: 4,
      pointHoverRadius: 6,
      borderWidth: 2,
    }));
    if (!state.chart) {
      state.chart = new window.Chart(canvas, {
        type: 'scatter',
        data: { datasets },
        options: {
          responsive: true,
          maintainAspectRatio: false,
          animation: false,
          parsing: false,
          interaction: { mode: 'nearest', intersect: false },
          scales: {
            x: {
              type: 'linear',
              title: { display: true, text: 'time of day', color: '#64748b' },
              ticks: { callback: (v) => fmtTime(v), maxTicksLimit: 8, color: '#64748b' },
              grid: { color: '#e2e8f0' },
            },
            y: {
              beginAtZero: true,
              title: { display: true, text: 'downtime (ms)', color: '#64748b' },
              ticks: { color: '#64748b' },
              grid: { color: '#e2e8f0' },
            },
          },
          plugins: {
            legend: { position: 'top', labels: { usePointStyle: true, boxWidth: 8 } },
            tooltip: {
              callbacks: {
                title: (items) => items.length ? fmtTime(items[0].raw.x) : '',
                label: (it) => `${it.dataset.label}: ${it.raw.vm || ''} ${it.raw.from || ''}→${it.raw.to || ''} ${it.raw.y.toFixed(1)} ms`,
              },
            },
          },
        },
      });
    } else {
      state.chart.data.datasets.forEach((ds, i) => { ds.data = datasets[i].data; });
      state.chart.update('none');
    }
  }

  // ------------------------------------------------------------------ start
  function start() {
    initToken();
    initDrill();
    if (!state.token) {
      status('No token: the console needs one even to show the cluster. Open it with ?token=... (or the read-only token) or paste a token at the top right.', 'warn', true);
    }
    poll();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
