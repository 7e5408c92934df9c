// Dashboard responsiveness with 50 plugins streaming telemetry at 1 Hz.
//
// A mock backend (this file; for this measurement only) serves 50 plugins, /api/core/telemetry
// and the /ws/core/telemetry WebSocket pushing a tick with all 50 samples every second. The
// production build is served in front of it, Chromium opens the dashboard, and for DURATION_S
// seconds (default 30) we record:
//   - PerformanceObserver 'longtask' entries (main-thread tasks over 50 ms), and
//   - a CDP trace (devtools.timeline + toplevel): every main-thread task of the renderer, its
//     longest duration and the busy time per second.
// WITH_INPUT=1 also types into the filter box every 5 s (clears it: 50 cards shown again) and
// times that. Exits non-zero when any task takes over 50 ms.  `npm run perf` (after `npm run build`).
import { createServer } from 'node:http';
import { WebSocketServer } from 'ws';
import { DIST, launchChromium } from '../e2e/harness.mjs';
import { serveUi } from '../e2e/serve.mjs';

const N = Number(process.env.PLUGINS ?? 50);
const DURATION_S = Number(process.env.DURATION_S ?? 30);
const now = () => Date.now();
const t0 = now();
const states = (i) => (i % 17 === 5 ? 'failed' : i % 11 === 3 ? 'stopped' : 'running');
const plugins = Array.from({ length: N }, (_, i) => ({
  id: `plugin-${String(i).padStart(2, '0')}`,
  name: `Plugin ${i}`,
  version: `1.${i % 5}.0`,
  description: 'mock plugin for the perf measurement',
  state: states(i),
  generation: 1 + (i % 3),
  capabilities: [{ name: 'run', description: 'does things', streaming: false, scope: 'invoke' }],
  routes: [],
  history: [],
  file: `/plugins/libplugin_${i}.so`,
  loaded_at_ms: t0 - i * 60_000,
  last_error: states(i) === 'failed' ? { message: 'init failed: mock error', at_ms: t0 } : null,
  calls: { total: 0, errors: 0, rejected: 0, in_flight: 0 },
}));
function tick() {
  const at = now();
  const out = {};
  plugins.forEach((p, i) => {
    if (p.state !== 'running') return;
    const calls = 50 + 40 * Math.sin(at / 5000 + i) + Math.random() * 10;
    out[p.id] = {
      at_ms: at, calls_per_s: calls, calls_total: Math.round(at / 10), cpu_percent: Math.abs(10 * Math.sin(at / 7000 + i)) + Math.random(),
      error_rate: Math.random() * 0.02, errors_per_s: Math.random(), errors_total: 3, generation: p.generation, in_flight: Math.floor(Math.random() * 4),
      p50_ms: 1 + Math.random(), p95_ms: 4 + Math.random(), p99_ms: 9 + Math.random(),
      heap_bytes: Math.round(20e6 * (1 + i / 10) + 5e6 * Math.sin(at / 9000 + i) + Math.random() * 1e5),
    };
  });
  return { host: { at_ms: at, cpu_percent: 20 + Math.random() * 5, rss_bytes: 200e6 + Math.random() * 1e6, plugins_running: Object.keys(out).length }, plugins: out };
}

const mock = createServer((req, res) => {
  const json = (code, body) => {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/api/core/plugins') return json(200, { plugins });
  if (url.pathname === '/api/core/telemetry') return json(200, tick());
  json(404, { error: { code: 'not_found', message: 'mock' } });
});
const wss = new WebSocketServer({ noServer: true });
mock.on('upgrade', (req, socket, head) => {
  if (!req.url.startsWith('/ws/core/telemetry')) return socket.destroy();
  wss.handleUpgrade(req, socket, head, (ws) => {
    const timer = setInterval(() => ws.send(JSON.stringify(tick())), 1000);
    ws.on('close', () => clearInterval(timer));
  });
});
await new Promise((r) => mock.listen(0, '127.0.0.1', r));
const target = `http://127.0.0.1:${mock.address().port}`;
const ui = await serveUi({ root: DIST, target });

const browser = await launchChromium();
const page = await browser.newPage();
await page.addInitScript(() => {
  sessionStorage.setItem('bkg.apiKey', 'perf-key');
  window.__longtasks = [];
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) window.__longtasks.push({ start: e.startTime, duration: e.duration });
  }).observe({ type: 'longtask', buffered: true });
});
await page.goto(ui.url + '/plugins');
await page.waitForFunction((n) => document.querySelectorAll('article[data-plugin]').length === n, N, { timeout: 30_000 });
// Let the first ticks fill the sparklines, then measure a clean window.
await page.waitForTimeout(3000);

const cdp = await page.context().newCDPSession(page);
const events = [];
cdp.on('Tracing.dataCollected', (d) => events.push(...d.value));
const traceDone = new Promise((r) => cdp.once('Tracing.tracingComplete', r));
await cdp.send('Tracing.start', { categories: 'devtools.timeline,toplevel,disabled-by-default-devtools.timeline', transferMode: 'ReportEvents' });
const startPerf = await page.evaluate(() => performance.now());
const startTicks = await page.evaluate(() => document.querySelector('[data-plugin] [data-testid=calls]')?.textContent);

// Meanwhile, type into the filter box a few times: input must stay responsive too.
const inputDelays = [];
const typing = process.env.WITH_INPUT === '1';
if (!typing) await page.waitForTimeout(DURATION_S * 1000);
for (let s = 0; typing && s < DURATION_S; s += 5) {
  await page.waitForTimeout(4000);
  const t = Date.now();
  await page.fill('input[type=search]', 'plugin-1');
  await page.waitForFunction(() => document.querySelectorAll('app-plugin-card:not([hidden])').length < 20);
  await page.fill('input[type=search]', '');
  await page.waitForFunction((n) => document.querySelectorAll('app-plugin-card:not([hidden])').length === n, N);
  inputDelays.push(Date.now() - t);
  await page.waitForTimeout(1000 - Math.min(1000, Date.now() - t));
}

await cdp.send('Tracing.end');
await traceDone;
const longtasks = await page.evaluate((s) => window.__longtasks.filter((t) => t.start >= s), startPerf);
const endTicks = await page.evaluate(() => document.querySelector('[data-plugin] [data-testid=calls]')?.textContent);

// Main-thread tasks of the page's renderer (CrRendererMain) from the trace.
const mainThreads = new Set(events.filter((e) => e.name === 'thread_name' && e.args?.name === 'CrRendererMain').map((e) => `${e.pid}:${e.tid}`));
const tasks = events.filter((e) => e.ph === 'X' && (e.name === 'RunTask' || e.name === 'ThreadControllerImpl::RunTask') && mainThreads.has(`${e.pid}:${e.tid}`));
const durs = tasks.map((e) => e.dur / 1000).sort((a, b) => a - b);
const pct = (p) => (durs.length ? durs[Math.min(durs.length - 1, Math.floor((p / 100) * durs.length))] : 0);
const busyMs = durs.reduce((a, b) => a + b, 0);
const over50 = durs.filter((d) => d > 50).length;

await browser.close();
await ui.close();
wss.close();
mock.close();

const report = {
  plugins: N,
  window_s: DURATION_S,
  telemetry_changed: startTicks !== endTicks,
  longtask_entries: longtasks.length,
  longtask_max_ms: longtasks.reduce((m, t) => Math.max(m, t.duration), 0),
  trace_main_thread_tasks: durs.length,
  trace_tasks_over_50ms: over50,
  trace_task_max_ms: +(durs[durs.length - 1] ?? 0).toFixed(2),
  trace_task_p99_ms: +pct(99).toFixed(2),
  trace_busy_ms_per_s: +(busyMs / DURATION_S).toFixed(1),
  filter_roundtrip_ms: inputDelays,
};
console.log(JSON.stringify(report, null, 2));
if (!report.telemetry_changed) console.error('warning: the cards did not change during the window');
process.exit(report.longtask_entries || over50 ? 1 : 0);
