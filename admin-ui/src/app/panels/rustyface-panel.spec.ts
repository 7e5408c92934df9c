import { provideHttpClient } from '@angular/common/http';
import { HttpTestingController, TestRequest, provideHttpClientTesting } from '@angular/common/http/testing';
import { ComponentFixture, TestBed } from '@angular/core/testing';
import { ConfirmStore } from '../core/confirm.store';
import { RustyfacePanel } from './rustyface-panel';

const tick = () => new Promise((r) => setTimeout(r, 5));
const landmarks = Array.from({ length: 68 }, (_, i) => [100 + i, 120 + i] as [number, number]);

describe('RustyfacePanel', () => {
  let fixture: ComponentFixture<RustyfacePanel>;
  let http: HttpTestingController;
  const el = () => fixture.nativeElement as HTMLElement;

  /** The request to `url` once the file reader has answered (polled, up to ~2 s). */
  async function request(url: string): Promise<TestRequest> {
    for (let i = 0; i < 400; i++) {
      const r = http.match(url);
      if (r.length) return r[0];
      await tick();
    }
    throw new Error(`no request to ${url}`);
  }
  /** The n requests to `url`, once all are out (polled, up to ~2 s). */
  async function requests(url: string, n: number): Promise<TestRequest[]> {
    const got: TestRequest[] = [];
    for (let i = 0; i < 400 && got.length < n; i++) {
      got.push(...http.match(url));
      if (got.length < n) await tick();
    }
    if (got.length < n) throw new Error(`${got.length} of ${n} requests to ${url}`);
    return got;
  }
  async function settle() {
    await tick();
    await fixture.whenStable();
  }
  function pick(input: HTMLInputElement, file: File) {
    Object.defineProperty(input, 'files', { value: [file], configurable: true });
    input.dispatchEvent(new Event('change'));
  }

  const caps = (names: string[]) => ({ id: 'rustyface', capabilities: names.map((name) => ({ name, description: '' })) });
  const FIRST = ['face.detect', 'face.embed', 'face.compare'];
  const GALLERIES = [...FIRST, 'gallery.enrol', 'gallery.list', 'gallery.person', 'gallery.delete', 'face.recognize'];
  /** `gallery.person`'s entries: n crops, each a (fake) JPEG as base64. */
  const entries = (person: string, n: number) => Array.from({ length: n }, (_, i) => ({ id: `${person}-${i}`, created_ms: 1_700_000_000_000 + i, box: null, crop: btoa(`${person}${i}`) }));

  async function create(names: string[], persons?: { person: string; entries: number }[]) {
    TestBed.configureTestingModule({ imports: [RustyfacePanel], providers: [provideHttpClient(), provideHttpClientTesting()] });
    http = TestBed.inject(HttpTestingController);
    fixture = TestBed.createComponent(RustyfacePanel);
    fixture.detectChanges();
    http.expectOne({ method: 'GET', url: '/api/core/plugins/rustyface' }).flush(caps(names));
    if (persons) {
      (await request('/api/plugins/rustyface/gallery.list')).flush({ gallery: 'default', persons, galleries: ['default'] });
      for (const p of persons) (await request('/api/plugins/rustyface/gallery.person')).flush({ entries: entries(p.person, p.entries) });
    }
    await settle();
  }
  beforeEach(async () => {
    if (!expect.getState().currentTestName?.includes('gallery')) await create(FIRST);
  });
  afterEach(() => http.verify());

  it('detects a picked photo and draws the boxes and 68 points in image pixels, with the scores', async () => {
    pick(el().querySelector('[data-testid=rf-file]') as HTMLInputElement, new File([new Uint8Array([0xff, 0xd8, 0xff])], 'me.jpg', { type: 'image/jpeg' }));
    const req = await request('/api/plugins/rustyface/face.detect');
    expect(req.request.body).toEqual({ image: '/9j/', detector: 'ssd', min_confidence: 0.5, landmarks: true });
    req.flush({ width: 640, height: 480, faces: [{ box: { x: 10, y: 20, w: 200, h: 220 }, score: 0.987654, landmarks }], took_ms: 12 });
    await settle();
    const svg = el().querySelector('[data-testid=rf-overlay]')!;
    expect(svg.getAttribute('viewBox')).toBe('0 0 640 480');
    const boxes = el().querySelectorAll('[data-testid=rf-box]');
    expect(boxes.length).toBe(1);
    expect([...['x', 'y', 'width', 'height']].map((a) => boxes[0].getAttribute(a))).toEqual(['10', '20', '200', '220']);
    const points = el().querySelectorAll('[data-testid=rf-point]');
    expect(points.length).toBe(68);
    expect(points[67].getAttribute('cx')).toBe('167');
    expect(el().querySelector('[data-testid=rf-score]')!.textContent).toBe('0.988');
    expect(el().querySelector('[data-testid=rf-summary]')!.textContent).toContain('1 face in 640×480');
    // The landmarks toggle hides the points and shows them again; the box stays.
    const toggle = el().querySelector('input[name=rfLandmarks]') as HTMLInputElement;
    expect(toggle.checked).toBe(true);
    toggle.checked = false;
    toggle.dispatchEvent(new Event('change'));
    await settle();
    expect(el().querySelectorAll('[data-testid=rf-point]').length).toBe(0);
    expect(el().querySelectorAll('[data-testid=rf-box]').length).toBe(1);
    toggle.checked = true;
    toggle.dispatchEvent(new Event('change'));
    await settle();
    expect(el().querySelectorAll('[data-testid=rf-point]').length).toBe(68);
    // A rustyface without galleries: no gallery section, no face picker.
    expect(el().querySelector('[data-testid=rf-gallery]')).toBeNull();
    expect(el().querySelector('input[name=rfChosenFace]')).toBeNull();
  });

  it('detects again with the other detector, and refuses a file that is not an image', async () => {
    pick(el().querySelector('[data-testid=rf-file]') as HTMLInputElement, new File(['x'], 'a.png', { type: 'image/png' }));
    (await request('/api/plugins/rustyface/face.detect')).flush({ width: 4, height: 4, faces: [], took_ms: 1 });
    await settle();
    const select = el().querySelector('select[name=rfDetector]') as HTMLSelectElement;
    select.value = 'tiny';
    select.dispatchEvent(new Event('change'));
    const req = await request('/api/plugins/rustyface/face.detect');
    expect(req.request.body.detector).toBe('tiny');
    req.flush({ width: 4, height: 4, faces: [], took_ms: 1 });
    await settle();
    expect(el().querySelector('[data-testid=rf-summary]')!.textContent).toContain('0 faces');

    pick(el().querySelector('[data-testid=rf-file]') as HTMLInputElement, new File(['%PDF'], 'paper.pdf', { type: 'application/pdf' }));
    await settle();
    http.expectNone('/api/plugins/rustyface/face.detect');
    expect(el().querySelector('[data-testid=rf-error]')!.textContent).toContain('paper.pdf is not a JPEG');
    // The photo before it and its boxes go: what is shown is the refused file's reason.
    expect(el().querySelector('[data-testid=rf-figure]')).toBeNull();
    expect(el().querySelector('[data-testid=rf-summary]')).toBeNull();
  });

  it('compares two photos and shows same or different', async () => {
    const button = () => [...el().querySelectorAll('button')].find((b) => b.textContent?.trim() === 'Compare')!;
    expect(button().disabled).toBe(true);
    pick(el().querySelector('[data-testid=rf-compare-a]') as HTMLInputElement, new File(['a'], 'a.jpg', { type: 'image/jpeg' }));
    pick(el().querySelector('[data-testid=rf-compare-b]') as HTMLInputElement, new File(['b'], 'b.jpg', { type: 'image/jpeg' }));
    for (let i = 0; i < 400 && button().disabled; i++) await settle();
    button().click();
    const req = await request('/api/plugins/rustyface/face.compare');
    expect(req.request.body).toEqual({ image_a: 'YQ==', image_b: 'Yg==' });
    req.flush({ distance: 0.8123, same: false, threshold: 0.6 });
    await settle();
    const res = el().querySelector('[data-testid=rf-compare-result]')!;
    expect(res.getAttribute('data-same')).toBe('false');
    expect(res.textContent).toContain('different people');
    expect(res.textContent).toContain('0.812');
  });

  it('gallery: recognize names the faces on the photo, enrol the face picked by its box, delete a person after the confirmation', async () => {
    await create(GALLERIES, [{ person: 'biden', entries: 1 }]);
    expect(el().querySelector('li[data-person=biden] [data-testid=rf-entries]')!.textContent).toContain('1 face');
    expect(el().querySelector('[data-testid=rf-gallery-count]')!.textContent).toContain('default: 1 person, 1 face');
    expect([...el().querySelectorAll('li[data-person=biden] img[data-testid=rf-thumb]')].map((i) => i.getAttribute('src'))).toEqual([`data:image/jpeg;base64,${btoa('biden0')}`]);
    pick(el().querySelector('[data-testid=rf-file]') as HTMLInputElement, new File(['x'], 'two.jpg', { type: 'image/jpeg' }));
    const two = [
      { box: { x: 10, y: 10, w: 50, h: 50 }, score: 0.9 },
      { box: { x: 100, y: 10, w: 50, h: 50 }, score: 0.8 },
    ];
    (await request('/api/plugins/rustyface/face.detect')).flush({ width: 200, height: 100, faces: two, took_ms: 1 });
    await settle();
    const enrolButton = () => el().querySelector('[data-testid=rf-enrol] button') as HTMLButtonElement;
    // Two faces: none is chosen until one is picked.
    expect(enrolButton().disabled).toBe(true);
    el().querySelectorAll('[data-testid=rf-box]')[1].dispatchEvent(new MouseEvent('click'));
    await settle();
    expect(enrolButton().disabled).toBe(false);
    expect(el().querySelectorAll('[data-testid=rf-box]')[1].getAttribute('stroke')).toBe('#f59e0b');
    const name = el().querySelector('input[name=rfPerson]') as HTMLInputElement;
    name.value = 'bad name!';
    name.dispatchEvent(new Event('input'));
    enrolButton().click();
    await settle();
    http.expectNone('/api/plugins/rustyface/gallery.enrol');
    expect(el().querySelector('[data-testid=rf-gallery-error]')!.textContent).toContain('not a name');
    name.value = 'obama';
    name.dispatchEvent(new Event('input'));
    enrolButton().click();
    const enrol = await request('/api/plugins/rustyface/gallery.enrol');
    expect(enrol.request.body).toEqual({ gallery: 'default', person: 'obama', image: 'eA==', face_index: 1, detector: 'ssd', min_confidence: 0.5 });
    await settle();
    expect(enrolButton().textContent).toContain('Enrolling…');
    enrol.flush({ id: 'e1', person: 'obama' });
    (await request('/api/plugins/rustyface/gallery.list')).flush({ persons: [{ person: 'biden', entries: 1 }, { person: 'obama', entries: 1 }] });
    for (const r of await requests('/api/plugins/rustyface/gallery.person', 2)) r.flush({ entries: entries(r.request.body.person, 1) });
    await settle();
    expect(el().querySelectorAll('[data-testid=rf-persons] li[data-person]').length).toBe(2);
    expect(el().querySelector('li[data-person=obama] img[data-testid=rf-thumb]')!.getAttribute('src')).toBe(`data:image/jpeg;base64,${btoa('obama0')}`);

    const recognize = [...el().querySelectorAll('button')].find((b) => b.textContent?.trim() === 'Recognize')!;
    recognize.click();
    const rec = await request('/api/plugins/rustyface/face.recognize');
    expect(rec.request.body).toEqual({ image: 'eA==', gallery: 'default', threshold: 0.6, detector: 'ssd', min_confidence: 0.5 });
    rec.flush({
      faces: [
        { ...two[0], person: null, distance: 0.71, candidates: [{ person: 'obama', distance: 0.71 }, { person: 'biden', distance: 0.84 }] },
        { ...two[1], person: 'obama', distance: 0.123, candidates: [{ person: 'biden', distance: 0.8 }] },
      ],
    });
    await settle();
    const names = [...el().querySelectorAll('[data-testid=rf-name]')].map((t) => t.textContent?.trim());
    expect(names).toEqual(['unknown 0.71', 'obama 0.12']);
    // Unknown faces are marked (rose box and label), and each row has the name and the next candidates.
    expect(el().querySelectorAll('[data-testid=rf-box]')[0].getAttribute('stroke')).toBe('#f43f5e');
    expect(el().querySelectorAll('[data-testid=rf-name]')[0].getAttribute('fill')).toBe('#fb7185');
    const rows = [...el().querySelectorAll('[data-testid=rf-faces] li')];
    expect(rows.map((r) => r.querySelector('[data-testid=rf-face-name]')!.getAttribute('data-person'))).toEqual(['', 'obama']);
    expect(rows[0].querySelector('[data-testid=rf-face-name]')!.textContent).toContain('unknown');
    expect(rows[0].querySelector('[data-testid=rf-candidates]')!.textContent).toContain('next: obama 0.710, biden 0.840');
    expect(rows[1].querySelector('[data-testid=rf-candidates]')!.textContent).toContain('next: biden 0.800');
    // Hovering a box shows the same in its tooltip and highlights its row.
    const box1 = el().querySelectorAll('[data-testid=rf-box]')[1];
    expect(box1.querySelector('title')!.textContent).toBe('face 2, score 0.800: obama 0.123; next: biden 0.800');
    box1.dispatchEvent(new MouseEvent('mouseenter'));
    await settle();
    expect(rows[1].classList.contains('ring-2')).toBe(true);
    expect(rows[0].classList.contains('ring-2')).toBe(false);

    const confirm = TestBed.inject(ConfirmStore);
    const del = () => el().querySelector('li[data-person=obama] button') as HTMLButtonElement;
    del().click();
    await settle();
    expect(confirm.request()!.title).toBe('Delete obama?');
    confirm.answer(false);
    await settle();
    http.expectNone('/api/plugins/rustyface/gallery.delete');
    del().click();
    await settle();
    confirm.answer(true);
    const d = await request('/api/plugins/rustyface/gallery.delete');
    expect(d.request.body).toEqual({ gallery: 'default', person: 'obama' });
    d.flush({ deleted_entries: 1, deleted_files: 2 });
    (await request('/api/plugins/rustyface/gallery.list')).flush({ persons: [{ person: 'biden', entries: 1 }] });
    (await request('/api/plugins/rustyface/gallery.person')).flush({ entries: entries('biden', 1) });
    await settle();
    expect(el().querySelector('li[data-person=obama]')).toBeNull();
    expect(el().querySelectorAll('img[data-testid=rf-thumb]').length).toBe(1);
    expect(el().querySelectorAll('[data-testid=rf-name]').length).toBe(0);
    expect(el().querySelectorAll('[data-testid=rf-face-name]').length).toBe(0);
  });

  it('gallery: a new gallery is created by name, shown empty until a face is enrolled into it, and chosen from the list', async () => {
    await create(GALLERIES, []);
    const form = el().querySelector('[data-testid=rf-new-gallery]') as HTMLFormElement;
    const name = form.querySelector('input[name=rfNewGallery]') as HTMLInputElement;
    name.value = 'Team';
    name.dispatchEvent(new Event('input'));
    form.dispatchEvent(new Event('submit'));
    await settle();
    http.expectNone('/api/plugins/rustyface/gallery.list');
    expect(el().querySelector('[data-testid=rf-gallery-error]')!.textContent).toContain('lower-case');
    name.value = 'team';
    name.dispatchEvent(new Event('input'));
    form.dispatchEvent(new Event('submit'));
    const list = await request('/api/plugins/rustyface/gallery.list');
    expect(list.request.body).toEqual({ gallery: 'team' });
    list.flush({ error: { code: 'not_found', message: "no gallery 'team'" } }, { status: 404, statusText: 'Not Found' });
    await settle();
    expect(el().querySelector('[data-testid=rf-gallery-error]')).toBeNull();
    expect(el().querySelector('[data-testid=rf-persons]')!.textContent).toContain('nobody enrolled in team yet');
    const select = el().querySelector('select[name=rfGallery]') as HTMLSelectElement;
    expect([...select.options].map((o) => o.value)).toEqual(['default', 'team']);
    expect(select.value).toBe('team');
    select.value = 'default';
    select.dispatchEvent(new Event('change'));
    const back = await request('/api/plugins/rustyface/gallery.list');
    expect(back.request.body).toEqual({ gallery: 'default' });
    back.flush({ gallery: 'default', persons: [{ person: 'ann', entries: 1 }], galleries: ['default', 'team'] });
    (await request('/api/plugins/rustyface/gallery.person')).flush({ entries: entries('ann', 1) });
    await settle();
    expect(el().querySelector('[data-testid=rf-gallery-count]')!.textContent).toContain('default: 1 person, 1 face');
  });

  it('shows that it is detecting, and the plugin\'s 413 for a photo over its pixel limit', async () => {
    pick(el().querySelector('[data-testid=rf-file]') as HTMLInputElement, new File(['x'], 'huge.png', { type: 'image/png' }));
    const req = await request('/api/plugins/rustyface/face.detect');
    await settle();
    expect(el().querySelector('[data-testid=rf-detecting]')!.textContent).toContain('detecting faces in huge.png');
    expect(el().querySelector('[data-testid=rf-figure]')!.getAttribute('aria-busy')).toBe('true');
    req.flush({ error: { code: 'payload_too_large', message: 'the image is 10000x5000 = 50000000 pixels, over max_pixels = 40000000' } }, { status: 413, statusText: 'Payload Too Large' });
    await settle();
    expect(el().querySelector('[data-testid=rf-detecting]')).toBeNull();
    expect(el().querySelector('[data-testid=rf-error]')!.textContent).toContain('huge.png is too large for the plugin: the image is 10000x5000');
    // A photo the plugin refused is not shown (a broken image would be all there is).
    expect(el().querySelector('[data-testid=rf-figure]')).toBeNull();
  });
});
