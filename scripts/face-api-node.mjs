// face-api itself under Node, for the scripts that write rustyface's reference fixtures
// (face-api-reference.mjs, face-api-detect-reference.mjs, face-api-landmarks-reference.mjs; not
// run in CI). @vladmandic/face-api@1.7.15 comes from scripts/fetch-models.sh's cache
// (~/.cache/bkg-models/npm), unpacked into a temporary folder; its bundled TensorFlow.js runs on
// the CPU backend, on the weights fetch-models.sh laid out under models/vladmandic/face-api.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const cache = process.env.BKG_MODELS_CACHE || path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'bkg-models');
const models = process.env.BKG_MODELS_DIR || path.join(root, 'models');

export const paths = {
  root,
  tgz: path.join(cache, 'npm', 'vladmandic-face-api-1.7.15.tgz'),
  weights: path.join(models, 'vladmandic', 'face-api'),
  photos: path.join(models, 'test-images', 'face_recognition'),
  demo: path.join(models, 'test-images', 'face-api-demo'),
};

/** face-api and its tf, with `load(net, stem)` for a network's weights and, when `withJpeg`,
 *  jpeg-js (npm, installed into the same temporary folder) to decode photos, and that folder
 *  (`tmp`, for the caller to remove). Exits with a hint
 *  when fetch-models.sh has not laid out what `needs` names (keys of `paths`). */
export async function faceApi({ needs = [], withJpeg = false } = {}) {
  const missing = ['tgz', 'weights', ...needs].map((k) => paths[k]).filter((p) => !fs.existsSync(p));
  if (missing.length) {
    console.error(`run scripts/fetch-models.sh first (${missing.join(', ')})`);
    process.exit(1);
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'face-api-'));
  execFileSync('tar', ['xzf', paths.tgz, '-C', tmp]);
  fs.writeFileSync(path.join(tmp, 'package', 'package.json'), JSON.stringify({ type: 'module' }));
  let jpeg = null;
  if (withJpeg) {
    execFileSync('npm', ['install', '--silent', '--no-audit', '--no-fund', '--prefix', tmp, 'jpeg-js@0.4.4']);
    jpeg = createRequire(path.join(tmp, 'x.js'))('jpeg-js');
  }
  // The ESM bundle picks its platform at import: let it take the browser one (fetch is unused).
  globalThis.window = globalThis;
  globalThis.document = { createElement: () => ({ getContext: () => null }) };
  const faceapi = await import(path.join(tmp, 'package', 'dist', 'face-api.esm.js'));
  const tf = faceapi.tf;
  await tf.setBackend('cpu');
  await tf.ready();
  const load = (net, stem) => {
    const manifest = JSON.parse(fs.readFileSync(path.join(paths.weights, `${stem}-weights_manifest.json`)));
    const bin = fs.readFileSync(path.join(paths.weights, `${stem}.bin`));
    net.loadFromWeightMap(tf.io.decodeWeights(bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength), manifest[0].weights));
    return net;
  };
  return { faceapi, tf, jpeg, load, tmp };
}
