// Drive the page in headless Chromium (playwright-core + the system's /usr/bin/chromium, never
// a downloaded browser): serve a site folder on 127.0.0.1, feed images through the page's own
// file input and decode path, read window.vs2, write JSON.
//
//   node tests/js/browser.mjs --site DIR --out results.json [--images a.png,b.jpg]
//        [--classes "x,y"] [--isolated] [--screenshot shot.png] [--page index.html] [--dump-pixels]
//        [--overrides "steer_gamma=3,gate_tau=-1"] [--warm-runs 5]
//        [--chromium /usr/bin/chromium] [--timeout 60000]
//
// --overrides types the values into the page's steering fields, then runs every image again
// (entry.overridden: the page's outputs with them, entry.overridden_plain: with lambda = 0 too).
//
// --isolated adds COOP/COEP headers (cross-origin isolation: SharedArrayBuffer, wasm threads).
// --page docs.html loads another page of the site and waits for window.vs2Example instead.
import { createReadStream } from 'node:fs';
import { stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { extname, join, normalize, resolve, sep } from 'node:path';
import { parseArgs } from 'node:util';

import { chromium } from 'playwright-core';

const { values: args } = parseArgs({
  options: {
    site: { type: 'string' }, out: { type: 'string' }, images: { type: 'string', default: '' },
    classes: { type: 'string' }, isolated: { type: 'boolean', default: false },
    screenshot: { type: 'string' }, page: { type: 'string', default: 'index.html' },
    'dump-pixels': { type: 'boolean', default: false },
    overrides: { type: 'string' }, 'warm-runs': { type: 'string', default: '5' },
    chromium: { type: 'string', default: '/usr/bin/chromium' },
    timeout: { type: 'string', default: '60000' },
  },
});
if (!args.site || !args.out) throw new Error('usage: browser.mjs --site DIR --out FILE [...]');
const timeout = Number(args.timeout);

const MIME = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8',
  '.json': 'application/json', '.wasm': 'application/wasm', '.onnx': 'application/octet-stream',
  '.f32': 'application/octet-stream', '.gz': 'application/gzip', '.png': 'image/png',
  '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg', '.webp': 'image/webp',
};

/** A static file server for one folder, loopback only, no directory listing. */
function serve(root, isolated) {
  const base = resolve(root);
  const server = createServer(async (req, res) => {
    const path = normalize(join(base, decodeURIComponent(new URL(req.url, 'http://x').pathname)));
    const file = path.endsWith(sep) ? join(path, 'index.html') : path;
    const headers = { 'Cache-Control': 'no-store' };
    if (isolated) {
      headers['Cross-Origin-Opener-Policy'] = 'same-origin';
      headers['Cross-Origin-Embedder-Policy'] = 'require-corp';
    }
    try {
      if (!file.startsWith(base + sep) || !(await stat(file)).isFile()) throw new Error('not found');
      res.writeHead(200, { ...headers, 'Content-Type': MIME[extname(file)] ?? 'application/octet-stream' });
      createReadStream(file).pipe(res);
    } catch {
      res.writeHead(404, headers).end('not found');
    }
  });
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok(server)));
}

const server = await serve(args.site, args.isolated);
const origin = `http://127.0.0.1:${server.address().port}`;
const results = { runtime: 'browser', isolated: args.isolated, timings: {}, images: [], console: [], requests: [] };
const t0 = performance.now();
const browser = await chromium.launch({
  executablePath: args.chromium,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
results.versions = { chromium: browser.version() };
try {
  const page = await browser.newPage();
  page.on('console', (m) => results.console.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => results.console.push(`pageerror: ${e.message}`));
  page.on('request', (r) => results.requests.push(r.url().replace(origin, '')));
  page.setDefaultTimeout(timeout);
  results.timings.launch_ms = performance.now() - t0;
  const t1 = performance.now();
  await page.goto(`${origin}/${args.page}`);
  if (args.page !== 'index.html') {
    await page.waitForFunction(() => window.vs2Example?.done || window.vs2Example?.error);
    results.example = await page.evaluate(() => window.vs2Example);
  } else {
    await page.waitForFunction(() => window.vs2?.model || window.vs2?.error);
    results.timings.page_ready_ms = performance.now() - t1;
    Object.assign(results, await page.evaluate(() => ({
      error: window.vs2.error, pixel_input: window.vs2.model?.pixelInput,
      cross_origin_isolated: self.crossOriginIsolated, wasm_threads: window.vs2.threads,
      hardware_concurrency: navigator.hardwareConcurrency,
    })));
    if (!results.error) await runImages(page);
  }
  if (args.screenshot) await page.screenshot({ path: args.screenshot, fullPage: true });
} finally {
  await browser.close();
  server.close();
}
await writeFile(args.out, JSON.stringify(results));

async function feed(page, path) {
  const before = await page.evaluate(() => [window.vs2.runs, window.vs2.error]);
  await page.evaluate(() => { window.vs2.error = null; });
  await page.setInputFiles('#file', []);  // the same file twice fires no change event
  await page.setInputFiles('#file', path);
  await page.waitForFunction((n) => window.vs2.runs > n || window.vs2.error, before[0]);
  return page.evaluate(() => ({ error: window.vs2.error, last: window.vs2.last }));
}

async function runImages(page) {
  const images = args.images ? args.images.split(',') : [];
  for (const path of images) {
    const t = performance.now();
    const { error, last } = await feed(page, path);
    const entry = { path, ms: performance.now() - t };
    if (error) entry.error = error;
    else Object.assign(entry, { default: last.steered, plain: last.plain });
    if (args['dump-pixels']) {  // the page's decoded RGBA bytes, to compare with Pillow's decode
      entry.rgba = await page.evaluate(() => window.vs2.image && Array.from(window.vs2.image.data));
    }
    results.images.push(entry);
  }
  results.timings.page = await page.evaluate(() => window.vs2.timings);
  const ok = results.images.filter((e) => !e.error);
  if (ok.length) {  // warm runs straight through vs2.js on an image the page ran
    await feed(page, ok.at(-1).path);
    const cpu0 = await chromiumCpuSeconds();
    results.timings.warm_run_ms = await page.evaluate(async (n) => {
      const times = [];
      for (let i = 0; i < n; i++) {
        const t = performance.now();
        await window.vs2.model.run(window.vs2.image);
        times.push(performance.now() - t);
      }
      return times;
    }, Number(args['warm-runs']));
    const cpu1 = await chromiumCpuSeconds();
    // CPU time of Chromium's processes per warm run: robust where other jobs share the CPUs
    if (cpu0 !== null && cpu1 !== null) results.timings.warm_cpu_ms = (1e3 * (cpu1 - cpu0)) / Number(args['warm-runs']);
  }
  if (args.classes !== undefined && ok.length) {
    const names = args.classes.split(',');
    await page.fill('#classes', names.join('\n'));
    const before = await page.evaluate(() => window.vs2.runs);
    const t = performance.now();
    await page.click('#apply-classes');
    await page.waitForFunction((n) => window.vs2.runs > n || window.vs2.error, before);
    results.timings.apply_classes_ms = performance.now() - t;
    results.runtime_classes = await page.evaluate(() => window.vs2.model.classes);
    for (const entry of ok) {
      const { error, last } = await feed(page, entry.path);
      if (error) entry.runtime_error = error;
      else entry.runtime_classes = last.steered;
    }
  }
  // last: the typed values stay in the page's fields for every later run
  if (args.overrides && ok.length) await runOverrides(page, ok);
}

async function runOverrides(page, ok) {
  const values = Object.fromEntries(args.overrides.split(',').map((kv) => kv.split('=')));
  results.overrides = Object.fromEntries(Object.entries(values).map(([k, v]) => [k, Number(v)]));
  const before = await page.evaluate(() => window.vs2.runs);
  await page.evaluate((v) => {  // type them in, then one change event runs the page once
    for (const [name, value] of Object.entries(v)) document.getElementById(name).value = value;
    document.getElementById(Object.keys(v)[0]).dispatchEvent(new Event('change'));
  }, values);
  await page.waitForFunction((n) => window.vs2.runs > n || window.vs2.error, before);
  for (const entry of ok) {
    const { error, last } = await feed(page, entry.path);
    if (error) entry.overridden_error = error;
    else Object.assign(entry, { overridden: last.steered, overridden_plain: last.plain, overrides_used: last.overrides });
  }
}

/** Seconds of CPU (user + system) used so far by Chromium: every process below this Node process
 *  (Linux /proc; playwright launches Chromium as our child), or null elsewhere. */
async function chromiumCpuSeconds() {
  const root = process.pid;
  const { readdir, readFile } = await import('node:fs/promises');
  const stats = new Map();
  for (const entry of await readdir('/proc').catch(() => [])) {
    if (!/^\d+$/.test(entry)) continue;
    const text = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => null);
    if (!text) continue;
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');  // after "pid (comm) "
    stats.set(Number(entry), { ppid: Number(fields[1]), ticks: Number(fields[11]) + Number(fields[12]) });
  }
  if (!stats.size) return null;
  const inTree = (pid) => { for (let p = stats.get(pid)?.ppid ?? 0; p > 1; p = stats.get(p)?.ppid ?? 0) if (p === root) return true; return false; };
  let ticks = 0;
  for (const [pid, s] of stats) if (inTree(pid)) ticks += s.ticks;
  return ticks / 100;  // USER_HZ: 100 on Linux
}
