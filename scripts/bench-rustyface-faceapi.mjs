// face-api's side of scripts/bench-rustyface.sh (not run in CI): @vladmandic/face-api@1.7.15
// under Node (set up by face-api-node.mjs) on TensorFlow.js's wasm backend (SIMD) or its CPU
// backend, timing on the photos named:
//   detect_ms     SsdMobilenetv1 (minConfidence 0.5) on the decoded photo (a tensor), per photo;
//   tiny_ms       TinyFaceDetector (416, 0.5), per photo;
//   descriptor_ms FaceRecognitionNet.computeFaceDescriptor on each aligned 150x150 chip that
//                 rustyface's bench wrote (--chips DIR, raw RGB; the first --chip-limit), per face;
//   pipeline_ms   detectAllFaces().withFaceLandmarks().withFaceDescriptors(), per photo (face-api
//                 crops the detector's box for the descriptor: no alignment).
// JPEG decoding (jpeg-js) is outside every timing. Each photo/chip runs --warmup times first (not
// recorded), then --runs times. Prints one JSON object (peak RSS from process.resourceUsage()).
//
// node scripts/bench-rustyface-faceapi.mjs --backend wasm --wasm-dir DIR --chips DIR PHOTO...
// where DIR holds npm @tensorflow/tfjs-backend-wasm@4.22.0's dist/*.wasm (the tfjs version inside
// face-api's bundle). tfjs runs its wasm backend single-threaded under Node: its flag
// WASM_HAS_MULTITHREAD_SUPPORT is false when IS_NODE, and forcing it fails (no Worker).
import fs from 'node:fs';
import path from 'node:path';
import { faceApi } from './face-api-node.mjs';

const args = { backend: 'wasm', runs: 5, warmup: 1, chips: null, chipLimit: Infinity, wasmDir: null, photos: [] };
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  const next = () => {
    if (i + 1 >= process.argv.length) throw new Error(`${a} needs a value`);
    return process.argv[++i];
  };
  if (a === '--backend') args.backend = next();
  else if (a === '--runs') args.runs = Number(next());
  else if (a === '--warmup') args.warmup = Number(next());
  else if (a === '--chips') args.chips = next();
  else if (a === '--chip-limit') args.chipLimit = Number(next());
  else if (a === '--wasm-dir') args.wasmDir = next();
  else if (a.startsWith('--')) throw new Error(`unknown option ${a}`);
  else args.photos.push(a);
}
if (!['wasm', 'cpu'].includes(args.backend)) throw new Error(`--backend wasm | cpu, got ${args.backend}`);
if (!(args.runs > 0) || !(args.warmup >= 0)) throw new Error('--runs must be > 0, --warmup >= 0');
if (args.backend === 'wasm' && !args.wasmDir) throw new Error('--backend wasm needs --wasm-dir');

const wasmDir = args.wasmDir && path.resolve(args.wasmDir);
if (args.backend === 'wasm') {
  // The browser bundle's wasm backend (emscripten's web mode: its node mode's fs and path are
  // empty stubs in this bundle) reads its script folder from __filename and fetches the .wasm:
  // name the npm package's folder and serve local paths from the disk.
  globalThis.__dirname = wasmDir;
  globalThis.__filename = path.join(wasmDir, 'x.js');
  const webFetch = globalThis.fetch;
  globalThis.fetch = async (url, init) => {
    const u = String(url);
    if (!u.startsWith('/') && !u.startsWith('file://')) return webFetch(url, init);
    const file = u.startsWith('file://') ? new URL(u).pathname : u;
    return new Response(fs.readFileSync(file), { headers: { 'content-type': 'application/wasm' } });
  };
}
const { faceapi, tf, jpeg, load, tmp } = await faceApi({ withJpeg: true });
if (args.backend === 'wasm') {
  tf.setWasmPaths(wasmDir + '/');
  if (!(await tf.setBackend('wasm'))) throw new Error('the wasm backend did not start');
  await tf.ready();
}
const backend = tf.getBackend();
const threads = backend === 'wasm' ? tf.getThreadsCount() : 1;
const simd = backend === 'wasm' ? await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT') : false;

const nets = faceapi.nets;
load(nets.ssdMobilenetv1, 'ssd_mobilenetv1_model');
load(nets.tinyFaceDetector, 'tiny_face_detector_model');
load(nets.faceLandmark68Net, 'face_landmark_68_model');
load(nets.faceRecognitionNet, 'face_recognition_model');
const ssdOptions = new faceapi.SsdMobilenetv1Options({ minConfidence: 0.5, maxResults: 100 });
const tinyOptions = new faceapi.TinyFaceDetectorOptions({ inputSize: 416, scoreThreshold: 0.5 });

const now = () => performance.now();
async function timed(runs, warmup, f) {
  const out = [];
  for (let r = 0; r < warmup + runs; r++) {
    const t = now();
    await f();
    if (r >= warmup) out.push(now() - t);
  }
  return out;
}

const photos = [];
for (const file of args.photos) {
  const raw = jpeg.decode(fs.readFileSync(file), { useTArray: true, formatAsRGBA: false, maxMemoryUsageInMB: 1024 });
  const input = tf.tensor3d(raw.data, [raw.height, raw.width, 3], 'int32');
  const found = await faceapi.detectAllFaces(input, ssdOptions);
  const tinyFound = await faceapi.detectAllFaces(input, tinyOptions);
  const full = await faceapi.detectAllFaces(input, ssdOptions).withFaceLandmarks().withFaceDescriptors();
  const detect_ms = await timed(args.runs, args.warmup, () => faceapi.detectAllFaces(input, ssdOptions));
  const tiny_ms = await timed(args.runs, args.warmup, () => faceapi.detectAllFaces(input, tinyOptions));
  const pipeline_ms = await timed(args.runs, args.warmup, () =>
    faceapi.detectAllFaces(input, ssdOptions).withFaceLandmarks().withFaceDescriptors());
  input.dispose();
  photos.push({
    name: path.basename(file),
    width: raw.width,
    height: raw.height,
    faces: found.length,
    tiny_faces: tinyFound.length,
    pipeline_faces: full.length,
    boxes: found.map((d) => [d.box.x, d.box.y, d.box.width, d.box.height]),
    descriptors: full.map((d) => Array.from(d.descriptor)),
    detect_ms,
    tiny_ms,
    pipeline_ms,
  });
}

const chips = [];
if (args.chips) {
  const files = fs.readdirSync(args.chips).filter((f) => f.endsWith('.rgb')).sort();
  for (const f of files.slice(0, args.chipLimit)) {
    const px = fs.readFileSync(path.join(args.chips, f));
    if (px.length !== 150 * 150 * 3) throw new Error(`${f}: ${px.length} bytes, not a 150x150 RGB chip`);
    const input = tf.tensor3d(new Int32Array(px), [150, 150, 3], 'int32');
    const d = await nets.faceRecognitionNet.computeFaceDescriptor(input);
    const ms = await timed(args.runs, args.warmup, () => nets.faceRecognitionNet.computeFaceDescriptor(input));
    input.dispose();
    chips.push({ chip: f, descriptor: Array.from(d), descriptor_ms: ms });
  }
}

fs.rmSync(tmp, { recursive: true, force: true });
console.log(JSON.stringify({
  tool: `face-api (tfjs-${backend})`,
  backend,
  simd,
  threads,
  tfjs: tf.version_core,
  node: process.version,
  runs: args.runs,
  warmup: args.warmup,
  photos,
  chips,
  peak_rss_kib: process.resourceUsage().maxRSS,
}));
