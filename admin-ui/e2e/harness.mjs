// Shared pieces of the e2e and perf scripts: paths, a real bkg host, Chromium.
import { execFileSync, spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { copyFile, link, mkdir, readdir, rename, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const UI_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_ROOT = resolve(UI_ROOT, '..');
export const DIST = join(UI_ROOT, 'dist/admin-ui/browser');
export const BKG_BIN = process.env.BKG_BIN ?? join(REPO_ROOT, 'target/debug/bkg');
export const PLUGIN_LIBS = process.env.BKG_PLUGIN_LIBS ?? join(REPO_ROOT, 'target/debug');
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
export const ADMIN_KEY = 'e2e-admin-key-0123456789abcdef';
/** The real models folder (`bash scripts/fetch-models.sh` fills it). */
export const MODELS_DIR = resolve(process.env.BKG_MODELS_DIR ?? join(REPO_ROOT, 'models'));
/** What the ML tests need from it (llmserver's default models). */
export const REQUIRED_MODELS = ['sentence-transformers/all-MiniLM-L6-v2', 'HuggingFaceTB/SmolLM2-135M-Instruct-GGUF'];

/** Why the models folder cannot be used (missing models), or null. */
export function modelsProblem(dir = MODELS_DIR) {
  const missing = REQUIRED_MODELS.filter((m) => !existsSync(join(dir, m, '.bkg-model.json')));
  if (!missing.length) return null;
  return (
    `the models folder ${dir} lacks ${missing.join(' and ')}: run \`bash scripts/fetch-models.sh\` ` +
    `(or point BKG_MODELS_DIR at a folder that has them)`
  );
}

/**
 * A private copy of the models folder made of hard links (no bytes copied), so that what the
 * tests write (downloads, `model-<dtype>.gguf` from quantize) stays out of the real folder.
 * Files that quantize writes (`model-*.gguf`) and the host's work area are left out, so that no
 * write can reach a file shared with the real folder.
 */
export async function linkModelsDir(src, dest) {
  await mkdir(dest, { recursive: true });
  for (const e of await readdir(src, { withFileTypes: true })) {
    if (e.name === '.downloads' || /^model-.*\.gguf$/.test(e.name)) continue;
    const from = join(src, e.name);
    const to = join(dest, e.name);
    if (e.isDirectory()) await linkModelsDir(from, to);
    else if (e.isFile()) await link(from, to).catch(() => copyFile(from, to));
  }
}

/**
 * Whether the host serves the app itself: BKG_UI_FROM_HOST=1/0, or by default when the binary
 * has `--ui-dir`. Otherwise e2e/serve.mjs serves dist/ and proxies to the host.
 */
export const UI_FROM_HOST =
  process.env.BKG_UI_FROM_HOST != null
    ? process.env.BKG_UI_FROM_HOST === '1'
    : (() => {
        try {
          return execFileSync(BKG_BIN, ['--help'], { encoding: 'utf8' }).includes('--ui-dir');
        } catch {
          return false;
        }
      })();

export function lib(name) {
  return join(PLUGIN_LIBS, `lib${name}.so`);
}

/**
 * Copies a library into the plugins folder the way an operator should: temp name, then rename.
 * `mtime` (a Date): the modification time the file has when it appears (set before the rename).
 */
export async function installPlugin(pluginsDir, libName, as = `lib${libName}.so`, { mtime } = {}) {
  const tmp = join(pluginsDir, `.${as}.tmp`);
  await copyFile(lib(libName), tmp);
  if (mtime) await utimes(tmp, mtime, mtime);
  await rename(tmp, join(pluginsDir, as));
}

/**
 * Starts `bkg` on an ephemeral port with a fresh data dir; resolves when it prints its address.
 * `modelsFrom`: a models folder to give the host as a hard-linked private copy (`host.modelsDir`);
 * `hubEndpoint`: the Hugging Face hub it downloads from.
 */
export async function startHost({ plugins = [], modelsFrom = null, hubEndpoint = null, env = {} } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'bkg-ui-e2e-'));
  const pluginsDir = join(dir, 'plugins');
  await mkdir(pluginsDir, { recursive: true });
  for (const p of plugins) await copyFile(lib(p), join(pluginsDir, `lib${p}.so`));
  const log = createWriteStream(join(dir, 'host.log'));
  const modelsDir = join(dir, 'models');
  if (modelsFrom) await linkModelsDir(modelsFrom, modelsDir);
  const args = ['--listen', '127.0.0.1:0', '--data-dir', dir, '--plugins-dir', pluginsDir, '--models-dir', modelsDir];
  if (hubEndpoint) args.push('--hub-endpoint', hubEndpoint);
  // The host serves the built app itself (`--ui-dir`); the e2e default still puts serve.mjs in front.
  if (UI_FROM_HOST) args.push('--ui-dir', DIST);
  const child = spawn(BKG_BIN, args, {
    env: { ...process.env, BKG_ADMIN_KEY: ADMIN_KEY, RUST_LOG: process.env.RUST_LOG ?? 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stderr.pipe(log);
  const url = await new Promise((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`bkg did not print its address in 30 s (log: ${dir}/host.log)`)), 30_000);
    let buf = '';
    child.stdout.on('data', (d) => {
      log.write(d);
      buf += d.toString();
      const m = /bkg listening on (http:\/\/\S+)/.exec(buf);
      if (m) {
        clearTimeout(timer);
        resolveUrl(m[1]);
      }
    });
    child.on('exit', (code) => reject(new Error(`bkg exited with ${code} (log: ${dir}/host.log)`)));
  });
  const host = {
    url,
    dir,
    pluginsDir,
    modelsDir,
    child,
    async api(path, { method = 'GET', body, key = ADMIN_KEY, raw = false } = {}) {
      const res = await fetch(url + path, {
        method,
        headers: { Authorization: `Bearer ${key}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      });
      if (raw) return res;
      const text = await res.text();
      let json = null;
      try {
        json = JSON.parse(text);
      } catch {
        /* not JSON */
      }
      if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
      return json ?? text;
    },
    async waitRunning(ids, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const { plugins } = await host.api('/api/core/plugins');
        const running = new Set(plugins.filter((p) => p.state === 'running').map((p) => p.id));
        if (ids.every((id) => running.has(id))) return plugins;
        if (Date.now() > deadline) throw new Error(`plugins not running: ${JSON.stringify(plugins.map((p) => [p.id, p.state, p.last_error?.message]))}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async stop() {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      await new Promise((r) => {
        const t = setTimeout(() => {
          child.kill('SIGKILL');
          r();
        }, 15_000);
        child.on('exit', () => {
          clearTimeout(t);
          r();
        });
      });
    },
  };
  return host;
}

function removeProfile(dir) {
  try {
    rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
  } catch (e) {
    console.warn(`could not remove Chromium's profile folder ${dir}: ${e.message}`);
  }
}

export async function launchChromium() {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium`);
  const userDataDir = mkdtempSync(join(tmpdir(), 'bkg-ui-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-dev-shm-usage',
    ],
  });
  // The profile folder is Chromium's scratch space, never a result: gone with the browser.
  // Removed once `close()` has waited for the browser to exit (on the context's 'close'
  // event Chromium may still be writing into it: rmSync then failed with ENOTEMPTY and took
  // the whole run down after every test had passed), and never fatal.
  const close = context.close.bind(context);
  context.close = async (...args) => {
    try {
      await close(...args);
    } finally {
      removeProfile(userDataDir);
    }
  };
  process.once('exit', () => removeProfile(userDataDir));
  return context;
}
