// End-to-end tests of the admin UI: a real bkg host with real plugin libraries, the built app,
// Chromium driven by playwright-core. `npm run e2e` (after `npm run build`).
//   BKG_BIN           host binary (default <repo>/target/debug/bkg)
//   BKG_PLUGIN_LIBS   folder with the plugin .so files (default <repo>/target/debug)
//   BKG_UI_FROM_HOST  1: the host serves the app (--ui-dir); 0: serve.mjs + proxy; default: 1 if the host has --ui-dir
//   BKG_SCREENSHOTS   where screenshots go (default <repo>/docs/screenshots)
//   BKG_MODELS_DIR    the real models folder (default <repo>/models; `bash scripts/fetch-models.sh`);
//                     the host gets a hard-linked private copy of it
//   E2E_KEEP          1: keep the host's temp folder (log, models copy) even when all passed
//   E2E_ONLY          run only tests whose name contains this (and the first, which logs in)
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { cp, mkdir, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { ADMIN_KEY, DIST, MODELS_DIR, REPO_ROOT, UI_FROM_HOST, installPlugin, launchChromium, lib, modelsProblem, startHost } from './harness.mjs';
import { bytes, sha256, startFakeHub } from './fakehub.mjs';
import { serveUi } from './serve.mjs';

const SHOTS = process.env.BKG_SCREENSHOTS ?? join(REPO_ROOT, 'docs/screenshots');
const tests = [];
const test = (name, fn, { skip } = {}) => tests.push({ name, fn, skip });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** How many points an SVG polyline has. */
async function pointCount(polyline) {
  return ((await polyline.getAttribute('points')) ?? '').trim().split(/\s+/).filter(Boolean).length;
}

async function expectEventually(what, fn, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      if (await fn()) return;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? ': ' + last.message : ''}`);
    await sleep(100);
  }
}

if (!existsSync(join(DIST, 'index.html'))) {
  console.error(`no build at ${DIST}: run npm run build first`);
  process.exit(2);
}
await mkdir(SHOTS, { recursive: true });
const problem = modelsProblem();
if (problem) {
  console.error(`e2e: ${problem}`);
  process.exit(2);
}
for (const l of ['bkg_plugin_apikeys', 'fixture_echo', 'bkg_plugin_candle', 'bkg_plugin_llmserver']) {
  if (!existsSync(lib(l))) {
    console.error(`e2e: ${lib(l)} is missing: build the host and plugins first (cargo build --workspace)`);
    process.exit(2);
  }
}

// A fake Hugging Face hub for the models tab: a small model, and a file that trickles.
const TINY = { repo: 'e2e-org/tiny-model', config: Buffer.from(JSON.stringify({ hidden_size: 8, note: 'e2e' }, null, 1)), weights: bytes(3 << 20, 7) };
const SLOW = { repo: 'e2e-org/slow-model', weights: bytes(8 << 20, 9) };
const hub = await startFakeHub({
  [`${TINY.repo}/config.json`]: { data: TINY.config },
  [`${TINY.repo}/model.safetensors`]: { data: TINY.weights, lfs: true, trickle: { bytes: 256 << 10, everyMs: 25 } },
  [`${SLOW.repo}/weights.bin`]: { data: SLOW.weights, lfs: true, trickle: { bytes: 16 << 10, everyMs: 50 } },
});

const host = await startHost({
  plugins: ['bkg_plugin_apikeys', 'fixture_echo', 'bkg_plugin_candle', 'bkg_plugin_llmserver'],
  modelsFrom: MODELS_DIR,
  hubEndpoint: hub.url,
});
await host.waitRunning(['apikeys', 'echo', 'candle', 'llmserver'], 60_000);
console.log(`models: ${host.modelsDir} (hard links to ${MODELS_DIR}); fake hub ${hub.url}`);
console.log(`host ${host.url}; UI served by ${UI_FROM_HOST ? 'the host (--ui-dir)' : 'e2e/serve.mjs (proxy)'}`);
const ui = UI_FROM_HOST ? { url: host.url, close: async () => {} } : await serveUi({ root: DIST, target: host.url });
const browser = await launchChromium();
const page = await browser.newPage();
const consoleErrors = [];
page.on('pageerror', (e) => consoleErrors.push(e.message));
const shot = (name, p = page) => p.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: false });
const card = (id) => page.locator(`article[data-plugin="${id}"]`);
// The app's API calls that the page has sent and not yet seen answered.
const inFlight = new Set();
page.on('request', (r) => ['fetch', 'xhr'].includes(r.resourceType()) && inFlight.add(r));
page.on('requestfinished', (r) => inFlight.delete(r));
page.on('requestfailed', (r) => inFlight.delete(r));

/**
 * Waits until the page has its data: no API call of the page unanswered, and its controls (tag,
 * state, text) the same in two reads in a row, so that what loads after the first paint is there.
 */
async function settled(p = page) {
  let last = null;
  await expectEventually('the page to settle (its API calls answered, its controls unchanged)', async () => {
    const now = await p.evaluate(() =>
      [...document.querySelectorAll('a[href], button, input, select, textarea, summary, [tabindex]')]
        .map((el) => `${el.tagName}:${el.disabled ?? ''}:${(el.textContent || el.getAttribute('name') || '').trim().slice(0, 24)}`)
        .join('|'),
    );
    const same = now === last && inFlight.size === 0;
    last = now;
    return same;
  });
}
const newPluginLib = ['fixture_noop', 'fixture_slow', 'fixture_panicky'].find((n) => existsSync(lib(n)));

async function login(p = page, key = ADMIN_KEY) {
  await p.goto(ui.url + '/');
  await p.waitForURL('**/login');
  await p.fill('#api-key', key);
  await p.click('button[type=submit]');
}

// ---------------------------------------------------------------------------------------------

test('login: a wrong key gets a clear 401 message, the admin key shows the cards', async () => {
  await login(page, 'bkg_nope_0000000000000000');
  await page.getByTestId('login-error').waitFor();
  const msg = await page.getByTestId('login-error').textContent();
  if (!/401/.test(msg)) throw new Error(`login error does not mention 401: ${msg}`);
  await shot('login-error');
  await page.fill('#api-key', ADMIN_KEY);
  await page.click('button[type=submit]');
  await page.waitForURL('**/plugins');
  await card('apikeys').waitFor();
  await card('echo').waitFor();
  await expectEventually('a telemetry sample on the cards', async () => (await card('echo').getByTestId('calls').textContent()).trim() !== '–');
  // Some traffic on echo until its card shows it and its sparkline holds a few samples (one a second).
  await expectEventually('echo\'s calls/s above 0 and a sparkline of 4 samples', async () => {
    await Promise.all([1, 2, 3, 4, 5].map(() => host.api('/api/plugins/echo/echo', { method: 'POST', body: 'x' })));
    const calls = Number(await card('echo').getByTestId('calls').textContent());
    return calls > 0 && (await pointCount(card('echo').locator('svg polyline').first())) >= 4;
  }, 20_000);
  for (const id of ['apikeys', 'echo', 'candle', 'llmserver']) {
    const state = await card(id).locator('[data-state]').getAttribute('data-state');
    if (state !== 'running') throw new Error(`${id} shows ${state}`);
  }
  await shot('dashboard');
});

/** Where the cards sit: their distinct left edges (one per column) and any that pass the viewport's right edge. */
const cardLayout = () =>
  page.evaluate(() => {
    const rects = [...document.querySelectorAll('article[data-plugin]')].map((a) => a.getBoundingClientRect());
    return {
      cards: rects.length,
      columns: new Set(rects.map((r) => Math.round(r.left))).size,
      overflowing: rects.filter((r) => r.left < 0 || r.right > innerWidth + 0.5).length,
      pageOverflow: document.documentElement.scrollWidth - innerWidth,
    };
  });

test('dashboard at phone width: one column of cards, nothing wider than the screen', async () => {
  if (!/\/plugins$/.test(page.url())) await page.goto(ui.url + '/plugins');
  await card('echo').waitFor();
  const wide = await cardLayout();
  if (wide.columns < 2) throw new Error(`at 1280 px the cards are not in columns: ${JSON.stringify(wide)}`);
  await page.setViewportSize({ width: 390, height: 844 });
  try {
    await expectEventually('one column of cards within 390 px', async () => {
      const l = await cardLayout();
      return l.cards >= 4 && l.columns === 1 && l.overflowing === 0 && l.pageOverflow <= 0;
    });
    // The header's controls wrap instead of running off the screen.
    const off = await page.evaluate(() =>
      [...document.querySelectorAll('header a, header button, header label, main input')]
        .filter((el) => {
          const r = el.getBoundingClientRect();
          return r.width > 0 && (r.left < 0 || r.right > innerWidth + 0.5);
        })
        .map((el) => (el.textContent || el.getAttribute('placeholder') || el.tagName).trim()),
    );
    if (off.length) throw new Error(`controls past the screen's edge at 390 px: ${off.join(', ')}`);
    await shot('dashboard-phone');
  } finally {
    await page.setViewportSize({ width: 1280, height: 900 });
  }
});

test('stop and start a plugin from its card', async () => {
  await page.goto(ui.url + '/plugins');
  await card('echo').locator('button[data-action=stop]').click();
  await expectEventually('echo stopped', async () => (await card('echo').locator('[data-state]').getAttribute('data-state')) === 'stopped');
  const stopped = await host.api('/api/core/plugins/echo');
  if (stopped.state !== 'stopped') throw new Error(`host says ${stopped.state}`);
  await shot('dashboard-stopped');
  const clicked = Date.now();
  await card('echo').locator('button[data-action=start]').click();
  await expectEventually('echo running', async () => (await card('echo').locator('[data-state]').getAttribute('data-state')) === 'running');
  const running = await host.api('/api/core/plugins/echo');
  if (running.state !== 'running') throw new Error('host does not say running');
  // The uptime counts from this start, not from the library's load (same generation, same loaded_at_ms).
  await expectEventually('an uptime on echo\'s card', async () => /\d/.test(await card('echo').getByTestId('uptime').textContent()));
  const shown = durationMs(await card('echo').getByTestId('uptime').textContent());
  const sinceClick = Date.now() - clicked;
  const sinceLoad = Date.now() - running.loaded_at_ms;
  if (!(shown <= sinceClick + 1000)) throw new Error(`uptime ${shown} ms after a start ${sinceClick} ms ago (the load was ${sinceLoad} ms ago)`);
});

/** "1m 5s" / "3s" / "2h 4m" -> ms (the card's uptime). */
function durationMs(text) {
  const units = { d: 86_400_000, h: 3_600_000, m: 60_000, s: 1000 };
  let ms = 0;
  for (const [, n, u] of (text ?? '').matchAll(/(\d+)([dhms])/g)) ms += Number(n) * units[u];
  return ms;
}

test('config: an invalid value shows a field error, a valid one persists across a reload', async () => {
  await page.goto(ui.url + '/plugins/echo/config');
  const greeting = page.locator('#cfg_greeting');
  await greeting.waitFor();
  await greeting.fill('this greeting is far longer than twenty characters');
  await page.click('form[data-testid=config-form] button[type=submit]');
  const err = page.locator('[data-field="/greeting"] [data-testid=field-error]');
  await err.waitFor();
  await shot('config-error');
  await greeting.fill('hi from e2e');
  await page.locator('#cfg_repeat').fill('3');
  await page.click('form[data-testid=config-form] button[type=submit]');
  await expectEventually('config stored', async () => (await host.api('/api/core/plugins/echo/config')).config.greeting === 'hi from e2e');
  await page.reload();
  await page.locator('#cfg_greeting').waitFor();
  await expectEventually('reloaded form shows the stored value', async () => (await page.locator('#cfg_greeting').inputValue()) === 'hi from e2e');
  if ((await page.locator('#cfg_repeat').inputValue()) !== '3') throw new Error('repeat not persisted');
  await shot('config');
  // A field the stored config may lack shows the schema's default, not an empty box.
  await page.goto(ui.url + '/plugins/candle/config');
  await expectEventually('candle\'s embed_batch_size shows its default 32', async () => (await page.locator('#cfg_embed_batch_size').inputValue()) === '32');
});

test('logs: a line the plugin writes appears live', async () => {
  await page.goto(ui.url + '/plugins/echo/logs');
  await page.getByTestId('log-view').waitFor();
  await expectEventually('log socket open', async () => (await page.locator('text=live').count()) > 0);
  // The select shows the filter in force: trace (every line), not its first option "error".
  if ((await page.getByTestId('log-level').inputValue()) !== 'trace') throw new Error(`level select shows ${await page.getByTestId('log-level').inputValue()}`);
  const marker = `e2e-live-line-${Date.now()}`;
  await host.api('/api/plugins/echo/log', { method: 'POST', body: marker });
  const t0 = Date.now();
  await page.getByTestId('log-view').getByText(marker).waitFor({ timeout: 5000 });
  console.log(`    (log line visible ${Date.now() - t0} ms after the call returned)`);
  // Time and level apart, in the text too ("7:20:23 PM INFO", not "7:20:23 PMINFO").
  const row = (await page.locator('[data-testid=log-view] [data-seq]', { hasText: marker }).first().textContent()).trim();
  if (!/\d:\d\d:\d\d(\s?[AP]M)? (ERROR|WARN|INFO|DEBUG|TRACE) \[/.test(row)) throw new Error(`time and level run together: ${row}`);
  // Search narrows, pause holds new lines.
  await page.getByTestId('log-search').fill(marker);
  await expectEventually('search shows only the marker', async () => (await page.locator('[data-testid=log-view] [data-seq]').count()) === 1);
  await page.getByTestId('log-search').fill('');
  await page.getByTestId('log-pause').click();
  const held = `e2e-held-${Date.now()}`;
  await host.api('/api/plugins/echo/log', { method: 'POST', body: held });
  await expectEventually('pause button counts the held line', async () => /1 new/.test(await page.getByTestId('log-pause').textContent()));
  if ((await page.getByTestId('log-view').getByText(held).count()) !== 0) throw new Error('line shown while paused');
  await page.getByTestId('log-pause').click();
  await page.getByTestId('log-view').getByText(held).waitFor();
  await shot('logs');
});

test('overview, telemetry and events screens', async () => {
  const echo = await host.api('/api/core/plugins/echo');
  await page.goto(ui.url + '/plugins/echo/overview');
  // The load history's first row is the loaded generation, as the host lists it.
  const first = page.locator('[data-testid=history] tbody tr').first();
  await first.waitFor();
  const gen = (await first.locator('td').first().textContent()).trim();
  if (gen !== String(echo.generation)) throw new Error(`load history starts with gen ${gen}, host says ${echo.generation}`);
  if (!(await first.textContent()).includes(echo.sha256.slice(0, 12))) throw new Error(`the loaded generation's row lacks its sha256 ${echo.sha256}`);
  await shot('overview');
  await page.goto(ui.url + '/plugins/echo/telemetry');
  // The totals count the calls made so far; the calls chart draws a line once it has two samples.
  const totals = page.getByTestId('telemetry-totals');
  await totals.waitFor();
  const shownCalls = Number(await totals.locator('div', { hasText: /^\s*calls/ }).first().locator('dd').textContent());
  const hostCalls = (await host.api('/api/core/plugins/echo/telemetry')).totals.calls;
  if (!(shownCalls > 0 && shownCalls <= hostCalls)) throw new Error(`telemetry shows ${shownCalls} calls, host counts ${hostCalls}`);
  await expectEventually('the calls chart drawn from two samples', async () => (await pointCount(page.locator('svg[aria-label="Calls per second"] polyline').first())) >= 2, 10_000);
  await shot('telemetry');
  await page.goto(ui.url + '/events');
  await page.getByTestId('events-table').locator('tr[data-kind=config_changed]').first().waitFor();
  await page.getByTestId('events-kind').selectOption('stopped');
  await expectEventually('kind filter', async () => {
    const kinds = await page.locator('tr[data-kind]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-kind')));
    return kinds.length > 0 && kinds.every((k) => k === 'stopped');
  });
  await page.getByTestId('events-kind').selectOption('');
  await shot('events');
});

test('isolation: the overview switches echo to its own process and back; the host stores it, echo keeps answering, the dashboard card shows the child pid', async () => {
  const dashCard = (id) => page.locator(`article[data-plugin="${id}"]`);
  const mode = async () => (await host.api('/api/core/plugins/echo')).isolation;
  if ((await mode()) !== 'in_process') throw new Error(`echo starts in ${await mode()}`);
  await page.goto(ui.url + '/plugins/echo/overview');
  const card = page.getByTestId('isolation');
  await card.waitFor();
  const radio = (m) => card.locator(`[data-mode=${m}]`);
  if ((await radio('in_process').getAttribute('aria-checked')) !== 'true') throw new Error('the switch does not show "in the host"');
  try {
    await radio('process').click();
    await expectEventually('the host to say process', async () => (await mode()) === 'process');
    await expectEventually('the switch to show "own process"', async () => (await radio('process').getAttribute('aria-checked')) === 'true');
    const events = (await host.api('/api/core/events?plugin=echo&limit=50')).events.filter((e) => e.kind === 'isolation');
    if (events[0]?.details?.to !== 'process') throw new Error(`no isolation event to process: ${JSON.stringify(events)}`);
    const answer = await host.api('/api/plugins/echo/echo', { method: 'POST', body: 'isolated' });
    if (JSON.stringify(answer).indexOf('isolated') < 0) throw new Error(`echo answered ${JSON.stringify(answer)}`);
    // The child's pid the host reports is the one the card shows, and it is a live plugin runner.
    let pid = null;
    await expectEventually('the host to report the child pid', async () => (pid = (await host.api('/api/core/plugins/echo')).process?.pid) != null);
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    if (!cmdline.includes('plugin-runner')) throw new Error(`pid ${pid} is not a plugin runner: ${cmdline.join(' ')}`);
    await expectEventually(`the card to show pid ${pid}`, async () => (await card.getByTestId('isolation-pid').textContent()).trim() === String(pid));
    // Its limits: the card sets the child's open files; the host swaps to a child with them.
    await card.locator('[data-limit=open_files]').fill('200');
    await card.getByTestId('limits-save').click();
    const old = pid;
    await expectEventually('the host to run echo under the open files limit set in the card', async () => {
      const v = await host.api('/api/core/plugins/echo');
      const l = v.isolation_limits?.open_files;
      return l?.source === 'operator' && l.value === 200 && v.state === 'running' && (pid = v.process?.pid) != null && pid !== old;
    });
    const nofile = readFileSync(`/proc/${pid}/limits`, 'utf8').split('\n').find((l) => l.startsWith('Max open files')) ?? '';
    if (!/\s200\s+200\s/.test(nofile)) throw new Error(`the new child's limits say: ${nofile}`);
    await expectEventually('the card to say the limit is set here', async () => (await card.locator('[data-limit-source=open_files]').textContent()).includes('200 · set here'));
    await expectEventually(`the card to show the new pid ${pid}`, async () => (await card.getByTestId('isolation-pid').textContent()).trim() === String(pid));
    // The dashboard's card says so too: own process with that pid, no restarts, no crash.
    await page.goto(ui.url + '/plugins');
    const badge = dashCard('echo').getByTestId('process-badge');
    await expectEventually(`the dashboard badge to show pid ${pid}`, async () => (await badge.getAttribute('data-pid')) === String(pid));
    if ((await badge.textContent()).trim() !== `own process · pid ${pid}`) throw new Error(`the badge says ${await badge.textContent()}`);
    for (const t of ['process-restarts', 'crashloop', 'card-last-crash']) {
      if ((await dashCard('echo').getByTestId(t).count()) !== 0) throw new Error(`the echo card shows ${t} without a crash`);
    }
    if ((await dashCard('apikeys').getByTestId('process-badge').count()) !== 0) throw new Error('apikeys, in the host, has a process badge');
    await page.goto(ui.url + '/plugins/echo/overview');
    await card.waitFor();
    await radio('in_process').click();
    await expectEventually('the host to say in_process again', async () => (await mode()) === 'in_process');
    await expectEventually('the switch back in the host', async () => (await radio('in_process').getAttribute('aria-checked')) === 'true');
    await page.goto(ui.url + '/plugins');
    await dashCard('echo').waitFor();
    await expectEventually('the dashboard badge to go', async () => (await dashCard('echo').getByTestId('process-badge').count()) === 0);
  } finally {
    // The later tests expect echo in the host with the host's limits, whatever failed above.
    await host.api('/api/core/plugins/echo/isolation', { method: 'POST', body: { mode: 'in_process', limits: null } });
  }
});

test('isolation crash: a segfault in a child shows live on the dashboard card (restart, new pid, last crash) and in the events', async () => {
  if (!existsSync(lib('fixture_crashy'))) throw new Error(`${lib('fixture_crashy')} is missing: cargo build --workspace`);
  const file = join(host.pluginsDir, 'libfixture_crashy.so');
  const view = async () => host.api('/api/core/plugins/crashy');
  const dashCard = page.locator('article[data-plugin="crashy"]');
  await installPlugin(host.pluginsDir, 'fixture_crashy');
  try {
    await expectEventually('crashy to run', async () => (await view()).state === 'running', 20_000);
    await host.api('/api/core/plugins/crashy/isolation', { method: 'POST', body: { mode: 'process' } });
    let first = null;
    await expectEventually('crashy in its own process', async () => {
      const v = await view();
      return v.isolation === 'process' && v.state === 'running' && (first = v.process?.pid) != null;
    }, 20_000);
    await page.goto(ui.url + '/plugins');
    const badge = dashCard.getByTestId('process-badge');
    await expectEventually(`the crashy card to show pid ${first}`, async () => (await badge.getAttribute('data-pid')) === String(first));
    // The page stays open: the crash and the restart must reach it without a reload.
    const crash = await host.api('/api/plugins/crashy/segv', { method: 'POST', body: '', raw: true });
    if (crash.status !== 503) throw new Error(`the segfaulting call answered ${crash.status} ${await crash.text()}`);
    let second = null;
    await expectEventually('the host to restart crashy in a new child', async () => {
      const v = await view();
      second = v.process?.pid;
      return v.state === 'running' && v.process?.restarts === 1 && second != null && second !== first;
    }, 20_000);
    await expectEventually(`the card to show the new pid ${second}`, async () => (await badge.getAttribute('data-pid')) === String(second));
    await expectEventually('the card to show one restart', async () => (await dashCard.getByTestId('process-restarts').textContent()).trim() === '1 restart');
    await expectEventually('the card to show the segfault', async () => (await dashCard.getByTestId('card-crash-cause').textContent()).trim() === 'signal SIGSEGV');
    const tooltip = await dashCard.getByTestId('card-last-crash').getAttribute('title');
    if (!tooltip.includes('crashy: segv: writing through a null pointer')) throw new Error(`the last crash's tooltip lacks the child's stderr: ${tooltip}`);
    if ((await dashCard.getByTestId('crashloop').count()) !== 0) throw new Error('one crash shows a crash loop');
    await page.goto(ui.url + '/events');
    const row = (kind) => page.getByTestId('events-table').locator(`tr[data-kind=${kind}]`).first();
    await row('crashed').waitFor();
    if ((await row('crashed').getAttribute('data-tone')) !== 'error') throw new Error('the crash is not shown as an error');
    const note = await row('crashed').getByTestId('event-note').textContent();
    if (!note.includes(`pid ${first}`) || !/SIGSEGV/.test(note)) throw new Error(`the crash's note says ${note}`);
    await row('restarted').waitFor();
    if ((await row('restarted').getAttribute('data-tone')) !== 'warning') throw new Error('the restart after the crash is not a warning');
    if (!(await row('restarted').getByTestId('event-note').textContent()).includes(`pid ${second}`)) throw new Error('the restart note lacks the new pid');
  } finally {
    // The later tests count echo's cards and their layout: crashy goes again.
    await unlink(file).catch(() => undefined);
    await expectEventually('crashy to be gone', async () => !(await host.api('/api/core/plugins')).plugins.some((p) => p.id === 'crashy'), 20_000);
    await page.goto(ui.url + '/plugins');
    await page.locator('article[data-plugin="echo"]').waitFor();
    await expectEventually('the crashy card to go', async () => (await dashCard.count()) === 0);
  }
});

test(
  'a plugin copied into the folder appears on the open dashboard',
  async () => {
    await page.goto(ui.url + '/plugins');
    await card('echo').waitFor();
    const before = await page.locator('article[data-plugin]').count();
    const t0 = Date.now();
    await installPlugin(host.pluginsDir, newPluginLib);
    await expectEventually('a new card', async () => (await page.locator('article[data-plugin]').count()) > before, 10_000);
    const seen = Date.now() - t0;
    // How much of that is the host's own pickup: when did the API first list it?
    console.log(`    (new card visible ${seen} ms after the rename)`);
    await shot('dashboard-new-plugin');
  },
  { skip: newPluginLib ? null : 'no fixture_noop/slow/panicky library' },
);

test('apikeys: create a key (shown once), a read-less key gets a clear 403, revoke it', async () => {
  await page.goto(ui.url + '/plugins/apikeys/panel');
  const form = page.getByTestId('apikey-create');
  await form.waitFor();
  await form.locator('input[name=name]').fill('e2e-invoke');
  await form.locator('input[name=scope-read]').uncheck();
  await form.locator('input[name=scope-invoke]').check();
  await form.locator('button[type=submit]').click();
  await page.getByTestId('new-key').waitFor();
  const key = await page.getByTestId('new-key-value').inputValue();
  if (!/^bkg_/.test(key)) throw new Error(`unexpected key ${key}`);
  await shot('apikeys-created');
  const row = page.locator('tr[data-key-id]', { hasText: 'e2e-invoke' });
  await row.waitFor();
  // An invoke-only key can call plugins but not read the admin API: the login says 403.
  const other = await page.context().newPage();
  await login(other, key);
  await other.getByTestId('login-error').waitFor();
  const msg = await other.getByTestId('login-error').textContent();
  if (!/403/.test(msg)) throw new Error(`expected a 403 message, got: ${msg}`);
  await shot('login-forbidden', other);
  await other.close();
  // Revoke (two steps), then the key is refused.
  await page.getByRole('button', { name: 'Done' }).click();
  await row.getByRole('button', { name: 'Revoke' }).click();
  await row.getByRole('button', { name: 'Confirm revoke' }).click();
  await expectEventually('revoked', async () => (await row.getByTestId('key-status').textContent()).trim() === 'revoked');
  const res = await host.api('/api/plugins/echo/echo', { method: 'POST', body: 'x', key, raw: true });
  if (res.status !== 401) throw new Error(`revoked key answered ${res.status}`);
  await shot('apikeys');
});

test('stopping the auth provider asks first: cancel keeps it running, "Stop anyway" stops it and this key is refused', async () => {
  // A second admin: a key the apikeys plugin vouches for (not the bootstrap key).
  const created = await host.api('/api/plugins/apikeys/create', { method: 'POST', body: { name: 'e2e-admin', scopes: ['admin'] } });
  const apikeysState = async () => (await host.api('/api/core/plugins/apikeys')).state;
  const other = await page.context().newPage();
  other.on('pageerror', (e) => consoleErrors.push(e.message));
  const stopSent = [];
  other.on('request', (r) => /\/api\/core\/plugins\/apikeys\/stop/.test(r.url()) && stopSent.push(r.url()));
  const otherCard = (id) => other.locator(`article[data-plugin="${id}"]`);
  const stop = otherCard('apikeys').locator('button[data-action=stop]');
  const dialog = other.getByRole('alertdialog');
  const focusInDialog = () => other.evaluate(() => !!document.activeElement?.closest('[role=alertdialog]'));
  try {
    await login(other, created.key);
    await other.waitForURL('**/plugins');
    await otherCard('apikeys').getByTestId('auth-provider').waitFor();

    // 1. The card knows apikeys is the auth provider: it asks before sending anything. Keyboard
    // only: Enter on the stop button, the focus moves into the dialog and Tab keeps it there,
    // Escape cancels and gives the focus back.
    await stop.focus();
    await other.keyboard.press('Enter');
    await dialog.waitFor();
    if (!/bootstrap admin key/.test(await dialog.textContent())) throw new Error(`the dialog does not say who keeps access: ${await dialog.textContent()}`);
    await expectEventually('the focus in the dialog', focusInDialog);
    await shot('confirm-stop-auth-provider', other);
    for (let i = 0; i < 3; i++) {
      await other.keyboard.press('Tab');
      if (!(await focusInDialog())) throw new Error('Tab left the dialog');
    }
    await other.keyboard.press('Escape');
    await dialog.waitFor({ state: 'detached' });
    await expectEventually('the focus back on the stop button', () =>
      other.evaluate(() => document.activeElement?.getAttribute('data-action') === 'stop' && document.activeElement.closest('article')?.getAttribute('data-plugin') === 'apikeys'),
    );
    if (stopSent.length) throw new Error(`a stop was sent before the confirmation: ${stopSent}`);
    if ((await apikeysState()) !== 'running') throw new Error('apikeys stopped after Escape');

    // 2. A page that cannot tell which plugin is the auth provider (the list says it is not)
    // sends the stop; the host refuses it (409 confirm_required) and the page asks with the
    // host's message. Cancel (Enter on the focused Cancel): nothing more is sent.
    await other.route('**/api/core/plugins', async (route) => {
      const res = await route.fetch();
      const json = await res.json();
      for (const p of json.plugins ?? []) if (p.id === 'apikeys') p.auth_provider = false;
      await route.fulfill({ response: res, json });
    });
    await otherCard('apikeys').getByTestId('auth-provider').waitFor({ state: 'detached' });
    const refused = other.waitForResponse((r) => /\/apikeys\/stop$/.test(r.url()));
    await stop.click();
    const answer = await refused;
    const body = await answer.json().catch(() => null);
    if (answer.status() !== 409 || body?.error?.code !== 'confirm_required') throw new Error(`unconfirmed stop answered ${answer.status()} ${JSON.stringify(body)}`);
    await dialog.waitFor();
    const shown = (await dialog.getByTestId('confirm-message').textContent()).trim();
    if (shown !== body.error.message.trim()) throw new Error(`dialog shows "${shown}", the host said "${body.error.message}"`);
    await expectEventually('the focus on Cancel', () => other.evaluate(() => document.activeElement?.getAttribute('data-testid') === 'confirm-cancel'));
    await other.keyboard.press('Enter');
    await dialog.waitFor({ state: 'detached' });
    if (stopSent.length !== 1) throw new Error(`stops sent: ${stopSent.join(', ')}`);
    if ((await apikeysState()) !== 'running') throw new Error('apikeys stopped after Cancel');
    // Waits for a handler still in flight (a poll's fetch): unrouting under it made its fulfill
    // throw "Route is already handled", an unhandled rejection that ended a run.
    await other.unrouteAll({ behavior: 'wait' });
    await otherCard('apikeys').getByTestId('auth-provider').waitFor();

    // 3. Stop anyway: apikeys stops, and this session learns at once that its key is refused.
    await expectEventually('the stop button enabled', () => stop.isEnabled());
    await stop.click();
    const confirmed = other.waitForResponse((r) => /\/apikeys\/stop\?confirm=true$/.test(r.url()));
    await dialog.getByRole('button', { name: 'Stop anyway' }).click();
    if ((await confirmed).status() !== 200) throw new Error(`confirmed stop answered ${(await confirmed).status()}`);
    await expectEventually('apikeys stopped', async () => (await apikeysState()) === 'stopped');
    await other.waitForURL('**/login');
    const msg = await other.getByTestId('login-error').textContent();
    if (!/401/.test(msg) || !/bootstrap/.test(msg)) throw new Error(`the login page does not say why the key is refused: ${msg}`);
    const res = await host.api('/api/core/plugins', { key: created.key, raw: true });
    if (res.status !== 401) throw new Error(`the second admin key answered ${res.status} with apikeys stopped`);
    // The bootstrap key (this page) still works.
    if ((await host.api('/api/core/plugins/apikeys')).state !== 'stopped') throw new Error('bootstrap key refused');
  } finally {
    await other.close();
    // Back as it was for the other tests: apikeys running (the bootstrap key starts it), the key revoked.
    if ((await apikeysState()) !== 'running') await host.api('/api/core/plugins/apikeys/start', { method: 'POST' });
    await host.waitRunning(['apikeys']);
    await host.api('/api/plugins/apikeys/revoke', { method: 'POST', body: { id: created.id } });
  }
});

const uploadSupported = (await host.api('/api/core/plugins/upload/probe.so', { method: 'PUT', raw: true })).status !== 404;
test(
  'upload: a library chosen in the page is installed and swaps the plugin',
  async () => {
    await page.goto(ui.url + '/plugins');
    await page.getByTestId('upload-input').setInputFiles(lib('fixture_echo_v2'));
    await expectEventually('echo v2', async () => /v2\.0\.0/.test(await card('echo').textContent()), 15_000);
    await shot('upload');
    // The retired generation's row says how much heap it left behind; the loaded one has none yet.
    const doc = await host.api('/api/core/plugins/echo');
    const retired = doc.history.filter((h) => h.retired_at_ms).sort((a, b) => b.generation - a.generation)[0];
    if (typeof retired?.heap_left_bytes !== 'number') throw new Error(`no heap_left_bytes for the retired echo: ${JSON.stringify(retired)}`);
    await page.goto(ui.url + '/plugins/echo/overview');
    const rows = page.locator('[data-testid=history] tbody tr');
    await expectEventually('two generations in the load history', async () => (await rows.count()) >= 2);
    const left = rows.nth(1).getByTestId('heap-left');
    const shown = parseBytes(await left.textContent());
    if (shown == null || Math.abs(shown - retired.heap_left_bytes) > Math.max(64, retired.heap_left_bytes * 0.05)) {
      throw new Error(`heap left shown ${await left.textContent()}, host says ${retired.heap_left_bytes}`);
    }
    if (!/stays in the process/.test((await left.getAttribute('title')) ?? '')) throw new Error('no explanation on the heap-left cell');
    if ((await rows.nth(0).getByTestId('heap-left').textContent()).trim() !== '–') throw new Error('the loaded generation shows heap left');
    console.log(`    (echo gen ${retired.generation} left ${await left.textContent()} of heap when retired)`);
  },
  { skip: uploadSupported ? null : 'host lacks PUT /api/core/plugins/upload/{filename}' },
);

// --- models tab: downloads from the fake hub ---------------------------------------------------

const job = (repo) => page.locator(`[data-job][data-repo="${repo}"]`).first();
async function requestDownload(repo, files) {
  await page.locator('form[data-testid=download-form] input[name=repo]').fill(repo);
  await page.locator('form[data-testid=download-form] textarea[name=files]').fill(files.join('\n'));
  await page.locator('form[data-testid=download-form] button[type=submit]').click();
}

test('models: a download from the hub shows per-file progress to 100% and the model installed', async () => {
  await page.goto(ui.url + '/plugins/echo/models');
  await page.getByTestId('download-form').waitFor();
  await expectEventually('models socket open', async () => (await page.getByTestId('models-live').textContent()).trim() === 'live');
  // The big file with the sha256 the hub also advertises (checked twice), the small one without.
  await requestDownload(TINY.repo, ['config.json', `model.safetensors ${sha256(TINY.weights)}`]);
  const row = job(TINY.repo);
  await row.waitFor();
  // Progress arrives over the WebSocket while the big file trickles in (~0.4 s).
  const seen = new Set();
  await expectEventually('installed', async () => {
    const v = await row.locator('[data-file="model.safetensors"] [role=progressbar]').getAttribute('aria-valuenow');
    if (v) seen.add(Number(v));
    return (await row.getAttribute('data-job-state')) === 'installed';
  }, 30_000);
  for (const f of ['config.json', 'model.safetensors']) {
    const li = row.locator(`[data-file="${f}"]`);
    if ((await li.getAttribute('data-file-state')) !== 'verified') throw new Error(`${f} not verified`);
    if ((await li.locator('[role=progressbar]').getAttribute('aria-valuenow')) !== '100') throw new Error(`${f} bar not at 100%`);
  }
  console.log(`    (progress values seen for model.safetensors: ${[...seen].sort((a, b) => a - b).join(', ')})`);
  await page.locator(`[data-testid=installed-models] [data-model="${TINY.repo}"]`).waitFor();
  const { models } = await host.api('/api/core/models');
  const m = models.find((x) => x.repo === TINY.repo);
  if (!m || m.plugin !== 'echo' || m.total_bytes !== TINY.config.length + TINY.weights.length) throw new Error(`host lists ${JSON.stringify(m)}`);
  if (!existsSync(join(host.modelsDir, TINY.repo, 'model.safetensors'))) throw new Error('no model.safetensors in the models folder');
});

test('models: a download naming a missing file fails with a clear error', async () => {
  await requestDownload(TINY.repo, ['config.json', 'missing.bin']);
  const failed = page.locator(`[data-job][data-repo="${TINY.repo}"][data-job-state=failed]`).first();
  await failed.waitFor({ timeout: 20_000 });
  const msg = (await failed.getByTestId('job-error').textContent()).trim();
  if (!/missing\.bin/.test(msg) || !/404/.test(msg)) throw new Error(`unclear error: ${msg}`);
  console.log(`    (error shown: ${msg})`);
  if ((await failed.locator('[data-file="missing.bin"]').getAttribute('data-file-state')) !== 'failed') throw new Error('missing.bin not marked failed');
  // The earlier install is untouched.
  await page.locator(`[data-testid=installed-models] [data-model="${TINY.repo}"]`).waitFor();
});

test('models: a slow download can be cancelled from the page', async () => {
  await requestDownload(SLOW.repo, ['weights.bin']);
  const row = job(SLOW.repo);
  await row.waitFor();
  await expectEventually('some progress', async () => Number(await row.locator('[data-file="weights.bin"] [role=progressbar]').getAttribute('aria-valuenow')) > 0, 20_000);
  // Asking for the same repo again while it runs: the host's 409, shown at the form.
  await requestDownload(SLOW.repo, ['weights.bin']);
  const conflict = page.getByTestId('download-error');
  await conflict.waitFor();
  if (!/^409: .*already running/.test((await conflict.textContent()).trim())) throw new Error(`unexpected: ${await conflict.textContent()}`);
  await row.getByRole('button', { name: 'Cancel' }).click();
  await expectEventually('cancelled', async () => (await row.getAttribute('data-job-state')) === 'cancelled', 15_000);
  const id = await row.getAttribute('data-job');
  const view = await host.api(`/api/core/models/downloads/${id}`);
  if (view.state !== 'cancelled') throw new Error(`host says ${view.state}`);
  const done = view.files[0].bytes_done;
  if (!(done > 0 && done < SLOW.weights.length)) throw new Error(`cancelled at ${done} bytes`);
  if (existsSync(join(host.modelsDir, SLOW.repo))) throw new Error('a cancelled download left a model folder');
  const cache = join(host.modelsDir, '.downloads/hub', `models--${SLOW.repo.replace('/', '--')}`);
  if (existsSync(cache)) throw new Error(`a cancelled download left its partial files in ${cache}`);
  if (!/cancelled/.test(await row.locator('[data-file="weights.bin"]').textContent())) throw new Error('the file does not show cancelled');
  if ((await row.getByRole('button', { name: /Cancel/ }).count()) !== 0) throw new Error('cancel button still shown');
  // Editing the form clears the stale 409.
  await page.locator('form[data-testid=download-form] input[name=repo]').fill(TINY.repo);
  await page.locator('form[data-testid=download-form] textarea[name=files]').fill('config.json\nmodel.safetensors');
  await conflict.waitFor({ state: 'detached' });
  await shot('models');
});

// --- llmserver: chat and embeddings through candle -----------------------------------------------

test('llmserver: with the default settings (greedy, shown), the README question is answered naming Paris and a longer answer is seen streaming in; embeddings', async () => {
  await page.goto(ui.url + '/plugins/llmserver/panel');
  const modelSelect = page.getByTestId('chat-model');
  await expectEventually('chat models listed', async () => (await modelSelect.inputValue()) === 'SmolLM2-135M-Instruct');
  // Nothing touched: the panel starts greedy (SmolLM2 states no settings of its own) and says so.
  const defaults = { 'chat-temperature': '0', 'chat-top-p': '1', 'chat-max-tokens': '256' };
  for (const [id, want] of Object.entries(defaults)) {
    const got = await page.getByTestId(id).inputValue();
    if (got !== want) throw new Error(`${id} defaults to ${got}, not ${want}`);
  }
  const summary = (await page.getByTestId('chat-settings-summary').textContent()).replace(/\s+/g, ' ');
  if (!summary.includes('temperature 0 · top_p 1 · max_tokens 256') || !/greedy/.test(summary)) throw new Error(`settings not shown: ${summary}`);
  // The README question: the answer names Paris.
  const ask = async (question) => {
    await page.getByTestId('chat-input').fill(question);
    // Every text the answer shows while the stream is open, recorded in the page as it
    // renders (polling from here could miss a stream of ~100 ms).
    await page.evaluate(() => {
      const log = document.querySelector('[data-testid=chat-log]');
      window.__answerTexts = [];
      window.__answerObserver?.disconnect();
      window.__answerObserver = new MutationObserver(() => {
        if (log.getAttribute('data-streaming') !== 'true') return;
        const last = [...log.querySelectorAll('[data-role=assistant]')].pop();
        const text = last ? last.textContent.trim() : '';
        if (text) window.__answerTexts.push(text);
      });
      window.__answerObserver.observe(log, { subtree: true, childList: true, characterData: true, attributes: true });
    });
    // This question's answer is the next assistant message: waiting on "the last one" could
    // take the previous answer, finished and shown before this one had started (CI did).
    const before = await page.locator('[data-role=assistant]').count();
    await page.getByRole('button', { name: 'Send' }).click();
    const answer = page.locator('[data-role=assistant]').nth(before);
    await expectEventually('the answer streamed in', async () => {
      const streaming = (await page.getByTestId('chat-log').getAttribute('data-streaming')) === 'true';
      const text = ((await answer.count()) ? await answer.textContent() : '').trim();
      return !streaming && text.length > 0;
    }, 120_000);
    if (await page.getByText('Chat failed').count()) throw new Error(await page.getByText('Chat failed').textContent());
    const text = (await answer.textContent()).trim();
    const partial = (await page.evaluate(() => window.__answerTexts)).find((t) => t.length < text.length) ?? null;
    return { text, partial };
  };
  const { text: paris } = await ask('What is the capital of France?');
  if (!/Paris/.test(paris)) throw new Error(`no Paris in: ${paris}`);
  // Watch an answer grow: one long enough (up to 256 tokens) to arrive in several renders.
  const { text, partial } = await ask('Write a short story about a lighthouse keeper.');
  if (partial == null || partial.length >= text.length) throw new Error(`not seen streaming (partial: ${partial})`);
  console.log(`    (partial "${partial}" -> "${text}"; ${await page.getByTestId('chat-stats').textContent()})`);
  // Embeddings: the embedding model, two texts, their cosine similarity.
  if ((await page.getByTestId('embed-model').inputValue()) !== 'all-MiniLM-L6-v2') throw new Error('embedding model not preselected');
  await page.locator('textarea[name=a]').fill('The cat sits on the mat.');
  await page.locator('textarea[name=b]').fill('A cat is sitting on a mat.');
  await page.getByRole('button', { name: 'Embed' }).click();
  const result = page.getByTestId('embed-result');
  await result.waitFor({ timeout: 60_000 });
  if (!/384/.test(await result.textContent())) throw new Error(`unexpected embeddings: ${await result.textContent()}`);
  await shot('llmserver-chat');
});

// --- candle: load, quantize, unload --------------------------------------------------------------

/** "95.0 MiB" -> bytes; null for "–". */
function parseBytes(text) {
  const m = /([\d.]+)\s*(B|KiB|MiB|GiB)/.exec(text ?? '');
  if (!m) return null;
  return Number(m[1]) * { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 }[m[2]];
}

const formatMiB = (n) => `${(n / 1048576).toFixed(1)} MiB`;

/** The sRGB relative luminance (0 black .. 1 white) of what an element paints, read back from a canvas. */
async function luminance(locator, prop = 'backgroundColor') {
  return locator.evaluate((el, prop) => {
    const color = getComputedStyle(el)[prop];
    const ctx = Object.assign(document.createElement('canvas'), { width: 1, height: 1 }).getContext('2d');
    ctx.fillStyle = color;
    ctx.fillRect(0, 0, 1, 1);
    const [r, g, b] = ctx.getImageData(0, 0, 1, 1).data;
    const lin = (c) => ((c /= 255) <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4);
    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
  }, prop);
}

test('dashboard: each card shows the heap its plugin library holds', async () => {
  await page.goto(ui.url + '/plugins');
  for (const id of ['echo', 'apikeys', 'llmserver', 'candle']) {
    await expectEventually(`a heap figure on ${id}`, async () => parseBytes(await card(id).getByTestId('heap').textContent()) > 0);
  }
  if (await card('echo').getByTestId('heap-unreported').count()) throw new Error('echo says its heap is not reported');
  await card('echo').locator('svg[aria-label="heap over the last minute"]').waitFor();
});

test('keyboard: the plugin tabs follow the arrow keys, Home and End; card actions are reachable by Tab', async () => {
  await page.goto(ui.url + '/plugins/echo/overview');
  const focusedTab = () => page.evaluate(() => document.activeElement?.getAttribute('data-tab'));
  await page.locator('[role=tab][data-tab=overview]').focus();
  const steps = [
    ['ArrowRight', 'config'],
    ['ArrowRight', 'logs'],
    ['End', 'models'],
    ['ArrowRight', 'overview'],
    ['ArrowLeft', 'models'],
    ['Home', 'overview'],
  ];
  for (const [key, want] of steps) {
    await page.keyboard.press(key);
    await page.waitForURL(`**/plugins/echo/${want}`);
    await expectEventually(`focus on ${want}`, async () => (await focusedTab()) === want);
    // The focus moves at once; the selection follows when the navigation has rendered.
    await expectEventually(`${key}: the ${want} tab selected`, async () => {
      const selected = await page.locator('[role=tab][aria-selected=true]').getAttribute('data-tab');
      if (selected !== want) throw new Error(`selected: ${selected}`);
      return true;
    });
  }
  // Only the selected tab is a Tab stop: Tab leaves the tab list for the panel.
  await page.keyboard.press('Tab');
  if ((await page.evaluate(() => document.activeElement?.getAttribute('role'))) !== 'tabpanel') throw new Error('Tab did not move to the tab panel');

  // On the dashboard, Tab alone reaches the echo card's stop button.
  await page.goto(ui.url + '/plugins');
  await card('echo').waitFor();
  let reached = false;
  for (let i = 0; i < 80 && !reached; i++) {
    await page.keyboard.press('Tab');
    reached = await page.evaluate(() => {
      const el = document.activeElement;
      return el?.getAttribute('data-action') === 'stop' && el.closest('article')?.getAttribute('data-plugin') === 'echo';
    });
  }
  if (!reached) throw new Error('Tab never reached the echo card\'s stop button');
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  if (outline === 'none') throw new Error('the focused button shows no focus outline');
});

/**
 * Presses Tab from the top of the page until the focus leaves the document or comes back round.
 * Returns each stop (a short name, and whether it showed a focus indicator: an outline, or a
 * box-shadow ring it lacks unfocused) and the visible, enabled, focusable elements never reached.
 */
async function tabWalk(p, limit = 250) {
  await p.evaluate(() => {
    const sel = 'a[href], button:not([disabled]), input:not([disabled]):not([type=hidden]), select:not([disabled]), textarea:not([disabled]), summary, [tabindex]';
    const shown = (el) => {
      const r = el.getBoundingClientRect();
      return r.width > 0 && r.height > 0 && getComputedStyle(el).visibility !== 'hidden';
    };
    const expected = [...document.querySelectorAll(sel)].filter((el) => el.tabIndex >= 0 && shown(el) && !el.closest('[inert], details:not([open]) > :not(summary)'));
    window.__walk = { expected, plain: new Map(expected.map((el) => [el, getComputedStyle(el).boxShadow])), seen: new Set() };
  });
  const stops = [];
  for (let i = 0; i < limit; i++) {
    await p.keyboard.press('Tab');
    const stop = await p.evaluate(() => {
      const el = document.activeElement;
      if (!el || el === document.body) return null;
      const w = window.__walk;
      if (w.seen.has(el)) return { again: true };
      w.seen.add(el);
      const cs = getComputedStyle(el);
      const outline = cs.outlineStyle !== 'none' && parseFloat(cs.outlineWidth) > 0;
      const ring = w.plain.has(el) && cs.boxShadow !== 'none' && cs.boxShadow !== w.plain.get(el);
      const text = (el.getAttribute('aria-label') || el.textContent || el.getAttribute('name') || el.id || '').trim().replace(/\s+/g, ' ').slice(0, 30);
      const where = el.closest('[data-plugin]')?.getAttribute('data-plugin');
      return { name: `${el.tagName.toLowerCase()}${el.getAttribute('role') ? `[role=${el.getAttribute('role')}]` : ''} "${text}"${where ? ` in ${where}` : ''}`, indicator: outline || ring };
    });
    if (!stop || stop.again) break;
    stops.push(stop);
  }
  const missed = await p.evaluate(() =>
    window.__walk.expected.filter((el) => !window.__walk.seen.has(el)).map((el) => `${el.tagName.toLowerCase()} "${(el.textContent || el.getAttribute('name') || '').trim().slice(0, 30)}"`),
  );
  return { stops, missed };
}

test('keyboard: every control on the main screens is reached by Tab and shows where the focus is', async () => {
  const screens = [
    ['/plugins', () => card('candle').locator('button[data-action=stop]')],
    ['/plugins/echo/overview', () => page.getByTestId('history')],
    ['/plugins/echo/config', () => page.locator('#cfg_greeting')],
    ['/plugins/echo/logs', () => page.getByTestId('log-search')],
    ['/plugins/echo/telemetry', () => page.getByTestId('telemetry-totals')],
    // candle's one Models tab: its own panel (load, quantize) above the downloads.
    ['/plugins/candle/models', async () => (await page.getByTestId('download-form').waitFor(), page.getByTestId('candle-load'))],
    ['/plugins/llmserver/panel', () => page.getByTestId('chat-input')],
    ['/plugins/apikeys/panel', () => page.getByTestId('apikey-create')],
    ['/events', () => page.getByTestId('events-table')],
  ];
  const problems = [];
  let total = 0;
  for (const [path, ready] of screens) {
    await page.goto(ui.url + path);
    await (await ready()).waitFor();
    await settled();
    const { stops, missed } = await tabWalk(page);
    total += stops.length;
    const bare = stops.filter((s) => !s.indicator).map((s) => s.name);
    if (bare.length) problems.push(`${path}: no focus indicator on ${bare.join(', ')}`);
    if (missed.length) problems.push(`${path}: never reached by Tab: ${missed.join(', ')}`);
    if (stops.length < 5) problems.push(`${path}: only ${stops.length} Tab stops`);
  }
  if (problems.length) throw new Error(problems.join('\n    '));
  console.log(`    (${total} Tab stops on ${screens.length} screens, each with a visible focus indicator)`);
});

test('dark mode follows the system: dark surfaces and light text, light again after', async () => {
  try {
    await page.emulateMedia({ colorScheme: 'dark' });
    await page.goto(ui.url + '/plugins');
    await card('echo').waitFor();
    const body = await luminance(page.locator('body'));
    const surface = await luminance(card('echo'));
    const text = await luminance(card('echo').locator('h2'), 'color');
    if (!(body < 0.05 && surface < 0.08)) throw new Error(`dark mode: page ${body.toFixed(3)}, card ${surface.toFixed(3)}`);
    if (!(text > 0.6)) throw new Error(`dark mode: card title luminance ${text.toFixed(3)}`);
    // Sparklines need two samples (a second or two after the page loads).
    await expectEventually('sparklines', async () => ((await card('candle').locator('svg polyline').first().getAttribute('points')) ?? '').includes(' '), 5_000);
    await shot('dashboard-dark');
    await page.goto(ui.url + '/plugins/echo/telemetry');
    await page.locator('[data-testid=heap-chart]').waitFor();
    await expectEventually('host sparklines', async () => ((await page.getByTestId('host-stats').locator('polyline').first().getAttribute('points')) ?? '').includes(' '), 5_000);
    const header = await luminance(page.locator('header').first());
    if (!(header < 0.08)) throw new Error(`dark mode: header ${header.toFixed(3)}`);
    await shot('plugin-dark');
    await page.goto(ui.url + '/plugins/llmserver/panel');
    await page.locator('textarea, input').first().waitFor();
    const field = await luminance(page.locator('textarea, input').first());
    if (!(field < 0.08)) throw new Error(`dark mode: an input field ${field.toFixed(3)}`);
  } finally {
    await page.emulateMedia({ colorScheme: 'light' });
  }
  await page.goto(ui.url + '/plugins');
  await card('echo').waitFor();
  const body = await luminance(page.locator('body'));
  if (!(body > 0.8)) throw new Error(`light mode: page ${body.toFixed(3)}`);
});

test('a broken or half-copied library in the folder shows a failed card with the reason; removing it clears it; a second copy of echo stands by', async () => {
  await page.goto(ui.url + '/plugins');
  await card('echo').waitFor();
  const junk = join(host.pluginsDir, 'junk-plugin.so');
  const half = join(host.pluginsDir, 'half-plugin.so');
  await writeFile(junk, 'this is not a shared library\n');
  const echo = await readFile(lib('fixture_echo'));
  await writeFile(half, echo.subarray(0, echo.length >> 1));
  for (const [id, reason] of [['junk-plugin', /not a shared library/], ['half-plugin', /truncated/]]) {
    await expectEventually(`a failed card for ${id}`, async () => (await card(id).locator('[data-state]').getAttribute('data-state')) === 'failed');
    const msg = await card(id).getByTestId('last-error').textContent();
    if (!reason.test(msg)) throw new Error(`${id}: unclear error: ${msg}`);
  }
  await shot('dashboard-failed');
  if ((await card('echo').locator('[data-state]').getAttribute('data-state')) !== 'running') throw new Error('echo stopped running');
  await unlink(junk);
  await unlink(half);
  await expectEventually('the failed cards gone', async () => (await card('junk-plugin').count()) === 0 && (await card('half-plugin').count()) === 0);

  // A second copy of echo, older than the file serving it: it stands by (no swap), and echo's
  // overview lists every file providing echo, newest first, saying which one serves.
  const before = await host.api('/api/core/plugins/echo');
  const copy = join(host.pluginsDir, 'echo-copy.so');
  await installPlugin(host.pluginsDir, 'fixture_echo', 'echo-copy.so', { mtime: new Date(Date.now() - 3600_000) });
  let doc;
  await expectEventually('the host lists echo-copy.so for echo', async () => {
    doc = await host.api('/api/core/plugins/echo');
    return (doc.files ?? []).some((f) => basename(f.file) === 'echo-copy.so');
  });
  if (doc.generation !== before.generation || basename(doc.file) !== basename(before.file)) {
    throw new Error(`an older copy swapped echo: gen ${before.generation} -> ${doc.generation}, ${before.file} -> ${doc.file}`);
  }
  const servingFiles = doc.files.filter((f) => f.serving).map((f) => basename(f.file));
  if (servingFiles.length !== 1 || servingFiles[0] !== basename(doc.file) || servingFiles[0] === 'echo-copy.so') {
    throw new Error(`host: serving ${JSON.stringify(servingFiles)}, file ${doc.file}`);
  }
  await page.goto(ui.url + '/plugins/echo/overview');
  const fileRows = page.locator('[data-testid=plugin-files] tbody tr');
  await expectEventually(`the overview listing the ${doc.files.length} files providing echo`, async () => (await fileRows.count()) === doc.files.length);
  const shown = await fileRows.evaluateAll((rows) =>
    rows.map((r) => ({ file: r.getAttribute('data-file'), text: r.textContent, role: r.querySelector('[data-testid=file-role]')?.textContent.trim() })),
  );
  doc.files.forEach((f, i) => {
    const row = shown[i];
    const want = f.serving ? 'serving' : 'standing by';
    if (row.file !== basename(f.file) || row.role !== want || !row.text.includes(f.sha256.slice(0, 12))) {
      throw new Error(`files row ${i}: ${JSON.stringify(row)}, host says ${basename(f.file)} ${want} ${f.sha256.slice(0, 12)}`);
    }
  });
  if (shown[0].role !== 'serving' || shown[shown.length - 1].file !== 'echo-copy.so') throw new Error(`not newest first: ${JSON.stringify(shown)}`);
  // Deleting the copy that stands by changes nothing but the list.
  await unlink(copy);
  await expectEventually('echo-copy.so gone from the host and the overview', async () => {
    const now = await host.api('/api/core/plugins/echo');
    const listed = (now.files ?? []).some((f) => basename(f.file) === 'echo-copy.so');
    return !listed && (await page.locator('[data-testid=plugin-files] tr[data-file="echo-copy.so"]').count()) === 0;
  });
  const after = await host.api('/api/core/plugins/echo');
  if (after.state !== 'running' || after.generation !== before.generation) throw new Error(`echo after the copy went: ${after.state}, gen ${after.generation} (was ${before.generation})`);
});

test('candle: load MiniLM as an embedding model, quantize it to q8_0, unload it', async () => {
  const MINILM = 'sentence-transformers/all-MiniLM-L6-v2';
  const realQ8 = join(MODELS_DIR, MINILM, 'model-q8_0.gguf');
  const realQ8Before = existsSync(realQ8);
  // What counts is the growth of candle's heap: SmolLM2 may already sit in it (the llmserver
  // test), and so may MiniLM under llmserver's name, whose weights a second load would share:
  // unload that first, and read the heap from a sample taken after it.
  const telemetry = () => host.api('/api/core/plugins/candle/telemetry');
  const heapNow = async () => (await telemetry()).current?.heap_bytes;
  for (const m of (await host.api('/api/plugins/candle/model.list', { method: 'POST', body: {} })).models) {
    if (m.name.endsWith('all-MiniLM-L6-v2')) await host.api('/api/plugins/candle/model.unload', { method: 'POST', body: { name: m.name } });
  }
  const unloadedAt = Date.now();
  await expectEventually('a telemetry sample after the unload', async () => (await telemetry()).current?.at_ms > unloadedAt + 100);
  const heapBefore = await heapNow();
  if (typeof heapBefore !== 'number') throw new Error(`candle reports no heap: ${heapBefore}`);
  await page.goto(ui.url + '/plugins/candle/models');
  const form = page.getByTestId('candle-load');
  await form.locator('input[name=loadPath]').fill(MINILM);
  await form.locator('select[name=loadKind]').selectOption('embedding');
  await form.locator('button[type=submit]').click();
  const row = page.locator(`[data-testid=candle-models] [data-model="${MINILM}"]`);
  await row.waitFor({ timeout: 60_000 });
  if ((await row.getAttribute('data-kind')) !== 'embedding') throw new Error('not an embedding model');
  const listed = await host.api('/api/plugins/candle/model.list', { method: 'POST', body: {} });
  if (!listed.models.some((m) => m.name === MINILM && m.details?.dimensions === 384)) throw new Error(`model.list: ${JSON.stringify(listed)}`);
  // The weights (90.9 MB of F32) now sit in candle's heap, and its card and telemetry tab say so.
  await page.goto(ui.url + '/plugins');
  const grown = (text) => parseBytes(text) - heapBefore > 80e6;
  await expectEventually('candle\'s heap 80 MB up on its card', async () => grown(await card('candle').getByTestId('heap').textContent()), 15_000);
  console.log(`    (candle heap ${formatMiB(heapBefore)} before loading MiniLM, ${await card('candle').getByTestId('heap').textContent()} with it)`);
  await page.goto(ui.url + '/plugins/candle/telemetry');
  const legend = page.locator('[data-testid=heap-chart] [data-series=heap]');
  await expectEventually('candle\'s heap 80 MB up in its telemetry', async () => grown(await legend.textContent()), 15_000);
  await page.goto(ui.url + '/plugins/candle/models');
  await row.waitFor({ timeout: 20_000 });

  await page.locator('select[name=qSource]').selectOption(`name:${MINILM}`);
  await page.locator('select[name=qType]').selectOption('q8_0');
  const t0 = Date.now();
  await page.getByTestId('candle-quantize').getByRole('button', { name: 'Quantize' }).click();
  const result = page.getByTestId('quantize-result');
  await Promise.race([
    result.waitFor({ timeout: 80_000 }),
    page.getByTestId('quantize-error').waitFor({ timeout: 80_000 }).then(async () => {
      throw new Error(await page.getByTestId('quantize-error').textContent());
    }),
  ]);
  const agreement = await result.getByTestId('agreement').textContent();
  const min = Number(/min ([\d.]+)/.exec(agreement)?.[1]);
  if (!(min > 0.99)) throw new Error(`poor agreement: ${agreement}`);
  console.log(`    (quantized in ${Date.now() - t0} ms: ${await result.getByTestId('size-before').textContent()} -> ${(await result.getByTestId('size-after').textContent()).trim()}; ${agreement.trim()})`);
  if (!existsSync(join(host.modelsDir, MINILM, 'model-q8_0.gguf'))) throw new Error('no model-q8_0.gguf in the host\'s models folder');
  if (!realQ8Before && existsSync(realQ8)) throw new Error(`quantize wrote into the real models folder: ${realQ8}`);
  await shot('candle');

  await row.getByRole('button', { name: 'Unload' }).click();
  await row.waitFor({ state: 'detached', timeout: 20_000 });
  const after = await host.api('/api/plugins/candle/model.list', { method: 'POST', body: {} });
  if (after.models.some((m) => m.name === MINILM)) throw new Error('still loaded after unload');
  // Unloading gives the weights' heap back.
  await expectEventually('candle\'s heap back down after the unload', async () => (await heapNow()) - heapBefore < 20e6, 15_000);
  console.log(`    (candle heap after unloading MiniLM: ${formatMiB(await heapNow())})`);
});

const BRAINML = 'bkg_plugin_brainml';
// Skipped only outside CI when the library was not built; in CI a missing library fails.
const brainmlSkip = { skip: existsSync(lib(BRAINML)) || process.env.CI ? null : `no ${BRAINML} library (cargo build -p bkg-plugin-brainml)` };
const BM = 'e2e-licenses';
const BM_COPY = 'e2e-licenses-copy';
// The brainml tests share one collection: the first makes it, the last deletes it.
let brainmlCollection = false;
const needCollection = () => {
  if (!brainmlCollection) throw new Error(`the brainml test that creates ${BM} failed: nothing to work on`);
};
const bmRow = (name) => page.getByTestId('bm-collections').locator(`tr[data-collection="${name}"]`);
async function confirmDialog(label) {
  const dialog = page.getByRole('alertdialog');
  await dialog.waitFor();
  await dialog.getByRole('button', { name: label, exact: true }).click();
  await dialog.waitFor({ state: 'detached' });
}

test(
  'brainml: create a collection, index two Apache-2.0 paragraphs as picked files (streamed progress), a query ranks the right one first with the word highlighted',
  async () => {
    // Two real paragraphs nobody here wrote: sections 2 and 3 of the Apache License 2.0.
    const license = await readFile('/usr/share/common-licenses/Apache-2.0', 'utf8');
    const para = (start) => {
      const p = license.split(/\n\s*\n/).find((x) => x.trim().startsWith(start));
      if (!p) throw new Error(`no paragraph starting with ${start} in the Apache-2.0 text`);
      return p.replace(/\s+/g, ' ').trim();
    };
    const copyright = para('2. Grant of Copyright License');
    const patent = para('3. Grant of Patent License');
    if (/patent/i.test(copyright)) throw new Error('the copyright paragraph mentions patents: the query would not tell them apart');

    await installPlugin(host.pluginsDir, BRAINML);
    await host.waitRunning(['brainml'], 30_000);
    await page.goto(ui.url + '/plugins/brainml/panel');
    const collections = page.getByTestId('bm-collections');
    await collections.waitFor();
    await settled();

    // Create (the default model, cosine), by keyboard-reachable labelled controls.
    const form = page.getByTestId('bm-create');
    await form.locator('input[name=bmName]').fill(BM);
    await form.getByRole('button', { name: 'Create' }).click();
    const row = bmRow(BM);
    await row.waitFor({ timeout: 20_000 });
    if (!/all-MiniLM-L6-v2/.test(await row.textContent())) throw new Error(`the new collection does not show its model: ${await row.textContent()}`);

    // Index: two files, one document each, with progress per file.
    await page.getByTestId('bm-file-input').setInputFiles([
      { name: 'copyright.txt', mimeType: 'text/plain', buffer: Buffer.from(copyright) },
      { name: 'patent.md', mimeType: 'text/markdown', buffer: Buffer.from(patent) },
    ]);
    const files = page.getByTestId('bm-files');
    for (const f of ['copyright.txt', 'patent.md']) {
      const li = files.locator(`li[data-file="${f}"]`);
      await expectEventually(`${f} indexed`, async () => {
        const st = await li.getAttribute('data-status');
        if (st === 'error') throw new Error(`${f}: ${await li.textContent()}`);
        return st === 'done';
      }, 60_000);
      // The plugin's own answer: its chunks and time.
      if (!/(?<!\d)1 chunk in [\d.]+ ms/.test(await li.textContent())) throw new Error(`${f}: ${await li.textContent()}`);
    }
    const summary = (await page.getByTestId('bm-files-summary').textContent()).replace(/\s+/g, ' ');
    if (!summary.includes('2/2 files indexed')) throw new Error(`files summary: ${summary}`);
    await expectEventually('2 documents in the collection row', async () => (await row.getByTestId('bm-documents').textContent()).trim() === '2', 15_000);

    // Query (hybrid, the default) for a word of one paragraph.
    const q = page.getByTestId('bm-query');
    await q.locator('select[name=bmQueryCollection]').selectOption(BM);
    await q.locator('input[name=bmQueryText]').fill('patent');
    // A malformed filter is shown before anything is sent, and blocks the search.
    await q.locator('textarea[name=bmFilter]').fill('{"source": ');
    if (!/not valid JSON/.test(await q.getByTestId('bm-filter-error').textContent())) throw new Error('no filter error shown');
    if (!(await q.getByRole('button', { name: 'Search' }).isDisabled())) throw new Error('Search is enabled with a malformed filter');
    await q.locator('textarea[name=bmFilter]').fill('');
    await q.getByRole('button', { name: 'Search' }).click();
    const first = q.locator('li[data-rank="1"]');
    await first.waitFor({ timeout: 30_000 });
    const firstId = await first.getAttribute('data-hit-id');
    if (firstId !== 'patent.md') throw new Error(`ranked first: ${firstId} (hits: ${await q.getByTestId('bm-hits').textContent()})`);
    const marks = await first.locator('mark').allTextContents();
    if (!marks.length || !marks.every((m) => m.toLowerCase() === 'patent')) throw new Error(`highlighted: ${JSON.stringify(marks)}`);
    if (!/"source":"patent\.md"/.test(await first.getByTestId('bm-metadata').textContent())) throw new Error('the hit does not show its metadata');
    // The top of the panel: the collection with its stats, the files' progress, the hits.
    await page.setViewportSize({ width: 1280, height: 1320 });
    await page.evaluate(() => window.scrollTo(0, 0));
    await shot('brainml');
    await page.setViewportSize({ width: 1280, height: 900 });
    brainmlCollection = true;
  },
  brainmlSkip,
);

test(
  'brainml: snapshot the collection, verify it (every hash), download it as a tar, restore it as a new collection (confirmed), delete the snapshot (confirmed)',
  async () => {
    needCollection();
    const sec = page.getByTestId('bm-snapshots');
    await sec.locator('select[name=bmSnapCollection]').selectOption(BM);
    await sec.getByRole('button', { name: 'Create snapshot' }).click();
    const snapRow = sec.locator(`tr[data-collection="${BM}"]`).first();
    await expectEventually('the snapshot listed', async () => {
      const err = sec.getByTestId('bm-snap-error');
      if (await err.count()) throw new Error(`the panel shows: ${await err.textContent()}`);
      return (await snapRow.count()) > 0;
    }, 30_000);
    const id = await snapRow.getAttribute('data-snapshot');
    const { snapshots } = await host.api('/api/plugins/brainml/snapshot.list', { method: 'POST', body: { collection: BM } });
    const snap = snapshots.find((s) => s.id === id);
    if (!snap || snap.documents !== 2) throw new Error(`the plugin does not list snapshot ${id} of 2 documents: ${JSON.stringify(snapshots)}`);

    // Verify: the plugin checks every file's hash; the row says so.
    await sec.getByRole('button', { name: `Verify snapshot ${id}` }).click();
    const verdict = sec.locator(`tr[data-verify="${id}"] [data-testid=bm-verify]`);
    await verdict.waitFor({ timeout: 20_000 });
    const vText = await verdict.textContent();
    if ((await verdict.getAttribute('data-ok')) !== 'true' || !/ok: \d+ files?/.test(vText)) throw new Error(`verify: ${vText}`);

    // Download: snapshot.export as a file; a tar archive whose first member is its manifest or a file it lists.
    const [download] = await Promise.all([page.waitForEvent('download', { timeout: 20_000 }), sec.getByRole('button', { name: `Download snapshot ${id}` }).click()]);
    const expectedName = `${BM}-${id}.tar`.replace(/[^A-Za-z0-9._-]/g, '_');
    if (download.suggestedFilename() !== expectedName) throw new Error(`downloaded as ${download.suggestedFilename()}, not ${expectedName}`);
    const tar = await readFile(await download.path());
    if (tar.length < 1024 || tar.subarray(257, 262).toString() !== 'ustar') throw new Error(`the download is not a tar archive (${tar.length} bytes)`);
    const names = [];
    for (let at = 0; at + 512 <= tar.length; ) {
      const name = tar.subarray(at, at + 100).toString().replace(/\0.*$/s, '');
      if (!name) break;
      const size = parseInt(tar.subarray(at + 124, at + 136).toString().replace(/\0.*$/s, '').trim() || '0', 8);
      names.push(name);
      at += 512 + Math.ceil(size / 512) * 512;
    }
    if (!names.some((n) => n.endsWith('manifest.json'))) throw new Error(`no manifest.json in the archive: ${names.join(', ')}`);

    // Restore as a new collection, confirmed: it appears with the snapshot's documents.
    await sec.getByRole('button', { name: `Restore snapshot ${id}` }).click();
    const restore = sec.locator(`tr[data-restore="${id}"]`);
    await restore.locator('input[name=bmRestoreAs]').fill(BM_COPY);
    await restore.getByRole('button', { name: 'Restore…' }).click();
    await confirmDialog('Restore as new collection');
    const copyRow = bmRow(BM_COPY);
    await copyRow.waitFor({ timeout: 30_000 });
    await expectEventually(`2 documents in ${BM_COPY}`, async () => (await copyRow.getByTestId('bm-documents').textContent()).trim() === '2', 15_000);
    await sec.scrollIntoViewIfNeeded();
    await sec.screenshot({ path: join(SHOTS, 'brainml-snapshots.png') });

    // Delete the snapshot, confirmed; the plugin no longer lists it.
    await sec.getByRole('button', { name: `Delete snapshot ${id}` }).click();
    await confirmDialog('Delete snapshot');
    await sec.locator(`tr[data-snapshot="${id}"]`).waitFor({ state: 'detached', timeout: 15_000 });
    const after = await host.api('/api/plugins/brainml/snapshot.list', { method: 'POST', body: {} });
    if (after.snapshots.some((s) => s.id === id)) throw new Error(`snapshot ${id} is still listed after the delete`);
  },
  brainmlSkip,
);

test(
  'brainml: train a collection below the exact threshold (the panel says it is searched exactly), then forced: polled to done with the recall it measured',
  async () => {
    needCollection();
    const sec = page.getByTestId('bm-train');
    await sec.locator('select[name=bmTrainCollection]').selectOption(BM);
    await sec.getByRole('button', { name: 'Train', exact: true }).click();
    const exact = sec.getByTestId('bm-train-exact');
    await exact.waitFor({ timeout: 20_000 });
    const why = (await exact.textContent()).replace(/\s+/g, ' ');
    if (!/Exact search/.test(why) || !/exact_threshold/.test(why)) throw new Error(`the exact answer: ${why}`);

    // Forced: a graph for two vectors, built in the background; the panel polls train.status.
    await sec.locator('input[name=bmForce]').check();
    await sec.getByRole('button', { name: 'Train', exact: true }).click();
    const status = sec.getByTestId('bm-train-status');
    await expectEventually('the training to finish', async () => {
      const st = await status.getAttribute('data-state');
      if (st === 'failed' || st === 'cancelled') throw new Error(`training ${st}: ${await status.textContent()}`);
      return st === 'done';
    }, 60_000);
    const recall = (await sec.getByTestId('bm-train-recall').textContent()).trim();
    if (!/^\d+\.\d %/.test(recall)) throw new Error(`recall shown: ${recall}`);
    if (!/\d (ms|s)$/.test((await sec.getByTestId('bm-train-build').textContent()).trim())) throw new Error('no build time shown');
    if (!/^\d+(\.\d+)?$/.test((await sec.getByTestId('bm-train-bpv').textContent()).trim())) throw new Error('no bytes per vector shown');
    if ((await sec.getByTestId('bm-train-index').textContent()).trim() !== 'hnsw') throw new Error('the index is not hnsw after a forced train');
    await expectEventually('the collection row to show the hnsw index and its recall', async () => /hnsw\s*· recall@10 \d/.test(await bmRow(BM).getByTestId('bm-index-kind').textContent()), 15_000);
    await sec.scrollIntoViewIfNeeded();
    await sec.screenshot({ path: join(SHOTS, 'brainml-train.png') });
  },
  brainmlSkip,
);

test(
  'brainml: ask streams an answer from the chat model (llmserver) and cites the indexed paragraphs',
  async () => {
    needCollection();
    const sec = page.getByTestId('bm-ask');
    await sec.locator('select[name=bmAskCollection]').selectOption(BM);
    await sec.locator('input[name=bmAskMaxTokens]').fill('32');
    await sec.locator('input[name=bmQuestion]').fill('What does each Contributor grant to You under the patent license?');
    // Record the answer's text each time it changes while it streams: more than one length seen
    // means it arrived in pieces, not in one block at the end.
    await page.evaluate(() => {
      const el = document.querySelector('[data-testid=bm-ask]');
      window.__bmLengths = new Set();
      new MutationObserver(() => {
        const a = el.querySelector('[data-testid=bm-answer]');
        if (a && a.getAttribute('data-streaming') === 'true') window.__bmLengths.add(a.textContent.trim().length);
      }).observe(el, { subtree: true, childList: true, characterData: true, attributes: true });
    });
    await sec.getByRole('button', { name: 'Ask' }).click();
    const answer = sec.getByTestId('bm-answer');
    await answer.waitFor({ timeout: 20_000 });
    await expectEventually('the answer to finish', async () => {
      const err = sec.getByTestId('bm-ask-error');
      if (await err.count()) throw new Error(await err.textContent());
      return (await answer.getAttribute('data-streaming')) === 'false';
    }, 75_000);
    const text = (await answer.textContent()).trim();
    if (!text) throw new Error('an empty answer');
    const cited = await sec.locator('[data-testid=bm-citations] li').evaluateAll((li) => li.map((l) => l.getAttribute('data-id')));
    if (!cited.includes('patent.md')) throw new Error(`citations: ${JSON.stringify(cited)}`);
    const lengths = await page.evaluate(() => [...window.__bmLengths].filter((n) => n > 0).length);
    if (lengths < 2) throw new Error(`the answer did not stream: ${lengths} partial length(s) seen`);
    if (!/answered in/.test(await sec.getByTestId('bm-ask-took').textContent())) throw new Error('no answer time shown');
    console.log(`    (answer: ${JSON.stringify(text.slice(0, 120))}; citations ${cited.join(', ')})`);
    await sec.scrollIntoViewIfNeeded();
    await sec.screenshot({ path: join(SHOTS, 'brainml-ask.png') });
  },
  brainmlSkip,
);

test(
  'brainml: delete the collections, confirmed in the dialog',
  async () => {
    needCollection();
    for (const name of [BM, BM_COPY]) {
      const row = bmRow(name);
      if (!(await row.count())) continue;
      await row.getByRole('button', { name: `Delete collection ${name}` }).click();
      await confirmDialog('Delete collection');
      await row.waitFor({ state: 'detached', timeout: 15_000 });
    }
    const { collections: left } = await host.api('/api/plugins/brainml/collection.list', { method: 'POST', body: {} });
    if (left.some((c) => c.name === BM)) throw new Error('the collection is still listed after the delete');
  },
  brainmlSkip,
);

// --- rustyface: the Faces panel against the real plugin and face-api's weights ----------------

const RUSTYFACE = 'bkg_plugin_rustyface';
const FACE_PHOTOS = join(MODELS_DIR, 'test-images/face_recognition');
const rustyfaceSkip = {
  skip: existsSync(lib(RUSTYFACE)) || process.env.CI
    ? existsSync(join(FACE_PHOTOS, 'obama.jpg')) || process.env.CI ? null : `no ${FACE_PHOTOS}/obama.jpg (bash scripts/fetch-models.sh)`
    : `no ${RUSTYFACE} library (cargo build -p bkg-plugin-rustyface)`,
};

test(
  'rustyface: a picked portrait shows one face box with its 68 points and score; obama.jpg and obama2.jpg compare as the same person',
  async () => {
    await installPlugin(host.pluginsDir, RUSTYFACE);
    await host.waitRunning(['rustyface'], 30_000);
    await page.goto(ui.url + '/plugins/rustyface/panel');
    const detect = page.getByTestId('rf-detect');
    await detect.waitFor();
    await settled();

    await page.getByTestId('rf-file').setInputFiles(join(FACE_PHOTOS, 'obama.jpg'));
    const summary = page.getByTestId('rf-summary');
    await expectEventually('the detection answered', async () => (await page.getByTestId('rf-error').count()) > 0 || (await summary.count()) > 0, 60_000);
    if (await page.getByTestId('rf-error').count()) throw new Error(`face.detect failed: ${await page.getByTestId('rf-error').textContent()}`);
    if (!/^\s*1 face in \d+×\d+/.test(await summary.textContent())) throw new Error(`summary: ${await summary.textContent()}`);
    const boxes = page.getByTestId('rf-box');
    if ((await boxes.count()) !== 1) throw new Error(`${await boxes.count()} boxes drawn`);
    if ((await page.getByTestId('rf-point').count()) !== 68) throw new Error(`${await page.getByTestId('rf-point').count()} landmarks drawn`);
    const score = Number(await page.getByTestId('rf-score').textContent());
    if (!(score >= 0.5 && score <= 1)) throw new Error(`score shown: ${score}`);
    // The box is drawn over the face: inside the shown photo, a sizeable part of it.
    const img = await detect.locator('figure img').boundingBox();
    const box = await boxes.first().boundingBox();
    if (!img || !box) throw new Error('photo or box not laid out');
    const inside = box.x >= img.x - 1 && box.y >= img.y - 1 && box.x + box.width <= img.x + img.width + 1 && box.y + box.height <= img.y + img.height + 1;
    if (!inside || box.width < img.width * 0.1) throw new Error(`box ${JSON.stringify(box)} vs photo ${JSON.stringify(img)}`);

    const cmp = page.getByTestId('rf-compare');
    await page.getByTestId('rf-compare-a').setInputFiles(join(FACE_PHOTOS, 'obama.jpg'));
    await page.getByTestId('rf-compare-b').setInputFiles(join(FACE_PHOTOS, 'obama2.jpg'));
    const compare = cmp.getByRole('button', { name: 'Compare' });
    await expectEventually('Compare enabled', async () => !(await compare.isDisabled()));
    await compare.click();
    const result = page.getByTestId('rf-compare-result');
    await expectEventually('the comparison answered', async () => (await page.getByTestId('rf-compare-error').count()) > 0 || (await result.count()) > 0, 60_000);
    if (await page.getByTestId('rf-compare-error').count()) throw new Error(`face.compare failed: ${await page.getByTestId('rf-compare-error').textContent()}`);
    if ((await result.getAttribute('data-same')) !== 'true') throw new Error(`compare: ${await result.textContent()}`);
    if (!/same person: distance 0\.\d{3} \(threshold 0\.6\)/.test((await result.textContent()).replace(/\s+/g, ' '))) throw new Error(`compare: ${await result.textContent()}`);
    await page.setViewportSize({ width: 1280, height: 1000 });
    await page.evaluate(() => window.scrollTo(0, 0));
    await shot('rustyface');
    await page.setViewportSize({ width: 1280, height: 900 });
  },
  rustyfaceSkip,
);

/** A PNG whose header says `w`x`h` (RGB) over one tiny IDAT: a decompression bomb's header, a few dozen bytes. */
function pngHeaderOnly(w, h) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const sum = Buffer.alloc(4);
    sum.writeUInt32BE(crc(body));
    return Buffer.concat([len, body, sum]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  // zlib of a single zero byte: far too little data for the size the header claims.
  const idat = Buffer.from([0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01]);
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', idat), chunk('IEND', Buffer.alloc(0))]);
}

/** A DataTransfer holding `files` ({name, type, base64}), as a user dragging them from the desktop carries. */
async function filesTransfer(files) {
  return page.evaluateHandle((fs) => {
    const dt = new DataTransfer();
    for (const f of fs) dt.items.add(new File([Uint8Array.from(atob(f.base64), (c) => c.charCodeAt(0))], f.name, { type: f.type }));
    return dt;
  }, files);
}
/** Drops `files` on the panel's drop zone. */
async function dropFiles(files) {
  await page.getByTestId('rf-drop').dispatchEvent('drop', { dataTransfer: await filesTransfer(files) });
}
/** Toasts from the shell's plugin upload: a file dropped on a panel's zone must not be taken for a plugin. */
const uploadToasts = () => page.locator('[data-toast]').filter({ hasText: 'plugin library' }).count();

const RF_GALLERY = 'e2e-faces';
const rfPerson = (name) => page.getByTestId('rf-persons').locator(`li[data-person="${name}"]`);
const rfList = (gallery) => host.api('/api/plugins/rustyface/gallery.list', { method: 'POST', body: { gallery } });
/** Picks `file`, waits for its own detection (its size in the summary), picks its only face and enrols it as `name`. */
async function rfEnrol(file, size, name) {
  await page.getByTestId('rf-file').setInputFiles(join(FACE_PHOTOS, file));
  await expectEventually(`${file} detected`, async () => (await page.getByTestId('rf-box').count()) === 1
    && ((await page.getByTestId('rf-summary').textContent()) ?? '').includes(size), 60_000);
  await page.getByTestId('rf-box').click();
  const gallery = page.getByTestId('rf-gallery');
  await gallery.locator('input[name=rfPerson]').fill(name);
  await gallery.getByRole('button', { name: /^Enrol face 1$/ }).click();
  await rfPerson(name).waitFor({ timeout: 60_000 });
}
/** Waits until every thumbnail shown has decoded (a real JPEG from the plugin, not a broken image). */
async function thumbsDecoded(n) {
  await expectEventually(`${n} decoded thumbnails`, async () => page.getByTestId('rf-thumb').evaluateAll(
    (imgs, n) => imgs.length === n && imgs.every((i) => i.complete && i.naturalWidth > 20 && i.naturalHeight > 20), n), 20_000);
}

test(
  'rustyface gallery: in a new gallery, enrol obama.jpg (picked by its box) and biden.jpg: thumbnails appear; recognize obama2.jpg names obama on its box with biden next; delete obama (confirmed): his row, thumbnail and name are gone, obama2.jpg is unknown',
  async () => {
    await page.goto(ui.url + '/plugins/rustyface/panel');
    const gallery = page.getByTestId('rf-gallery');
    await gallery.waitFor({ timeout: 20_000 });
    await settled();
    // A gallery of its own, created by name: empty until the first enrolment makes it.
    await gallery.locator('input[name=rfNewGallery]').fill(RF_GALLERY);
    await gallery.getByRole('button', { name: 'Create' }).click();
    await expectEventually('the new gallery chosen', async () => (await gallery.locator('select[name=rfGallery]').inputValue()) === RF_GALLERY);
    await expectEventually('it is empty', async () => /nobody enrolled in e2e-faces yet/.test(await page.getByTestId('rf-persons').textContent()));

    await rfEnrol('obama.jpg', '910×1137', 'obama');
    await thumbsDecoded(1);
    await rfEnrol('biden.jpg', '970×2204', 'biden');
    await thumbsDecoded(2);
    if (!/e2e-faces: 2 persons, 2 faces/.test(await page.getByTestId('rf-gallery-count').textContent())) throw new Error(`count: ${await page.getByTestId('rf-gallery-count').textContent()}`);
    const listed = await rfList(RF_GALLERY);
    if (listed.persons.map((p) => `${p.person}:${p.entries}`).sort().join() !== 'biden:1,obama:1') throw new Error(`gallery.list: ${JSON.stringify(listed)}`);
    if (!listed.galleries.includes(RF_GALLERY)) throw new Error(`galleries: ${JSON.stringify(listed.galleries)}`);
    // Enrolled into e2e-faces, not into the default gallery.
    if ((await rfList('default')).persons.some((p) => p.person === 'obama')) throw new Error('obama landed in the default gallery');

    await page.getByTestId('rf-file').setInputFiles(join(FACE_PHOTOS, 'obama2.jpg'));
    // obama2.jpg's own answer (626x1200), not the last photo's box still on screen: a detection
    // that lands after Recognize would clear its names.
    await expectEventually('obama2.jpg detected', async () => (await page.getByTestId('rf-box').count()) === 1
      && ((await page.getByTestId('rf-summary').textContent()) ?? '').includes('626×1200'), 60_000);
    const recognize = async () => {
      await gallery.getByRole('button', { name: 'Recognize' }).click();
      await expectEventually('a name on the box', async () => {
        if (await page.getByTestId('rf-gallery-error').count()) throw new Error(await page.getByTestId('rf-gallery-error').textContent());
        return (await page.getByTestId('rf-name').count()) === 1;
      }, 60_000);
    };
    await recognize();
    const name = page.getByTestId('rf-name');
    if ((await name.getAttribute('data-person')) !== 'obama') throw new Error(`recognized as: ${await name.textContent()}`);
    if (!/^obama 0\.\d\d$/.test((await name.textContent()).trim())) throw new Error(`label: ${await name.textContent()}`);
    // The face's row names him too, with biden as the next candidate (further than the threshold).
    const row = page.getByTestId('rf-faces').locator('li').first();
    if ((await row.getByTestId('rf-face-name').getAttribute('data-person')) !== 'obama') throw new Error(`row: ${await row.textContent()}`);
    const next = (await row.getByTestId('rf-candidates').textContent()).trim();
    const m = /^· next: biden (\d\.\d{3})$/.exec(next);
    if (!m || !(Number(m[1]) > 0.6)) throw new Error(`candidates: ${next}`);
    await page.setViewportSize({ width: 1280, height: 1000 });
    await page.evaluate(() => window.scrollTo(0, 0));
    await shot('rustyface');
    await page.setViewportSize({ width: 1280, height: 900 });

    await rfPerson('obama').getByRole('button', { name: 'Delete' }).click();
    await confirmDialog('Delete');
    await rfPerson('obama').waitFor({ state: 'detached', timeout: 20_000 });
    // His thumbnail and his name on the photo go with him; biden's thumbnail stays.
    await thumbsDecoded(1);
    if ((await page.getByTestId('rf-thumb').getAttribute('alt'))?.startsWith('biden') !== true) throw new Error(`thumbnail left: ${await page.getByTestId('rf-thumb').getAttribute('alt')}`);
    if ((await name.count()) !== 0) throw new Error(`a name is still shown: ${await name.textContent()}`);
    const after = await rfList(RF_GALLERY);
    if (after.persons.some((p) => p.person === 'obama')) throw new Error(`still listed: ${JSON.stringify(after)}`);
    // Recognized again, obama2.jpg is nobody the gallery knows.
    await recognize();
    if ((await name.getAttribute('data-person')) !== '' || !/^unknown 0\.\d\d$/.test((await name.textContent()).trim())) throw new Error(`after the delete: ${await name.textContent()}`);

    await rfPerson('biden').getByRole('button', { name: 'Delete' }).click();
    await confirmDialog('Delete');
    await rfPerson('biden').waitFor({ state: 'detached', timeout: 20_000 });
    if ((await page.getByTestId('rf-thumb').count()) !== 0) throw new Error('a thumbnail is left in the empty gallery');
  },
  rustyfaceSkip,
);

test(
  'rustyface bad files: a dropped text file and a fake .jpg are refused with their reason, a PNG whose header says 10000x5000 gets the plugin\'s 413 naming max_pixels; a dropped portrait still shows its face',
  async () => {
    await page.goto(ui.url + '/plugins/rustyface/panel');
    await page.getByTestId('rf-detect').waitFor();
    await settled();
    const error = page.getByTestId('rf-error');
    const errorText = async (what) => {
      await expectEventually(what, async () => (await error.count()) > 0, 60_000);
      return (await error.textContent()).trim();
    };
    const notes = [{ name: 'notes.txt', type: 'text/plain', base64: Buffer.from('just some notes\n').toString('base64') }];
    // Dragged over the page, files are offered as a plugin upload; over the photo zone, not.
    const overlay = page.getByTestId('drop-overlay');
    await page.locator('header').dispatchEvent('dragover', { dataTransfer: await filesTransfer(notes) });
    await overlay.waitFor({ timeout: 5_000 });
    await page.getByTestId('rf-drop').dispatchEvent('dragover', { dataTransfer: await filesTransfer(notes) });
    await overlay.waitFor({ state: 'detached', timeout: 5_000 });
    await dropFiles(notes);
    let msg = await errorText('the text file refused');
    if (msg !== 'notes.txt is not a JPEG, PNG, WebP or BMP image (text/plain)') throw new Error(`text file: ${msg}`);
    if (await page.getByTestId('rf-figure').count()) throw new Error('a photo is shown for the text file');
    if (await uploadToasts()) throw new Error('the dropped text file was taken for a plugin upload');

    await page.getByTestId('rf-file').setInputFiles({ name: 'fake.jpg', mimeType: 'image/jpeg', buffer: Buffer.from('this is not a photo at all') });
    await expectEventually('the fake JPEG refused by the plugin', async () => /^face\.detect refused fake\.jpg: /.test(((await error.textContent().catch(() => '')) ?? '').trim()), 60_000);
    msg = (await error.textContent()).trim();
    if (!/not an image|cannot be read/.test(msg)) throw new Error(`fake jpg: ${msg}`);

    await page.getByTestId('rf-file').setInputFiles({ name: 'bomb.png', mimeType: 'image/png', buffer: pngHeaderOnly(10_000, 5_000) });
    await expectEventually('the bomb refused', async () => /^bomb\.png is too large/.test(((await error.textContent().catch(() => '')) ?? '').trim()), 60_000);
    msg = (await error.textContent()).trim();
    if (!/^bomb\.png is too large for the plugin: .*10000x5000.*max_pixels/.test(msg)) throw new Error(`bomb: ${msg}`);
    await page.setViewportSize({ width: 1280, height: 700 });
    await page.evaluate(() => window.scrollTo(0, 0));
    await shot('rustyface-bad-file');
    await page.setViewportSize({ width: 1280, height: 900 });

    // The plugin keeps serving: a real portrait dropped afterwards shows its one face.
    await dropFiles([{ name: 'obama.jpg', type: 'image/jpeg', base64: (await readFile(join(FACE_PHOTOS, 'obama.jpg'))).toString('base64') }]);
    await expectEventually('obama.jpg detected after the bad files', async () => (await page.getByTestId('rf-box').count()) === 1, 60_000);
    if (await error.count()) throw new Error(`an error is still shown: ${await error.textContent()}`);
    if (await uploadToasts()) throw new Error('a dropped photo was taken for a plugin upload');
    if (await overlay.count()) throw new Error('the upload overlay is still shown after the drop');
  },
  rustyfaceSkip,
);

// --- repoagent: the Code panel against the real plugin and a real crate from the cargo registry --

const REPOAGENT = 'bkg_plugin_repoagent';
const repoagentSkip = { skip: existsSync(lib(REPOAGENT)) || process.env.CI ? null : `no ${REPOAGENT} library (cargo build -p bkg-plugin-repoagent)` };

/** Whether the by-meaning test indexed itoa (null: the plugin has no code.index), for the ask test. */
let raMeaning = false;

/** A crate's sources in the cargo registry at the version Cargo.lock pins (the build downloaded them). */
function registryCrate(name) {
  const lock = readFileSync(join(REPO_ROOT, 'Cargo.lock'), 'utf8');
  const m = new RegExp(`\\[\\[package\\]\\]\\nname = "${name}"\\nversion = "([^"]+)"`).exec(lock);
  if (!m) throw new Error(`${name} is not in Cargo.lock`);
  const home = process.env.CARGO_HOME ?? join(process.env.HOME ?? '/root', '.cargo');
  for (const reg of readdirSync(join(home, 'registry/src'))) {
    const dir = join(home, 'registry/src', reg, `${name}-${m[1]}`);
    if (existsSync(join(dir, 'Cargo.toml'))) return dir;
  }
  throw new Error(`${name}-${m[1]} is not in the cargo registry (cargo fetch)`);
}

test(
  'repoagent: a path refused without roots and outside them shows the plugin\'s message; a copy of semver added in the panel shows Rust in the language chart, its outline (Version, its lines, its references), a search finding its definition line, the map; reindexed; removed after a confirmation',
  async () => {
    await installPlugin(host.pluginsDir, REPOAGENT);
    await host.waitRunning(['repoagent'], 30_000);
    const root = join(host.dir, 'code');
    const crate = join(root, 'semver');
    await cp(registryCrate('semver'), crate, { recursive: true });
    const source = (await readFile(join(crate, 'src/lib.rs'), 'utf8')).split('\n');
    const defLine = source.findIndex((l) => l.startsWith('pub struct Version {')) + 1;
    if (defLine < 1) throw new Error('semver\'s src/lib.rs has no `pub struct Version {`');

    await page.goto(ui.url + '/plugins/repoagent/panel');
    await page.getByTestId('ra-repos').waitFor();
    await settled();
    const addError = page.getByTestId('ra-add-error');
    const add = async (path) => {
      await page.getByTestId('ra-add-path').fill(path);
      await page.getByTestId('ra-repos').getByRole('button', { name: 'Add', exact: true }).click();
    };
    // No roots yet: the panel says so, and the plugin's refusal is shown as it says it.
    await expectEventually('the roots note', async () => /No roots are allowed/.test(await page.getByTestId('ra-roots').textContent()));
    await add(crate);
    await addError.waitFor({ timeout: 20_000 });
    let msg = (await addError.textContent()).trim();
    if (!msg.startsWith(`repo.add refused ${crate}: `) || !/set `roots`/.test(msg)) throw new Error(`without roots: ${msg}`);

    await host.api('/api/core/plugins/repoagent/config', { method: 'POST', body: { roots: [root] } });
    await expectEventually('repoagent restarted with its roots', async () => {
      const c = await host.api('/api/core/plugins/repoagent/config');
      const p = await host.api('/api/core/plugins/repoagent');
      return p.state === 'running' && JSON.stringify(c.config?.roots) === JSON.stringify([root]);
    }, 30_000);
    await page.reload();
    await expectEventually('the allowed root shown', async () => (await page.getByTestId('ra-roots').textContent()).includes(root), 20_000);
    // A folder outside the roots: refused, naming them.
    await add(host.modelsDir);
    await expectEventually('the outside path refused', async () => /outside the allowed roots/.test((await addError.textContent().catch(() => '')) ?? ''), 20_000);
    msg = (await addError.textContent()).trim();
    if (!msg.startsWith(`repo.add refused ${host.modelsDir}: `)) throw new Error(`outside: ${msg}`);

    await add(crate);
    const row = page.locator('[data-testid=ra-repo][data-repo=semver]');
    await expectEventually('semver ready', async () => (await row.count()) > 0 && (await row.getByTestId('ra-repo-state').getAttribute('data-state')) === 'ready', 60_000);
    if (await addError.count()) throw new Error(`an add error is still shown: ${await addError.textContent()}`);
    const listed = (await host.api('/api/plugins/repoagent/repo.list', { method: 'POST', body: {} })).repos;
    if (listed.length !== 1 || listed[0].name !== 'semver' || !(listed[0].files > 10)) throw new Error(`repo.list: ${JSON.stringify(listed)}`);

    // The chart: a bar per language, Rust first (most code), its code lines as code.stats counts them.
    const stats = await host.api('/api/plugins/repoagent/code.stats', { method: 'POST', body: { repo: 'semver' } });
    const rust = stats.languages.find((l) => l.language === 'Rust');
    const bars = page.getByTestId('ra-lang');
    await expectEventually('the language chart', async () => (await bars.count()) === stats.languages.length, 20_000);
    if ((await bars.first().getAttribute('data-language')) !== 'Rust') throw new Error(`first bar: ${await bars.first().getAttribute('data-language')}`);
    if (Number(await bars.first().getAttribute('data-code')) !== rust.code) throw new Error(`Rust bar ${await bars.first().getAttribute('data-code')} vs code.stats ${rust.code}`);
    const fullBar = await bars.first().getByTestId('ra-lang-bar').boundingBox();
    const codePart = await bars.first().getByTestId('ra-lang-bar').locator('span').first().boundingBox();
    if (!fullBar || !codePart || !(codePart.width > fullBar.width * 0.5)) throw new Error(`Rust's code bar ${JSON.stringify(codePart)} in ${JSON.stringify(fullBar)}`);

    // The outline: src/lib.rs -> struct Version (kind badge) -> its lines, the definition highlighted.
    await page.getByTestId('ra-files').locator('button[data-path="src/lib.rs"]').click();
    const version = page.getByTestId('ra-tree').locator('[data-testid=ra-node][data-name=Version][data-kind=struct]').first();
    await version.waitFor({ timeout: 20_000 });
    if ((await version.getByTestId('ra-kind').first().textContent()).trim() !== 'struct') throw new Error('no struct badge on Version');
    await version.locator('button').first().click();
    const snippet = page.getByTestId('ra-snippet');
    await snippet.waitFor({ timeout: 20_000 });
    const hitLine = snippet.locator(`[data-line="${defLine}"]`);
    if (!(await hitLine.textContent()).includes('pub struct Version {')) throw new Error(`snippet line ${defLine}: ${await hitLine.textContent()}`);
    if (!(await snippet.locator(`[data-line="${defLine - 1}"]`).count()) || !(await snippet.locator(`[data-line="${defLine + 1}"]`).count())) throw new Error('no lines around the definition');
    // Its references: the plugin's list, each opening its lines.
    await page.getByTestId('ra-refs-btn').click();
    await page.getByTestId('ra-refs').waitFor({ timeout: 20_000 });
    const refs = await host.api('/api/plugins/repoagent/code.refs', { method: 'POST', body: { repo: 'semver', name: 'Version', limit: 100 } });
    const shownRefs = page.getByTestId('ra-refs').locator('li');
    if (!(refs.references.length > 0) || (await shownRefs.count()) !== refs.references.length) throw new Error(`${await shownRefs.count()} references shown, code.refs has ${refs.references.length}`);
    const ref0 = refs.references.find((r) => r.path !== 'src/lib.rs');
    if (!ref0) throw new Error('no reference to Version outside src/lib.rs');
    await page.getByTestId('ra-refs').locator(`li[data-path="${ref0.path}"][data-line="${ref0.line}"] button`).click();
    await expectEventually('the reference\'s lines', async () => {
      const line = (await snippet.locator(`[data-line="${ref0.line}"]`).textContent().catch(() => '')) ?? '';
      return (await page.getByTestId('ra-snippet-title').textContent()).includes(`${ref0.path}:${ref0.line}`) && line.includes(ref0.text.slice(0, 40));
    }, 20_000);

    // Search: the definition's line is found, with its context lines.
    await page.getByTestId('ra-pattern').fill('pub struct Version {');
    await page.getByTestId('ra-search').getByRole('button', { name: 'Search', exact: true }).click();
    const hit = page.locator('[data-testid=ra-hit-file][data-path="src/lib.rs"] [data-testid=ra-hit]');
    await expectEventually('the search hit', async () => (await hit.count()) > 0, 20_000);
    if (Number(await hit.first().getAttribute('data-line')) !== defLine) throw new Error(`hit at ${await hit.first().getAttribute('data-line')}, expected ${defLine}`);
    if (!(await hit.first().locator('[data-hit]').textContent()).includes('pub struct Version {')) throw new Error('the hit line is not the definition');
    if ((await hit.first().locator('pre > span').count()) !== 5) throw new Error(`${await hit.first().locator('pre > span').count()} lines shown (2 of context each side expected)`);
    // A bad regex: the plugin's message.
    await page.getByTestId('ra-search').locator('input[name=raRegex]').check();
    await page.getByTestId('ra-pattern').fill('fn (');
    await page.getByTestId('ra-search').getByRole('button', { name: 'Search', exact: true }).click();
    await page.getByTestId('ra-search-error').waitFor({ timeout: 20_000 });
    if (!/^code\.search failed: .*regex/i.test((await page.getByTestId('ra-search-error').textContent()).trim())) throw new Error(`bad regex: ${await page.getByTestId('ra-search-error').textContent()}`);
    await page.getByTestId('ra-pattern').fill('pub struct Version \\{');
    await page.getByTestId('ra-search').getByRole('button', { name: 'Search', exact: true }).click();
    await expectEventually('the regex search hit', async () => (await page.getByTestId('ra-search-error').count()) === 0 && (await hit.count()) > 0, 20_000);

    // Complexity: semver's copy has no git history, which the panel says.
    if (await page.getByTestId('ra-metrics').count()) {
      await page.getByTestId('ra-churn-error').waitFor({ timeout: 30_000 });
    }
    // The map, when this build has it.
    if (await page.getByTestId('ra-map').count()) {
      await page.getByTestId('ra-map').getByRole('button', { name: 'Make the map' }).click();
      const text = page.getByTestId('ra-map-text');
      await text.waitFor({ timeout: 30_000 });
      if (!/Version/.test(await text.textContent())) throw new Error(`the map lacks Version: ${(await text.textContent()).slice(0, 300)}`);
    }
    await settled();
    await page.setViewportSize({ width: 1280, height: 1400 });
    await page.evaluate(() => window.scrollTo(0, 0));
    await shot('repoagent');
    await page.setViewportSize({ width: 1280, height: 900 });

    // Reindex walks it again: one more build, ready again.
    const builds = async () => (await host.api('/api/plugins/repoagent/repo.list', { method: 'POST', body: {} })).repos[0].builds;
    const before = await builds();
    await row.getByRole('button', { name: 'Reindex' }).click();
    await expectEventually('semver walked again and ready', async () => (await builds()) === before + 1 && (await row.getByTestId('ra-repo-state').getAttribute('data-state')) === 'ready', 60_000);
    if (await page.getByTestId('ra-action-error').count()) throw new Error(`reindex: ${await page.getByTestId('ra-action-error').textContent()}`);

    await row.getByRole('button', { name: 'Remove' }).click();
    await confirmDialog('Remove');
    await row.waitFor({ state: 'detached', timeout: 20_000 });
    const after = (await host.api('/api/plugins/repoagent/repo.list', { method: 'POST', body: {} })).repos;
    if (after.length) throw new Error(`still listed: ${JSON.stringify(after)}`);
    if (!existsSync(join(crate, 'src/lib.rs'))) throw new Error('the removed repository\'s files were touched');
  },
  repoagentSkip,
);

test(
  'repoagent by meaning: a copy of itoa indexed from the panel (its chunks embedded into brainml), a search by meaning shows the plugin\'s hits with their lines',
  async () => {
    raMeaning = false;
    const manifest = await host.api('/api/core/plugins/repoagent');
    const caps = manifest.capabilities.map((c) => c.name);
    if (!['code.index', 'code.semantic_search', 'code.ask'].every((c) => caps.includes(c))) {
      raMeaning = null;
      console.log('    (this repoagent build has no code.index/code.semantic_search/code.ask: nothing to test)');
      return;
    }
    const plugins = (await host.api('/api/core/plugins')).plugins;
    if (!plugins.some((p) => p.id === 'brainml')) await installPlugin(host.pluginsDir, BRAINML);
    await host.waitRunning(['repoagent', 'brainml', 'candle', 'llmserver'], 30_000);
    const root = join(host.dir, 'code');
    const roots = (await host.api('/api/core/plugins/repoagent/config')).config?.roots ?? [];
    if (!roots.includes(root)) {
      await host.api('/api/core/plugins/repoagent/config', { method: 'POST', body: { roots: [root] } });
      await expectEventually('repoagent restarted with its roots', async () => (await host.api('/api/core/plugins/repoagent')).state === 'running' && JSON.stringify((await host.api('/api/core/plugins/repoagent/config')).config?.roots) === JSON.stringify([root]), 30_000);
    }
    const crate = join(root, 'itoa');
    await cp(registryCrate('itoa'), crate, { recursive: true });

    await page.goto(ui.url + '/plugins/repoagent/panel');
    await page.getByTestId('ra-repos').waitFor();
    await settled();
    await page.getByTestId('ra-add-path').fill(crate);
    await page.getByTestId('ra-repos').getByRole('button', { name: 'Add', exact: true }).click();
    const row = page.locator('[data-testid=ra-repo][data-repo=itoa]');
    await expectEventually('itoa ready', async () => (await row.count()) > 0 && (await row.getByTestId('ra-repo-state').getAttribute('data-state')) === 'ready', 60_000);
    const search = page.getByTestId('ra-search');
    await search.waitFor();
    await search.locator('select[name=raBy]').selectOption('meaning');
    await page.getByTestId('ra-index').click();
    const indexed = page.getByTestId('ra-indexed');
    await expectEventually('code.index done', async () => (await indexed.count()) > 0 || (await search.locator('[role=alert]').count()) > 0, 80_000);
    if (await search.locator('[role=alert]').count()) throw new Error(`code.index: ${await search.locator('[role=alert]').first().textContent()}`);
    const m = /^(\d+) chunks in (\S+) \((\d+) embedded/.exec((await indexed.textContent()).trim());
    if (!m || !(Number(m[1]) > 0) || m[1] !== m[3] || m[2] !== 'repo-itoa') throw new Error(`indexed: ${await indexed.textContent()}`);

    await page.getByTestId('ra-pattern').fill('format an integer into a buffer of decimal digits');
    await search.getByRole('button', { name: 'Search', exact: true }).click();
    const hits = page.getByTestId('ra-semantic-hit');
    await expectEventually('the semantic hits', async () => (await hits.count()) > 0 || (await page.getByTestId('ra-search-error').count()) > 0, 30_000);
    if (await page.getByTestId('ra-search-error').count()) throw new Error(`semantic search: ${await page.getByTestId('ra-search-error').textContent()}`);
    const api = await host.api('/api/plugins/repoagent/code.semantic_search', { method: 'POST', body: { repo: 'itoa', query: 'format an integer into a buffer of decimal digits', k: 10, mode: 'hybrid' } });
    if ((await hits.count()) !== api.hits.length) throw new Error(`${await hits.count()} hits shown, the plugin answers ${api.hits.length}`);
    const first = (await hits.first().textContent()).replace(/\s+/g, ' ');
    if (!first.includes(`${api.hits[0].path}:${api.hits[0].line}-${api.hits[0].end_line}`)) throw new Error(`first hit: ${first} vs ${JSON.stringify(api.hits[0]).slice(0, 200)}`);
    raMeaning = true;
  },
  repoagentSkip,
);

test(
  'repoagent ask: a question about the indexed itoa streams an answer from the chat model (seen growing) with path:line citations; itoa removed after',
  async () => {
    if (raMeaning === null) {
      console.log('    (this repoagent build has no code.ask: nothing to test)');
      return;
    }
    if (!raMeaning) throw new Error('the repoagent by-meaning test that indexes itoa failed: nothing to ask about');
    const row = page.locator('[data-testid=ra-repo][data-repo=itoa]');
    const ask = page.getByTestId('ra-ask');
    await ask.locator('input[name=raQuestion]').fill('How does itoa write an integer into its buffer?');
    // A small prompt and answer: the chat model runs on the CPU of a debug host.
    await ask.locator('input[name=raAskK]').fill('2');
    await ask.locator('input[name=raAskMaxTokens]').fill('32');
    // The answer's length each time it renders while the stream is open, recorded in the page
    // (polling from here can miss a short stream; the "Waiting…" placeholder is not an answer).
    await page.evaluate(() => {
      const el = document.querySelector('[data-testid=ra-ask]');
      window.__raLengths = new Set();
      new MutationObserver(() => {
        const a = el.querySelector('[data-testid=ra-answer]');
        if (a && a.getAttribute('data-streaming') === 'true' && !a.querySelector('.muted')) window.__raLengths.add(a.textContent.trim().length);
      }).observe(el, { subtree: true, childList: true, characterData: true, attributes: true });
    });
    await ask.getByRole('button', { name: 'Ask', exact: true }).click();
    const answer = page.getByTestId('ra-answer');
    await expectEventually('the streamed answer', async () => {
      if (await page.getByTestId('ra-ask-error').count()) return true;
      return (await page.getByTestId('ra-answer-took').count()) > 0;
    }, 80_000);
    if (await page.getByTestId('ra-ask-error').count()) throw new Error(`code.ask: ${await page.getByTestId('ra-ask-error').textContent()}`);
    const final = (await answer.textContent()).trim().length;
    if (!(final > 0)) throw new Error('an empty answer');
    const lengths = await page.evaluate(() => [...window.__raLengths]);
    if (!lengths.some((n) => n > 0 && n < final)) throw new Error(`the answer was not seen growing (lengths seen ${lengths.join(', ')} of ${final})`);
    const cites = page.getByTestId('ra-citations').locator('li');
    if (!((await cites.count()) > 0)) throw new Error('no citations listed');
    for (const c of await cites.all()) {
      if (!/^[\w./-]+\.rs:\d+$/.test((await c.getAttribute('data-cite')) ?? '')) throw new Error(`citation ${await c.getAttribute('data-cite')}`);
    }
    await page.setViewportSize({ width: 1280, height: 1000 });
    await ask.scrollIntoViewIfNeeded();
    await shot('repoagent-ask');
    await page.setViewportSize({ width: 1280, height: 900 });
    await row.getByRole('button', { name: 'Remove' }).click();
    await confirmDialog('Remove');
    await row.waitFor({ state: 'detached', timeout: 20_000 });
  },
  repoagentSkip,
);

// ---------------------------------------------------------------------------------------------

let failed = 0;
let passed = 0;
let skipped = 0;
const only = process.env.E2E_ONLY;
try {
  for (const t of tests) {
    // The first test logs in: the others need it.
    if (only && !t.name.includes(only) && tests.indexOf(t) !== 0) continue;
    if (t.skip) {
      skipped++;
      console.log(`- skip ${t.name} (${t.skip})`);
      continue;
    }
    const t0 = Date.now();
    try {
      await Promise.race([t.fn(), sleep(90_000).then(() => Promise.reject(new Error('test timed out after 90 s')))]);
      passed++;
      console.log(`✓ ${t.name} (${Date.now() - t0} ms)`);
    } catch (e) {
      failed++;
      console.log(`✗ ${t.name}\n    ${e.stack ?? e}`);
      await page.screenshot({ path: join(host.dir, `failed-${tests.indexOf(t)}.png`) }).catch(() => {});
    }
  }
  if (consoleErrors.length) {
    console.log(`page errors:\n  ${consoleErrors.join('\n  ')}`);
    failed++;
  }
} finally {
  await browser.close().catch(() => {});
  await ui.close();
  await host.stop();
  await hub.close();
}
// The host's folder holds copies of the plugin libraries (~110 MB) and what the tests wrote into
// the models copy: kept only when something failed (or E2E_KEEP=1).
const keep = failed > 0 || process.env.E2E_KEEP === '1';
if (!keep) await rm(host.dir, { recursive: true, force: true }).catch(() => {});
console.log(`\ne2e: ${passed} passed, ${failed} failed, ${skipped} skipped${keep ? ` (host log and failure screenshots: ${host.dir})` : ''}`);
process.exit(failed ? 1 : 0);
