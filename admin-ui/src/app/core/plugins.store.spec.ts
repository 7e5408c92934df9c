import { provideHttpClient } from '@angular/common/http';
import { HttpTestingController, provideHttpClientTesting } from '@angular/common/http/testing';
import { TestBed } from '@angular/core/testing';
import { PluginDetail, TelemetrySample } from './models';
import { PluginsStore, appendSeries, mergePlugins } from './plugins.store';
import { ToastStore } from './toast.store';

const plugin = (id: string, extra: Partial<PluginDetail> = {}): PluginDetail => ({
  id,
  name: id,
  version: '1.0.0',
  description: '',
  state: 'running',
  generation: 1,
  capabilities: [],
  routes: [],
  history: [],
  ...extra,
});
const sample = (at: number, calls = 1): TelemetrySample => ({
  at_ms: at,
  calls_per_s: calls,
  calls_total: 0,
  cpu_percent: 0,
  error_rate: 0,
  errors_per_s: 0,
  errors_total: 0,
  generation: 1,
  in_flight: 0,
  p50_ms: null,
  p95_ms: null,
  p99_ms: null,
});

describe('mergePlugins', () => {
  it('keeps the same array when nothing changed', () => {
    const cur = [plugin('a'), plugin('b')];
    expect(mergePlugins(cur, [plugin('b'), plugin('a')])).toBe(cur);
  });
  it('keeps unchanged objects and replaces changed ones, sorted by id', () => {
    const cur = [plugin('a'), plugin('b')];
    const next = mergePlugins(cur, [plugin('b', { state: 'stopped' }), plugin('a'), plugin('c')]);
    expect(next.map((p) => p.id)).toEqual(['a', 'b', 'c']);
    expect(next[0]).toBe(cur[0]);
    expect(next[1]).not.toBe(cur[1]);
    expect(next[1].state).toBe('stopped');
  });
  it('drops plugins that left', () => {
    expect(mergePlugins([plugin('a'), plugin('b')], [plugin('a')]).map((p) => p.id)).toEqual(['a']);
  });
});

describe('appendSeries', () => {
  it('appends, bounds and ignores repeated ticks', () => {
    let s: Record<string, TelemetrySample[]> = {};
    for (let i = 0; i < 5; i++) s = appendSeries(s, { a: sample(i) }, 3);
    expect(s['a'].map((x) => x.at_ms)).toEqual([2, 3, 4]);
    const same = appendSeries(s, { a: sample(4) }, 3);
    expect(same['a']).toBe(s['a']);
  });
  it('drops ids missing from the tick and skips null samples', () => {
    const s = appendSeries({ a: [sample(1)], b: [sample(1)] }, { a: sample(2), c: null });
    expect(Object.keys(s)).toEqual(['a']);
  });
});

describe('PluginsStore', () => {
  let store: InstanceType<typeof PluginsStore>;
  let http: HttpTestingController;

  beforeEach(() => {
    TestBed.configureTestingModule({ providers: [provideHttpClient(), provideHttpClientTesting()] });
    store = TestBed.inject(PluginsStore);
    http = TestBed.inject(HttpTestingController);
  });

  it('refresh loads the list', async () => {
    const p = store.refresh();
    http.expectOne('/api/core/plugins').flush({ plugins: [plugin('echo')] });
    await p;
    expect(store.ids()).toEqual(['echo']);
    expect(store.loaded()).toBe(true);
    expect(store.counts()).toEqual({ running: 1 });
  });

  it('act marks the plugin pending, then clears it and refreshes', async () => {
    const done = store.act('echo', 'stop');
    expect(store.pending()['echo']).toBe('stop');
    // A second click while pending does nothing.
    expect(await store.act('echo', 'stop')).toBe(false);
    http.expectOne({ method: 'POST', url: '/api/core/plugins/echo/stop' }).flush({});
    await Promise.resolve();
    await new Promise((r) => setTimeout(r));
    http.expectOne('/api/core/plugins').flush({ plugins: [plugin('echo', { state: 'stopped' })] });
    expect(await done).toBe(true);
    expect(store.pending()['echo']).toBeUndefined();
    expect(store.plugins()[0].state).toBe('stopped');
  });

  it('a failed action shows an error toast with the host message', async () => {
    const toasts = TestBed.inject(ToastStore);
    const done = store.act('echo', 'start');
    http
      .expectOne('/api/core/plugins/echo/start')
      .flush({ error: { code: 'conflict', message: 'already running' } }, { status: 409, statusText: 'Conflict' });
    await new Promise((r) => setTimeout(r));
    http.expectOne('/api/core/plugins').flush({ plugins: [] });
    expect(await done).toBe(false);
    expect(toasts.toasts().some((t) => t.kind === 'error' && t.message.includes('already running'))).toBe(true);
  });

  it('a tick with an unknown plugin id refreshes the list at once', () => {
    store.applyTick({ host: { at_ms: 1, cpu_percent: 3, rss_bytes: 10, plugins_running: 1 }, plugins: { fresh: sample(1) } });
    http.expectOne('/api/core/plugins');
    expect(store.host()?.cpu_percent).toBe(3);
    expect(store.series()['fresh'].length).toBe(1);
  });
});
