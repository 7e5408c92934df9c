import { ChangeDetectionStrategy, Component, inject } from '@angular/core';
import { RouterOutlet } from '@angular/router';
import { ConfirmStore } from './core/confirm.store';
import { ConfirmDialog } from './shared/confirm-dialog';
import { Toasts } from './shared/toasts';

@Component({
  selector: 'app-root',
  imports: [RouterOutlet, Toasts, ConfirmDialog],
  changeDetection: ChangeDetectionStrategy.OnPush,
  // While a confirmation is open the page behind it is inert (no clicks, no Tab stops).
  template: `<div class="contents" [attr.inert]="confirm.request() ? '' : null"><router-outlet /></div><app-toasts /><app-confirm-dialog />`,
})
export class App {
  protected readonly confirm = inject(ConfirmStore);
}
