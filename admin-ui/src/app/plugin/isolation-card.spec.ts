import { provideHttpClient } from '@angular/common/http';
import { HttpTestingController, provideHttpClientTesting } from '@angular/common/http/testing';
import { ComponentFixture, TestBed } from '@angular/core/testing';
import { EffectiveLimits, PluginDetail } from '../core/models';
import { PluginsStore } from '../core/plugins.store';
import { ToastStore } from '../core/toast.store';
import { PluginIsolation, crashCause, modeOf, operatorLimits, sourceNote } from './isolation-card';

const plugin = (extra: Partial<PluginDetail> = {}): PluginDetail => ({
  id: 'crashy', name: 'Crashy', version: '1.0.0', description: '', state: 'running', generation: 2, capabilities: [], routes: [], history: [],
  ...extra,
});
const settle = () => new Promise((r) => setTimeout(r));

describe('crashCause and modeOf', () => {
  it('names the signal, else the exit code, else nothing', () => {
    expect(crashCause({ signal: 'SIGSEGV', exit_code: null })).toBe('signal SIGSEGV');
    expect(crashCause({ signal: null, exit_code: 0 })).toBe('exit code 0');
    expect(crashCause({})).toBe('');
  });
  it('takes a host without the field for in the host', () => {
    expect(modeOf(plugin())).toBe('in_process');
    expect(modeOf(plugin({ isolation: 'process' }))).toBe('process');
    expect(modeOf(undefined)).toBe('in_process');
  });
});

const limits = (extra: Partial<EffectiveLimits> = {}): EffectiveLimits => ({
  memory_mb: { value: null, source: 'host' },
  open_files: { value: 1024, source: 'host' },
  processes: { value: null, source: 'host' },
  call_deadline_ms: { value: 30000, source: 'host' },
  ...extra,
});

describe('sourceNote and operatorLimits', () => {
  it('says when the plugin suggested the mode, and when the operator overrode a suggestion', () => {
    expect(sourceNote({ isolation: 'process', isolation_source: 'plugin', isolation_suggested: 'process' })).toContain('Suggested by the plugin (own process)');
    expect(sourceNote({ isolation: 'in_process', isolation_source: 'operator', isolation_suggested: 'process' })).toBe('Chosen by an operator; the plugin suggests own process.');
    expect(sourceNote({ isolation: 'process', isolation_source: 'operator', isolation_suggested: null })).toBe('Chosen by an operator.');
    expect(sourceNote({ isolation: 'in_process', isolation_source: 'default' })).toBe('');
    expect(sourceNote({ isolation: 'in_process' })).toBe('');
  });
  it('keeps only the limits the operator set', () => {
    expect(operatorLimits(limits({ memory_mb: { value: 512, source: 'operator' } }))).toEqual({ memory_mb: 512, open_files: null, processes: null, call_deadline_ms: null });
    expect(operatorLimits(undefined)).toEqual({ memory_mb: null, open_files: null, processes: null, call_deadline_ms: null });
  });
});

describe('PluginsStore.setIsolation', () => {
  let store: InstanceType<typeof PluginsStore>;
  let http: HttpTestingController;

  beforeEach(() => {
    TestBed.configureTestingModule({ providers: [provideHttpClient(), provideHttpClientTesting()] });
    store = TestBed.inject(PluginsStore);
    http = TestBed.inject(HttpTestingController);
  });

  it('posts the mode, is pending until answered, then refreshes the list', async () => {
    const done = store.setIsolation('crashy', 'process');
    expect(store.isolationPending()['crashy']).toBe('process');
    expect(await store.setIsolation('crashy', 'in_process')).toBe(false);
    const req = http.expectOne({ method: 'POST', url: '/api/core/plugins/crashy/isolation' });
    expect(req.request.body).toEqual({ mode: 'process' });
    req.flush(plugin({ isolation: 'process' }));
    await settle();
    http.expectOne('/api/core/plugins').flush({ plugins: [plugin({ isolation: 'process', process: { pid: 42, restarts: 0, crashlooping: false } })] });
    expect(await done).toBe(true);
    expect(store.isolationPending()['crashy']).toBeUndefined();
    expect(store.plugins()[0].process?.pid).toBe(42);
  });

  it('a refused switch is an error toast with the host message', async () => {
    const toasts = TestBed.inject(ToastStore);
    const done = store.setIsolation('crashy', 'process');
    http
      .expectOne('/api/core/plugins/crashy/isolation')
      .flush({ error: { code: 'lifecycle_failed', message: 'the child did not answer the handshake' } }, { status: 409, statusText: 'Conflict' });
    await settle();
    http.expectOne('/api/core/plugins').flush({ plugins: [plugin()] });
    expect(await done).toBe(false);
    expect(store.isolationPending()['crashy']).toBeUndefined();
    expect(toasts.toasts().some((t) => t.kind === 'error' && t.message.includes('the child did not answer the handshake'))).toBe(true);
  });
});

describe('PluginIsolation', () => {
  let fixture: ComponentFixture<PluginIsolation>;
  let http: HttpTestingController;
  const q = (sel: string) => fixture.nativeElement.querySelector(sel) as HTMLElement | null;
  const show = async (p: PluginDetail) => {
    fixture.componentRef.setInput('plugin', p);
    await fixture.whenStable();
  };

  beforeEach(() => {
    TestBed.configureTestingModule({ imports: [PluginIsolation], providers: [provideHttpClient(), provideHttpClientTesting()] });
    fixture = TestBed.createComponent(PluginIsolation);
    http = TestBed.inject(HttpTestingController);
  });

  it('in the host: the switch says so and no child is shown', async () => {
    await show(plugin({ isolation: 'in_process', process: null }));
    expect(q('[data-mode=in_process]')!.getAttribute('aria-checked')).toBe('true');
    expect(q('[data-mode=process]')!.getAttribute('aria-checked')).toBe('false');
    expect(q('[data-testid=isolation-hint]')!.textContent).toContain('ends the host');
    expect(q('[data-testid=isolation-pid]')).toBeNull();
  });

  it('in process mode: pid, restarts, the crash loop and the last crash with its stderr tail', async () => {
    await show(
      plugin({
        isolation: 'process',
        process: {
          pid: null,
          restarts: 4,
          crashlooping: true,
          last_crash: { at_ms: 1_700_000_000_000, signal: 'SIGSEGV', exit_code: null, message: 'killed by SIGSEGV (segmentation fault)', stderr_tail: ['about to crash', 'bye'] },
        },
      }),
    );
    expect(q('[data-mode=process]')!.getAttribute('aria-checked')).toBe('true');
    expect(q('[data-testid=isolation-pid]')!.textContent).toContain('none');
    expect(q('[data-testid=isolation-restarts]')!.textContent!.trim()).toBe('4');
    expect(q('[data-testid=crashlooping]')!.textContent).toContain('not restarted until you start it');
    expect(q('[data-testid=last-crash]')!.textContent).toContain('killed by SIGSEGV (segmentation fault)');
    expect(q('[data-testid=crash-cause]')!.textContent).toContain('signal SIGSEGV');
    expect(q('[data-testid=stderr-tail]')!.textContent).toBe('about to crash\nbye');

    await show(plugin({ isolation: 'process', process: { pid: 4242, restarts: 0, crashlooping: false, last_crash: { at_ms: 1, exit_code: 0, message: 'exited with status 0 during a call', stderr_tail: [] } } }));
    expect(q('[data-testid=isolation-pid]')!.textContent!.trim()).toBe('4242');
    expect(q('[data-testid=crashlooping]')).toBeNull();
    expect(q('[data-testid=crash-cause]')!.textContent).toContain('exit code 0');
    expect(q('[data-testid=stderr-tail-empty]')).not.toBeNull();
  });

  it('clicking the other mode switches it (and the current one sends nothing)', async () => {
    await show(plugin({ isolation: 'in_process' }));
    q('[data-mode=in_process]')!.click();
    http.expectNone('/api/core/plugins/crashy/isolation');
    q('[data-mode=process]')!.click();
    await fixture.whenStable();
    // Pending: both buttons wait, the chosen one says so.
    expect((q('[data-mode=in_process]') as HTMLButtonElement).disabled).toBe(true);
    expect(q('[data-mode=process]')!.textContent).toContain('Own process…');
    const req = http.expectOne({ method: 'POST', url: '/api/core/plugins/crashy/isolation' });
    expect(req.request.body).toEqual({ mode: 'process' });
    req.flush(plugin({ isolation: 'process' }));
    await settle();
    http.expectOne('/api/core/plugins').flush({ plugins: [plugin({ isolation: 'process', process: { pid: 7, restarts: 0, crashlooping: false } })] });
    await settle();
    await fixture.whenStable();
    expect((q('[data-mode=process]') as HTMLButtonElement).disabled).toBe(false);
  });

  it('says "suggested by the plugin" when its library chose the mode', async () => {
    await show(plugin({ isolation: 'process', isolation_source: 'plugin', isolation_suggested: 'process', process: { pid: 9, restarts: 0, crashlooping: false } }));
    expect(q('[data-testid=isolation-source]')!.textContent).toContain('Suggested by the plugin');
    await show(plugin({ isolation: 'in_process', isolation_source: 'default', isolation_suggested: null }));
    expect(q('[data-testid=isolation-source]')).toBeNull();
  });

  it('shows each limit with its source and saves the edited ones over the operator\'s, empty for the host default', async () => {
    await show(plugin({ isolation: 'process', isolation_source: 'operator', isolation_limits: limits({ call_deadline_ms: { value: 5000, source: 'operator' } }) }));
    expect(q('[data-limit-source=open_files]')!.textContent).toContain("1024 · host's default");
    expect(q('[data-limit-source=call_deadline_ms]')!.textContent).toContain('5000 · set here');
    expect((q('[data-limit=call_deadline_ms]') as HTMLInputElement).value).toBe('5000');
    expect((q('[data-limit=open_files]') as HTMLInputElement).value).toBe('');
    const type = (field: string, value: string) => {
      const input = q(`[data-limit=${field}]`) as HTMLInputElement;
      input.value = value;
      input.dispatchEvent(new Event('input'));
    };
    type('memory_mb', '512');
    type('call_deadline_ms', '');
    q('[data-testid=limits-save]')!.click();
    const req = http.expectOne({ method: 'POST', url: '/api/core/plugins/crashy/isolation' });
    expect(req.request.body).toEqual({ mode: 'process', limits: { memory_mb: 512, open_files: null, processes: null, call_deadline_ms: null } });
    req.flush(plugin({ isolation: 'process' }));
    await settle();
    http.expectOne('/api/core/plugins').flush({ plugins: [plugin({ isolation: 'process' })] });
    await settle();
  });
});
