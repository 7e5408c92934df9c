import { signal } from '@angular/core';
import { ComponentFixture, TestBed } from '@angular/core/testing';
import { provideRouter } from '@angular/router';
import { PluginDetail, TelemetrySample } from '../core/models';
import { Clock } from '../shared/clock';
import { formatBytes, formatTime } from '../shared/format';
import { PluginCard, processBadge, uptimeStart } from './plugin-card';

const base: PluginDetail = {
  id: 'echo', name: 'Echo', version: '1.0.0', description: '', state: 'running', generation: 3,
  capabilities: [], routes: [], history: [], loaded_at_ms: Date.now() - 65_000,
};
const sample = (calls: number, err = 0, heap: number | null = null): TelemetrySample => ({
  at_ms: Date.now(), calls_per_s: calls, calls_total: 0, cpu_percent: 2.5, error_rate: err, errors_per_s: 0,
  errors_total: 0, generation: 3, in_flight: 1, p50_ms: null, p95_ms: null, p99_ms: null, heap_bytes: heap,
});

describe('PluginCard', () => {
  let fixture: ComponentFixture<PluginCard>;
  const el = () => fixture.nativeElement as HTMLElement;
  const button = (a: string) => el().querySelector(`button[data-action=${a}]`) as HTMLButtonElement;

  beforeEach(() => {
    TestBed.configureTestingModule({ imports: [PluginCard], providers: [provideRouter([])] });
    fixture = TestBed.createComponent(PluginCard);
    fixture.componentRef.setInput('plugin', base);
  });

  it('shows version, generation, uptime, live figures and a status chip', async () => {
    fixture.componentRef.setInput('series', [sample(1), sample(12.34, 0.25)]);
    await fixture.whenStable();
    const text = el().textContent!;
    expect(text).toContain('v1.0.0');
    expect(text).toContain('gen 3');
    expect(el().querySelector('[data-testid=uptime]')!.textContent).toMatch(/^1m \d+s$/);
    expect(el().querySelector('[data-testid=calls]')!.textContent).toBe('12.3');
    expect(el().querySelector('[data-testid=error-rate]')!.textContent).toBe('25.0%');
    expect(el().querySelector('[data-state]')!.getAttribute('data-state')).toBe('running');
    // CPU only: this library does not count its heap.
    expect(el().querySelectorAll('polyline').length).toBe(1);
    expect(el().querySelector('[data-testid=heap]')!.textContent).toBe('–');
    expect(el().querySelector('[data-testid=heap-unreported]')).not.toBeNull();
  });

  it('shows the heap figure and its sparkline when the library counts it', async () => {
    fixture.componentRef.setInput('series', [sample(1, 0, 10 * 1024 * 1024), sample(2, 0, 95 * 1024 * 1024)]);
    await fixture.whenStable();
    expect(el().querySelector('[data-testid=heap]')!.textContent).toBe(formatBytes(95 * 1024 * 1024));
    expect(el().querySelector('[data-testid=heap]')!.textContent).toContain('95');
    expect(el().querySelector('[data-testid=heap-unreported]')).toBeNull();
    expect(el().querySelectorAll('polyline').length).toBe(2);
    expect(el().querySelector('svg[aria-label="heap over the last minute"]')).not.toBeNull();
  });

  it('enables the buttons the state allows and emits actions', async () => {
    await fixture.whenStable();
    expect(button('start').disabled).toBe(true);
    expect(button('stop').disabled).toBe(false);
    const seen: string[] = [];
    fixture.componentInstance.action.subscribe((a) => seen.push(a));
    button('stop').click();
    expect(seen).toEqual(['stop']);
  });

  it('disables every button while an action is pending and marks it busy', async () => {
    fixture.componentRef.setInput('pending', 'stop');
    await fixture.whenStable();
    for (const a of ['start', 'stop', 'restart']) expect(button(a).disabled).toBe(true);
    expect(button('stop').getAttribute('aria-busy')).toBe('true');
  });

  it('marks the auth provider (apikeys, or as the API says), and no other plugin', async () => {
    await fixture.whenStable();
    expect(el().querySelector('[data-testid=auth-provider]')).toBeNull();
    fixture.componentRef.setInput('plugin', { ...base, id: 'apikeys' });
    await fixture.whenStable();
    expect(el().querySelector('[data-testid=auth-provider]')!.getAttribute('title')).toMatch(/bootstrap admin key/);
    fixture.componentRef.setInput('plugin', { ...base, id: 'apikeys', auth_provider: false });
    await fixture.whenStable();
    expect(el().querySelector('[data-testid=auth-provider]')).toBeNull();
    fixture.componentRef.setInput('plugin', { ...base, id: 'keys', auth_provider: true });
    await fixture.whenStable();
    expect(el().querySelector('[data-testid=auth-provider]')).not.toBeNull();
  });

  it('uptimeStart: host field, else the later of load and seen start; none unless running', () => {
    const p = { state: 'running' as const, loaded_at_ms: 100 };
    expect(uptimeStart(p)).toBe(100);
    expect(uptimeStart(p, 50)).toBe(100);
    expect(uptimeStart(p, 500)).toBe(500);
    expect(uptimeStart({ ...p, started_at_ms: 300 }, 500)).toBe(300);
    expect(uptimeStart({ ...p, state: 'stopped' }, 500)).toBeNull();
    expect(uptimeStart({ state: 'running', loaded_at_ms: null })).toBeNull();
  });

  it('a plugin in the host has no process badge; in process mode it shows the pid, restarts, crash loop and last crash', async () => {
    const q = (t: string) => el().querySelector(`[data-testid=${t}]`) as HTMLElement | null;
    await fixture.whenStable();
    for (const t of ['process-badge', 'process-restarts', 'crashloop', 'card-last-crash']) expect(q(t)).toBeNull();
    fixture.componentRef.setInput('plugin', { ...base, isolation: 'in_process', process: null });
    await fixture.whenStable();
    expect(q('process-badge')).toBeNull();
    // A fresh child: its pid, no restarts, no crash.
    fixture.componentRef.setInput('plugin', { ...base, isolation: 'process', process: { pid: 4242, restarts: 0, crashlooping: false, last_crash: null } });
    await fixture.whenStable();
    expect(q('process-badge')!.textContent!.trim()).toBe('own process · pid 4242');
    expect(q('process-badge')!.dataset['pid']).toBe('4242');
    for (const t of ['process-restarts', 'crashloop', 'card-last-crash']) expect(q(t)).toBeNull();
    // Restarted twice after crashes; the last one a segfault.
    const crash = { at_ms: 1_800_000_000_000, signal: 'SIGSEGV', exit_code: null, message: 'killed by SIGSEGV (segmentation fault)', stderr_tail: ['about to crash'] };
    fixture.componentRef.setInput('plugin', { ...base, isolation: 'process', process: { pid: 4300, restarts: 2, crashlooping: false, last_crash: crash } });
    await fixture.whenStable();
    expect(q('process-badge')!.textContent).toContain('pid 4300');
    expect(q('process-restarts')!.textContent!.trim()).toBe('2 restarts');
    expect(q('crashloop')).toBeNull();
    expect(q('card-crash-cause')!.textContent).toBe('signal SIGSEGV');
    expect(q('card-last-crash')!.textContent).toContain(formatTime(crash.at_ms));
    expect(q('card-last-crash')!.getAttribute('title')).toBe('killed by SIGSEGV (segmentation fault)\nabout to crash');
    // Crashlooping: no child, the alert, the last crash an exit code.
    const exit = { ...crash, signal: null, exit_code: 0, message: 'exited with code 0' };
    fixture.componentRef.setInput('plugin', { ...base, state: 'failed', isolation: 'process', process: { pid: null, restarts: 1, crashlooping: true, last_crash: exit } });
    await fixture.whenStable();
    expect(q('process-badge')!.textContent!.trim()).toBe('own process · no process');
    expect(q('process-badge')!.hasAttribute('data-pid')).toBe(false);
    expect(q('process-restarts')!.textContent!.trim()).toBe('1 restart');
    expect(q('crashloop')!.getAttribute('role')).toBe('alert');
    expect(q('crashloop')!.textContent).toContain('Crash loop');
    expect(q('card-crash-cause')!.textContent).toBe('exit code 0');
  });

  it('processBadge: null in the host, defaults while process mode has no process yet, the message when no signal or code', () => {
    expect(processBadge({})).toBeNull();
    expect(processBadge({ isolation: 'in_process', process: null })).toBeNull();
    expect(processBadge({ isolation: 'process', process: null })).toEqual({ pid: null, restarts: 0, crashlooping: false, lastCrash: null });
    const b = processBadge({ isolation: 'process', process: { pid: 7, restarts: 0, crashlooping: false, last_crash: { at_ms: 5, message: 'killed by the host', stderr_tail: [] } } });
    expect(b!.lastCrash).toEqual({ at_ms: 5, cause: 'killed by the host', title: 'killed by the host' });
  });

  it('shows the last error of a failed plugin', async () => {
    fixture.componentRef.setInput('plugin', { ...base, state: 'failed', last_error: { message: 'boom', at_ms: 0 } });
    await fixture.whenStable();
    expect(el().querySelector('[data-testid=last-error]')!.textContent).toContain('boom');
    expect(button('start').disabled).toBe(false);
    expect(el().querySelector('[data-testid=uptime]')!.textContent).toBe('–');
  });
});

describe('PluginCard uptime', () => {
  const NOW = 1_800_000_000_000;
  let fixture: ComponentFixture<PluginCard>;
  const uptime = () => (fixture.nativeElement as HTMLElement).querySelector('[data-testid=uptime]')!.textContent;

  beforeEach(() => {
    // A clock that stands still: the figures do not depend on when the test runs.
    TestBed.configureTestingModule({ imports: [PluginCard], providers: [provideRouter([]), { provide: Clock, useValue: { now: signal(NOW) } }] });
    fixture = TestBed.createComponent(PluginCard);
    fixture.componentRef.setInput('plugin', { ...base, loaded_at_ms: NOW - 65_000 });
  });

  it('counts from the last start, not from the load: a stop/start resets it', async () => {
    await fixture.whenStable();
    expect(uptime()).toBe('1m 5s');
    // Stopped: no uptime. Started again 3 s ago (same generation, same loaded_at_ms): 3 s, not 1 min.
    fixture.componentRef.setInput('plugin', { ...base, loaded_at_ms: NOW - 65_000, state: 'stopped' });
    await fixture.whenStable();
    expect(uptime()).toBe('–');
    fixture.componentRef.setInput('plugin', { ...base, loaded_at_ms: NOW - 65_000 });
    fixture.componentRef.setInput('startedAt', NOW - 3_000);
    await fixture.whenStable();
    expect(uptime()).toBe('3s');
    // The host's own started_at_ms, when it reports one, wins.
    fixture.componentRef.setInput('plugin', { ...base, loaded_at_ms: NOW - 65_000, started_at_ms: NOW - 10_000 });
    await fixture.whenStable();
    expect(uptime()).toBe('10s');
  });
});
