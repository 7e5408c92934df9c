// Reference descriptors from face-api itself, for rustyface's recognizer test (not run in CI).
//
//   node scripts/face-api-reference.mjs
//
// Runs @vladmandic/face-api@1.7.15's FaceRecognitionNet (its bundled TensorFlow.js, CPU backend)
// on the weights scripts/fetch-models.sh laid out, for a few synthetic 150x150 chips whose pixels
// are integer formulas (the same `chipPixel` is in plugins/rustyface/src/nets/recognition.rs's
// tests), and writes host/tests/fixtures/face-recognition-reference.json. The npm package comes
// from fetch-models.sh's cache (~/.cache/bkg-models/npm), unpacked into a temporary folder.
import fs from 'node:fs';
import path from 'node:path';
import { faceApi, paths } from './face-api-node.mjs';

const { root } = paths;
const { faceapi, tf, load, tmp } = await faceApi();
const net = load(new faceapi.FaceRecognitionNet(), 'face_recognition_model');

// Keep in step with `chip_pixel` in recognition.rs.
function chipPixel(k, x, y) {
  if (k === 2) {
    // A cartoon face: a skin disc, two dark eyes, a mouth, on a grey background.
    const d = (x - 75) * (x - 75) + (y - 80) * (y - 80);
    const eye = (x - 52) * (x - 52) + (y - 62) * (y - 62) < 64 || (x - 98) * (x - 98) + (y - 62) * (y - 62) < 64;
    const mouth = y >= 108 && y <= 112 && x >= 55 && x <= 95;
    if (eye || mouth) return [40, 25, 20];
    if (d < 55 * 55) return [200 - (y >> 2), 160 - (y >> 3), 130];
    return [110, 110, 115];
  }
  return [
    (x * (3 + k) + y * 2 + 40 * k) % 256,
    (Math.floor((x * y) / (11 + k)) + 13 * k) % 256,
    ((x ^ (y * (k + 1))) + 7 * k) % 256,
  ];
}

const chips = [];
for (let k = 0; k < 3; k++) {
  const px = new Float32Array(150 * 150 * 3);
  for (let y = 0; y < 150; y++) for (let x = 0; x < 150; x++) px.set(chipPixel(k, x, y), (y * 150 + x) * 3);
  const input = tf.tensor3d(px, [150, 150, 3], 'int32');
  const d = await net.computeFaceDescriptor(input);
  input.dispose();
  chips.push({ pattern: k, descriptor: Array.from(d) });
}
const out = path.join(root, 'host', 'tests', 'fixtures', 'face-recognition-reference.json');
fs.writeFileSync(out, JSON.stringify({
  source: `@vladmandic/face-api@1.7.15 FaceRecognitionNet, tfjs ${tf.version_core} cpu backend (scripts/face-api-reference.mjs)`,
  chips,
}, null, 1) + '\n');
fs.rmSync(tmp, { recursive: true, force: true });
console.log(`wrote ${out}: ${chips.length} descriptors`);
