import { patchState, signalStore, withMethods, withState } from '@ngrx/signals';

export interface Toast {
  id: number;
  kind: 'error' | 'info' | 'success';
  message: string;
}

let nextId = 1;

export const ToastStore = signalStore(
  { providedIn: 'root' },
  withState<{ toasts: Toast[] }>({ toasts: [] }),
  withMethods((store) => {
    const dismiss = (id: number) => patchState(store, { toasts: store.toasts().filter((t) => t.id !== id) });
    return {
      dismiss,
      show(kind: Toast['kind'], message: string, ttlMs = kind === 'error' ? 8000 : 4000) {
        const toast = { id: nextId++, kind, message };
        patchState(store, { toasts: [...store.toasts().slice(-4), toast] });
        if (ttlMs > 0) setTimeout(() => dismiss(toast.id), ttlMs);
        return toast.id;
      },
    };
  }),
);
