import { provideHttpClient } from '@angular/common/http';
import { HttpTestingController, provideHttpClientTesting } from '@angular/common/http/testing';
import { TestBed } from '@angular/core/testing';
import { PluginDetail, TelemetrySample } from './models';
import { ConfirmStore } from './confirm.store';
import { PluginsStore, appendSeries, isAuthProvider, laterStarts, mergePlugins, newlyRunning, startsFromEvents } from './plugins.store';
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

const tick = () => new Promise((r) => setTimeout(r));

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

describe('start times (uptime that resets on stop/start)', () => {
  const ev = (seq: number, plugin: string, kind: string, at_ms: number) => ({ seq, at_ms, kind, actor: 'api', plugin, details: {} });
  it('startsFromEvents keeps the newest start or restart per plugin', () => {
    const events = [ev(5, 'echo', 'stopped', 900), ev(4, 'echo', 'restarted', 800), ev(3, 'echo', 'started', 500), ev(2, 'candle', 'started', 300), ev(1, 'candle', 'loaded', 1000)];
    expect(startsFromEvents(events)).toEqual({ echo: 800, candle: 300 });
    expect(startsFromEvents([{ ...ev(1, 'x', 'started', 1), plugin: null }])).toEqual({});
  });
  it('newlyRunning names the plugins that went to running; laterStarts keeps the later time', () => {
    expect(newlyRunning([plugin('a', { state: 'stopped' }), plugin('b')], [plugin('a'), plugin('b'), plugin('c')])).toEqual(['a']);
    expect(laterStarts({ a: 5, b: 9 }, { a: 7, b: 1, c: 3 })).toEqual({ a: 7, b: 9, c: 3 });
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

  it('a stop then a start seen by the list (same generation, same loaded_at_ms) records the start', async () => {
    const load = async (p: PluginDetail) => {
      const r = store.refresh();
      http.expectOne('/api/core/plugins').flush({ plugins: [p] });
      await r;
    };
    await load(plugin('echo', { loaded_at_ms: 1 }));
    expect(store.startedAt()['echo']).toBeUndefined();
    await load(plugin('echo', { loaded_at_ms: 1, state: 'stopped' }));
    expect(store.startedAt()['echo']).toBeUndefined();
    const before = Date.now();
    await load(plugin('echo', { loaded_at_ms: 1 }));
    expect(store.startedAt()['echo']).toBeGreaterThanOrEqual(before);
  });

  it('connect reads the starts from the event log', async () => {
    vi.stubGlobal('WebSocket', class { close() {} });
    store.connect();
    http.expectOne('/api/core/plugins').flush({ plugins: [] });
    http.expectOne('/api/core/telemetry').flush({ host: null, plugins: {} });
    http.expectOne('/api/core/events?limit=1000').flush({ events: [{ seq: 1, at_ms: 1234, kind: 'started', actor: 'api', plugin: 'echo', details: {} }] });
    await tick();
    store.disconnect();
    vi.unstubAllGlobals();
    expect(store.startedAt()).toEqual({ echo: 1234 });
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

  describe('stopping the auth provider (no accidental lockout)', () => {
    const confirmRequired = { error: { code: 'confirm_required', message: 'stopping the auth provider locks out every key but the bootstrap key' } };
    const load = async (...plugins: PluginDetail[]) => {
      const p = store.refresh();
      http.expectOne('/api/core/plugins').flush({ plugins });
      await p;
    };

    it('a stop the host answers 409 confirm_required asks with its message; confirmed, it is sent again with ?confirm=true', async () => {
      const confirm = TestBed.inject(ConfirmStore);
      await load(plugin('keys'));
      const done = store.act('keys', 'stop');
      http.expectOne({ method: 'POST', url: '/api/core/plugins/keys/stop' }).flush(confirmRequired, { status: 409, statusText: 'Conflict' });
      await tick();
      expect(confirm.request()?.message).toBe(confirmRequired.error.message);
      expect(confirm.request()?.confirmLabel).toBe('Stop anyway');
      expect(store.pending()['keys']).toBe('stop');
      confirm.answer(true);
      await tick();
      http.expectOne({ method: 'POST', url: '/api/core/plugins/keys/stop?confirm=true' }).flush({});
      await tick();
      http.expectOne('/api/core/plugins').flush({ plugins: [plugin('keys', { state: 'stopped' })] });
      expect(await done).toBe(true);
      expect(store.pending()['keys']).toBeUndefined();
    });

    it('cancelled after the 409, nothing more is sent and no error is shown', async () => {
      const confirm = TestBed.inject(ConfirmStore);
      const toasts = TestBed.inject(ToastStore);
      await load(plugin('keys'));
      const done = store.act('keys', 'stop');
      http.expectOne('/api/core/plugins/keys/stop').flush(confirmRequired, { status: 409, statusText: 'Conflict' });
      await tick();
      confirm.answer(false);
      await tick();
      http.expectNone((r) => r.url.includes('/stop'));
      http.expectOne('/api/core/plugins').flush({ plugins: [plugin('keys')] });
      expect(await done).toBe(false);
      expect(store.pending()['keys']).toBeUndefined();
      expect(toasts.toasts().some((t) => t.kind === 'error')).toBe(false);
    });

    it('another 409 is an error, not a question', async () => {
      const confirm = TestBed.inject(ConfirmStore);
      await load(plugin('echo'));
      const done = store.act('echo', 'stop');
      http.expectOne('/api/core/plugins/echo/stop').flush({ error: { code: 'conflict', message: 'busy' } }, { status: 409, statusText: 'Conflict' });
      await tick();
      expect(confirm.request()).toBeNull();
      http.expectOne('/api/core/plugins').flush({ plugins: [plugin('echo')] });
      expect(await done).toBe(false);
    });

    it('apikeys (or the plugin the API marks auth_provider) is asked about before anything is sent', async () => {
      const confirm = TestBed.inject(ConfirmStore);
      await load(plugin('apikeys'), plugin('keys', { auth_provider: true }));
      for (const id of ['apikeys', 'keys']) {
        const done = store.act(id, 'stop');
        await tick();
        http.expectNone((r) => r.url.includes('/stop'));
        expect(store.pending()[id]).toBeUndefined();
        expect(confirm.request()?.message).toMatch(/bootstrap admin key/);
        confirm.answer(false);
        expect(await done).toBe(false);
        http.expectNone((r) => r.url.includes('/stop'));
      }
      const done = store.act('apikeys', 'stop');
      await tick();
      confirm.answer(true);
      await tick();
      expect(store.pending()['apikeys']).toBe('stop');
      http.expectOne({ method: 'POST', url: '/api/core/plugins/apikeys/stop?confirm=true' }).flush({});
      await tick();
      http.expectOne('/api/core/plugins').flush({ plugins: [plugin('apikeys', { state: 'stopped' })] });
      expect(await done).toBe(true);
    });

    it('restart and start of the auth provider, and a stop of apikeys when the API says it is not the provider, ask nothing', async () => {
      const confirm = TestBed.inject(ConfirmStore);
      await load(plugin('apikeys', { auth_provider: false }));
      expect(isAuthProvider(store.plugins()[0])).toBe(false);
      const done = store.act('apikeys', 'restart');
      expect(confirm.request()).toBeNull();
      http.expectOne({ method: 'POST', url: '/api/core/plugins/apikeys/restart' }).flush({});
      await tick();
      http.expectOne('/api/core/plugins').flush({ plugins: [plugin('apikeys', { auth_provider: false })] });
      expect(await done).toBe(true);
      const stopped = store.act('apikeys', 'stop');
      expect(confirm.request()).toBeNull();
      http.expectOne({ method: 'POST', url: '/api/core/plugins/apikeys/stop' }).flush({});
      await tick();
      http.expectOne('/api/core/plugins').flush({ plugins: [plugin('apikeys', { state: 'stopped' })] });
      expect(await stopped).toBe(true);
    });
  });

  it('a tick with an unknown plugin id refreshes the list at once', () => {
    store.applyTick({ host: { at_ms: 1, cpu_percent: 3, rss_bytes: 10, plugins_running: 1 }, plugins: { fresh: sample(1) } });
    http.expectOne('/api/core/plugins');
    expect(store.host()?.cpu_percent).toBe(3);
    expect(store.series()['fresh'].length).toBe(1);
  });
});
