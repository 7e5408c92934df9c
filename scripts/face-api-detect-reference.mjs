// Reference face boxes from face-api itself, for rustyface's detector test (not run in CI).
//
//   node scripts/face-api-detect-reference.mjs
//
// Runs @vladmandic/face-api@1.7.15's SsdMobilenetv1 (minConfidence 0.5, maxResults 100) and
// TinyFaceDetector (inputSize 416, scoreThreshold 0.5), with its bundled TensorFlow.js on the
// CPU backend, on the weights scripts/fetch-models.sh laid out, over the face_recognition test
// photos and face-api's demo group photos it fetched (models/test-images/face_recognition,
// models/test-images/face-api-demo), and writes
// host/tests/fixtures/face-detect-reference.json (boxes in image pixels). The photos are decoded
// by jpeg-js (npm, installed into a temporary folder); their EXIF orientation is 1 (none).
// The npm package comes from fetch-models.sh's cache (~/.cache/bkg-models/npm).
import fs from 'node:fs';
import path from 'node:path';
import { faceApi, paths } from './face-api-node.mjs';

const { root, photos, demo } = paths;
const { faceapi, tf, jpeg, load, tmp } = await faceApi({ needs: ['photos', 'demo'], withJpeg: true });
const ssd = load(new faceapi.SsdMobilenetv1(), 'ssd_mobilenetv1_model');
const tiny = load(new faceapi.TinyFaceDetector(), 'tiny_face_detector_model');

const boxes = (dets) => dets.map((d) => ({ x: d.box.x, y: d.box.y, w: d.box.width, h: d.box.height, score: d.score }));
const images = {};
const files = ['obama.jpg', 'obama2.jpg', 'obama3.jpg', 'biden.jpg'].map((n) => [n, path.join(photos, n)]);
for (let i = 1; i <= 6; i++) files.push([`sample${i}.jpg`, path.join(demo, `sample${i}.jpg`)]);
for (const [name, file] of files) {
  const raw = jpeg.decode(fs.readFileSync(file), { useTArray: true, formatAsRGBA: false, maxMemoryUsageInMB: 1024 });
  const input = tf.tensor3d(raw.data, [raw.height, raw.width, 3], 'int32');
  const s = await ssd.locateFaces(input, new faceapi.SsdMobilenetv1Options({ minConfidence: 0.5, maxResults: 100 }));
  const t = await tiny.locateFaces(input, new faceapi.TinyFaceDetectorOptions({ inputSize: 416, scoreThreshold: 0.5 }));
  input.dispose();
  images[name] = { width: raw.width, height: raw.height, ssd: boxes(s), tiny: boxes(t) };
  console.log(name, JSON.stringify(images[name]));
}
const out = path.join(root, 'host', 'tests', 'fixtures', 'face-detect-reference.json');
fs.writeFileSync(out, JSON.stringify({
  source: `@vladmandic/face-api@1.7.15 SsdMobilenetv1 (minConfidence 0.5) and TinyFaceDetector (416, 0.5), tfjs ${tf.version_core} cpu backend, jpeg-js 0.4.4 (scripts/face-api-detect-reference.mjs)`,
  images,
}, null, 1) + '\n');
fs.rmSync(tmp, { recursive: true, force: true });
console.log(`wrote ${out}`);
