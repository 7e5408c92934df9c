import { ChangeDetectionStrategy, Component, computed, inject, input, output } from '@angular/core';
import { RouterLink } from '@angular/router';
import { CrashInfo, LifecycleAction, PluginDetail, TelemetrySample } from '../core/models';
import { isAuthProvider } from '../core/plugins.store';
import { crashCause, modeOf } from '../plugin/isolation-card';
import { Clock } from '../shared/clock';
import { formatBytes, formatDuration, formatPercent, formatRate, formatTime } from '../shared/format';
import { Sparkline } from '../shared/sparkline';
import { StatusChip } from '../shared/status-chip';

/** Which lifecycle buttons make sense in a state. */
export function allowedActions(state: string): Record<LifecycleAction, boolean> {
  return {
    start: state === 'stopped' || state === 'failed',
    stop: state === 'running' || state === 'loading',
    restart: state === 'running' || state === 'stopped' || state === 'failed',
  };
}

/**
 * When the running plugin started, for its uptime: the host's `started_at_ms` when it reports
 * one; else the later of the generation's `loaded_at_ms` (a load starts it) and `seenStart`, the
 * last start the page knows of (the event log's `started`/`restarted`, or a stop/start it saw).
 * Null when not running or unknown.
 */
export function uptimeStart(p: Pick<PluginDetail, 'state' | 'loaded_at_ms' | 'started_at_ms'>, seenStart?: number | null): number | null {
  if (p.state !== 'running') return null;
  if (p.started_at_ms) return p.started_at_ms;
  const t = Math.max(p.loaded_at_ms ?? 0, seenStart ?? 0);
  return t > 0 ? t : null;
}

/** What a card says about a plugin in process mode: null for a plugin in the host. */
export interface ProcessBadge {
  /** The serving child's pid; null while none runs (crashed, backing off, crashlooping, stopped). */
  pid: number | null;
  restarts: number;
  crashlooping: boolean;
  lastCrash: { at_ms: number; cause: string; title: string } | null;
}

/** The card's process badge for a plugin in process mode (its `process` may be absent while not loaded). */
export function processBadge(p: Pick<PluginDetail, 'isolation' | 'process'>): ProcessBadge | null {
  if (modeOf(p) !== 'process') return null;
  const pr = p.process;
  const c: CrashInfo | null | undefined = pr?.last_crash;
  return {
    pid: pr?.pid ?? null,
    restarts: pr?.restarts ?? 0,
    crashlooping: !!pr?.crashlooping,
    lastCrash: c
      ? {
          at_ms: c.at_ms,
          // The signal or exit code, else the host's one-line message.
          cause: crashCause(c) || c.message,
          title: [c.message, ...(c.stderr_tail ?? [])].filter(Boolean).join('\n'),
        }
      : null,
  };
}

@Component({
  selector: 'app-plugin-card',
  imports: [RouterLink, StatusChip, Sparkline],
  changeDetection: ChangeDetectionStrategy.OnPush,
  // Off-screen cards skip layout and paint (50 cards updating every second stay cheap).
  host: { class: 'block [content-visibility:auto] [contain-intrinsic-size:auto_15rem]' },
  template: `
    <article class="card flex h-full flex-col gap-3" [attr.data-plugin]="plugin().id" [attr.aria-label]="'plugin ' + plugin().id">
      <header class="flex items-start justify-between gap-2">
        <div class="min-w-0">
          <h2 class="truncate text-base font-semibold">
            <a [routerLink]="['/plugins', plugin().id]" class="hover:underline focus-visible:underline">{{ plugin().name || plugin().id }}</a>
          </h2>
          <p class="muted truncate font-mono text-xs">{{ plugin().id }} · v{{ plugin().version || '?' }} · gen {{ plugin().generation }}</p>
          @if (authProvider()) {
            <p class="mt-1 inline-block rounded bg-amber-100 px-1.5 text-[11px] font-medium text-amber-900 dark:bg-amber-900 dark:text-amber-100" data-testid="auth-provider"
              title="The host's auth provider: while it is stopped only the bootstrap admin key is accepted">auth provider</p>
          }
          @if (proc(); as pr) {
            <p class="mt-1 flex flex-wrap gap-1 text-[11px] font-medium">
              <span class="rounded bg-sky-100 px-1.5 text-sky-900 dark:bg-sky-900 dark:text-sky-100" data-testid="process-badge" [attr.data-pid]="pr.pid"
                title="Runs in its own process, supervised by the host: a crash ends only that process">own process · {{ pr.pid != null ? 'pid ' + pr.pid : 'no process' }}</span>
              @if (pr.restarts > 0) {
                <span class="rounded bg-amber-100 px-1.5 text-amber-900 dark:bg-amber-900 dark:text-amber-100" data-testid="process-restarts"
                  title="Restarts after crashes since the host started or an operator's start">{{ pr.restarts }} {{ pr.restarts === 1 ? 'restart' : 'restarts' }}</span>
              }
            </p>
          }
        </div>
        <app-status-chip [state]="plugin().state" />
      </header>

      @if (proc(); as pr) {
        @if (pr.crashlooping) {
          <p class="rounded bg-rose-50 p-2 text-xs text-rose-800 dark:bg-rose-950 dark:text-rose-200" role="alert" data-testid="crashloop">
            <strong>Crash loop</strong>: not restarted until you start it.</p>
        }
        @if (pr.lastCrash; as c) {
          <p class="muted truncate text-xs" data-testid="card-last-crash" [title]="c.title">last crash {{ time(c.at_ms) }}: <span data-testid="card-crash-cause">{{ c.cause }}</span></p>
        }
      }
      @if (plugin().last_error; as err) {
        <p class="line-clamp-3 rounded bg-rose-50 p-2 text-xs text-rose-800 dark:bg-rose-950 dark:text-rose-200" data-testid="last-error" [title]="err.message">{{ err.message }}</p>
      }

      <dl class="grid grid-cols-4 gap-2 text-xs">
        <div><dt class="muted">uptime</dt><dd class="tabular-nums" data-testid="uptime">{{ uptime() }}</dd></div>
        <div><dt class="muted">calls/s</dt><dd class="tabular-nums" data-testid="calls">{{ callsPerS() }}</dd></div>
        <div><dt class="muted">errors</dt><dd class="tabular-nums" data-testid="error-rate">{{ errorRate() }}</dd></div>
        <div><dt class="muted">in flight</dt><dd class="tabular-nums">{{ last()?.in_flight ?? '–' }}</dd></div>
      </dl>

      <div class="grid grid-cols-2 gap-3 text-xs">
        <div>
          <div class="muted flex justify-between"><span>CPU</span><span class="tabular-nums">{{ cpu() }}</span></div>
          <app-sparkline class="block w-full text-sky-600 dark:text-sky-400" [values]="cpuSeries()" [width]="140" [height]="28" label="CPU over the last minute" />
        </div>
        <div>
          <div class="muted flex justify-between" title="Heap held by the plugin's library (its Rust allocations), as the library counts it">
            <span>heap</span><span class="tabular-nums" data-testid="heap">{{ memory() }}</span>
          </div>
          @if (hasMemory()) {
            <app-sparkline class="block w-full text-violet-600 dark:text-violet-400" [values]="memSeries()" [width]="140" [height]="28" [fit]="true" label="heap over the last minute" />
          } @else {
            <p class="muted h-7 text-[11px] leading-7" data-testid="heap-unreported">not reported by this library</p>
          }
        </div>
      </div>

      <footer class="mt-auto flex flex-wrap gap-2">
        @for (a of actionList; track a) {
          <button type="button" class="btn" [class.btn-danger]="a === 'stop'" [disabled]="!!pending() || !allowed()[a]"
            (click)="action.emit(a)" [attr.aria-busy]="pending() === a" [attr.data-action]="a">
            @if (pending() === a) { <span class="h-3 w-3 animate-spin rounded-full border-2 border-current border-t-transparent" aria-hidden="true"></span> }
            {{ a }}
          </button>
        }
        <a class="btn ml-auto" [routerLink]="['/plugins', plugin().id]">Details</a>
      </footer>
    </article>
  `,
})
export class PluginCard {
  readonly plugin = input.required<PluginDetail>();
  readonly series = input<TelemetrySample[] | undefined>(undefined);
  readonly pending = input<LifecycleAction | undefined>(undefined);
  /** The last start the page knows of (PluginsStore.startedAt), for hosts without `started_at_ms`. */
  readonly startedAt = input<number | undefined>(undefined);
  readonly action = output<LifecycleAction>();
  protected readonly actionList: LifecycleAction[] = ['start', 'stop', 'restart'];
  private clock = inject(Clock);

  protected readonly allowed = computed(() => allowedActions(this.plugin().state));
  protected readonly authProvider = computed(() => isAuthProvider(this.plugin()));
  protected readonly proc = computed(() => processBadge(this.plugin()));
  protected readonly time = formatTime;
  protected readonly last = computed(() => {
    const s = this.series();
    return s && s.length ? s[s.length - 1] : undefined;
  });
  protected readonly uptime = computed(() => {
    const start = uptimeStart(this.plugin(), this.startedAt());
    return start != null ? formatDuration(Math.max(0, this.clock.now() - start)) : '–';
  });
  protected readonly callsPerS = computed(() => formatRate(this.last()?.calls_per_s));
  protected readonly errorRate = computed(() => {
    const l = this.last();
    return l ? formatPercent(l.error_rate * 100) : '–';
  });
  protected readonly cpu = computed(() => formatPercent(this.last()?.cpu_percent));
  protected readonly cpuSeries = computed(() => (this.series() ?? []).map((s) => s.cpu_percent));
  protected readonly hasMemory = computed(() => this.last()?.heap_bytes != null);
  protected readonly memSeries = computed(() => (this.series() ?? []).map((s) => s.heap_bytes ?? 0));
  protected readonly memory = computed(() => formatBytes(this.last()?.heap_bytes));
}
