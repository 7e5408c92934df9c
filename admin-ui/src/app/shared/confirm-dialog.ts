import { ChangeDetectionStrategy, Component, ElementRef, afterRenderEffect, inject, viewChild } from '@angular/core';
import { ConfirmStore } from '../core/confirm.store';

/**
 * The app's confirmation dialog (WAI-ARIA alertdialog): modal (the page behind is inert, see
 * `App`), the focus moves to Cancel when it opens and stays inside it (Tab and Shift+Tab cycle),
 * Escape cancels, and the focus goes back to where it was when it closes.
 */
@Component({
  selector: 'app-confirm-dialog',
  changeDetection: ChangeDetectionStrategy.OnPush,
  host: { '(document:keydown.escape)': 'onEscape($event)' },
  template: `
    @if (confirm.request(); as r) {
      <div class="fixed inset-0 z-50 flex items-center justify-center bg-slate-900/50 p-4" (mousedown)="$event.preventDefault()">
        <div #box role="alertdialog" aria-modal="true" [attr.aria-labelledby]="'confirm-title-' + r.id" [attr.aria-describedby]="'confirm-message-' + r.id"
          class="card w-full max-w-md space-y-4 shadow-xl" data-testid="confirm-dialog" (keydown)="onKey($event)" (mousedown)="$event.stopPropagation()">
          <h2 class="text-base font-semibold" [id]="'confirm-title-' + r.id">{{ r.title }}</h2>
          <p class="text-sm" [id]="'confirm-message-' + r.id" data-testid="confirm-message">{{ r.message }}</p>
          <div class="flex justify-end gap-2">
            <button #cancel type="button" class="btn" data-testid="confirm-cancel" (click)="confirm.answer(false)">{{ r.cancelLabel ?? 'Cancel' }}</button>
            <button type="button" class="btn btn-danger" data-testid="confirm-ok" (click)="confirm.answer(true)">{{ r.confirmLabel }}</button>
          </div>
        </div>
      </div>
    }
  `,
})
export class ConfirmDialog {
  protected readonly confirm = inject(ConfirmStore);
  private readonly box = viewChild<ElementRef<HTMLElement>>('box');
  private readonly cancel = viewChild<ElementRef<HTMLButtonElement>>('cancel');
  /** The question the focus was moved for, and where the focus was before it opened. */
  private focusedFor: number | null = null;
  private returnTo: HTMLElement | null = null;

  constructor() {
    afterRenderEffect(() => {
      const request = this.confirm.request();
      const cancel = this.cancel();
      if (request && cancel && this.focusedFor !== request.id) {
        if (this.focusedFor === null) {
          const active = document.activeElement;
          this.returnTo = active instanceof HTMLElement && active !== document.body ? active : null;
        }
        this.focusedFor = request.id;
        // Cancel first: the safe choice is the one a stray Enter takes.
        cancel.nativeElement.focus();
      } else if (!request && this.focusedFor !== null) {
        this.focusedFor = null;
        const back = this.returnTo;
        this.returnTo = null;
        // After the next change detection: the button that opened the dialog may be re-enabled
        // only then (a pending action clears when the dialog's answer comes back).
        if (back) setTimeout(() => back.isConnected && back.focus());
      }
    });
  }

  protected onEscape(event: Event) {
    if (!this.confirm.request()) return;
    event.preventDefault();
    event.stopPropagation();
    this.confirm.answer(false);
  }

  /** Keeps Tab and Shift+Tab inside the dialog. */
  protected onKey(event: KeyboardEvent) {
    if (event.key !== 'Tab') return;
    const box = this.box()?.nativeElement;
    if (!box) return;
    const stops = [...box.querySelectorAll<HTMLElement>('button:not([disabled])')];
    if (!stops.length) return;
    const i = stops.indexOf(document.activeElement as HTMLElement);
    const next = event.shiftKey ? (i <= 0 ? stops.length - 1 : i - 1) : i === stops.length - 1 || i < 0 ? 0 : i + 1;
    event.preventDefault();
    stops[next].focus();
  }
}
