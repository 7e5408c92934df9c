import { provideHttpClient } from '@angular/common/http';
import { HttpTestingController, provideHttpClientTesting } from '@angular/common/http/testing';
import { TestBed } from '@angular/core/testing';
import { ApiError } from '../core/api';
import { RustyfaceStore, confidenceProblem, dataUrlBase64, galleryProblem, imageError, iou, matchRecognized, photoProblem, thresholdProblem } from './rustyface-store';

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

  it('checks gallery names (lower case only) and thresholds', () => {
    expect(galleryProblem('team-a_2')).toBeNull();
    expect(galleryProblem('Team')).toContain('lower-case');
    expect(galleryProblem('')).toContain('not a gallery name');
    expect(galleryProblem('a/b')).toContain('not a gallery name');
    expect(thresholdProblem(0.6)).toBeNull();
    expect(thresholdProblem(2)).toBeNull();
    expect(thresholdProblem(0)).toContain('outside (0, 2]');
    expect(thresholdProblem(NaN)).toContain('between 0 and 2');
  });

  it('matches recognized faces to detected ones by their boxes, not their order', () => {
    const a = { box: { x: 0, y: 0, w: 10, h: 10 }, score: 0.9 };
    const b = { box: { x: 100, y: 0, w: 10, h: 10 }, score: 0.8 };
    expect(iou(a.box, a.box)).toBe(1);
    expect(iou(a.box, b.box)).toBe(0);
    expect(iou(a.box, { x: 5, y: 0, w: 10, h: 10 })).toBeCloseTo(50 / 150);
    const ra = { box: { x: 1, y: 0, w: 10, h: 10 }, person: 'ann', distance: 0.3 };
    const rb = { box: b.box, person: null, distance: 0.8 };
    // Given in the other order, and a third face nobody detected.
    const far = { box: { x: 500, y: 500, w: 5, h: 5 }, person: 'zed', distance: 0.1 };
    expect(matchRecognized([a, b], [rb, far, ra])).toEqual([ra, rb]);
    expect(matchRecognized([a, b], [])).toEqual([null, null]);
  });

  it('says a 413 is a photo too large for the plugin, with its message', () => {
    const big = new ApiError(413, 'payload_too_large', 'the image is 10000x5000 = 50000000 pixels, over max_pixels = 40000000');
    expect(imageError('face.detect', 'huge.png', big)).toBe('huge.png is too large for the plugin: the image is 10000x5000 = 50000000 pixels, over max_pixels = 40000000');
    expect(imageError('face.detect', 'a.jpg', new ApiError(400, 'bad_request', 'not an image'))).toBe('face.detect refused a.jpg: not an image');
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
    const list = http.expectOne('/api/plugins/rustyface/gallery.list');
    expect(list.request.body).toEqual({ gallery: 'default' });
    list.flush({ persons: [{ person: 'a', entries: 2 }] });
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
  const GALLERY_CAPS = ['face.detect', 'gallery.list', 'gallery.person', 'gallery.enrol', 'gallery.delete', 'face.recognize', 'gallery.crop'];
  /** loadCaps with every gallery capability; the gallery.list answer is left to the caller. */
  async function withGalleries() {
    const caps = store.loadCaps();
    http.expectOne('/api/core/plugins/rustyface').flush({ capabilities: GALLERY_CAPS.map((name) => ({ name })) });
    await tick();
    // Wrapped: an async function returning the promise itself would wait for it.
    return { caps };
  }

  it('shows each person with thumbnails of their crops: inline ones as data URLs, none for a descriptor, gallery.crop fetched as a blob URL', async () => {
    const made: string[] = [];
    const revoked: string[] = [];
    const create = vi.spyOn(URL, 'createObjectURL').mockImplementation(() => (made.push(`blob:t/${made.length}`), made[made.length - 1]));
    const revoke = vi.spyOn(URL, 'revokeObjectURL').mockImplementation((u) => void revoked.push(u));
    try {
      const { caps } = await withGalleries();
      http.expectOne('/api/plugins/rustyface/gallery.list').flush({ gallery: 'default', persons: [{ person: 'ann', entries: 2 }, { person: 'bob', entries: 1 }], galleries: ['default', 'team'] });
      await tick();
      const persons = http.match('/api/plugins/rustyface/gallery.person');
      expect(persons.map((r) => r.request.body)).toEqual([{ gallery: 'default', person: 'ann' }, { gallery: 'default', person: 'bob' }]);
      persons[0].flush({ entries: [{ id: 'e1', created_ms: 1, box: null, crop: 'SU1H' }, { id: 'e2', created_ms: 2, box: null, crop: null }] });
      persons[1].flush({ entries: [{ id: 'e3', created_ms: 3, box: null }] });
      await tick();
      const crop = http.expectOne('/api/plugins/rustyface/gallery.crop');
      expect(crop.request.body).toEqual({ gallery: 'default', person: 'bob', entry: 'e3' });
      expect(crop.request.responseType).toBe('blob');
      crop.flush(new Blob([new Uint8Array([0xff, 0xd8])], { type: 'image/jpeg' }));
      await caps;
      expect(store.thumbs()).toEqual({
        ann: [{ id: 'e1', created_ms: 1, url: 'data:image/jpeg;base64,SU1H' }, { id: 'e2', created_ms: 2, url: null }],
        bob: [{ id: 'e3', created_ms: 3, url: 'blob:t/0' }],
      });
      expect(store.galleries()).toEqual(['default', 'team']);
      expect(store.faceCount()).toBe(3);
      expect(revoked).toEqual([]);

      // bob deleted: his row, his thumbnail and its blob URL go.
      const del = store.deletePerson('bob');
      const d = http.expectOne('/api/plugins/rustyface/gallery.delete');
      expect(d.request.body).toEqual({ gallery: 'default', person: 'bob' });
      d.flush({ deleted_entries: 1, deleted_files: 2 });
      await tick();
      http.expectOne('/api/plugins/rustyface/gallery.list').flush({ persons: [{ person: 'ann', entries: 1 }], galleries: ['default', 'team'] });
      await tick();
      http.expectOne('/api/plugins/rustyface/gallery.person').flush({ entries: [{ id: 'e1', created_ms: 1, box: null, crop: 'SU1H' }] });
      await del;
      expect(Object.keys(store.thumbs())).toEqual(['ann']);
      expect(store.persons()).toEqual([{ person: 'ann', entries: 1 }]);
      expect(revoked).toEqual(['blob:t/0']);
    } finally {
      create.mockRestore();
      revoke.mockRestore();
    }
  });

  it('uses the chosen gallery for list, enrol, recognize and delete; a new name is an empty gallery until enrolled into; a bad name is refused', async () => {
    const { caps } = await withGalleries();
    http.expectOne('/api/plugins/rustyface/gallery.list').flush({ persons: [], galleries: [] });
    await caps;
    expect(store.galleries()).toEqual(['default']);

    await store.setGallery('Team A');
    http.expectNone('/api/plugins/rustyface/gallery.list');
    expect(store.galleryError()).toContain('not a gallery name');
    expect(store.gallery()).toBe('default');

    const g = store.setGallery('team-a');
    const list = http.expectOne('/api/plugins/rustyface/gallery.list');
    expect(list.request.body).toEqual({ gallery: 'team-a' });
    list.flush({ error: { code: 'not_found', message: "no gallery 'team-a'" } }, { status: 404, statusText: 'Not Found' });
    await g;
    expect(store.gallery()).toBe('team-a');
    expect(store.persons()).toEqual([]);
    expect(store.galleryError()).toBeNull();
    expect(store.galleries()).toEqual(['default', 'team-a']);

    const p = store.setPhoto(photo('AAAA'));
    http.expectOne('/api/plugins/rustyface/face.detect').flush({ width: 9, height: 9, faces: [face], took_ms: 1 });
    await p;
    const e = store.enrol('ann');
    const enrol = http.expectOne('/api/plugins/rustyface/gallery.enrol');
    expect(enrol.request.body).toEqual({ gallery: 'team-a', person: 'ann', image: 'AAAA', face_index: 0, detector: 'ssd', min_confidence: 0.5 });
    enrol.flush({ id: 'e1' });
    await tick();
    http.expectOne('/api/plugins/rustyface/gallery.list').flush({ persons: [{ person: 'ann', entries: 1 }], galleries: ['default', 'team-a'] });
    await tick();
    http.expectOne('/api/plugins/rustyface/gallery.person').flush({ entries: [] });
    expect(await e).toBe(true);
    expect(store.persons()).toEqual([{ person: 'ann', entries: 1 }]);

    const r = store.recognize();
    const rec = http.expectOne('/api/plugins/rustyface/face.recognize');
    expect(rec.request.body).toEqual({ image: 'AAAA', gallery: 'team-a', threshold: 0.6, detector: 'ssd', min_confidence: 0.5 });
    rec.flush({ faces: [] });
    await r;

    // Another gallery while team-a's list is still out: the late answer does not land.
    const slow = store.loadGallery();
    const slowList = http.expectOne('/api/plugins/rustyface/gallery.list');
    const back = store.setGallery('default');
    http.expectOne((q) => q.url === '/api/plugins/rustyface/gallery.list' && q.body.gallery === 'default').flush({ persons: [{ person: 'zed', entries: 1 }], galleries: ['default', 'team-a'] });
    await tick();
    http.expectOne('/api/plugins/rustyface/gallery.person').flush({ entries: [] });
    await back;
    slowList.flush({ persons: [{ person: 'ann', entries: 1 }], galleries: ['default', 'team-a'] });
    await slow;
    http.expectNone('/api/plugins/rustyface/gallery.person');
    expect(store.persons()).toEqual([{ person: 'zed', entries: 1 }]);
    expect(store.gallery()).toBe('default');
  });

  it('recognizes with the threshold, refuses a bad one, again with a new one, and matches the names to the detected faces', async () => {
    const p = store.setPhoto(photo('AAAA'));
    const two = [face, { box: { x: 200, y: 20, w: 30, h: 40 }, score: 0.8 }];
    http.expectOne('/api/plugins/rustyface/face.detect').flush({ width: 300, height: 80, faces: two, took_ms: 1 });
    await p;
    await store.setThreshold(3);
    http.expectNone('/api/plugins/rustyface/face.recognize');
    expect(store.galleryError()).toContain('outside (0, 2]');
    await store.recognize();
    http.expectNone('/api/plugins/rustyface/face.recognize');

    await store.setThreshold(0.5);
    expect(store.galleryError()).toBeNull();
    http.expectNone('/api/plugins/rustyface/face.recognize'); // nothing recognized yet: nothing to redo
    const r = store.recognize();
    const rec = http.expectOne('/api/plugins/rustyface/face.recognize');
    expect(rec.request.body.threshold).toBe(0.5);
    const ann = { box: two[1].box, person: 'ann', distance: 0.31, candidates: [{ person: 'bob', distance: 0.7 }] };
    const unknown = { box: face.box, person: null, distance: 0.66, candidates: [{ person: 'ann', distance: 0.66 }] };
    rec.flush({ faces: [ann, unknown] });
    await r;
    expect(store.namesByFace()).toEqual([unknown, ann]);

    // Names shown: a new threshold recognizes again.
    const again = store.setThreshold(0.7);
    const rec2 = http.expectOne('/api/plugins/rustyface/face.recognize');
    expect(rec2.request.body.threshold).toBe(0.7);
    rec2.flush({ faces: [ann, { ...unknown, person: 'ann', candidates: [] }] });
    await again;
    expect(store.namesByFace().map((n) => n?.person)).toEqual(['ann', 'ann']);
  });

  it('a file that cannot be sent replaces the photo before it with its reason, and a late answer for that photo does not come back', async () => {
    const p = store.setPhoto(photo('AAAA'));
    const req = http.expectOne('/api/plugins/rustyface/face.detect');
    store.fail('notes.txt is not a JPEG, PNG, WebP or BMP image (text/plain)');
    req.flush({ width: 9, height: 9, faces: [face], took_ms: 1 });
    await p;
    expect(store.photo()).toBeNull();
    expect(store.result()).toBeNull();
    expect(store.detecting()).toBe(false);
    expect(store.error()).toContain('notes.txt is not a JPEG');
  });

  it('shows a 413 from the plugin as a photo too large, with the limit it names', async () => {
    const p = store.setPhoto({ ...photo('AAAA'), name: 'bomb.png' });
    http.expectOne('/api/plugins/rustyface/face.detect').flush(
      { error: { code: 'payload_too_large', message: 'the image is 10000x5000 = 50000000 pixels, over max_pixels = 40000000' } },
      { status: 413, statusText: 'Payload Too Large' },
    );
    await p;
    expect(store.error()).toBe('bomb.png is too large for the plugin: the image is 10000x5000 = 50000000 pixels, over max_pixels = 40000000');
    expect(store.detecting()).toBe(false);
  });
});
