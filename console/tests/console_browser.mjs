#!/usr/bin/env node
// Browser test of the Ferry operator console: drags a VM card onto another host card in a real
// (headless) Chromium and waits until the console shows the VM running there.
//
//   node console/tests/console_browser.mjs --url http://127.0.0.1:PORT/?token=TOKEN \
//        --vm kv0 --to h2 --screenshot OUT.png [--timeout-s 90] [--chromium /usr/bin/chromium]
//
// Prints JSON lines (what it sees, then a final {"ok":true,...}); exits 0 on success, 1 on any
// failure (after printing the reason and saving OUT-failed.png when a page was open), 2 on bad
// arguments. Every step is bounded in time; the browser is always closed.

import { createRequire } from 'node:module';
import path from 'node:path';
import fs from 'node:fs';

const require = createRequire(import.meta.url);

function usage(msg) {
  if (msg) console.error(`console_browser: ${msg}`);
  console.error('usage: node console/tests/console_browser.mjs --url URL --vm VM --to HOST --screenshot OUT.png [--timeout-s 90] [--chromium PATH]');
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { timeoutS: 90, chromium: process.env.CHROMIUM || '/usr/bin/chromium' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const eq = a.indexOf('=');
    const key = eq > 0 ? a.slice(0, eq) : a;
    const val = () => {
      if (eq > 0) return a.slice(eq + 1);
      if (i + 1 >= argv.length) usage(`${key} needs a value`);
      return argv[++i];
    };
    switch (key) {
      case '--url': opts.url = val(); break;
      case '--vm': opts.vm = val(); break;
      case '--to': opts.to = val(); break;
      case '--screenshot': opts.screenshot = val(); break;
      case '--timeout-s': opts.timeoutS = Number(val()); break;
      case '--chromium': opts.chromium = val(); break;
      case '-h': case '--help': usage(); break;
      default: usage(`unknown argument ${a}`);
    }
  }
  if (!opts.url || !opts.vm || !opts.to || !opts.screenshot) usage('--url, --vm, --to and --screenshot are required');
  if (!Number.isFinite(opts.timeoutS) || opts.timeoutS <= 0) usage('--timeout-s must be a positive number');
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const t0 = Date.now();
const deadline = t0 + opts.timeoutS * 1000;
const remaining = (capMs = Infinity) => Math.max(1000, Math.min(capMs, deadline - Date.now()));
const emit = (obj) => console.log(JSON.stringify(obj));
const failedPath = (p) => (p.toLowerCase().endsWith('.png') ? p.slice(0, -4) + '-failed.png' : p + '-failed.png');
const cssStr = (s) => JSON.stringify(String(s));   // quoted attribute value for selectors

let browser = null;
let page = null;
let finished = false;

async function closeBrowser() {
  if (!browser) return;
  const b = browser;
  browser = null;
  await Promise.race([b.close().catch(() => {}), new Promise((r) => setTimeout(r, 10000))]);
}

// Last-resort watchdog: whatever hangs, the process ends shortly after the deadline.
const watchdog = setTimeout(async () => {
  if (finished) return;
  emit({ ok: false, error: `watchdog: no result within ${opts.timeoutS}s + 30s grace` });
  const b = browser;
  browser = null;
  if (b) { try { b.close().catch(() => {}); } catch (_) { /* ignore */ } }
  setTimeout(() => process.exit(1), 3000).unref();
}, opts.timeoutS * 1000 + 30000);
watchdog.unref();

async function snapshot(file) {
  if (!page) return null;
  try {
    fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    await page.screenshot({ path: file, fullPage: true, timeout: 15000 });
    return file;
  } catch (e) {
    emit({ note: 'screenshot failed', file, error: String(e && e.message || e).split('\n')[0] });
    return null;
  }
}

// What the page shows now: host cards and VM cards, read from the DOM.
async function readPage() {
  return page.evaluate(() => {
    const txt = (el) => (el ? el.textContent.trim() : null);
    const hosts = [...document.querySelectorAll('section.host[data-host]')].map((s) => ({
      name: s.dataset.host,
      health: txt(s.querySelector('[data-f="health"]')),
      cpu: txt(s.querySelector('[data-f="cpu"]')),
      mem: txt(s.querySelector('[data-f="mem"]')),
      vms: [...s.querySelectorAll('.vm[data-vm]')].map((v) => v.dataset.vm),
    }));
    const vms = [...document.querySelectorAll('.vm[data-vm]')].map((v) => {
      const host = v.closest('section.host[data-host]');
      return {
        name: v.dataset.vm,
        host: host ? host.dataset.host : '',
        state: txt(v.querySelector('[data-f="state"]')),
        generation: txt(v.querySelector('[data-f="gen"]')),
        protection: txt(v.querySelector('[data-f="prot"]')),
      };
    });
    return {
      cluster: txt(document.querySelector('#cluster-name')),
      quorum: txt(document.querySelector('#quorum-badge')),
      status: txt(document.querySelector('#status-line')),
      hosts,
      vms,
    };
  });
}

async function fetchCluster(base) {
  const url = new URL('/api/cluster', base);
  let res;
  try {
    // Every /api/ route needs the token, reads too (the console checks it before anything else).
    const token = new URL(base).searchParams.get('token') || '';
    res = await fetch(url, { headers: { Authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(remaining(10000)) });
  } catch (e) {
    const why = (e && e.cause && (e.cause.code || e.cause.message)) || (e && e.name === 'TimeoutError' ? 'timed out' : String(e && e.message || e));
    throw new Error(`cannot reach ${url.origin}/api/cluster: ${why}`);
  }
  if (!res.ok) throw new Error(`GET /api/cluster: HTTP ${res.status}`);
  return res.json();
}

async function main() {
  let chromium;
  try {
    ({ chromium } = require('playwright-core'));
  } catch (e) {
    throw new Error('playwright-core is not installed: run `npm ci` (or `npm install`) in console/');
  }
  if (!fs.existsSync(opts.chromium)) {
    throw new Error(`no Chromium at ${opts.chromium}: apt-get install chromium (or pass --chromium PATH)`);
  }

  // The server's own view, to know which host cards must appear.
  const cluster = await fetchCluster(opts.url);
  const hostNames = (cluster.hosts || []).map((h) => h.name);
  const apiVm = (cluster.vms || []).find((v) => v.name === opts.vm);
  emit({ step: 'api', cluster: cluster.cluster, quorate: cluster.quorate, hosts: hostNames,
    vms: (cluster.vms || []).map((v) => ({ name: v.name, host: v.host, state: v.state })) });
  if (!hostNames.includes(opts.to)) throw new Error(`the server lists no host ${opts.to} (hosts: ${hostNames.join(', ')})`);
  if (!apiVm) throw new Error(`the server lists no VM ${opts.vm}`);
  if (apiVm.host === opts.to) throw new Error(`${opts.vm} already runs on ${opts.to}: nothing to move`);

  browser = await chromium.launch({
    executablePath: opts.chromium,
    headless: true,
    timeout: remaining(60000),
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
  page = await context.newPage();
  page.setDefaultTimeout(30000);
  const consoleErrors = [];
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push('pageerror: ' + String(e && e.message || e)));

  await page.goto(opts.url, { waitUntil: 'domcontentloaded', timeout: remaining(30000) });

  // Every host card and the VM card.
  const hostSel = (h) => `section.host[data-host=${cssStr(h)}]`;
  const vmSel = `.vm[data-vm=${cssStr(opts.vm)}]`;
  try {
    await page.waitForFunction(([names, vmS]) =>
      names.every((n) => document.querySelector(`section.host[data-host="${CSS.escape(n)}"]`)) &&
      !!document.querySelector(vmS), [hostNames, vmSel], { timeout: remaining(30000), polling: 200 });
  } catch (e) {
    throw new Error(`the page did not list every host (${hostNames.join(', ')}) and ${opts.vm} in time`);
  }
  const before = await readPage();
  emit({ step: 'seen', cluster: before.cluster, quorum: before.quorum, hosts: before.hosts });
  emit({ step: 'seen', vms: before.vms });
  const from = (before.vms.find((v) => v.name === opts.vm) || {}).host || '';
  if (from === opts.to) throw new Error(`${opts.vm} is already shown on ${opts.to}`);
  if (consoleErrors.length) emit({ step: 'console-errors', errors: consoleErrors.slice(0, 10) });

  // Drag the VM card onto the target host card (real HTML5 drag and drop in Chromium).
  const tDrag = Date.now();
  await page.locator(vmSel).dragTo(page.locator(hostSel(opts.to)), { timeout: remaining(20000) });
  emit({ step: 'dragged', vm: opts.vm, from, to: opts.to, status: await page.locator('#status-line').textContent({ timeout: 5000 }) });

  // Wait until the VM card sits in the target host card.
  try {
    await page.locator(`${hostSel(opts.to)} ${vmSel}`).waitFor({ state: 'attached', timeout: remaining() });
  } catch (e) {
    const now = await readPage().catch(() => null);
    const where = now ? (now.vms.find((v) => v.name === opts.vm) || {}).host : '?';
    throw new Error(`${opts.vm} did not appear on ${opts.to} within ${opts.timeoutS}s (shown on ${where || 'no host'}; status line: ${now ? now.status : '?'})`);
  }
  const landedMs = Date.now() - tDrag;

  // Give the moves panel a moment to show the final figures (not required to pass).
  let finalFigures = null;
  try {
    const done = page.locator(`#moves [data-move-done=${cssStr(opts.vm)}]`).filter({ hasText: 'downtime' });
    await done.first().waitFor({ state: 'visible', timeout: Math.min(5000, Math.max(0, deadline - Date.now())) || 1 });
    finalFigures = (await done.first().innerText({ timeout: 2000 })).replace(/\s+/g, ' ').trim();
  } catch (_) { /* the panel may not have the history record yet */ }

  const after = await readPage();
  emit({ step: 'after', hosts: after.hosts });
  await page.waitForTimeout(300);   // let the chart and bars settle before the picture
  const shot = await snapshot(opts.screenshot);
  if (!shot) throw new Error(`could not write the screenshot ${opts.screenshot}`);
  finished = true;
  emit({ ok: true, vm: opts.vm, from, to: opts.to, landed_ms: landedMs, total_ms: Date.now() - t0,
    moves_panel: finalFigures, status: after.status, screenshot: shot,
    console_errors: consoleErrors.slice(0, 10) });
}

let code = 0;
try {
  await main();
} catch (e) {
  code = 1;
  finished = true;
  const reason = String(e && e.message || e).split('\n')[0];
  const shot = await snapshot(failedPath(opts.screenshot));
  emit({ ok: false, error: reason, screenshot: shot, elapsed_ms: Date.now() - t0 });
} finally {
  await closeBrowser();
  clearTimeout(watchdog);
}
process.exit(code);
