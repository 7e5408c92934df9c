import { ChangeDetectionStrategy, Component, inject } from '@angular/core';
import { ToastStore } from '../core/toast.store';

@Component({
  selector: 'app-toasts',
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <div class="pointer-events-none fixed inset-x-2 bottom-2 z-50 flex flex-col items-end gap-2 sm:inset-x-auto sm:right-4" aria-live="polite">
      @for (t of toasts.toasts(); track t.id) {
        <div
          class="pointer-events-auto flex max-w-md items-start gap-3 rounded-lg px-4 py-3 text-sm shadow-lg ring-1"
          [class]="t.kind === 'error' ? 'bg-rose-50 text-rose-900 ring-rose-300 dark:bg-rose-950 dark:text-rose-100 dark:ring-rose-800' : t.kind === 'success' ? 'bg-emerald-50 text-emerald-900 ring-emerald-300 dark:bg-emerald-950 dark:text-emerald-100 dark:ring-emerald-800' : 'bg-white text-slate-900 ring-slate-300 dark:bg-slate-800 dark:text-slate-100 dark:ring-slate-600'"
          [attr.role]="t.kind === 'error' ? 'alert' : 'status'"
          [attr.data-toast]="t.kind"
        >
          <span class="flex-1 break-words">{{ t.message }}</span>
          <button type="button" class="rounded px-1 hover:bg-black/10 focus-visible:outline-2" (click)="toasts.dismiss(t.id)" aria-label="Dismiss">✕</button>
        </div>
      }
    </div>
  `,
})
export class Toasts {
  protected readonly toasts = inject(ToastStore);
}
