import { provideHttpClient } from '@angular/common/http';
import { HttpTestingController, provideHttpClientTesting } from '@angular/common/http/testing';
import { ComponentFixture, TestBed } from '@angular/core/testing';
import { PluginConfig } from './config-tab';

const doc = {
  id: 'echo',
  schema: { type: 'object', required: ['greeting'], properties: { greeting: { type: 'string', maxLength: 20 }, repeat: { type: 'integer' } } },
  config: { greeting: 'hello', repeat: 1 },
  source: 'plugin',
  version: 0,
  history: [],
};
const tick = () => new Promise((r) => setTimeout(r));

describe('PluginConfig', () => {
  let fixture: ComponentFixture<PluginConfig>;
  let http: HttpTestingController;
  const el = () => fixture.nativeElement as HTMLElement;
  const input = (id: string) => el().querySelector('#' + id) as HTMLInputElement;

  beforeEach(async () => {
    TestBed.configureTestingModule({ imports: [PluginConfig], providers: [provideHttpClient(), provideHttpClientTesting()] });
    http = TestBed.inject(HttpTestingController);
    fixture = TestBed.createComponent(PluginConfig);
    fixture.componentRef.setInput('pluginId', 'echo');
    fixture.detectChanges();
    http.expectOne('/api/core/plugins/echo/config').flush(doc);
    await tick();
    await fixture.whenStable();
  });

  it('builds the form from the schema with the current values', () => {
    expect(input('cfg_greeting').value).toBe('hello');
    expect(input('cfg_repeat').value).toBe('1');
    expect(input('cfg_repeat').type).toBe('number');
  });

  it('shows the server validation errors on their fields', async () => {
    input('cfg_greeting').value = 'x'.repeat(30);
    input('cfg_greeting').dispatchEvent(new Event('input'));
    (el().querySelector('form') as HTMLFormElement).dispatchEvent(new Event('submit'));
    const req = http.expectOne({ method: 'POST', url: '/api/core/plugins/echo/config' });
    expect(req.request.body).toEqual({ greeting: 'x'.repeat(30), repeat: 1 });
    req.flush(
      { error: { code: 'invalid_config', message: 'bad', details: { errors: [{ path: '/greeting', message: 'too long' }, { path: '', message: 'other' }] } } },
      { status: 422, statusText: 'Unprocessable Entity' },
    );
    await tick();
    await fixture.whenStable();
    expect(el().querySelector('[data-field="/greeting"] [data-testid=field-error]')!.textContent).toContain('too long');
    expect(el().querySelector('[data-testid=form-error]')!.textContent).toContain('other');
    expect(input('cfg_greeting').getAttribute('aria-invalid')).toBe('true');
  });

  it('catches a non-number locally without calling the host', async () => {
    input('cfg_repeat').value = '1.5';
    input('cfg_repeat').dispatchEvent(new Event('input'));
    (el().querySelector('form') as HTMLFormElement).dispatchEvent(new Event('submit'));
    await fixture.whenStable();
    http.expectNone({ method: 'POST' });
    expect(el().querySelector('[data-field="/repeat"] [data-testid=field-error]')!.textContent).toContain('whole number');
  });

  it('saves a valid config and reloads it', async () => {
    input('cfg_greeting').value = 'hi';
    input('cfg_greeting').dispatchEvent(new Event('input'));
    (el().querySelector('form') as HTMLFormElement).dispatchEvent(new Event('submit'));
    http.expectOne({ method: 'POST', url: '/api/core/plugins/echo/config' }).flush({});
    await tick();
    http.expectOne('/api/core/plugins/echo/config').flush({ ...doc, config: { greeting: 'hi', repeat: 1 }, version: 1 });
    await tick();
    await fixture.whenStable();
    expect(input('cfg_greeting').value).toBe('hi');
    expect(el().textContent).toContain('version 1');
  });
});

describe('PluginConfig: fields the stored config lacks show the schema default', () => {
  // candle's schema and a stored config without embed_batch_size (the plugin runs with 32).
  const candle = {
    id: 'candle',
    schema: {
      type: 'object',
      properties: {
        threads: { type: 'integer', minimum: 1, maximum: 64, default: 4 },
        embed_batch_size: { type: 'integer', minimum: 1, maximum: 256, default: 32 },
      },
    },
    config: { threads: 2 },
    source: 'store',
    version: 3,
    history: [],
  };
  let fixture: ComponentFixture<PluginConfig>;
  let http: HttpTestingController;
  const el = () => fixture.nativeElement as HTMLElement;
  const input = (id: string) => el().querySelector('#' + id) as HTMLInputElement;
  const submit = () => (el().querySelector('form') as HTMLFormElement).dispatchEvent(new Event('submit'));

  beforeEach(async () => {
    TestBed.configureTestingModule({ imports: [PluginConfig], providers: [provideHttpClient(), provideHttpClientTesting()] });
    http = TestBed.inject(HttpTestingController);
    fixture = TestBed.createComponent(PluginConfig);
    fixture.componentRef.setInput('pluginId', 'candle');
    fixture.detectChanges();
    http.expectOne('/api/core/plugins/candle/config').flush(candle);
    await tick();
    await fixture.whenStable();
  });

  it('shows embed_batch_size as its default 32 (not empty), the stored threads as stored, and names the default', () => {
    expect(input('cfg_embed_batch_size').value).toBe('32');
    expect(input('cfg_threads').value).toBe('2');
    expect(el().querySelector('[data-field="/embed_batch_size"]')!.textContent).toContain('default 32');
  });

  it('an untouched form saves the config as stored (the default is not written into it)', () => {
    submit();
    expect(http.expectOne({ method: 'POST', url: '/api/core/plugins/candle/config' }).request.body).toEqual({ threads: 2 });
  });

  it('a changed default is saved', () => {
    input('cfg_embed_batch_size').value = '64';
    input('cfg_embed_batch_size').dispatchEvent(new Event('input'));
    submit();
    expect(http.expectOne({ method: 'POST', url: '/api/core/plugins/candle/config' }).request.body).toEqual({ threads: 2, embed_batch_size: 64 });
  });
});

describe('PluginConfig: an enum field', () => {
  it('selects the stored value, or the default, not the first option', async () => {
    const d = {
      id: 'x', source: 'store', version: 1, history: [],
      schema: { type: 'object', properties: { mode: { enum: ['fast', 'slow', 'off'] }, level: { enum: ['a', 'b'], default: 'b' } } },
      config: { mode: 'slow' },
    };
    TestBed.configureTestingModule({ imports: [PluginConfig], providers: [provideHttpClient(), provideHttpClientTesting()] });
    const http = TestBed.inject(HttpTestingController);
    const fixture = TestBed.createComponent(PluginConfig);
    fixture.componentRef.setInput('pluginId', 'x');
    fixture.detectChanges();
    http.expectOne('/api/core/plugins/x/config').flush(d);
    await tick();
    await fixture.whenStable();
    const el = fixture.nativeElement as HTMLElement;
    expect((el.querySelector('#cfg_mode') as HTMLSelectElement).value).toBe('"slow"');
    expect((el.querySelector('#cfg_level') as HTMLSelectElement).value).toBe('"b"');
  });
});
