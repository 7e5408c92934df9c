import { HttpClient, HttpErrorResponse } from '@angular/common/http';
import { Injectable, InjectionToken, inject } from '@angular/core';
import { firstValueFrom } from 'rxjs';
import { ApiErrorBody } from './models';

/**
 * Where the bkg API lives. Empty means "the origin that served this page" (the host serves the
 * app at `/`; the e2e harness proxies). Override with `<meta name="bkg-api-base" content="http://...">`.
 */
export const API_BASE = new InjectionToken<string>('API_BASE', {
  providedIn: 'root',
  factory: () => {
    const meta = typeof document !== 'undefined' ? document.querySelector('meta[name="bkg-api-base"]') : null;
    return (meta?.getAttribute('content') ?? '').replace(/\/$/, '');
  },
});

/** An API failure with the host's `{error:{code,message,details}}` unpacked. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly fieldErrors: { path: string; message: string }[] = [],
  ) {
    super(message);
  }
}

export function toApiError(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  if (e instanceof HttpErrorResponse) {
    const body = e.error as ApiErrorBody | string | null;
    if (body && typeof body === 'object' && body.error) {
      return new ApiError(e.status, body.error.code, body.error.message, body.error.details?.errors ?? []);
    }
    if (e.status === 0) return new ApiError(0, 'network', 'The host could not be reached');
    return new ApiError(e.status, 'http_' + e.status, typeof body === 'string' && body ? body : e.message);
  }
  return new ApiError(0, 'unknown', e instanceof Error ? e.message : String(e));
}

/** Converts a WebSocket path into a URL with the key as `access_token`. */
export function wsUrl(base: string, path: string, key: string | null, params: Record<string, string | number> = {}): string {
  const origin = base || (typeof location !== 'undefined' ? location.origin : 'http://localhost');
  const url = new URL(origin + path);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  for (const [k, v] of Object.entries(params)) if (v !== '' && v != null) url.searchParams.set(k, String(v));
  if (key) url.searchParams.set('access_token', key);
  return url.toString();
}

@Injectable({ providedIn: 'root' })
export class Api {
  private http = inject(HttpClient);
  readonly base = inject(API_BASE);

  async get<T>(path: string): Promise<T> {
    try {
      return await firstValueFrom(this.http.get<T>(this.base + path));
    } catch (e) {
      throw toApiError(e);
    }
  }

  async post<T>(path: string, body: unknown = {}): Promise<T> {
    try {
      return await firstValueFrom(this.http.post<T>(this.base + path, body));
    } catch (e) {
      throw toApiError(e);
    }
  }

  async put<T>(path: string, body: Blob | ArrayBuffer): Promise<T> {
    try {
      return await firstValueFrom(
        this.http.put<T>(this.base + path, body, { headers: { 'Content-Type': 'application/octet-stream' } }),
      );
    } catch (e) {
      throw toApiError(e);
    }
  }

  async delete<T>(path: string): Promise<T> {
    try {
      return await firstValueFrom(this.http.delete<T>(this.base + path));
    } catch (e) {
      throw toApiError(e);
    }
  }
}
