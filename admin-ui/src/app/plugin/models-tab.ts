import { ChangeDetectionStrategy, Component, DestroyRef, computed, effect, inject, input, signal, untracked } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { Api, ApiError, wsUrl } from '../core/api';
import { AuthStore } from '../core/auth.store';
import { DownloadJob, InstalledModel } from '../core/models';
import { ToastStore } from '../core/toast.store';
import { LiveSocket, openLiveSocket } from '../core/ws';
import { formatBytes, formatTime } from '../shared/format';

/** Parses the files box: one per line or comma separated. */
export function parseFiles(text: string): string[] {
  return text
    .split(/[\n,]/)
    .map((s) => s.trim())
    .filter(Boolean);
}

/** Updates the job list with a job from the WebSocket (newest first). */
export function upsertJob(jobs: DownloadJob[], job: DownloadJob): DownloadJob[] {
  const i = jobs.findIndex((j) => j.id === job.id);
  if (i < 0) return [job, ...jobs];
  const next = jobs.slice();
  next[i] = job;
  return next;
}

export function fileFraction(f: { bytes_done: number; bytes_total: number | null; state: string }): number | null {
  if (f.state === 'verified') return 1;
  if (!f.bytes_total) return null;
  return Math.min(1, f.bytes_done / f.bytes_total);
}

/**
 * Model downloads for a plugin. Backend (in progress): POST /api/core/plugins/{id}/models/download
 * {repo, revision, files}; GET /api/core/models; WS /ws/core/plugins/{id}/models (JobView
 * messages); DELETE /api/core/models/downloads/{job}.
 */
@Component({
  selector: 'app-plugin-models',
  imports: [FormsModule],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    @if (unavailable()) {
      <p class="card muted" data-testid="models-unavailable">Model downloads are not available on this host yet.</p>
    } @else {
      <div class="grid gap-4 lg:grid-cols-[1fr_2fr]">
        <form class="card space-y-3" (ngSubmit)="download()">
          <h2 class="font-semibold">Download a model</h2>
          <label class="block"><span class="label">Repository</span>
            <input class="input mt-1 font-mono" name="repo" [(ngModel)]="repo" placeholder="sentence-transformers/all-MiniLM-L6-v2" required /></label>
          <label class="block"><span class="label">Revision</span>
            <input class="input mt-1 font-mono" name="revision" [(ngModel)]="revision" placeholder="main" /></label>
          <label class="block"><span class="label">Files (one per line)</span>
            <textarea class="input mt-1 min-h-24 font-mono text-xs" name="files" [(ngModel)]="files" placeholder="config.json&#10;model.safetensors&#10;tokenizer.json"></textarea></label>
          @if (formError(); as e) { <p class="text-sm text-rose-700 dark:text-rose-300" role="alert">{{ e }}</p> }
          <button class="btn btn-primary" type="submit" [disabled]="submitting()">{{ submitting() ? 'Starting…' : 'Download' }}</button>
        </form>
        <div class="space-y-4">
          <section class="card">
            <h2 class="mb-2 font-semibold">Downloads</h2>
            @for (j of jobs(); track j.id) {
              <div class="border-t border-slate-200 py-2 first:border-0 dark:border-slate-700" [attr.data-job]="j.id">
                <div class="flex flex-wrap items-center gap-2 text-sm">
                  <span class="font-mono">{{ j.repo }}&#64;{{ j.revision }}</span>
                  <span class="rounded bg-slate-100 px-1.5 text-xs dark:bg-slate-800">{{ j.state }}</span>
                  @if (j.state === 'downloading' || j.state === 'installing') {
                    <button type="button" class="btn btn-danger ml-auto !py-0.5" (click)="cancel(j)">Cancel</button>
                  }
                </div>
                @if (j.error) { <p class="text-xs text-rose-700 dark:text-rose-300">{{ j.error }}</p> }
                <ul class="mt-1 space-y-1">
                  @for (f of j.files; track f.name) {
                    <li class="text-xs">
                      <div class="flex justify-between gap-2"><span class="truncate font-mono">{{ f.name }}</span><span class="muted whitespace-nowrap">{{ bytes(f.bytes_done) }} / {{ bytes(f.bytes_total) }} · {{ f.state }}</span></div>
                      <div class="h-1.5 w-full overflow-hidden rounded bg-slate-200 dark:bg-slate-700" role="progressbar" [attr.aria-valuenow]="pct(f)" aria-valuemin="0" aria-valuemax="100" [attr.aria-label]="f.name">
                        <div class="h-full rounded" [class]="f.state === 'failed' ? 'bg-rose-500' : f.state === 'verified' ? 'bg-emerald-500' : 'bg-sky-500'" [style.width.%]="pct(f) ?? 5"></div>
                      </div>
                    </li>
                  }
                </ul>
              </div>
            } @empty { <p class="muted text-sm">No downloads.</p> }
          </section>
          <section class="card">
            <h2 class="mb-2 font-semibold">Installed models</h2>
            <ul class="divide-y divide-slate-200 text-sm dark:divide-slate-700">
              @for (m of models(); track m.repo) {
                <li class="py-2"><span class="font-mono">{{ m.repo }}</span> <span class="muted">{{ m.revision }} · {{ bytes(m.total_bytes) }} · {{ m.files.length }} files · {{ time(m.installed_at_ms) }}</span>
                  @if (m.present === false) { <span class="text-rose-600"> (folder missing)</span> }</li>
              } @empty { <li class="muted py-2">none</li> }
            </ul>
          </section>
        </div>
      </div>
    }
  `,
})
export class PluginModels {
  readonly pluginId = input.required<string>();
  private api = inject(Api);
  private auth = inject(AuthStore);
  private toasts = inject(ToastStore);
  protected repo = '';
  protected revision = 'main';
  protected files = '';
  protected readonly jobs = signal<DownloadJob[]>([]);
  protected readonly allModels = signal<InstalledModel[]>([]);
  protected readonly unavailable = signal(false);
  protected readonly submitting = signal(false);
  protected readonly formError = signal<string | null>(null);
  protected readonly models = computed(() => this.allModels().filter((m) => !m.plugin || m.plugin === this.pluginId()));
  protected bytes = formatBytes;
  protected time = formatTime;
  private socket: LiveSocket | null = null;

  constructor() {
    effect(() => {
      const id = this.pluginId();
      untracked(() => void this.open(id));
    });
    inject(DestroyRef).onDestroy(() => this.socket?.close());
  }

  private async open(id: string) {
    this.socket?.close();
    try {
      const r = await this.api.get<{ models?: InstalledModel[]; downloads?: DownloadJob[]; jobs?: DownloadJob[] }>('/api/core/models');
      this.allModels.set(r.models ?? []);
      this.jobs.set((r.downloads ?? r.jobs ?? []).filter((j) => j.plugin === id));
    } catch (e) {
      if ((e as ApiError).status === 404) {
        this.unavailable.set(true);
        return;
      }
    }
    this.socket = openLiveSocket(
      () => wsUrl(this.api.base, `/ws/core/plugins/${encodeURIComponent(id)}/models`, this.auth.key()),
      (m) => {
        const job = m as DownloadJob;
        if (!job || typeof job.id !== 'string' || !Array.isArray(job.files)) return;
        this.jobs.update((j) => upsertJob(j, job));
        if (job.state === 'installed') void this.refreshModels();
      },
    );
  }

  private async refreshModels() {
    try {
      const r = await this.api.get<{ models?: InstalledModel[] }>('/api/core/models');
      this.allModels.set(r.models ?? []);
    } catch {
      /* keep */
    }
  }

  async download() {
    const files = parseFiles(this.files);
    if (!this.repo.trim()) return this.formError.set('Name a repository.');
    if (!files.length) return this.formError.set('Name at least one file.');
    this.formError.set(null);
    this.submitting.set(true);
    try {
      const job = await this.api.post<DownloadJob>(`/api/core/plugins/${encodeURIComponent(this.pluginId())}/models/download`, {
        repo: this.repo.trim(),
        revision: this.revision.trim() || undefined,
        files,
      });
      if (job && typeof job.id === 'string') this.jobs.update((j) => upsertJob(j, job));
    } catch (e) {
      this.formError.set((e as Error).message);
    } finally {
      this.submitting.set(false);
    }
  }

  async cancel(job: DownloadJob) {
    try {
      await this.api.delete(`/api/core/models/downloads/${encodeURIComponent(job.id)}`);
    } catch (e) {
      this.toasts.show('error', `Cancel failed: ${(e as Error).message}`);
    }
  }

  protected pct(f: DownloadJob['files'][number]) {
    const x = fileFraction(f);
    return x == null ? null : Math.round(x * 100);
  }
}
