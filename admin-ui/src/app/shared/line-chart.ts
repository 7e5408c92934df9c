import { ChangeDetectionStrategy, Component, computed, input } from '@angular/core';

export interface ChartSeries {
  name: string;
  color: string;
  values: (number | null)[];
}

/** A responsive multi-series SVG line chart over time (x = sample index). */
@Component({
  selector: 'app-line-chart',
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <figure class="rounded-lg border border-slate-200 p-3 dark:border-slate-700">
      <figcaption class="mb-1 flex flex-wrap items-baseline justify-between gap-2 text-sm">
        <span class="font-medium" [attr.title]="hint() || null">{{ title() }}</span>
        <span class="flex flex-wrap gap-3 text-xs">
          @for (s of series(); track s.name) {
            <span class="flex items-center gap-1" [attr.data-series]="s.name"><span class="inline-block h-2 w-3 rounded" [style.background]="s.color"></span>{{ s.name }}: {{ last(s) }}</span>
          }
        </span>
      </figcaption>
      <svg viewBox="0 0 600 140" class="h-36 w-full" preserveAspectRatio="none" role="img" [attr.aria-label]="title()">
        <line x1="0" y1="139" x2="600" y2="139" class="stroke-slate-300 dark:stroke-slate-600" stroke-width="1" />
        @for (p of paths(); track p.name) {
          <polyline [attr.points]="p.points" fill="none" [attr.stroke]="p.color" stroke-width="1.5" vector-effect="non-scaling-stroke" />
        }
      </svg>
      <div class="flex justify-between text-xs text-slate-500 dark:text-slate-400"><span>{{ span() }}</span><span data-testid="chart-max">max {{ maxLabel() }}</span></div>
    </figure>
  `,
})
export class LineChart {
  readonly title = input('');
  readonly series = input<ChartSeries[]>([]);
  /** Appended to the numbers shown (legend, max), unless `format` is given. */
  readonly unit = input('');
  /** How to show a value (legend, max), e.g. `formatBytes`; default: two decimals and `unit`. */
  readonly format = input<((v: number) => string) | undefined>(undefined);
  readonly span = input('');
  /** Shown on hover over the title. */
  readonly hint = input('');

  protected readonly max = computed(() => {
    let m = 0;
    for (const s of this.series()) for (const v of s.values) if (v != null && v > m) m = v;
    return m || 1;
  });
  protected readonly maxLabel = computed(() => this.show(this.max()));
  protected readonly paths = computed(() => {
    const max = this.max();
    return this.series().map((s) => {
      const n = s.values.length;
      const step = n > 1 ? 600 / (n - 1) : 0;
      const pts: string[] = [];
      s.values.forEach((v, i) => {
        if (v != null) pts.push(`${(i * step).toFixed(1)},${(138 - (v / max) * 134).toFixed(1)}`);
      });
      return { name: s.name, color: s.color, points: pts.join(' ') };
    });
  });

  protected last(s: ChartSeries): string {
    const v = s.values.length ? s.values[s.values.length - 1] : null;
    return v == null ? '–' : this.show(v);
  }

  private show(v: number): string {
    const f = this.format();
    return f ? f(v) : `${+v.toFixed(2)}${this.unit()}`;
  }
}
