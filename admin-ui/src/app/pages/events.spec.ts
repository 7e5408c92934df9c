import { provideHttpClient } from '@angular/common/http';
import { HttpTestingController, provideHttpClientTesting } from '@angular/common/http/testing';
import { ComponentFixture, TestBed } from '@angular/core/testing';
import { BkgEvent } from '../core/models';
import { Events, eventKinds, eventNote, eventTone, filterEvents } from './events';

const ev = (seq: number, kind: string, details: unknown = {}, plugin: string | null = 'candle'): BkgEvent => ({
  seq, at_ms: 1_800_000_000_000 + seq, kind, actor: 'key:ab12', plugin, details,
});
const tick = () => new Promise((r) => setTimeout(r));

describe('event kinds and tones', () => {
  it('a pinned generation is a warning with a note; failures are errors; the rest info', () => {
    expect(eventTone(ev(1, 'pinned', { generation: 3, ignored_cancel_calls: 1 }))).toBe('warning');
    expect(eventNote(ev(1, 'pinned', { generation: 3, ignored_cancel_calls: 1 }))).toMatch(/generation 3 .*stays mapped.*1 call ignored/);
    // An older host's "unloaded" that says the library stayed mapped is the same warning.
    expect(eventTone(ev(2, 'unloaded', { residency: 'pinned' }))).toBe('warning');
    expect(eventTone(ev(3, 'unloaded', { residency: 'unloaded' }))).toBe('info');
    expect(eventNote(ev(3, 'unloaded', { residency: 'unloaded' }))).toBeNull();
    expect(eventTone(ev(4, 'load_failed'))).toBe('error');
    expect(eventTone(ev(5, 'lifecycle_failed'))).toBe('error');
    for (const k of ['key_created', 'key_revoked', 'uploaded', 'started']) expect(eventTone(ev(6, k, null))).toBe('info');
  });
  it('crash isolation: a crash and a crash loop are errors, a restart after a crash a warning, each with a note; a mode switch is info', () => {
    const crashed = ev(1, 'crashed', { generation: 2, pid: 4242, signal: 'SIGSEGV', exit_code: null, message: 'killed by SIGSEGV (segmentation fault)', stderr_tail: [] });
    expect(eventTone(crashed)).toBe('error');
    expect(eventNote(crashed)).toBe('Its process (pid 4242) crashed: killed by SIGSEGV (segmentation fault).');
    // Without the host's line: the signal or exit code.
    expect(eventNote(ev(2, 'crashed', { pid: 9, exit_code: 0 }))).toBe('Its process (pid 9) crashed: exit code 0.');
    expect(eventNote(ev(2, 'crashed', { signal: 'SIGABRT' }))).toBe('Its process crashed: signal SIGABRT.');
    const loop = ev(3, 'crashlooping', { generation: 2, message: 'crashlooping: its process crashed 5 times within 60 s; it is not restarted until an operator starts it' });
    expect(eventTone(loop)).toBe('error');
    expect(eventNote(loop)).toMatch(/5 times within 60 s.*operator starts it\.$/);
    const restart = ev(4, 'restarted', { generation: 3, pid: 4300, restarts: 2, after_crash: true });
    expect(eventTone(restart)).toBe('warning');
    expect(eventNote(restart)).toBe('Restarted after a crash in a new process (pid 4300), restart 2.');
    // An operator's restart is no warning and needs no note.
    expect(eventTone(ev(5, 'restarted', {}))).toBe('info');
    expect(eventNote(ev(5, 'restarted', {}))).toBeNull();
    const moved = ev(6, 'isolation', { from: 'in_process', to: 'process' });
    expect(eventTone(moved)).toBe('info');
    expect(eventNote(moved)).toBe('Moved from in the host to its own process.');
    expect(eventTone(ev(7, 'isolation_failed', { error: 'x' }))).toBe('error');
  });
  it('the kind filter offers every kind in the log (no fixed list) and the chosen one', () => {
    const events = [ev(1, 'uploaded'), ev(2, 'key_created'), ev(3, 'pinned'), ev(4, 'key_revoked'), ev(5, 'uploaded')];
    expect(eventKinds(events, '')).toEqual(['key_created', 'key_revoked', 'pinned', 'uploaded']);
    expect(eventKinds([], 'pinned')).toEqual(['pinned']);
    expect(filterEvents(events, 'key_revoked', '').map((e) => e.seq)).toEqual([4]);
  });
});

describe('Events screen', () => {
  let fixture: ComponentFixture<Events>;
  const el = () => fixture.nativeElement as HTMLElement;

  beforeEach(async () => {
    TestBed.configureTestingModule({ imports: [Events], providers: [provideHttpClient(), provideHttpClientTesting()] });
    const http = TestBed.inject(HttpTestingController);
    fixture = TestBed.createComponent(Events);
    fixture.detectChanges();
    http.expectOne('/api/core/events?limit=200').flush({
      events: [
        ev(4, 'key_revoked', { id: 'ab12' }, null),
        ev(3, 'key_created', { id: 'ab12', name: 'ci' }, null),
        ev(2, 'uploaded', { file: 'libecho.so' }, 'echo'),
        ev(1, 'pinned', { generation: 3, reason: 'shutdown', residency: 'pinned', ignored_cancel_calls: 1 }),
      ],
    });
    await tick();
    await fixture.whenStable();
  });
  afterEach(() => fixture.destroy());

  it('lists the new kinds, offers them in the filter, and shows a pinned event as a warning', () => {
    const rows = Array.from(el().querySelectorAll('tr[data-kind]')) as HTMLElement[];
    expect(rows.map((r) => r.dataset['kind'])).toEqual(['key_revoked', 'key_created', 'uploaded', 'pinned']);
    const options = Array.from(el().querySelectorAll('[data-testid=events-kind] option')).map((o) => o.textContent!.trim());
    expect(options).toEqual(['all', 'key_created', 'key_revoked', 'pinned', 'uploaded']);
    const pinned = el().querySelector('tr[data-kind=pinned]') as HTMLElement;
    expect(pinned.dataset['tone']).toBe('warning');
    expect(pinned.className).toContain('bg-amber-50');
    expect(pinned.querySelector('[data-testid=event-kind]')!.textContent).toMatch(/warning:\s*pinned/);
    expect(pinned.querySelector('[data-testid=event-note]')!.textContent).toMatch(/stays mapped/);
    expect(el().querySelector('tr[data-kind=key_created]')!.getAttribute('data-tone')).toBe('info');
  });
});

describe('Events screen, crash isolation', () => {
  let fixture: ComponentFixture<Events>;
  const el = () => fixture.nativeElement as HTMLElement;
  const row = (kind: string) => el().querySelector(`tr[data-kind=${kind}]`) as HTMLElement;

  beforeEach(async () => {
    TestBed.configureTestingModule({ imports: [Events], providers: [provideHttpClient(), provideHttpClientTesting()] });
    const http = TestBed.inject(HttpTestingController);
    fixture = TestBed.createComponent(Events);
    fixture.detectChanges();
    http.expectOne('/api/core/events?limit=200').flush({
      events: [
        ev(3, 'restarted', { generation: 3, pid: 4300, restarts: 1, after_crash: true }, 'echo'),
        ev(2, 'crashed', { generation: 2, pid: 4242, signal: 'SIGSEGV', message: 'killed by SIGSEGV (segmentation fault)', stderr_tail: [] }, 'echo'),
        ev(1, 'isolation', { from: 'in_process', to: 'process' }, 'echo'),
      ],
    });
    await tick();
    await fixture.whenStable();
  });
  afterEach(() => fixture.destroy());

  it('shows a crash as an error, the restart after it as a warning, the switch as info, each with its note', () => {
    expect(row('crashed').dataset['tone']).toBe('error');
    expect(row('crashed').querySelector('[data-testid=event-kind]')!.textContent).toMatch(/error:\s*crashed/);
    expect(row('crashed').querySelector('[data-testid=event-kind]')!.className).toContain('bg-rose-100');
    const crashNote = row('crashed').querySelector('[data-testid=event-note]')!;
    expect(crashNote.textContent).toContain('pid 4242');
    expect(crashNote.className).toContain('text-rose-800');
    expect(row('restarted').dataset['tone']).toBe('warning');
    expect(row('restarted').className).toContain('bg-amber-50');
    expect(row('restarted').querySelector('[data-testid=event-note]')!.textContent).toContain('new process (pid 4300)');
    expect(row('isolation').dataset['tone']).toBe('info');
    expect(row('isolation').querySelector('[data-testid=event-note]')!.textContent).toBe('Moved from in the host to its own process.');
  });
});
