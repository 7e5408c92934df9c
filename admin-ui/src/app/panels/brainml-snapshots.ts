import { HttpClient } from '@angular/common/http';
import {
  ChangeDetectionStrategy,
  Component,
  OnInit,
  computed,
  inject,
  signal,
} from '@angular/core';
import { FormsModule } from '@angular/forms';
import { firstValueFrom } from 'rxjs';
import { Api, toApiError } from '../core/api';
import { ConfirmStore } from '../core/confirm.store';
import { ToastStore } from '../core/toast.store';
import { formatBytes, formatTime } from '../shared/format';
import {
  BrainmlAlert,
  BrainmlCollectionSelect,
  BrainmlLacks,
  chosenOrFirst,
} from './brainml-controls';
import {
  Snapshot,
  capPath,
  errorMessage,
  restoreBody,
  saveBlob,
  snapshotFileName,
} from './brainml-ops';
import { BrainmlStore, CollectionInfo } from './brainml.store';

/** What a verify answered, per snapshot id. */
export interface VerifyResult {
  ok: boolean;
  /** `ok: 12 files, 1.2 MiB` or the server's reason (`... is damaged: <path>: sha256 ...`). */
  text: string;
}

/**
 * Snapshots of collections: create, list (newest first), verify (ok, or damaged with the file the
 * plugin names), restore over the collection or as a new one (confirmed first), delete
 * (confirmed) and download (`snapshot.export`, a tar archive) as a file.
 */
@Component({
  selector: 'app-brainml-snapshots',
  imports: [FormsModule, BrainmlAlert, BrainmlCollectionSelect, BrainmlLacks],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <section class="card space-y-3" data-testid="bm-snapshots" aria-labelledby="bm-snap-h">
      <div class="flex items-center gap-2">
        <h2 id="bm-snap-h" class="font-semibold">Snapshots</h2>
        @if (!store.lacks('snapshot.list')) {
          <button type="button" class="btn ml-auto" (click)="load()" [disabled]="loading()">
            Refresh snapshots
          </button>
        }
      </div>
      @if (store.lacks('snapshot.create')) {
        <p bmLacks="snapshot.*" data-testid="bm-snapshots-missing"></p>
      } @else {
        <form class="flex flex-wrap items-end gap-2" (ngSubmit)="create()">
          <label
            bmCollectionSelect="bmSnapCollection"
            class="min-w-40 flex-1"
            [value]="collection()"
            (chosen)="choice.set($event)"
          ></label>
          <button class="btn btn-primary" type="submit" [disabled]="creating() || !collection()">
            {{ creating() ? 'Creating…' : 'Create snapshot' }}
          </button>
        </form>
        @if (error(); as e) {
          <p bmAlert data-testid="bm-snap-error">{{ e }}</p>
        }
        <div class="overflow-x-auto">
          <table class="w-full text-left text-sm" data-testid="bm-snapshot-list">
            <thead class="muted text-xs">
              <tr>
                <th class="py-1 pr-3">id</th>
                <th class="pr-3">collection</th>
                <th class="pr-3">created</th>
                <th class="pr-3 text-right">documents</th>
                <th class="pr-3 text-right">chunks</th>
                <th class="pr-3 text-right">size</th>
                <th class="pr-3 text-right">files</th>
                <th></th>
              </tr>
            </thead>
            <tbody>
              @for (s of snapshots(); track s.id) {
                <tr
                  class="border-t border-slate-200 align-top dark:border-slate-700"
                  [attr.data-snapshot]="s.id"
                  [attr.data-collection]="s.collection"
                >
                  <td class="py-1 pr-3 font-mono text-xs">{{ s.id }}</td>
                  <td class="pr-3 font-mono">{{ s.collection }}</td>
                  <td class="pr-3 whitespace-nowrap">{{ time(s.created_ms) }}</td>
                  <td class="pr-3 text-right">{{ s.documents }}</td>
                  <td class="pr-3 text-right">{{ s.chunks }}</td>
                  <td class="pr-3 text-right">{{ bytes(s.bytes) }}</td>
                  <td class="pr-3 text-right">{{ s.files.length }}</td>
                  <td class="text-right whitespace-nowrap">
                    <button
                      type="button"
                      class="btn !py-0.5"
                      (click)="verify(s)"
                      [attr.aria-label]="'Verify snapshot ' + s.id"
                      [disabled]="busy() === s.id"
                    >
                      Verify
                    </button>
                    <button
                      type="button"
                      class="btn !py-0.5"
                      (click)="openRestore(s)"
                      [attr.aria-label]="'Restore snapshot ' + s.id"
                    >
                      Restore
                    </button>
                    <button
                      type="button"
                      class="btn !py-0.5"
                      (click)="download(s)"
                      [attr.aria-label]="'Download snapshot ' + s.id"
                      [disabled]="busy() === s.id"
                    >
                      Download
                    </button>
                    <button
                      type="button"
                      class="btn !py-0.5"
                      (click)="remove(s)"
                      [attr.aria-label]="'Delete snapshot ' + s.id"
                    >
                      Delete
                    </button>
                  </td>
                </tr>
                @if (verified()[s.id]; as v) {
                  <tr [attr.data-verify]="s.id">
                    <td
                      colspan="8"
                      class="pb-1 text-xs"
                      [class]="
                        v.ok
                          ? 'text-emerald-700 dark:text-emerald-300'
                          : 'text-rose-700 dark:text-rose-300'
                      "
                      data-testid="bm-verify"
                      [attr.data-ok]="v.ok"
                      [attr.role]="v.ok ? 'status' : 'alert'"
                    >
                      {{ v.ok ? '✓ ' : '✗ ' }}{{ v.text }}
                    </td>
                  </tr>
                }
                @if (restoring() === s.id) {
                  <tr [attr.data-restore]="s.id">
                    <td colspan="8" class="pb-2">
                      <form
                        class="flex flex-wrap items-end gap-2 rounded bg-slate-50 p-2 dark:bg-slate-900"
                        (ngSubmit)="restore(s)"
                      >
                        <label class="min-w-48 flex-1"
                          ><span class="label">Restore as (blank: replace {{ s.collection }})</span>
                          <input
                            class="input mt-1"
                            name="bmRestoreAs"
                            [(ngModel)]="restoreAs"
                            [placeholder]="s.collection"
                            autocomplete="off"
                        /></label>
                        <button class="btn btn-primary" type="submit">Restore…</button>
                        <button type="button" class="btn" (click)="restoring.set(null)">
                          Cancel
                        </button>
                      </form>
                    </td>
                  </tr>
                }
              } @empty {
                <tr>
                  <td colspan="8" class="muted py-2">
                    {{ loading() ? 'Loading…' : 'No snapshots yet.' }}
                  </td>
                </tr>
              }
            </tbody>
          </table>
        </div>
      }
    </section>
  `,
})
export class BrainmlSnapshots implements OnInit {
  protected readonly store = inject(BrainmlStore);
  private api = inject(Api);
  private http = inject(HttpClient);
  private confirm = inject(ConfirmStore);
  private toasts = inject(ToastStore);
  protected readonly choice = signal('');
  protected readonly collection = computed(() => chosenOrFirst(this.store.names(), this.choice()));
  readonly snapshots = signal<Snapshot[]>([]);
  protected readonly loading = signal(false);
  protected readonly creating = signal(false);
  protected readonly error = signal<string | null>(null);
  readonly verified = signal<Record<string, VerifyResult>>({});
  /** The snapshot whose restore form is open. */
  protected readonly restoring = signal<string | null>(null);
  /** The snapshot a verify or download is running for. */
  protected readonly busy = signal<string | null>(null);
  protected restoreAs = '';
  protected bytes = formatBytes;
  protected time = formatTime;
  private path = (cap: string) => capPath(this.store.pluginId(), cap);

  ngOnInit() {
    if (!this.store.lacks('snapshot.list')) void this.load();
  }

  async load() {
    this.loading.set(true);
    try {
      const r = await this.api.post<{ snapshots: Snapshot[] }>(this.path('snapshot.list'), {});
      this.snapshots.set([...(r.snapshots ?? [])].sort((a, b) => b.created_ms - a.created_ms));
      this.error.set(null);
    } catch (e) {
      this.error.set(`Could not list snapshots: ${(e as Error).message}`);
    } finally {
      this.loading.set(false);
    }
  }

  async create() {
    const collection = this.collection();
    if (!collection) return;
    this.creating.set(true);
    this.error.set(null);
    try {
      const s = await this.api.post<Snapshot>(this.path('snapshot.create'), { collection });
      this.toasts.show('success', `Snapshot ${s.id} of ${collection} created`);
      await this.load();
    } catch (e) {
      this.error.set(`Could not snapshot ${collection}: ${(e as Error).message}`);
    } finally {
      this.creating.set(false);
    }
  }

  async verify(s: Snapshot) {
    this.busy.set(s.id);
    let v: VerifyResult;
    try {
      const r = await this.api.post<{ ok: boolean; files: number; bytes: number }>(
        this.path('snapshot.verify'),
        { id: s.id },
      );
      v = r.ok
        ? {
            ok: true,
            text: `ok: ${r.files} file${r.files === 1 ? '' : 's'}, ${formatBytes(r.bytes)}, every hash matches`,
          }
        : { ok: false, text: 'damaged' };
    } catch (e) {
      // 409: "snapshot <id> is damaged: <path>: sha256 <found> != manifest <expected>".
      v = { ok: false, text: (e as Error).message };
    } finally {
      this.busy.set(null);
    }
    this.verified.update((m) => ({ ...m, [s.id]: v }));
  }

  openRestore(s: Snapshot) {
    this.restoreAs = '';
    this.restoring.set(this.restoring() === s.id ? null : s.id);
  }

  async restore(s: Snapshot) {
    const r = restoreBody(s.id, this.restoreAs);
    if ('error' in r) return this.error.set(r.error);
    const as = r.body['as'] as string | undefined;
    const ok = await this.confirm.ask(
      as
        ? {
            title: `Restore snapshot ${s.id} as ${as}?`,
            message: `A new collection ${as} is made from the snapshot of ${s.collection} (${s.documents} documents, ${s.chunks} chunks). Every file is verified first.`,
            confirmLabel: 'Restore as new collection',
          }
        : {
            title: `Replace collection ${s.collection} with snapshot ${s.id}?`,
            message: `What ${s.collection} holds now is replaced by the snapshot taken ${formatTime(s.created_ms)} (${s.documents} documents, ${s.chunks} chunks). Every file is verified first; the live collection stays until the restored one is whole.`,
            confirmLabel: 'Replace collection',
          },
    );
    if (!ok) return;
    this.error.set(null);
    try {
      const c = await this.api.post<CollectionInfo>(this.path('snapshot.restore'), r.body);
      this.toasts.show(
        'success',
        `Snapshot ${s.id} restored into ${c.name} (${c.documents} documents)`,
      );
      this.restoring.set(null);
      await this.store.load();
    } catch (e) {
      this.error.set(`Could not restore ${s.id}: ${(e as Error).message}`);
    }
  }

  async remove(s: Snapshot) {
    const ok = await this.confirm.ask({
      title: `Delete snapshot ${s.id}?`,
      message: `The snapshot of ${s.collection} taken ${formatTime(s.created_ms)} and its files are removed for good; the collection itself is untouched.`,
      confirmLabel: 'Delete snapshot',
    });
    if (!ok) return;
    try {
      await this.api.post(this.path('snapshot.delete'), { id: s.id });
      this.verified.update((m) => {
        const { [s.id]: _, ...rest } = m;
        return rest;
      });
      await this.load();
    } catch (e) {
      this.error.set(`Could not delete ${s.id}: ${(e as Error).message}`);
    }
  }

  /** `snapshot.export` as a file download (`<collection>-<id>.tar`). */
  async download(s: Snapshot) {
    this.busy.set(s.id);
    try {
      const blob = await firstValueFrom(
        this.http.post(
          this.api.base + this.path('snapshot.export'),
          { id: s.id },
          { responseType: 'blob' },
        ),
      );
      saveBlob(blob, snapshotFileName(s));
    } catch (e) {
      const err = toApiError(e);
      // The error body of a blob request is a Blob: read it for the server's message.
      const body = (e as { error?: unknown }).error;
      const text = body instanceof Blob ? errorMessage(await body.text()) : err.message;
      this.error.set(`Could not download ${s.id}: ${text}`);
    } finally {
      this.busy.set(null);
    }
  }
}
