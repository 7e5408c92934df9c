import { ChangeDetectionStrategy, Component, DestroyRef, ElementRef, computed, effect, inject, input, signal, untracked, viewChild } from '@angular/core';
import { Api, wsUrl } from '../core/api';
import { AuthStore } from '../core/auth.store';
import { LogLine } from '../core/models';
import { LiveSocket, openLiveSocket } from '../core/ws';
import { LEVELS, LogBuffer, filterLines, formatLogLine } from './log-buffer';

const LEVEL_CLS: Record<string, string> = {
  error: 'text-rose-600 dark:text-rose-400',
  warn: 'text-amber-600 dark:text-amber-400',
  info: 'text-sky-700 dark:text-sky-400',
  debug: 'text-slate-500',
  trace: 'text-slate-400',
};

/** PluginLogs: the plugin's log tail, then live lines from the WebSocket. */
@Component({
  selector: 'app-plugin-logs',
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <div class="card">
      <div class="mb-3 flex flex-wrap items-end gap-3">
        <label class="text-sm">
          <span class="label">Level (and above)</span>
          <select class="input mt-1" [value]="level()" (change)="level.set($any($event.target).value)" data-testid="log-level">
            <!-- [selected] per option: a [value] on the select is set before its options exist (it then shows the first). -->
            @for (l of levels; track l) { <option [value]="l" [selected]="l === level()">{{ l === 'trace' ? 'trace (all)' : l }}</option> }
          </select>
        </label>
        <label class="min-w-48 flex-1 text-sm">
          <span class="label">Search</span>
          <input class="input mt-1" type="search" [value]="search()" (input)="search.set($any($event.target).value)" placeholder="text in message or target" data-testid="log-search" />
        </label>
        <button type="button" class="btn" (click)="togglePause()" [attr.aria-pressed]="paused()" data-testid="log-pause">
          {{ paused() ? 'Resume' + (heldCount() ? ' (' + heldCount() + ' new)' : '') : 'Pause' }}
        </button>
        <button type="button" class="btn" (click)="download()">Download</button>
        <button type="button" class="btn" (click)="clear()">Clear</button>
        <span class="muted flex items-center gap-1 text-xs"><span class="h-2 w-2 rounded-full" [class]="connected() ? 'bg-emerald-500' : 'bg-slate-400'"></span>{{ connected() ? 'live' : 'connecting…' }}</span>
      </div>
      @if (dropped()) { <p class="mb-2 text-xs text-amber-700 dark:text-amber-300">{{ dropped() }} lines were dropped because the view fell behind.</p> }
      <div #scroller class="h-[28rem] overflow-auto rounded bg-slate-950 p-2 font-mono text-xs text-slate-100" role="log" aria-live="off" data-testid="log-view" (scroll)="onScroll()">
        @for (l of visible(); track l.seq) {
          <!-- Explicit {{ ' ' }} separators: the template compiler drops the whitespace between tags, so the
               text (what a screen reader reads, what a copy gets) would run "7:20:23 PMINFO". -->
          <div class="whitespace-pre-wrap break-all" [attr.data-seq]="l.seq"><time class="text-slate-500" [attr.datetime]="iso(l.at_ms)">{{ time(l.at_ms) }}</time>{{ ' ' }}<span class="inline-block min-w-[5ch]" [class]="levelCls(l.level)" [attr.data-level]="l.level">{{ l.level.toUpperCase() }}</span>{{ ' ' }}<span class="text-slate-400">[{{ l.source }}{{ l.target ? ':' + l.target : '' }}]</span>{{ ' ' + l.message }}</div>
        } @empty { <div class="text-slate-500">no lines{{ search() ? ' match' : ' yet' }}</div> }
      </div>
      <p class="muted mt-1 text-xs">{{ visible().length }} of {{ total() }} lines shown</p>
    </div>
  `,
})
export class PluginLogs {
  readonly pluginId = input.required<string>();
  private api = inject(Api);
  private auth = inject(AuthStore);
  protected readonly levels = LEVELS;
  /** The filter the socket applies (`?level=`): trace, i.e. every line, until the user picks another. */
  protected readonly level = signal<string>('trace');
  protected readonly search = signal('');
  protected readonly paused = signal(false);
  protected readonly connected = signal(false);
  private readonly version = signal(0);
  private buffer = new LogBuffer();
  private socket: LiveSocket | null = null;
  private follow = true;
  private scroller = viewChild<ElementRef<HTMLElement>>('scroller');

  protected readonly total = computed(() => (this.version(), this.buffer.lines.length));
  protected readonly heldCount = computed(() => (this.version(), this.buffer.held.length));
  protected readonly dropped = computed(() => (this.version(), this.buffer.dropped));
  protected readonly visible = computed<LogLine[]>(() => {
    this.version();
    return filterLines(this.buffer.lines.slice(), this.search());
  });

  constructor() {
    effect(() => {
      const id = this.pluginId();
      const level = this.level();
      untracked(() => this.open(id, level));
    });
    effect(() => {
      this.visible();
      const el = this.scroller()?.nativeElement;
      if (el && this.follow) queueMicrotask(() => (el.scrollTop = el.scrollHeight));
    });
    inject(DestroyRef).onDestroy(() => this.socket?.close());
  }

  private open(id: string, level: string) {
    this.socket?.close();
    this.buffer.clear();
    this.buffer.setPaused(this.paused());
    this.version.update((v) => v + 1);
    let pending = false;
    this.socket = openLiveSocket(
      () => wsUrl(this.api.base, `/ws/core/plugins/${encodeURIComponent(id)}/logs`, this.auth.key(), { tail: 500, level }),
      (m) => {
        if (this.buffer.push(m) && !pending) {
          // Coalesce bursts into one render per frame.
          pending = true;
          requestAnimationFrame(() => {
            pending = false;
            this.version.update((v) => v + 1);
          });
        }
      },
      (s) => this.connected.set(s === 'open'),
    );
  }

  protected onScroll() {
    const el = this.scroller()?.nativeElement;
    if (el) this.follow = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
  }

  togglePause() {
    this.paused.update((p) => !p);
    this.buffer.setPaused(this.paused());
    this.version.update((v) => v + 1);
  }

  clear() {
    this.buffer.lines = [];
    this.buffer.held = [];
    this.buffer.dropped = 0;
    this.version.update((v) => v + 1);
  }

  download() {
    const text = this.visible().map(formatLogLine).join('\n') + '\n';
    const url = URL.createObjectURL(new Blob([text], { type: 'text/plain' }));
    const a = document.createElement('a');
    a.href = url;
    a.download = `${this.pluginId()}-${new Date().toISOString().replace(/[:.]/g, '-')}.log`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  protected iso(ms: number) {
    return new Date(ms).toISOString();
  }
  protected time(ms: number) {
    return new Date(ms).toLocaleTimeString();
  }
  protected levelCls(l: string) {
    return LEVEL_CLS[l] ?? '';
  }
}
