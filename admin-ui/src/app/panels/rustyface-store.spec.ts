import { provideHttpClient } from '@angular/common/http';
import { HttpTestingController, provideHttpClientTesting } from '@angular/common/http/testing';
import { TestBed } from '@angular/core/testing';
import { RustyfaceStore, confidenceProblem, dataUrlBase64, photoProblem } from './rustyface-store';

const tick = () => new Promise((r) => setTimeout(r));
const photo = (b64: string) => ({ name: `${b64}.jpg`, url: `data:image/jpeg;base64,${b64}`, base64: b64 });
const face = { box: { x: 10, y: 20, w: 30, h: 40 }, score: 0.9 };

describe('rustyface helpers', () => {
  it('refuses files that are not images the plugin decodes, empty or too big', () => {
    expect(photoProblem({ name: 'a.jpg', type: 'image/jpeg', size: 10 })).toBeNull();
    expect(photoProblem({ name: 'a.webp', type: 'image/webp', size: 10 })).toBeNull();
    expect(photoProblem({ name: 'a.gif', type: 'image/gif', size: 10 })).toContain('not a JPEG');
    expect(photoProblem({ name: 'a.txt', type: '', size: 10 })).toContain('unknown type');
    expect(photoProblem({ name: 'a.png', type: 'image/png', size: 0 })).toContain('empty');
    expect(photoProblem({ name: 'a.png', type: 'image/png', size: 3 * 1048576 }, 2 * 1048576)).toContain('limit is 2 MiB');
  });

  it('checks the minimum confidence', () => {
    expect(confidenceProblem(0.5)).toBeNull();
    expect(confidenceProblem(1)).toBeNull();
    expect(confidenceProblem(0)).toContain('outside');
    expect(confidenceProblem(1.5)).toContain('outside');
    expect(confidenceProblem(NaN)).toContain('between 0 and 1');
    expect(confidenceProblem(null)).toContain('between 0 and 1');
  });

  it('takes the payload out of a data URL', () => {
    expect(dataUrlBase64('data:image/png;base64,AAAA')).toBe('AAAA');
    expect(() => dataUrlBase64('blob:xyz')).toThrow(/data URL/);
  });
});

describe('RustyfaceStore', () => {
  let store: InstanceType<typeof RustyfaceStore>;
  let http: HttpTestingController;

  beforeEach(() => {
    TestBed.configureTestingModule({ providers: [RustyfaceStore, provideHttpClient(), provideHttpClientTesting()] });
    store = TestBed.inject(RustyfaceStore);
    http = TestBed.inject(HttpTestingController);
  });
  afterEach(() => http.verify());

  it('detects with landmarks and the chosen detector and confidence, again when they change', async () => {
    const p = store.setPhoto(photo('QUJD'));
    const req = http.expectOne({ method: 'POST', url: '/api/plugins/rustyface/face.detect' });
    expect(req.request.body).toEqual({ image: 'QUJD', detector: 'ssd', min_confidence: 0.5, landmarks: true });
    req.flush({ width: 100, height: 80, faces: [face], took_ms: 5 });
    await p;
    expect(store.result()?.faces.length).toBe(1);
    expect(store.detecting()).toBe(false);

    const d = store.setDetector('tiny');
    const again = http.expectOne('/api/plugins/rustyface/face.detect');
    expect(again.request.body.detector).toBe('tiny');
    again.flush({ width: 100, height: 80, faces: [], took_ms: 3 });
    await d;
    expect(store.result()?.faces.length).toBe(0);
  });

  it('sends nothing for a bad confidence and says why', async () => {
    store.setCompare('a', photo('QQ'));
    await store.setMinConfidence(2);
    http.expectNone('/api/plugins/rustyface/face.detect'); // no photo yet
    const p = store.setPhoto(photo('QUJD'));
    await p;
    http.expectNone('/api/plugins/rustyface/face.detect');
    expect(store.error()).toContain('outside');
  });

  it('keeps the answer for the latest photo when an earlier one answers late', async () => {
    const first = store.setPhoto(photo('AAAA'));
    const second = store.setPhoto(photo('BBBB'));
    const reqs = http.match('/api/plugins/rustyface/face.detect');
    expect(reqs.length).toBe(2);
    reqs[1].flush({ width: 2, height: 2, faces: [face, face], took_ms: 1 });
    await second;
    reqs[0].flush({ width: 1, height: 1, faces: [], took_ms: 1 });
    await first;
    expect(store.result()?.faces.length).toBe(2);
    expect(store.photo()?.base64).toBe('BBBB');
  });

  it('keeps the names from Recognize when the detection of the same photo answers after them; a new detection clears them', async () => {
    const p = store.setPhoto(photo('AAAA'));
    const detect = http.expectOne('/api/plugins/rustyface/face.detect');
    // Recognize clicked while the photo's detection is still out.
    const r = store.recognize();
    http.expectOne('/api/plugins/rustyface/face.recognize').flush({ faces: [{ ...face, person: 'obama', distance: 0.38, candidates: [] }] });
    await r;
    detect.flush({ width: 100, height: 80, faces: [face], took_ms: 5 });
    await p;
    expect(store.recognized()?.map((f) => f.person)).toEqual(['obama']);
    // Another detector: new boxes, so the names go.
    const d = store.setDetector('tiny');
    expect(store.recognized()).toBeNull();
    http.expectOne('/api/plugins/rustyface/face.detect').flush({ width: 100, height: 80, faces: [face], took_ms: 3 });
    await d;
    expect(store.recognized()).toBeNull();
  });

  it('shows the plugin error of a failed detection', async () => {
    const p = store.setPhoto(photo('AAAA'));
    http.expectOne('/api/plugins/rustyface/face.detect').flush({ error: { code: 'bad_request', message: 'not an image' } }, { status: 400, statusText: 'Bad Request' });
    await p;
    expect(store.error()).toContain('not an image');
    expect(store.result()).toBeNull();
  });

  it('compares two photos and needs both', async () => {
    await store.runCompare();
    expect(store.compareError()).toContain('two photos');
    store.setCompare('a', photo('AA'));
    store.setCompare('b', photo('BB'));
    const p = store.runCompare();
    const req = http.expectOne('/api/plugins/rustyface/face.compare');
    expect(req.request.body).toEqual({ image_a: 'AA', image_b: 'BB' });
    req.flush({ distance: 0.38, same: true, threshold: 0.6 });
    await p;
    expect(store.compare()).toEqual({ distance: 0.38, same: true, threshold: 0.6 });
    expect(store.compareError()).toBeNull();
    await tick();
  });

  it('galleries: only with every gallery capability in the manifest; a single face is chosen for enrolment, none of two', async () => {
    const caps = store.loadCaps();
    http.expectOne('/api/core/plugins/rustyface').flush({ capabilities: [{ name: 'face.detect' }, { name: 'gallery.list' }] });
    await tick();
    // gallery.list is listed, so the persons are read; the others are missing: no galleries.
    http.expectOne('/api/plugins/rustyface/gallery.list').flush({ persons: [{ person: 'a', entries: 2 }] });
    await caps;
    expect(store.hasGalleries()).toBe(false);
    expect(store.persons()).toEqual([{ person: 'a', entries: 2 }]);

    expect(await store.enrol('obama')).toBe(false);
    expect(store.galleryError()).toContain('Pick a face');
    const one = store.setPhoto(photo('AAAA'));
    http.expectOne('/api/plugins/rustyface/face.detect').flush({ width: 9, height: 9, faces: [face], took_ms: 1 });
    await one;
    expect(store.chosenFace()).toBe(0);
    const two = store.setPhoto(photo('BBBB'));
    http.expectOne('/api/plugins/rustyface/face.detect').flush({ width: 9, height: 9, faces: [face, face], took_ms: 1 });
    await two;
    expect(store.chosenFace()).toBeNull();
    http.expectNone('/api/plugins/rustyface/gallery.enrol');
  });
});
