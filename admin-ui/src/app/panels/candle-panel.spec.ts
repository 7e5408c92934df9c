import { provideHttpClient } from '@angular/common/http';
import { HttpTestingController, provideHttpClientTesting } from '@angular/common/http/testing';
import { ComponentFixture, TestBed } from '@angular/core/testing';
import { CandleModel, CandlePanel, describeModel, loadBody, quantizeBody, sizeChange } from './candle-panel';

const tick = () => new Promise((r) => setTimeout(r));
const minilm: CandleModel = {
  name: 'minilm',
  kind: 'embedding',
  path: 'sentence-transformers/all-MiniLM-L6-v2',
  file: '/m/sentence-transformers/all-MiniLM-L6-v2/model.safetensors',
  file_size: 90868376,
  loaded_at_ms: 1,
  shared_by: 1,
  details: { architecture: 'bert', dimensions: 384, layers: 6, max_tokens: 512, weights: 'f32' },
};

describe('candle helpers', () => {
  it('builds model.load and model.quantize bodies', () => {
    expect(loadBody(' a/b ', '', '')).toEqual({ path: 'a/b' });
    expect(loadBody('a/b', ' x ', 'embedding')).toEqual({ path: 'a/b', name: 'x', kind: 'embedding' });
    expect(quantizeBody('name:minilm', 'q8_0')).toEqual({ name: 'minilm', dtype: 'q8_0' });
    expect(quantizeBody('path:a/b', 'q4_0')).toEqual({ path: 'a/b', dtype: 'q4_0' });
    expect(quantizeBody('', 'q8_0')).toBeNull();
    expect(quantizeBody('name:', 'q8_0')).toBeNull();
  });
  it('describes sizes and weights', () => {
    expect(sizeChange({ size_before: 100, size_after: 27 })).toBe('−73.0 %');
    expect(describeModel(minilm)).toBe('bert · f32 · 384 dims');
    expect(describeModel({ ...minilm, details: { architecture: 'llama', weights: 'q4_1', compute: 'q8_0', context_length: 8192 } })).toBe(
      'llama · q4_1 (runs q8_0) · ctx 8192',
    );
  });
});

describe('CandlePanel', () => {
  let fixture: ComponentFixture<CandlePanel>;
  let http: HttpTestingController;
  const el = () => fixture.nativeElement as HTMLElement;
  const settle = async () => {
    await tick();
    await fixture.whenStable();
  };

  beforeEach(async () => {
    TestBed.configureTestingModule({ imports: [CandlePanel], providers: [provideHttpClient(), provideHttpClientTesting()] });
    http = TestBed.inject(HttpTestingController);
    fixture = TestBed.createComponent(CandlePanel);
    fixture.detectChanges();
    http.expectOne({ method: 'POST', url: '/api/plugins/candle/model.list' }).flush({ models: [minilm] });
    http.expectOne('/api/core/models').flush({ models: [], downloads: [], models_dir: '/m' });
    await settle();
  });

  it('lists the loaded models and unloads by name', async () => {
    const row = el().querySelector('[data-model=minilm]')!;
    expect(row.textContent).toContain('bert · f32 · 384 dims');
    (row.querySelector('button') as HTMLButtonElement).click();
    const req = http.expectOne('/api/plugins/candle/model.unload');
    expect(req.request.body).toEqual({ name: 'minilm' });
    req.flush({ unloaded: minilm });
    await settle();
    http.expectOne('/api/plugins/candle/model.list').flush({ models: [] });
    await settle();
    expect(el().querySelector('[data-model=minilm]')).toBeNull();
  });

  it('quantizes a loaded model and shows the sizes and the agreement', async () => {
    const select = el().querySelector('select[name=qSource]') as HTMLSelectElement;
    select.value = 'name:minilm';
    select.dispatchEvent(new Event('change'));
    await settle();
    (el().querySelector('[data-testid=candle-quantize]') as HTMLFormElement).dispatchEvent(new Event('submit'));
    const req = http.expectOne('/api/plugins/candle/model.quantize');
    expect(req.request.body).toEqual({ name: 'minilm', dtype: 'q8_0' });
    req.flush({
      path: 'sentence-transformers/all-MiniLM-L6-v2/model-q8_0.gguf',
      file: '/m/x.gguf',
      dtype: 'q8_0',
      size_before: 90868376,
      size_after: 24234848,
      ratio: 0.2667,
      quantized_tensors: 40,
      f32_tensors: 64,
      agreement: { sentences: 20, min_cosine: 0.99934, mean_cosine: 0.99956 },
    });
    await settle();
    const result = el().querySelector('[data-testid=quantize-result]')!;
    expect(result.querySelector('[data-testid=size-before]')!.textContent).toContain('86.7 MiB');
    expect(result.querySelector('[data-testid=size-after]')!.textContent).toContain('23.1 MiB');
    expect(result.querySelector('[data-testid=agreement]')!.textContent).toContain('min 0.9993');
  });

  it("shows the plugin's error when a load fails", async () => {
    const path = el().querySelector('input[name=loadPath]') as HTMLInputElement;
    path.value = 'nope/nope';
    path.dispatchEvent(new Event('input'));
    await settle();
    (el().querySelector('[data-testid=candle-load]') as HTMLFormElement).dispatchEvent(new Event('submit'));
    http
      .expectOne('/api/plugins/candle/model.load')
      .flush({ error: { code: 'not_found', message: 'nope/nope: no such path' } }, { status: 404, statusText: 'Not Found' });
    await settle();
    expect(el().querySelector('[data-testid=load-error]')!.textContent).toContain('404 nope/nope: no such path');
  });
});
