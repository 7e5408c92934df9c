import { provideHttpClient } from '@angular/common/http';
import { provideHttpClientTesting } from '@angular/common/http/testing';
import { ComponentFixture, TestBed } from '@angular/core/testing';
import { API_BASE } from '../core/api';
import { LogLine } from '../core/models';
import { PluginLogs } from './logs-tab';

/** A WebSocket stand-in: records the URLs opened, and lets the test deliver messages. */
class FakeSocket {
  static opened: FakeSocket[] = [];
  onopen: (() => void) | null = null;
  onmessage: ((ev: { data: string }) => void) | null = null;
  onclose: (() => void) | null = null;
  closed = false;
  constructor(readonly url: string) {
    FakeSocket.opened.push(this);
  }
  close() {
    this.closed = true;
  }
  deliver(m: unknown) {
    this.onmessage?.({ data: JSON.stringify(m) });
  }
}

const line = (seq: number, level: LogLine['level'], message: string): LogLine => ({
  seq, at_ms: Date.UTC(2026, 0, 1, 19, 20, 23), level, source: 'plugin', target: 'echo', message,
});

describe('PluginLogs', () => {
  let fixture: ComponentFixture<PluginLogs>;
  const el = () => fixture.nativeElement as HTMLElement;
  const select = () => el().querySelector('[data-testid=log-level]') as HTMLSelectElement;
  const last = () => FakeSocket.opened[FakeSocket.opened.length - 1];
  const levelParam = () => new URL(last().url).searchParams.get('level');

  beforeEach(async () => {
    FakeSocket.opened = [];
    vi.stubGlobal('WebSocket', FakeSocket);
    vi.stubGlobal('requestAnimationFrame', (cb: FrameRequestCallback) => setTimeout(() => cb(0)));
    TestBed.configureTestingModule({
      imports: [PluginLogs],
      providers: [provideHttpClient(), provideHttpClientTesting(), { provide: API_BASE, useValue: 'http://host' }],
    });
    fixture = TestBed.createComponent(PluginLogs);
    fixture.componentRef.setInput('pluginId', 'echo');
    await fixture.whenStable();
  });
  afterEach(() => vi.unstubAllGlobals());

  it('the level select shows the filter the socket applies, by default and after a change', async () => {
    // Default: everything (trace and above), and the select says so rather than its first option.
    expect(levelParam()).toBe('trace');
    expect(select().value).toBe('trace');
    expect(select().selectedOptions[0].textContent).toMatch(/trace/);
    select().value = 'warn';
    select().dispatchEvent(new Event('change'));
    await fixture.whenStable();
    expect(levelParam()).toBe('warn');
    expect(select().value).toBe('warn');
    expect(FakeSocket.opened.length).toBe(2);
    expect(FakeSocket.opened[0].closed).toBe(true);
  });

  it('an INFO line listed under the default filter: the select does not claim "error"', async () => {
    last().deliver(line(1, 'info', 'hello'));
    await new Promise((r) => setTimeout(r, 5));
    await fixture.whenStable();
    expect(el().querySelectorAll('[data-seq]').length).toBe(1);
    expect(select().value).not.toBe('error');
  });

  it('separates time, level and origin by a space in the text (screen readers read the text)', async () => {
    last().deliver(line(1, 'info', 'hello'));
    await new Promise((r) => setTimeout(r, 5));
    await fixture.whenStable();
    const row = el().querySelector('[data-seq="1"]') as HTMLElement;
    const time = new Date(line(1, 'info', '').at_ms).toLocaleTimeString();
    expect(row.textContent).toContain(`${time} INFO`);
    expect(row.textContent!.replace(/\s+/g, ' ').trim()).toBe(`${time} INFO [plugin:echo] hello`);
    // The time is a <time> with a machine-readable datetime, the level its own column.
    expect(row.querySelector('time')!.getAttribute('datetime')).toBe('2026-01-01T19:20:23.000Z');
    expect(row.querySelector('[data-level]')!.getAttribute('data-level')).toBe('info');
  });
});
