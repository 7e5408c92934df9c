import { ChangeDetectionStrategy, Component, computed, input } from '@angular/core';

const STYLES: Record<string, string> = {
  running: 'bg-emerald-100 text-emerald-800 ring-emerald-600/30 dark:bg-emerald-900/40 dark:text-emerald-300',
  loading: 'bg-sky-100 text-sky-800 ring-sky-600/30 dark:bg-sky-900/40 dark:text-sky-300',
  stopping: 'bg-amber-100 text-amber-800 ring-amber-600/30 dark:bg-amber-900/40 dark:text-amber-300',
  stopped: 'bg-slate-200 text-slate-700 ring-slate-500/30 dark:bg-slate-700 dark:text-slate-200',
  failed: 'bg-rose-100 text-rose-800 ring-rose-600/30 dark:bg-rose-900/40 dark:text-rose-300',
  unloaded: 'bg-slate-100 text-slate-500 ring-slate-400/30 dark:bg-slate-800 dark:text-slate-400',
  pinned: 'bg-orange-100 text-orange-800 ring-orange-600/30 dark:bg-orange-900/40 dark:text-orange-300',
};

/** The coloured state badge of a plugin (or a residency: unloaded / pinned). */
@Component({
  selector: 'app-status-chip',
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `<span
    class="inline-flex items-center gap-1 rounded-full px-2 py-0.5 text-xs font-medium ring-1 ring-inset"
    [class]="cls()"
    role="status"
    [attr.data-state]="state()"
    ><span class="h-1.5 w-1.5 rounded-full bg-current" aria-hidden="true"></span>{{ state() }}</span
  >`,
})
export class StatusChip {
  readonly state = input.required<string>();
  protected readonly cls = computed(() => STYLES[this.state()] ?? STYLES['unloaded']);
}
