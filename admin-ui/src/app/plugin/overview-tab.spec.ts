import { provideHttpClient } from '@angular/common/http';
import { provideHttpClientTesting } from '@angular/common/http/testing';
import { ComponentFixture, TestBed } from '@angular/core/testing';
import { HistoryEntry, PluginDetail } from '../core/models';
import { PluginOverview } from './overview-tab';

const gen = (generation: number, more: Partial<HistoryEntry> = {}): HistoryEntry => ({
  generation, version: `${generation}.0.0`, file: 'libecho.so', sha256: 'ab'.repeat(32), loaded_at_ms: 1, abandoned_calls: 0, ...more,
});
const plugin: PluginDetail = {
  id: 'echo', name: 'Echo', version: '3.0.0', description: '', state: 'stopped', generation: 3, capabilities: [], routes: [],
  history: [
    gen(1, { retired_at_ms: 2, reason: 'swapped', residency: 'unloaded', heap_left_bytes: 3 * 1048576, abandoned_calls: 1, cancelled_calls: 1, ignored_cancel_calls: 0 }),
    gen(2, { retired_at_ms: 3, reason: 'swapped', residency: 'pinned', heap_left_bytes: null, abandoned_calls: 3, cancelled_calls: 2, ignored_cancel_calls: 1 }),
    gen(3, { heap_left_bytes: null }),
  ],
};

describe('PluginOverview load history', () => {
  let fixture: ComponentFixture<PluginOverview>;
  const cell = (row: number) => fixture.nativeElement.querySelectorAll('[data-testid=history] tbody tr')[row].querySelector('[data-testid=heap-left]') as HTMLElement;

  beforeEach(async () => {
    TestBed.configureTestingModule({ imports: [PluginOverview], providers: [provideHttpClient(), provideHttpClientTesting()] });
    fixture = TestBed.createComponent(PluginOverview);
    fixture.componentRef.setInput('pluginId', 'echo');
    fixture.componentRef.setInput('plugin', plugin);
    await fixture.whenStable();
  });

  it('shows the heap a retired generation left behind, with what it means on hover', () => {
    // Newest first: gen 3 (loaded), gen 2 (pinned, not measured), gen 1 (left 3 MiB).
    expect(cell(2).textContent!.trim()).toBe('3.0 MiB');
    expect(cell(2).title).toContain('3,145,728 bytes');
    expect(cell(2).title).toContain('stays in the process');
    expect(cell(1).textContent!.trim()).toBe('–');
    expect(cell(1).title).toContain('stuck');
    expect(cell(0).textContent!.trim()).toBe('–');
    expect(cell(0).title).toContain('still loaded');
  });
});

describe('PluginOverview load history: calls at a drain deadline', () => {
  let fixture: ComponentFixture<PluginOverview>;
  const cell = (row: number) =>
    fixture.nativeElement.querySelectorAll('[data-testid=history] tbody tr')[row].querySelector('[data-testid=deadline-calls]') as HTMLElement;

  beforeEach(async () => {
    TestBed.configureTestingModule({ imports: [PluginOverview], providers: [provideHttpClient(), provideHttpClientTesting()] });
    fixture = TestBed.createComponent(PluginOverview);
    fixture.componentRef.setInput('pluginId', 'echo');
    fixture.componentRef.setInput('plugin', plugin);
    await fixture.whenStable();
  });

  it('names the cancelled and the ignored calls, with what they mean on hover', () => {
    const header = [...fixture.nativeElement.querySelectorAll('[data-testid=history] thead th')].find((th) => th.textContent.trim() === 'calls at deadline') as HTMLElement;
    expect(header).toBeTruthy();
    expect(header.title).toContain('cancel flag raised');
    // gen 2: two stopped after the flag, one ran on (pinned).
    expect(cell(1).textContent!.trim()).toBe('2 cancelled, 1 ignored');
    expect(cell(1).title).toContain('2 calls stopped after that (cancelled), 1 call ignored it');
    expect(cell(1).title).toContain('pinned');
    // gen 1: one cancelled, none ignored.
    expect(cell(2).textContent!.trim()).toBe('1 cancelled');
    expect(cell(2).title).toContain('1 call stopped after that');
    expect(cell(2).title).not.toContain('pinned');
  });

  it('shows – when no call was cancelled or ignored (or the host does not say)', () => {
    // gen 3 has neither field.
    expect(cell(0).textContent!.trim()).toBe('–');
    expect(cell(0).title).toContain('no call');
  });
});

describe('PluginOverview files', () => {
  let fixture: ComponentFixture<PluginOverview>;
  const files = () => fixture.nativeElement.querySelector('[data-testid=plugin-files]') as HTMLElement | null;
  const rows = () => [...fixture.nativeElement.querySelectorAll('[data-testid=plugin-files] tbody tr')] as HTMLElement[];

  async function show(p: PluginDetail) {
    TestBed.configureTestingModule({ imports: [PluginOverview], providers: [provideHttpClient(), provideHttpClientTesting()] });
    fixture = TestBed.createComponent(PluginOverview);
    fixture.componentRef.setInput('pluginId', 'echo');
    fixture.componentRef.setInput('plugin', p);
    await fixture.whenStable();
  }

  it('lists every file providing the id, newest first, saying which one serves', async () => {
    await show({
      ...plugin,
      file: '/srv/plugins/libecho.so',
      files: [
        { file: '/srv/plugins/libecho.so', sha256: 'cd'.repeat(32), modified_ms: Date.UTC(2025, 0, 2), serving: true },
        { file: '/srv/plugins/echo-old.so', sha256: 'ef'.repeat(32), modified_ms: Date.UTC(2025, 0, 1), serving: false },
      ],
    });
    expect(files()).not.toBeNull();
    const [first, second] = rows();
    expect(rows().length).toBe(2);
    expect(first.dataset['file']).toBe('libecho.so');
    expect(first.querySelector('td')!.title).toBe('/srv/plugins/libecho.so');
    expect(first.textContent).toContain('cdcdcdcdcdcd');
    expect(first.textContent).not.toContain('cd'.repeat(32));
    expect(first.textContent).toContain(new Date(Date.UTC(2025, 0, 2)).toLocaleString());
    expect(first.querySelector('[data-testid=file-role]')!.textContent!.trim()).toBe('serving');
    expect(second.dataset['file']).toBe('echo-old.so');
    expect(second.textContent).toContain('efefefefefef');
    expect(second.querySelector('[data-testid=file-role]')!.textContent!.trim()).toBe('standing by');
    // The one-line explanation.
    expect(files()!.parentElement!.parentElement!.textContent).toContain('the newest serves, the others stand by');
    expect(files()!.parentElement!.parentElement!.textContent).toContain('Deleting the serving file swaps to the next');
  });

  it('keeps the overview as it is with a single file (or none listed)', async () => {
    await show({ ...plugin, file: '/srv/plugins/libecho.so', files: [{ file: '/srv/plugins/libecho.so', sha256: 'cd'.repeat(32), modified_ms: 1, serving: true }] });
    expect(files()).toBeNull();
    expect(fixture.nativeElement.textContent).not.toContain('standing by');
    expect(fixture.nativeElement.textContent).toContain('/srv/plugins/libecho.so');
  });

  it('an unknown modification time shows –', async () => {
    await show({
      ...plugin,
      files: [
        { file: 'b.so', sha256: 'cd'.repeat(32), modified_ms: 5, serving: false },
        { file: 'a.so', sha256: 'ef'.repeat(32), modified_ms: null, serving: true },
      ],
    });
    const r = rows();
    expect(r[1].querySelectorAll('td')[2].textContent!.trim()).toBe('–');
    expect(r[1].querySelector('[data-testid=file-role]')!.textContent!.trim()).toBe('serving');
    expect(r[0].querySelector('[data-testid=file-role]')!.textContent!.trim()).toBe('standing by');
  });
});
