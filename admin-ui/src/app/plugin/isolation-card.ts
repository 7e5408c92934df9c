import { ChangeDetectionStrategy, Component, computed, inject, input } from '@angular/core';
import { PluginsStore } from '../core/plugins.store';
import { CrashInfo, EffectiveLimits, IsolationMode, PluginDetail, ProcessLimits } from '../core/models';
import { formatTime } from '../shared/format';

export const ISOLATION_MODES: { id: IsolationMode; label: string; hint: string }[] = [
  {
    id: 'in_process',
    label: 'In the host',
    hint: 'Loaded into the host process: the fastest, but a crash in its native code (segfault, abort, stack overflow, out of memory) ends the host.',
  },
  {
    id: 'process',
    label: 'Own process',
    hint: 'Runs in a child process the host supervises: a crash ends only the child, which is restarted (100 ms, doubling to 30 s). Each call costs a round trip to the child.',
  },
];

/** What ended a child: "signal SIGSEGV", "exit code 0", or '' when the host did not say. */
export function crashCause(c: Pick<CrashInfo, 'signal' | 'exit_code'>): string {
  if (c.signal) return `signal ${c.signal}`;
  if (c.exit_code != null) return `exit code ${c.exit_code}`;
  return '';
}

/** The limits of a child in process mode, in the order the card shows them. */
export const LIMIT_FIELDS: { id: keyof EffectiveLimits; label: string; unit: string }[] = [
  { id: 'memory_mb', label: 'Memory', unit: 'MiB' },
  { id: 'open_files', label: 'Open files', unit: '' },
  { id: 'processes', label: 'Processes', unit: '' },
  { id: 'call_deadline_ms', label: 'Call deadline', unit: 'ms' },
];

/** One line on where the mode comes from: the plugin's suggestion, the operator's choice (and a suggestion it overrides), or '' for the default. */
export function sourceNote(p: Pick<PluginDetail, 'isolation' | 'isolation_source' | 'isolation_suggested'>): string {
  const label = (m: IsolationMode) => ISOLATION_MODES.find((x) => x.id === m)!.label.toLowerCase();
  switch (p.isolation_source) {
    case 'plugin':
      return `Suggested by the plugin (${label(modeOf(p))}); choosing a mode here overrides it.`;
    case 'operator':
      return p.isolation_suggested && p.isolation_suggested !== modeOf(p)
        ? `Chosen by an operator; the plugin suggests ${label(p.isolation_suggested)}.`
        : 'Chosen by an operator.';
    default:
      return '';
  }
}

/** The operator's own limits from the view (host defaults are left out: null). */
export function operatorLimits(l: EffectiveLimits | null | undefined): ProcessLimits {
  const own = (f: keyof EffectiveLimits) => (l?.[f]?.source === 'operator' ? l[f].value : null);
  return { memory_mb: own('memory_mb'), open_files: own('open_files'), processes: own('processes'), call_deadline_ms: own('call_deadline_ms') };
}

/** The isolation mode of a plugin as the host reports it (hosts before crash isolation: in the host). */
export function modeOf(p: Pick<PluginDetail, 'isolation'> | undefined): IsolationMode {
  return p?.isolation ?? 'in_process';
}

/** PluginIsolation: where the plugin runs (the switch), its child's pid and restarts, a crash loop, the last crash. */
@Component({
  selector: 'app-plugin-isolation',
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <section class="card" data-testid="isolation">
      <h2 class="mb-2 font-semibold">Isolation</h2>
      <div role="radiogroup" aria-label="Where the plugin's code runs" class="mb-2 inline-flex overflow-hidden rounded border border-slate-300 dark:border-slate-600">
        @for (m of modes; track m.id) {
          <button type="button" role="radio" class="px-3 py-1 text-sm" [attr.data-mode]="m.id" [attr.aria-checked]="mode() === m.id" [title]="m.hint"
            [class]="mode() === m.id ? 'bg-sky-600 text-white' : 'hover:bg-slate-100 dark:hover:bg-slate-800'"
            [disabled]="!!pending()" (click)="choose(m.id)">{{ pending() === m.id ? m.label + '…' : m.label }}</button>
        }
      </div>
      <p class="muted mb-2 text-xs" data-testid="isolation-hint">{{ hint() }}</p>
      @if (source(); as note) {
        <p class="mb-2 text-xs" data-testid="isolation-source">{{ note }}</p>
      }
      @if (plugin().isolation_limits; as lim) {
        <form class="mb-2 text-sm" data-testid="isolation-limits" (submit)="$event.preventDefault(); saveLimits()">
          <p class="muted mb-1 text-xs">Limits of its child process{{ mode() === 'process' ? '' : ' (they apply in its own process)' }}; empty: the host's default.</p>
          <div class="grid grid-cols-[8rem_8rem_1fr] items-center gap-x-3 gap-y-1">
            @for (f of limitFields; track f.id) {
              <label class="muted" [attr.for]="'limit-' + f.id">{{ f.label }}{{ f.unit ? ' (' + f.unit + ')' : '' }}</label>
              <input type="number" min="1" step="1" class="rounded border border-slate-300 px-1 dark:border-slate-600 dark:bg-slate-900" [id]="'limit-' + f.id"
                [attr.data-limit]="f.id" [value]="lim[f.id].source === 'operator' ? lim[f.id].value : ''" [placeholder]="lim[f.id].value ?? 'none'"
                (input)="edit(f.id, $any($event.target).value)" />
              <span class="muted text-xs" [attr.data-limit-source]="f.id">{{ lim[f.id].value ?? 'none' }} · {{ lim[f.id].source === 'operator' ? 'set here' : "host's default" }}</span>
            }
          </div>
          <button type="submit" class="mt-1 rounded border border-slate-300 px-2 py-0.5 dark:border-slate-600" data-testid="limits-save" [disabled]="!!pending()">Save limits</button>
        </form>
      }
      @if (plugin().process; as pr) {
        <dl class="grid grid-cols-[8rem_1fr] gap-x-3 gap-y-1 text-sm">
          <dt class="muted">pid</dt><dd class="font-mono" data-testid="isolation-pid">{{ pr.pid ?? 'none (no child running)' }}</dd>
          <dt class="muted">restarts</dt><dd data-testid="isolation-restarts">{{ pr.restarts }}</dd>
        </dl>
        @if (pr.crashlooping) {
          <div class="mt-2 rounded bg-rose-50 p-2 text-sm text-rose-800 dark:bg-rose-950 dark:text-rose-200" role="alert" data-testid="crashlooping">
            <strong>Crash loop</strong>: it crashed 5 times within 60 s and is not restarted until you start it.
          </div>
        }
        @if (pr.last_crash; as c) {
          <div class="mt-2 text-sm" data-testid="last-crash">
            <strong>Last crash</strong> ({{ time(c.at_ms) }}): {{ c.message }}
            @if (cause(c); as why) { <span class="muted" data-testid="crash-cause">· {{ why }}</span> }
            @if (c.stderr_tail.length) {
              <pre class="mt-1 max-h-48 overflow-auto rounded bg-slate-100 p-2 text-xs dark:bg-slate-800" data-testid="stderr-tail">{{ c.stderr_tail.join('\\n') }}</pre>
            } @else {
              <p class="muted text-xs" data-testid="stderr-tail-empty">The child wrote nothing to its stderr.</p>
            }
          </div>
        }
      }
    </section>
  `,
})
export class PluginIsolation {
  readonly plugin = input.required<PluginDetail>();
  private readonly store = inject(PluginsStore);
  protected readonly modes = ISOLATION_MODES;
  protected readonly time = formatTime;
  protected readonly cause = crashCause;

  protected readonly mode = computed(() => modeOf(this.plugin()));
  protected readonly pending = computed(() => this.store.isolationPending()[this.plugin().id]);
  protected readonly hint = computed(() => ISOLATION_MODES.find((m) => m.id === this.mode())!.hint);
  protected readonly source = computed(() => sourceNote(this.plugin()));
  protected readonly limitFields = LIMIT_FIELDS;
  /** What the operator typed since the last save, by field ('' clears it: the host's default). */
  private edits: Partial<Record<keyof EffectiveLimits, string>> = {};

  edit(field: keyof EffectiveLimits, value: string) {
    this.edits[field] = value;
  }

  /** Sends the limits: the typed ones over the operator's current ones; an empty field is the host's default. The host checks the ranges (a 400 names the field). */
  saveLimits() {
    if (this.pending()) return;
    const limits = operatorLimits(this.plugin().isolation_limits);
    for (const [field, text] of Object.entries(this.edits) as [keyof EffectiveLimits, string][]) {
      limits[field] = text.trim() === '' ? null : Number(text);
    }
    this.edits = {};
    void this.store.setIsolation(this.plugin().id, this.mode(), limits);
  }

  choose(mode: IsolationMode) {
    if (mode === this.mode() || this.pending()) return;
    void this.store.setIsolation(this.plugin().id, mode);
  }
}
