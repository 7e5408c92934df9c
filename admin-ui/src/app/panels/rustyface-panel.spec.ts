import { provideHttpClient } from '@angular/common/http';
import { HttpTestingController, TestRequest, provideHttpClientTesting } from '@angular/common/http/testing';
import { ComponentFixture, TestBed } from '@angular/core/testing';
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
  async function settle() {
    await tick();
    await fixture.whenStable();
  }
  function pick(input: HTMLInputElement, file: File) {
    Object.defineProperty(input, 'files', { value: [file], configurable: true });
    input.dispatchEvent(new Event('change'));
  }

  beforeEach(async () => {
    TestBed.configureTestingModule({ imports: [RustyfacePanel], providers: [provideHttpClient(), provideHttpClientTesting()] });
    http = TestBed.inject(HttpTestingController);
    fixture = TestBed.createComponent(RustyfacePanel);
    fixture.detectChanges();
    await fixture.whenStable();
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
});
