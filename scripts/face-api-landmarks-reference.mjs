// Reference 68-point landmarks from face-api itself, for rustyface's landmark net test (not run
// in CI).
//
//   node scripts/face-api-landmarks-reference.mjs
//
// Runs @vladmandic/face-api@1.7.15's SsdMobilenetv1 (minConfidence 0.5) on the
// face_recognition test portraits (models/test-images/face_recognition), then its
// FaceLandmark68Net on each face the way `detectAllFaces(...).withFaceLandmarks()` does with a
// tensor input (extractFaceTensors: the box clipped and floored; landmarks shifted by the box),
// with its bundled TensorFlow.js on the CPU backend, on the weights scripts/fetch-models.sh laid
// out, and writes host/tests/fixtures/face-landmarks-reference.json (boxes and landmarks in
// image pixels). The photos are decoded by jpeg-js (npm, installed into a temporary folder);
// their EXIF orientation is 1 (none). The npm package comes from fetch-models.sh's cache
// (~/.cache/bkg-models/npm).
import fs from 'node:fs';
import path from 'node:path';
import { faceApi, paths } from './face-api-node.mjs';

const { root, photos } = paths;
const { faceapi, tf, jpeg, load, tmp } = await faceApi({ needs: ['photos'], withJpeg: true });
const ssd = load(new faceapi.SsdMobilenetv1(), 'ssd_mobilenetv1_model');
const landmarkNet = load(new faceapi.FaceLandmark68Net(), 'face_landmark_68_model');

const images = {};
for (const name of ['obama.jpg', 'obama2.jpg', 'obama3.jpg', 'biden.jpg']) {
  const raw = jpeg.decode(fs.readFileSync(path.join(photos, name)), { useTArray: true, formatAsRGBA: false, maxMemoryUsageInMB: 1024 });
  const input = tf.tensor3d(raw.data, [raw.height, raw.width, 3], 'int32');
  const dets = await ssd.locateFaces(input, new faceapi.SsdMobilenetv1Options({ minConfidence: 0.5, maxResults: 100 }));
  const faces = [];
  for (const det of dets) {
    const [crop] = await faceapi.extractFaceTensors(input, [det]);
    const lm = await landmarkNet.detectLandmarks(crop);
    crop.dispose();
    const b = det.box;
    // As extendWithFaceLandmarks does: shifted by the detection's box.
    const shifted = lm.shiftBy(b.x, b.y);
    faces.push({
      box: { x: b.x, y: b.y, w: b.width, h: b.height },
      landmarks: shifted.positions.map((p) => [p.x, p.y]),
    });
  }
  input.dispose();
  images[name] = { width: raw.width, height: raw.height, faces };
  console.log(name, faces.length, 'faces', JSON.stringify(faces[0]?.landmarks.slice(36, 38)));
}
const out = path.join(root, 'host', 'tests', 'fixtures', 'face-landmarks-reference.json');
fs.writeFileSync(out, JSON.stringify({
  source: `@vladmandic/face-api@1.7.15 SsdMobilenetv1 (minConfidence 0.5) + FaceLandmark68Net on tensor input, tfjs ${tf.version_core} cpu backend, jpeg-js 0.4.4 (scripts/face-api-landmarks-reference.mjs)`,
  images,
}, null, 1) + '\n');
fs.rmSync(tmp, { recursive: true, force: true });
console.log(`wrote ${out}`);
