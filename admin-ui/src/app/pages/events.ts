import { JsonPipe } from '@angular/common';
import { ChangeDetectionStrategy, Component, DestroyRef, computed, effect, inject, signal, untracked } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { Api } from '../core/api';
import { BkgEvent } from '../core/models';
import { PluginsStore } from '../core/plugins.store';
import { formatTime } from '../shared/format';

export function filterEvents(events: BkgEvent[], kind: string, text: string): BkgEvent[] {
  const q = text.trim().toLowerCase();
  return events.filter(
    (e) => (!kind || e.kind === kind) && (!q || JSON.stringify(e).toLowerCase().includes(q)),
  );
}

export type EventTone = 'error' | 'warning' | 'info';

/**
 * How an event is shown. Any kind is listed (the kinds come from the log itself, so new ones
 * such as `key_created`, `key_revoked`, `uploaded` show as they are); a failure is an error; a
 * `pinned` generation (retired, its library still mapped: a thread ran on in it) is a warning,
 * and so is an `unloaded` event whose details say `residency: pinned` (hosts before `pinned`).
 */
export function eventTone(e: Pick<BkgEvent, 'kind' | 'details'>): EventTone {
  if (e.kind.endsWith('failed') || e.kind === 'error' || e.kind === 'crashed' || e.kind === 'crashlooping') return 'error';
  if (e.kind === 'pinned' || isPinnedUnload(e) || isRestartAfterCrash(e)) return 'warning';
  return 'info';
}

function isRestartAfterCrash(e: Pick<BkgEvent, 'kind' | 'details'>): boolean {
  const d = e.details as { after_crash?: unknown } | null;
  return e.kind === 'restarted' && !!d && typeof d === 'object' && d.after_crash === true;
}

const MODE_LABEL: Record<string, string> = { in_process: 'in the host', process: 'its own process' };

/** A line for the crash isolation events (`crashed`, `crashlooping`, a restart after a crash, `isolation`), or null. */
function isolationNote(e: Pick<BkgEvent, 'kind' | 'details'>): string | null {
  const d = (e.details && typeof e.details === 'object' ? e.details : {}) as {
    pid?: number | null; signal?: string | null; exit_code?: number | null; message?: string;
    restarts?: number; from?: string; to?: string;
  };
  const pid = typeof d.pid === 'number' ? ` (pid ${d.pid})` : '';
  switch (e.kind) {
    case 'crashed': {
      // The host's line ("killed by SIGSEGV (segmentation fault)"), else the signal or exit code.
      const cause = d.message || (d.signal ? `signal ${d.signal}` : d.exit_code != null ? `exit code ${d.exit_code}` : '');
      return `Its process${pid} crashed${cause ? ': ' + cause : ''}.`;
    }
    case 'crashlooping':
      return d.message ? `${d.message}.` : 'It crashed too often and is not restarted until an operator starts it.';
    case 'restarted':
      if (!isRestartAfterCrash(e)) return null;
      return `Restarted after a crash in a new process${pid}${typeof d.restarts === 'number' ? `, restart ${d.restarts}` : ''}.`;
    case 'isolation':
      return d.from && d.to ? `Moved from ${MODE_LABEL[d.from] ?? d.from} to ${MODE_LABEL[d.to] ?? d.to}.` : null;
    default:
      return null;
  }
}

function isPinnedUnload(e: Pick<BkgEvent, 'kind' | 'details'>): boolean {
  const d = e.details as { residency?: unknown } | null;
  return e.kind === 'unloaded' && !!d && typeof d === 'object' && d.residency === 'pinned';
}

/** A line saying what a warning means, or null. */
export function eventNote(e: Pick<BkgEvent, 'kind' | 'details'>): string | null {
  if (e.kind !== 'pinned' && !isPinnedUnload(e)) return isolationNote(e);
  const d = (e.details ?? {}) as { generation?: number; ignored_cancel_calls?: number | null };
  const gen = typeof d.generation === 'number' ? `generation ${d.generation}` : 'the retired generation';
  const calls = d.ignored_cancel_calls ? ` (${d.ignored_cancel_calls} call${d.ignored_cancel_calls === 1 ? '' : 's'} ignored the cancel flag)` : '';
  return `${gen} retired, but its library stays mapped: a thread still runs in it${calls}. It is freed only when the host exits.`;
}

/** The kinds to offer in the filter: those in the log, and the one chosen (even when none is listed now). */
export function eventKinds(events: BkgEvent[], chosen: string): string[] {
  const kinds = new Set(events.map((e) => e.kind));
  if (chosen) kinds.add(chosen);
  return [...kinds].sort();
}

const TONE_BADGE: Record<EventTone, string> = {
  error: 'bg-rose-100 text-rose-800 dark:bg-rose-900/50 dark:text-rose-200',
  warning: 'bg-amber-100 text-amber-900 dark:bg-amber-900/50 dark:text-amber-100',
  info: 'bg-slate-100 dark:bg-slate-800',
};

const NOTE_TEXT: Record<EventTone, string> = {
  error: 'text-rose-800 dark:text-rose-200',
  warning: 'text-amber-900 dark:text-amber-200',
  info: 'text-slate-700 dark:text-slate-300',
};

@Component({
  selector: 'app-events',
  imports: [FormsModule, JsonPipe],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <div class="mb-4 flex flex-wrap items-end gap-3">
      <h1 class="mr-auto text-xl font-semibold">Events</h1>
      <label class="text-sm"><span class="label">Plugin</span>
        <select class="input mt-1" [ngModel]="plugin()" (ngModelChange)="plugin.set($event)" data-testid="events-plugin">
          <option value="">all</option>
          @for (id of plugins.ids(); track id) { <option [value]="id">{{ id }}</option> }
        </select></label>
      <label class="text-sm"><span class="label">Kind</span>
        <select class="input mt-1" [ngModel]="kind()" (ngModelChange)="kind.set($event)" data-testid="events-kind">
          <option value="">all</option>
          @for (k of kinds(); track k) { <option [value]="k">{{ k }}</option> }
        </select></label>
      <label class="text-sm"><span class="label">Search</span><input class="input mt-1" type="search" [ngModel]="text()" (ngModelChange)="text.set($event)" /></label>
      <label class="text-sm"><span class="label">Limit</span>
        <select class="input mt-1" [ngModel]="limit()" (ngModelChange)="limit.set(+$event)">
          @for (n of [50, 200, 1000]; track n) { <option [value]="n">{{ n }}</option> }
        </select></label>
      <label class="flex items-center gap-1 text-sm"><input type="checkbox" [ngModel]="auto()" (ngModelChange)="auto.set($event)" /> live</label>
    </div>
    @if (error(); as e) { <p class="mb-3 rounded bg-rose-50 p-3 text-sm text-rose-800 dark:bg-rose-950 dark:text-rose-200" role="alert">{{ e }}</p> }
    <div class="card overflow-x-auto !p-0">
      <table class="w-full text-left text-sm" data-testid="events-table">
        <thead class="muted text-xs"><tr><th class="px-3 py-2">time</th><th class="px-3">plugin</th><th class="px-3">kind</th><th class="px-3">actor</th><th class="px-3">details</th></tr></thead>
        <tbody>
          @for (e of visible(); track e.seq) {
            <tr class="border-t border-slate-200 align-top dark:border-slate-700" [attr.data-kind]="e.kind" [attr.data-tone]="tone(e)"
              [class]="tone(e) === 'warning' ? 'bg-amber-50 dark:bg-amber-950/40' : ''">
              <td class="px-3 py-1 whitespace-nowrap">{{ time(e.at_ms) }}</td>
              <td class="px-3 font-mono">{{ e.plugin || '–' }}</td>
              <td class="px-3 whitespace-nowrap"><span class="rounded px-1.5 text-xs" [class]="badge(e)" data-testid="event-kind">
                @if (tone(e) !== 'info') { <span aria-hidden="true">{{ tone(e) === 'error' ? '✕' : '⚠' }}&nbsp;</span><span class="sr-only">{{ tone(e) }}: </span> }{{ e.kind }}</span></td>
              <td class="px-3">{{ e.actor }}</td>
              <td class="px-3">
                @if (note(e); as n) { <p class="mb-1 text-xs" [class]="NOTE_TEXT[tone(e)]" data-testid="event-note">{{ n }}</p> }
                <code class="block max-w-xl truncate text-xs" [title]="e.details | json">{{ e.details | json }}</code>
              </td>
            </tr>
          } @empty { <tr><td colspan="5" class="muted px-3 py-3">no events</td></tr> }
        </tbody>
      </table>
    </div>
  `,
})
export class Events {
  protected readonly plugins = inject(PluginsStore);
  private api = inject(Api);
  protected readonly plugin = signal('');
  protected readonly kind = signal('');
  protected readonly text = signal('');
  protected readonly limit = signal(200);
  protected readonly auto = signal(true);
  protected readonly events = signal<BkgEvent[]>([]);
  protected readonly error = signal<string | null>(null);
  protected readonly kinds = computed(() => eventKinds(this.events(), this.kind()));
  protected readonly visible = computed(() => filterEvents(this.events(), this.kind(), this.text()));
  protected time = formatTime;
  protected tone = eventTone;
  protected note = eventNote;
  protected readonly NOTE_TEXT = NOTE_TEXT;
  protected badge = (e: BkgEvent) => TONE_BADGE[eventTone(e)];

  constructor() {
    effect(() => {
      const p = this.plugin();
      const l = this.limit();
      untracked(() => void this.load(p, l));
    });
    const timer = setInterval(() => {
      if (this.auto()) void this.load(this.plugin(), this.limit());
    }, 2000);
    inject(DestroyRef).onDestroy(() => clearInterval(timer));
  }

  async load(plugin: string, limit: number) {
    const q = new URLSearchParams({ limit: String(limit) });
    if (plugin) q.set('plugin', plugin);
    try {
      const r = await this.api.get<{ events: BkgEvent[] }>(`/api/core/events?${q}`);
      const cur = this.events();
      if (cur.length !== r.events.length || cur[0]?.seq !== r.events[0]?.seq) this.events.set(r.events);
      this.error.set(null);
    } catch (e) {
      this.error.set((e as Error).message);
    }
  }
}
