import { patchState, signalStore, withMethods, withState } from '@ngrx/signals';

/** What a confirmation dialog asks (shown by `ConfirmDialog`, mounted once in the app root). */
export interface ConfirmRequest {
  title: string;
  message: string;
  /** The label of the button that goes ahead ("Stop anyway"). */
  confirmLabel: string;
  cancelLabel?: string;
}

interface ConfirmState {
  /** The open question (with an id per question), or null when no dialog is shown. */
  request: (ConfirmRequest & { id: number }) | null;
}

let nextId = 1;

/**
 * One confirmation dialog at a time: `ask` opens it and resolves to true ("go ahead") or false
 * (cancelled, or replaced by a newer question).
 */
export const ConfirmStore = signalStore(
  { providedIn: 'root' },
  withState<ConfirmState>({ request: null }),
  withMethods((store) => {
    let resolve: ((ok: boolean) => void) | null = null;
    const answer = (ok: boolean) => {
      const r = resolve;
      resolve = null;
      patchState(store, { request: null });
      r?.(ok);
    };
    return {
      answer,
      ask(request: ConfirmRequest): Promise<boolean> {
        if (resolve) answer(false);
        return new Promise<boolean>((r) => {
          resolve = r;
          patchState(store, { request: { ...request, id: nextId++ } });
        });
      },
    };
  }),
);
