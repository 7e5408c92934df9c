import { ChangeDetectionStrategy, Component, DestroyRef, computed, effect, inject, input, signal, untracked } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { Api, ApiError, wsUrl } from '../core/api';
import { AuthStore } from '../core/auth.store';
import { DownloadJob, InstalledModel } from '../core/models';
import { ToastStore } from '../core/toast.store';
import { LiveSocket, openLiveSocket } from '../core/ws';
import { formatBytes, formatTime } from '../shared/format';
import { buildRequest, fileFraction, fileStateLabel, isJob, jobBytes, jobFinished, modelsFor, sortJobs, upsertJob } from './downloads';

interface ModelsOverview {
  models: InstalledModel[];
  downloads: DownloadJob[];
  models_dir: string;
}

const JOB_STYLES: Record<string, string> = {
  downloading: 'bg-sky-100 text-sky-800 dark:bg-sky-900/40 dark:text-sky-300',
  installing: 'bg-amber-100 text-amber-800 dark:bg-amber-900/40 dark:text-amber-300',
  installed: 'bg-emerald-100 text-emerald-800 dark:bg-emerald-900/40 dark:text-emerald-300',
  failed: 'bg-rose-100 text-rose-800 dark:bg-rose-900/40 dark:text-rose-300',
  cancelled: 'bg-slate-200 text-slate-700 dark:bg-slate-700 dark:text-slate-200',
};

/**
 * Model downloads for a plugin: POST /api/core/plugins/{id}/models/download {repo, revision?,
 * files, sha256?} -> 202 JobView; GET /api/core/models {models, downloads, models_dir};
 * WS /ws/core/plugins/{id}/models (the plugin's JobViews, then every change, progress at most
 * every 100 ms); DELETE /api/core/models/downloads/{job} cancels (202).
 */
@Component({
  selector: 'app-plugin-models',
  imports: [FormsModule],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    @if (unavailable()) {
      <p class="card muted" data-testid="models-unavailable">Model downloads are not available on this host.</p>
    } @else {
      <div class="grid gap-4 lg:grid-cols-[1fr_2fr]">
        <form class="card space-y-3 self-start" (ngSubmit)="download()" data-testid="download-form">
          <h2 class="font-semibold">Download a model</h2>
          <p class="muted text-xs">From the host's Hugging Face hub into
            <span class="font-mono" data-testid="models-dir">{{ modelsDir() || '…' }}</span>/&lt;org&gt;/&lt;name&gt;.</p>
          <label class="block"><span class="label">Repository</span>
            <input class="input mt-1 font-mono" name="repo" [(ngModel)]="repo" (ngModelChange)="formError.set(null)" placeholder="sentence-transformers/all-MiniLM-L6-v2" autocomplete="off" /></label>
          <label class="block"><span class="label">Revision</span>
            <input class="input mt-1 font-mono" name="revision" [(ngModel)]="revision" (ngModelChange)="formError.set(null)" placeholder="main" autocomplete="off" /></label>
          <label class="block"><span class="label">Files</span>
            <textarea class="input mt-1 min-h-28 font-mono text-xs" name="files" [(ngModel)]="files" (ngModelChange)="formError.set(null)"
              placeholder="config.json&#10;tokenizer.json&#10;model.safetensors 53aa51172d14…"></textarea>
            <span class="muted mt-1 block text-xs">One per line; optionally followed by the file's sha256.</span></label>
          @if (formError(); as e) { <p class="text-sm text-rose-700 dark:text-rose-300" role="alert" data-testid="download-error">{{ e }}</p> }
          <button class="btn btn-primary" type="submit" [disabled]="submitting()">{{ submitting() ? 'Starting…' : 'Download' }}</button>
        </form>
        <div class="min-w-0 space-y-4">
          <section class="card" aria-label="Downloads">
            <div class="mb-2 flex items-center gap-2">
              <h2 class="font-semibold">Downloads</h2>
              <span class="muted text-xs" data-testid="models-live">{{ live() ? 'live' : 'connecting…' }}</span>
            </div>
            @for (j of jobs(); track j.id) {
              <div class="border-t border-slate-200 py-2 first:border-0 dark:border-slate-700" [attr.data-job]="j.id" [attr.data-job-state]="j.state" [attr.data-repo]="j.repo">
                <div class="flex flex-wrap items-center gap-2 text-sm">
                  <span class="font-mono">{{ j.repo }}&#64;{{ j.revision }}</span>
                  <span class="rounded px-1.5 text-xs font-medium" [class]="jobStyle(j.state)" data-testid="job-state">{{ j.state }}</span>
                  <span class="muted text-xs">{{ totals(j) }}</span>
                  @if (!finished(j)) {
                    <button type="button" class="btn btn-danger ml-auto !py-0.5" (click)="cancel(j)" [disabled]="cancelling().has(j.id)">
                      {{ cancelling().has(j.id) ? 'Cancelling…' : 'Cancel' }}</button>
                  }
                </div>
                @if (j.state === 'failed' && j.error) { <p class="mt-1 text-xs text-rose-700 dark:text-rose-300" role="alert" data-testid="job-error">{{ j.error }}</p> }
                @if (j.state === 'installed' && j.path) { <p class="muted mt-1 text-xs">installed in <span class="font-mono">{{ j.path }}</span></p> }
                <ul class="mt-1 space-y-1">
                  @for (f of j.files; track f.name) {
                    <li class="text-xs" [attr.data-file]="f.name" [attr.data-file-state]="f.state">
                      <div class="flex justify-between gap-2"><span class="truncate font-mono">{{ f.name }}</span>
                        <span class="muted whitespace-nowrap">{{ bytes(f.bytes_done) }} / {{ bytes(f.bytes_total) }} · {{ fileState(j, f) }}
                          @if (pct(f) != null) { · {{ pct(f) }}% }</span></div>
                      <div class="h-1.5 w-full overflow-hidden rounded bg-slate-200 dark:bg-slate-700" role="progressbar"
                        [attr.aria-valuenow]="pct(f)" aria-valuemin="0" aria-valuemax="100" [attr.aria-label]="f.name">
                        <div class="h-full rounded transition-[width]" [class]="f.state === 'failed' ? 'bg-rose-500' : f.state === 'verified' ? 'bg-emerald-500' : j.state === 'cancelled' ? 'bg-slate-400' : 'bg-sky-500'"
                          [style.width.%]="pct(f) ?? (f.state === 'failed' ? 100 : 5)"></div>
                      </div>
                      @if (f.sha256) { <div class="muted truncate font-mono" title="sha256">sha256 {{ f.sha256 }}</div> }
                    </li>
                  }
                </ul>
              </div>
            } @empty { <p class="muted text-sm">No downloads.</p> }
          </section>
          <section class="card" aria-label="Installed models">
            <h2 class="mb-2 font-semibold">Installed models</h2>
            <ul class="divide-y divide-slate-200 text-sm dark:divide-slate-700" data-testid="installed-models">
              @for (m of models(); track m.repo) {
                <li class="py-2" [attr.data-model]="m.repo">
                  <span class="font-mono">{{ m.repo }}</span>
                  <span class="muted"> {{ m.revision }}{{ m.commit ? ' (' + m.commit.slice(0, 8) + ')' : '' }} · {{ bytes(m.total_bytes) }} · {{ m.files.length }} {{ m.files.length === 1 ? 'file' : 'files' }} · {{ time(m.installed_at_ms) }}</span>
                  <div class="muted text-xs">{{ m.source }}{{ m.plugin ? ' · for ' + m.plugin : '' }}</div>
                  @if (m.present === false) { <div class="text-xs text-rose-600 dark:text-rose-300">the folder or its manifest is missing</div> }
                </li>
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
  protected revision = '';
  protected files = '';
  protected readonly jobs = signal<DownloadJob[]>([]);
  protected readonly allModels = signal<InstalledModel[]>([]);
  protected readonly modelsDir = signal('');
  protected readonly unavailable = signal(false);
  protected readonly submitting = signal(false);
  protected readonly live = signal(false);
  protected readonly cancelling = signal<Set<string>>(new Set());
  protected readonly formError = signal<string | null>(null);
  protected readonly models = computed(() => modelsFor(this.allModels(), this.pluginId()));
  protected bytes = formatBytes;
  protected time = formatTime;
  protected finished = (j: DownloadJob) => jobFinished(j.state);
  protected fileState = fileStateLabel;
  protected jobStyle = (s: string) => JOB_STYLES[s] ?? JOB_STYLES['cancelled'];
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
    this.socket = null;
    try {
      const r = await this.api.get<ModelsOverview>('/api/core/models');
      this.allModels.set(r.models ?? []);
      this.modelsDir.set(r.models_dir ?? '');
      this.jobs.set(sortJobs((r.downloads ?? []).filter((j) => j.plugin === id)));
    } catch (e) {
      if ((e as ApiError).status === 404) {
        this.unavailable.set(true);
        return;
      }
      this.toasts.show('error', `Models: ${(e as Error).message}`);
    }
    if (id !== this.pluginId()) return;
    this.socket = openLiveSocket(
      () => wsUrl(this.api.base, `/ws/core/plugins/${encodeURIComponent(id)}/models`, this.auth.key()),
      (m) => {
        if (!isJob(m) || m.plugin !== id) return;
        const before = this.jobs().find((j) => j.id === m.id);
        this.jobs.update((j) => upsertJob(j, m));
        if (jobFinished(m.state)) this.doneCancelling(m.id);
        if (m.state === 'installed' && before?.state !== 'installed') void this.refreshModels();
      },
      (s) => this.live.set(s === 'open'),
    );
  }

  private async refreshModels() {
    try {
      const r = await this.api.get<ModelsOverview>('/api/core/models');
      this.allModels.set(r.models ?? []);
    } catch {
      /* keep what we have */
    }
  }

  async download() {
    const { request, error } = buildRequest(this.repo, this.revision, this.files);
    if (!request) return this.formError.set(error ?? 'invalid');
    this.formError.set(null);
    this.submitting.set(true);
    try {
      const job = await this.api.post<DownloadJob>(`/api/core/plugins/${encodeURIComponent(this.pluginId())}/models/download`, request);
      // The WebSocket usually brings it first; the answer only fills in a job not seen yet.
      if (isJob(job) && !this.jobs().some((j) => j.id === job.id)) this.jobs.update((j) => upsertJob(j, job));
    } catch (e) {
      const err = e as ApiError;
      this.formError.set(err.status ? `${err.status}: ${err.message}` : err.message);
    } finally {
      this.submitting.set(false);
    }
  }

  async cancel(job: DownloadJob) {
    this.cancelling.update((s) => new Set(s).add(job.id));
    try {
      await this.api.delete(`/api/core/models/downloads/${encodeURIComponent(job.id)}`);
    } catch (e) {
      this.doneCancelling(job.id);
      this.toasts.show('error', `Cancel failed: ${(e as Error).message}`);
    }
  }

  private doneCancelling(id: string) {
    if (!this.cancelling().has(id)) return;
    this.cancelling.update((s) => {
      const n = new Set(s);
      n.delete(id);
      return n;
    });
  }

  protected pct(f: DownloadJob['files'][number]) {
    const x = fileFraction(f);
    return x == null ? null : Math.floor(x * 100);
  }

  protected totals(j: DownloadJob) {
    const { done, total } = jobBytes(j);
    return total ? `${formatBytes(done)} of ${formatBytes(total)}` : done ? formatBytes(done) : '';
  }
}
