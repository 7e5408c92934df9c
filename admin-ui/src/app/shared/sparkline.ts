import { ChangeDetectionStrategy, Component, computed, input } from '@angular/core';
import { sparkPoints } from './format';

/** A tiny SVG line of the last samples. */
@Component({
  selector: 'app-sparkline',
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `<svg [attr.viewBox]="'0 0 ' + width() + ' ' + height()" width="100%" [attr.height]="height()"
    class="block overflow-visible" role="img" [attr.aria-label]="label()" preserveAspectRatio="none">
    <polyline [attr.points]="points()" fill="none" stroke="currentColor" stroke-width="1.5" vector-effect="non-scaling-stroke" />
  </svg>`,
  host: { class: 'inline-block' },
})
export class Sparkline {
  readonly values = input<number[]>([]);
  readonly max = input<number | undefined>(undefined);
  readonly width = input(120);
  readonly height = input(28);
  readonly label = input('');
  /** Draw a level (memory) from the window's low to its high instead of from 0. */
  readonly fit = input(false);
  protected readonly points = computed(() => sparkPoints(this.values(), this.width(), this.height(), this.max(), this.fit()));
}
