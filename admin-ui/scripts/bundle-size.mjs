// Gzipped size of the initial JavaScript of the production build: the scripts index.html loads
// and every chunk they import statically (not the lazy routes). `npm run bundle-size [limitKB]`.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { DIST } from '../e2e/harness.mjs';

const limitKb = Number(process.argv[2] ?? 250);
const html = readFileSync(join(DIST, 'index.html'), 'utf8');
const entry = [...html.matchAll(/<script[^>]+src="([^"]+\.js)"/g)].map((m) => m[1]);
const modulePreloads = [...html.matchAll(/<link[^>]+rel="modulepreload"[^>]+href="([^"]+)"/g)].map((m) => m[1]);
const seen = new Set();
const queue = [...entry, ...modulePreloads];
while (queue.length) {
  const f = queue.shift();
  if (seen.has(f)) continue;
  seen.add(f);
  const src = readFileSync(join(DIST, f), 'utf8');
  // Static imports only: `import ... from "./chunk-X.js"` / `import "./chunk-X.js"` (not import()).
  for (const m of src.matchAll(/(?:^|[;\s}])(?:import|export)\s*(?:[\w*{}\s,$]+from\s*)?["']\.\/([\w.-]+\.js)["']/g)) queue.push(m[1]);
}
let raw = 0;
let gz = 0;
for (const f of seen) {
  const b = readFileSync(join(DIST, f));
  raw += b.length;
  gz += gzipSync(b, { level: 9 }).length;
}
const kb = (n) => (n / 1024).toFixed(1);
console.log(`initial JS: ${seen.size} files, ${kb(raw)} KiB raw, ${kb(gz)} KiB gzipped (limit ${limitKb} KB)`);
if (gz / 1000 > limitKb) {
  console.error('over the limit');
  process.exit(1);
}
