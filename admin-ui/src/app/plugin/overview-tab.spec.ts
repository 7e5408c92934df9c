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
    gen(1, { retired_at_ms: 2, reason: 'swapped', residency: 'unloaded', heap_left_bytes: 3 * 1048576 }),
    gen(2, { retired_at_ms: 3, reason: 'swapped', residency: 'pinned', heap_left_bytes: null }),
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
