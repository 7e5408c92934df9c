import { HttpErrorResponse, HttpHandlerFn, HttpInterceptorFn, HttpRequest } from '@angular/common/http';
import { computed, inject } from '@angular/core';
import { Router } from '@angular/router';
import { patchState, signalStore, withComputed, withMethods, withState } from '@ngrx/signals';
import { catchError, throwError } from 'rxjs';
import { API_BASE } from './api';

export const KEY_STORAGE = 'bkg.apiKey';

interface AuthState {
  key: string | null;
  checking: boolean;
  error: string | null;
}

function readStoredKey(): string | null {
  try {
    return sessionStorage.getItem(KEY_STORAGE);
  } catch {
    return null;
  }
}

/** Turns a failed login check into a message an operator can act on. */
export function loginErrorMessage(status: number, message?: string): string {
  switch (status) {
    case 401:
      return `The host rejected this key (401 unauthorized)${message ? ': ' + message : ''}. Check that you pasted the whole key and that it has not been revoked or expired.`;
    case 403:
      return `This key is valid but lacks the scope to read the admin API (403 forbidden)${message ? ': ' + message : ''}. Use a key with the "read" or "admin" scope.`;
    case 0:
      return 'The host could not be reached. Is bkg running?';
    default:
      return `Unexpected answer from the host (${status})${message ? ': ' + message : ''}.`;
  }
}

export const AuthStore = signalStore(
  { providedIn: 'root' },
  withState<AuthState>(() => ({ key: readStoredKey(), checking: false, error: null })),
  withComputed((s) => ({ loggedIn: computed(() => !!s.key()) })),
  withMethods((store, base = inject(API_BASE)) => ({
    /** Checks the key against the host (a read of the plugin list) and keeps it in session storage. */
    async login(key: string): Promise<boolean> {
      key = key.trim();
      if (!key) {
        patchState(store, { error: 'Paste an API key.' });
        return false;
      }
      patchState(store, { checking: true, error: null });
      try {
        const res = await fetch(base + '/api/core/plugins', { headers: { Authorization: 'Bearer ' + key } });
        if (!res.ok) {
          let message: string | undefined;
          try {
            message = (await res.json())?.error?.message;
          } catch {
            /* no JSON body */
          }
          patchState(store, { checking: false, error: loginErrorMessage(res.status, message) });
          return false;
        }
      } catch {
        patchState(store, { checking: false, error: loginErrorMessage(0) });
        return false;
      }
      try {
        sessionStorage.setItem(KEY_STORAGE, key);
      } catch {
        /* storage disabled: keep it in memory only */
      }
      patchState(store, { key, checking: false, error: null });
      return true;
    },
    logout(reason: string | null = null) {
      try {
        sessionStorage.removeItem(KEY_STORAGE);
      } catch {
        /* ignore */
      }
      patchState(store, { key: null, error: reason });
    },
  })),
);

/** Adds the key to API requests; a 401 ends the session and goes back to the login screen. */
export const authInterceptor: HttpInterceptorFn = (req: HttpRequest<unknown>, next: HttpHandlerFn) => {
  const auth = inject(AuthStore);
  const router = inject(Router);
  const key = auth.key();
  const withKey = key && !req.headers.has('Authorization') ? req.clone({ setHeaders: { Authorization: 'Bearer ' + key } }) : req;
  return next(withKey).pipe(
    catchError((e: unknown) => {
      if (e instanceof HttpErrorResponse && e.status === 401 && key) {
        // The host says why (a revoked key, or the auth provider stopped: only the bootstrap key works).
        const why = (e.error as { error?: { message?: string } } | null)?.error?.message;
        auth.logout(`Your key is no longer accepted (401)${why ? ': ' + why : ''}. Log in again.`);
        void router.navigate(['/login']);
      }
      return throwError(() => e);
    }),
  );
};

export const authGuard = () => {
  const auth = inject(AuthStore);
  return auth.loggedIn() ? true : inject(Router).parseUrl('/login');
};
