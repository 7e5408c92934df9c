import {
  ChangeDetectionStrategy,
  Component,
  Directive,
  inject,
  input,
  output,
} from '@angular/core';
import { FormsModule } from '@angular/forms';
import { BrainmlStore } from './brainml.store';

/** The chosen collection, or the first one while none is chosen (or the chosen one is gone). */
export function chosenOrFirst(names: string[], chosen: string): string {
  return names.includes(chosen) ? chosen : (names[0] ?? '');
}

/**
 * The labelled collection picker of the brainml sections: a `<select>` over the store's
 * collections (an empty "(no collections)" option while there are none). It is the `<label>`
 * itself, so the layout classes stay where the parent puts them:
 * `<label bmCollectionSelect="bmAskCollection" class="block" [value]="collection()"
 * (chosen)="choice.set($event)">` (the attribute's value is the select's `name`).
 */
@Component({
  selector: 'label[bmCollectionSelect]',
  imports: [FormsModule],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `<span class="label">Collection</span>
    <select
      class="input mt-1"
      [attr.name]="name()"
      [ngModel]="value()"
      (ngModelChange)="chosen.emit($event)"
    >
      @for (n of store.names(); track n) {
        <option [value]="n">{{ n }}</option>
      } @empty {
        <option value="">(no collections)</option>
      }
    </select>`,
})
export class BrainmlCollectionSelect {
  protected readonly store = inject(BrainmlStore);
  /** The select's `name`. */
  readonly name = input.required<string>({ alias: 'bmCollectionSelect' });
  /** The collection shown as selected. */
  readonly value = input('');
  /** The collection the user picked. */
  readonly chosen = output<string>();
}

/**
 * What a section says when the plugin lacks its capability:
 * `<p bmLacks="rag.ask" data-testid="bm-ask-missing"></p>` reads "This brainml build has no
 * `rag.ask` capability." (`snapshot.*`: "capabilities"; with `note="x"`: "capability: x.").
 */
@Component({
  selector: 'p[bmLacks]',
  changeDetection: ChangeDetectionStrategy.OnPush,
  host: { class: 'muted text-sm' },
  template: `This brainml build has no <code>{{ capability() }}</code>
    {{ capability().endsWith('*') ? 'capabilities' : 'capability'
    }}{{ note() ? ': ' + note() : '' }}.`,
})
export class BrainmlLacks {
  readonly capability = input.required<string>({ alias: 'bmLacks' });
  /** What follows from the lack. */
  readonly note = input('');
}

/** An error shown in a section: `<p bmAlert data-testid="...">{{ e }}</p>`. */
@Directive({
  selector: 'p[bmAlert]',
  host: { class: 'text-sm text-rose-700 dark:text-rose-300', role: 'alert' },
})
export class BrainmlAlert {}
