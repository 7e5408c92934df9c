import { ChangeDetectionStrategy, Component, OnInit, inject, input, signal } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { Api } from '../core/api';
import { ToastStore } from '../core/toast.store';
import { formatTime } from '../shared/format';

export interface ApiKeyInfo {
  id: string;
  name: string;
  prefix: string;
  scopes: string[];
  created_at_ms: number;
  expires_at_ms: number | null;
  revoked_at_ms: number | null;
}

export const SCOPES = ['admin', 'invoke', 'read'] as const;
export const EXPIRY_CHOICES = [
  { label: 'never', seconds: 0 },
  { label: '1 hour', seconds: 3600 },
  { label: '1 day', seconds: 86400 },
  { label: '30 days', seconds: 30 * 86400 },
  { label: '1 year', seconds: 365 * 86400 },
];

export function keyStatus(k: ApiKeyInfo, now = Date.now()): 'revoked' | 'expired' | 'active' {
  if (k.revoked_at_ms) return 'revoked';
  if (k.expires_at_ms && k.expires_at_ms <= now) return 'expired';
  return 'active';
}

/** The apikeys plugin's panel: create (key shown once), list, revoke. */
@Component({
  selector: 'app-apikeys-panel',
  imports: [FormsModule],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <div class="grid gap-4 lg:grid-cols-[1fr_2fr]">
      <form class="card space-y-3" (ngSubmit)="create()" data-testid="apikey-create">
        <h2 class="font-semibold">Create a key</h2>
        <label class="block"><span class="label">Name</span><input class="input mt-1" name="name" [(ngModel)]="name" required placeholder="ci" /></label>
        <fieldset>
          <legend class="label">Scopes</legend>
          <div class="mt-1 flex gap-4">
            @for (s of scopes; track s) {
              <label class="flex items-center gap-1 text-sm"><input type="checkbox" [name]="'scope-' + s" [checked]="chosen().includes(s)" (change)="toggle(s)" />{{ s }}</label>
            }
          </div>
        </fieldset>
        <label class="block"><span class="label">Expires</span>
          <select class="input mt-1" name="expiry" [(ngModel)]="expiry">
            @for (e of expiries; track e.seconds) { <option [ngValue]="e.seconds">{{ e.label }}</option> }
          </select>
        </label>
        @if (error(); as e) { <p class="text-sm text-rose-700 dark:text-rose-300" role="alert">{{ e }}</p> }
        <button class="btn btn-primary" type="submit" [disabled]="busy()">Create key</button>
      </form>

      <div class="space-y-4">
        @if (created(); as c) {
          <section class="card ring-2 ring-emerald-500" data-testid="new-key" role="region" aria-label="New key">
            <h2 class="font-semibold">Key for “{{ c.name }}” created</h2>
            <p class="muted text-sm">Copy it now: it is shown only once and cannot be read back.</p>
            <div class="mt-2 flex gap-2">
              <input class="input font-mono text-xs" readonly [value]="c.key" aria-label="new API key" data-testid="new-key-value" (focus)="$any($event.target).select()" />
              <button type="button" class="btn" (click)="copy(c.key)">{{ copied() ? 'Copied' : 'Copy' }}</button>
              <button type="button" class="btn" (click)="created.set(null)">Done</button>
            </div>
          </section>
        }
        <section class="card">
          <div class="mb-2 flex items-center gap-2"><h2 class="font-semibold">Keys</h2><button type="button" class="btn ml-auto" (click)="load()">Refresh</button></div>
          <div class="overflow-x-auto">
            <table class="w-full text-left text-sm" data-testid="apikey-list">
              <thead class="muted text-xs"><tr><th class="py-1 pr-3">name</th><th class="pr-3">id</th><th class="pr-3">scopes</th><th class="pr-3">created</th><th class="pr-3">expires</th><th class="pr-3">status</th><th></th></tr></thead>
              <tbody>
                @for (k of keys(); track k.id) {
                  <tr class="border-t border-slate-200 dark:border-slate-700" [attr.data-key-id]="k.id">
                    <td class="py-1 pr-3">{{ k.name }}</td>
                    <td class="pr-3 font-mono text-xs">{{ k.prefix }}…</td>
                    <td class="pr-3">{{ k.scopes.join(', ') }}</td>
                    <td class="pr-3 whitespace-nowrap">{{ time(k.created_at_ms) }}</td>
                    <td class="pr-3 whitespace-nowrap">{{ k.expires_at_ms ? time(k.expires_at_ms) : 'never' }}</td>
                    <td class="pr-3" data-testid="key-status">{{ status(k) }}</td>
                    <td class="text-right whitespace-nowrap">
                      @if (status(k) === 'active') {
                        @if (confirming() === k.id) {
                          <button type="button" class="btn btn-danger !py-0.5" (click)="revoke(k)">Confirm revoke</button>
                          <button type="button" class="btn !py-0.5" (click)="confirming.set(null)">Cancel</button>
                        } @else {
                          <button type="button" class="btn !py-0.5" (click)="confirming.set(k.id)">Revoke</button>
                        }
                      }
                    </td>
                  </tr>
                } @empty { <tr><td colspan="7" class="muted py-2">no keys</td></tr> }
              </tbody>
            </table>
          </div>
        </section>
      </div>
    </div>
  `,
})
export class ApiKeysPanel implements OnInit {
  readonly pluginId = input('apikeys');
  private api = inject(Api);
  private toasts = inject(ToastStore);
  protected readonly scopes = SCOPES;
  protected readonly expiries = EXPIRY_CHOICES;
  protected name = '';
  protected expiry = 0;
  protected readonly chosen = signal<string[]>(['read']);
  protected readonly keys = signal<ApiKeyInfo[]>([]);
  protected readonly created = signal<(ApiKeyInfo & { key: string }) | null>(null);
  protected readonly error = signal<string | null>(null);
  protected readonly busy = signal(false);
  protected readonly copied = signal(false);
  protected readonly confirming = signal<string | null>(null);
  protected time = formatTime;
  protected status = (k: ApiKeyInfo) => keyStatus(k);

  private path(cap: string) {
    return `/api/plugins/${encodeURIComponent(this.pluginId())}/${cap}`;
  }

  ngOnInit() {
    void this.load();
  }

  toggle(s: string) {
    this.chosen.update((c) => (c.includes(s) ? c.filter((x) => x !== s) : [...c, s]));
  }

  async load() {
    try {
      const r = await this.api.post<{ keys: ApiKeyInfo[] }>(this.path('list'), {});
      this.keys.set([...r.keys].sort((a, b) => b.created_at_ms - a.created_at_ms));
    } catch (e) {
      this.error.set(`Could not list keys: ${(e as Error).message}`);
    }
  }

  async create() {
    if (!this.name.trim()) return this.error.set('Give the key a name.');
    if (!this.chosen().length) return this.error.set('Choose at least one scope.');
    this.error.set(null);
    this.busy.set(true);
    try {
      const body: Record<string, unknown> = { name: this.name.trim(), scopes: this.chosen() };
      if (this.expiry > 0) body['expires_in_s'] = this.expiry;
      const k = await this.api.post<ApiKeyInfo & { key: string }>(this.path('create'), body);
      this.created.set(k);
      this.copied.set(false);
      this.name = '';
      await this.load();
    } catch (e) {
      this.error.set((e as Error).message);
    } finally {
      this.busy.set(false);
    }
  }

  async copy(text: string) {
    try {
      await navigator.clipboard.writeText(text);
      this.copied.set(true);
    } catch {
      this.toasts.show('error', 'The browser refused the clipboard; select the key and copy it by hand');
    }
  }

  async revoke(k: ApiKeyInfo) {
    this.confirming.set(null);
    try {
      await this.api.post(this.path('revoke'), { id: k.id });
      this.toasts.show('success', `Key ${k.name} revoked`);
      await this.load();
    } catch (e) {
      this.toasts.show('error', `Revoke failed: ${(e as Error).message}`);
    }
  }
}
