import { ChangeDetectionStrategy, Component, OnInit, computed, inject, input, signal } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { Api, ApiError } from '../core/api';
import { InstalledModel } from '../core/models';
import { formatBytes, formatTime } from '../shared/format';

/** Model info, as `model.load` answers and `model.list` lists (plugins/candle/README.md). */
export interface CandleModel {
  name: string;
  kind: 'embedding' | 'chat' | string;
  /** Relative to the models folder. */
  path: string;
  /** The weights file on the host. */
  file: string;
  file_size: number;
  loaded_at_ms: number;
  /** How many names share these weights. */
  shared_by: number;
  details: {
    architecture?: string;
    weights?: string;
    compute?: string;
    dimensions?: number;
    max_tokens?: number;
    layers?: number;
    context_length?: number;
    [k: string]: unknown;
  };
}

/** `model.quantize`'s answer. */
export interface QuantizeResult {
  path: string;
  file: string;
  dtype: string;
  size_before: number;
  size_after: number;
  ratio: number;
  quantized_tensors?: number;
  f32_tensors?: number;
  agreement: { sentences: number; min_cosine: number; mean_cosine: number };
}

export const QUANT_DTYPES = ['q8_0', 'q4_0', 'q4_1', 'q5_0', 'f16'] as const;

/** The `model.load` body: `{path, name?, kind?}` (name defaults to the path on the plugin's side). */
export function loadBody(path: string, name: string, kind: string): { path: string; name?: string; kind?: string } {
  const body: { path: string; name?: string; kind?: string } = { path: path.trim() };
  if (name.trim()) body.name = name.trim();
  if (kind === 'embedding' || kind === 'chat') body.kind = kind;
  return body;
}

/** The `model.quantize` body from the source picker's value (`name:<loaded>` or `path:<folder>`). */
export function quantizeBody(source: string, dtype: string): { name?: string; path?: string; dtype: string } | null {
  const i = source.indexOf(':');
  if (i < 0) return null;
  const [how, what] = [source.slice(0, i), source.slice(i + 1)];
  if (!what) return null;
  if (how === 'name') return { name: what, dtype };
  if (how === 'path') return { path: what, dtype };
  return null;
}

/** "−73 %" style size change. */
export function sizeChange(r: Pick<QuantizeResult, 'size_before' | 'size_after'>): string {
  if (!r.size_before) return '–';
  const pct = (r.size_after / r.size_before - 1) * 100;
  return `${pct > 0 ? '+' : '−'}${Math.abs(pct).toFixed(1)} %`;
}

/** A short description of a model's weights: "bert · f32 · 384 dims" / "llama · q4_1 (runs q8_0)". */
export function describeModel(m: CandleModel): string {
  const d = m.details ?? {};
  const parts = [d.architecture, d.weights ? (d.compute && d.compute !== d.weights ? `${d.weights} (runs ${d.compute})` : d.weights) : null];
  if (d.dimensions) parts.push(`${d.dimensions} dims`);
  if (d.context_length) parts.push(`ctx ${d.context_length}`);
  return parts.filter(Boolean).join(' · ');
}

/**
 * The candle plugin's panel: loaded models (model.list), load (model.load {path, name?, kind?}),
 * unload (model.unload {name}), quantize (model.quantize {name | path, dtype}: sizes before and
 * after, agreement with the f32 model), and a model.infer playground; all via
 * POST /api/plugins/{id}/{capability}.
 */
@Component({
  selector: 'app-candle-panel',
  imports: [FormsModule],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <div class="grid gap-4 lg:grid-cols-2">
      <section class="card min-w-0" aria-label="Loaded models">
        <div class="mb-2 flex items-center gap-2">
          <h2 class="font-semibold">Loaded models</h2>
          <button type="button" class="btn ml-auto !py-0.5" (click)="list()">Refresh</button>
        </div>
        <ul class="divide-y divide-slate-200 text-sm dark:divide-slate-700" data-testid="candle-models">
          @for (m of models(); track m.name) {
            <li class="flex flex-wrap items-start gap-2 py-2" [attr.data-model]="m.name" [attr.data-kind]="m.kind">
              <div class="min-w-0 flex-1">
                <div><span class="font-mono break-all">{{ m.name }}</span>
                  <span class="ml-1 rounded bg-slate-100 px-1.5 text-xs dark:bg-slate-800">{{ m.kind }}</span></div>
                <div class="muted text-xs">{{ describe(m) }} · {{ bytes(m.file_size) }}{{ m.shared_by > 1 ? ' · weights shared by ' + m.shared_by + ' names' : '' }}</div>
                <div class="muted truncate text-xs" [title]="m.file">{{ m.path }} · loaded {{ time(m.loaded_at_ms) }}</div>
              </div>
              <button type="button" class="btn !py-0.5" (click)="unload(m)" [disabled]="pending().has(m.name)">{{ pending().has(m.name) ? 'Unloading…' : 'Unload' }}</button>
            </li>
          } @empty { <li class="muted py-2">none</li> }
        </ul>
        @if (listError(); as e) { <p class="mt-2 text-sm text-rose-700 dark:text-rose-300" role="alert">{{ e }}</p> }

        <form class="mt-4 space-y-2 border-t border-slate-200 pt-3 dark:border-slate-700" (ngSubmit)="load()" data-testid="candle-load">
          <h3 class="text-sm font-semibold">Load a model</h3>
          <label class="block"><span class="label">Path <span class="muted font-normal">(in the models folder: a model folder or a file)</span></span>
            <input class="input mt-1 font-mono" name="loadPath" [(ngModel)]="loadPath" list="candle-installed" placeholder="sentence-transformers/all-MiniLM-L6-v2" autocomplete="off" /></label>
          <datalist id="candle-installed">@for (p of installedPaths(); track p) { <option [value]="p"></option> }</datalist>
          <div class="flex flex-wrap gap-2">
            <label class="min-w-40 flex-1"><span class="label">Name <span class="muted font-normal">(default: the path)</span></span>
              <input class="input mt-1 font-mono" name="loadName" [(ngModel)]="loadName" autocomplete="off" /></label>
            <label><span class="label">Kind</span>
              <select class="input mt-1" name="loadKind" [(ngModel)]="loadKind">
                <option value="">detect</option><option value="embedding">embedding</option><option value="chat">chat</option>
              </select></label>
          </div>
          @if (loadError(); as e) { <p class="text-sm text-rose-700 dark:text-rose-300" role="alert" data-testid="load-error">{{ e }}</p> }
          <button type="submit" class="btn btn-primary" [disabled]="loading()">{{ loading() ? 'Loading…' : 'Load' }}</button>
        </form>
      </section>

      <section class="card min-w-0 space-y-3" aria-label="Quantize">
        <h2 class="font-semibold">Quantize</h2>
        <p class="muted text-xs">Writes <span class="font-mono">model-&lt;dtype&gt;.gguf</span> beside the model's safetensors and compares its embeddings with the f32 model's.</p>
        <form class="flex flex-wrap items-end gap-2" (ngSubmit)="quantize()" data-testid="candle-quantize">
          <label class="min-w-48 flex-1"><span class="label">Model</span>
            <select class="input mt-1 font-mono" name="qSource" [(ngModel)]="qSource">
              <option value="">choose…</option>
              @if (embeddingModels().length) {
                <optgroup label="Loaded">@for (m of embeddingModels(); track m.name) { <option [value]="'name:' + m.name">{{ m.name }}</option> }</optgroup>
              }
              @if (installedPaths().length) {
                <optgroup label="Model folders">@for (p of installedPaths(); track p) { <option [value]="'path:' + p">{{ p }}</option> }</optgroup>
              }
            </select></label>
          <label><span class="label">Type</span>
            <select class="input mt-1" name="qType" [(ngModel)]="qType">@for (t of qTypes; track t) { <option [value]="t">{{ t }}</option> }</select></label>
          <button class="btn btn-primary" type="submit" [disabled]="quantizing()">{{ quantizing() ? 'Quantizing…' : 'Quantize' }}</button>
        </form>
        @if (quantizeError(); as e) { <p class="text-sm text-rose-700 dark:text-rose-300" role="alert" data-testid="quantize-error">{{ e }}</p> }
        @if (quantized(); as q) {
          <div class="space-y-2 rounded-lg bg-slate-50 p-3 text-sm dark:bg-slate-950" data-testid="quantize-result">
            <p class="font-mono text-xs break-all">{{ q.path }}</p>
            <dl class="grid grid-cols-[auto_1fr] gap-x-4 gap-y-1">
              <dt class="muted">before</dt><dd data-testid="size-before">{{ bytes(q.size_before) }}</dd>
              <dt class="muted">after ({{ q.dtype }})</dt><dd data-testid="size-after">{{ bytes(q.size_after) }} <span class="muted">({{ change(q) }}, ratio {{ q.ratio.toFixed(3) }})</span></dd>
              @if (q.quantized_tensors != null) { <dt class="muted">tensors</dt><dd>{{ q.quantized_tensors }} quantized, {{ q.f32_tensors }} kept f32</dd> }
              <dt class="muted">agreement</dt>
              <dd data-testid="agreement">cosine vs f32 on {{ q.agreement.sentences }} sentences: min {{ q.agreement.min_cosine.toFixed(4) }}, mean {{ q.agreement.mean_cosine.toFixed(4) }}</dd>
            </dl>
            <div class="h-2 w-full overflow-hidden rounded bg-slate-200 dark:bg-slate-700" aria-hidden="true">
              <div class="h-full bg-emerald-500" [style.width.%]="Math.min(100, q.ratio * 100)"></div>
            </div>
            <button type="button" class="btn !py-0.5" (click)="loadQuantized(q)">Load it</button>
          </div>
        }

        <h2 class="border-t border-slate-200 pt-3 font-semibold dark:border-slate-700">Try it (model.infer)</h2>
        <textarea class="input min-h-20 font-mono text-xs" [(ngModel)]="inferBody" name="inferBody" aria-label="model.infer body"></textarea>
        <button type="button" class="btn" (click)="infer()" [disabled]="inferring()">{{ inferring() ? 'Running…' : 'Run' }}</button>
        @if (inferResult(); as r) { <pre class="max-h-64 overflow-auto rounded bg-slate-100 p-2 text-xs dark:bg-slate-800" data-testid="infer-result">{{ r }}</pre> }
      </section>
    </div>
  `,
})
export class CandlePanel implements OnInit {
  readonly pluginId = input('candle');
  private api = inject(Api);
  protected readonly models = signal<CandleModel[]>([]);
  protected readonly installed = signal<InstalledModel[]>([]);
  protected readonly installedPaths = computed(() => this.installed().filter((m) => m.present !== false).map((m) => m.path || m.repo).sort());
  protected readonly embeddingModels = computed(() => this.models().filter((m) => m.kind === 'embedding'));
  protected readonly pending = signal<Set<string>>(new Set());
  protected readonly listError = signal<string | null>(null);
  protected readonly loadError = signal<string | null>(null);
  protected readonly loading = signal(false);
  protected readonly quantized = signal<QuantizeResult | null>(null);
  protected readonly quantizeError = signal<string | null>(null);
  protected readonly quantizing = signal(false);
  protected readonly inferResult = signal<string | null>(null);
  protected readonly inferring = signal(false);
  protected readonly qTypes = QUANT_DTYPES;
  protected loadPath = '';
  protected loadName = '';
  protected loadKind = '';
  protected qSource = '';
  protected qType = 'q8_0';
  protected inferBody = '{"model": "", "input": ["hello world"]}';
  protected bytes = formatBytes;
  protected time = formatTime;
  protected describe = describeModel;
  protected change = sizeChange;
  protected readonly Math = Math;

  private call<T>(cap: string, body: unknown) {
    return this.api.post<T>(`/api/plugins/${encodeURIComponent(this.pluginId())}/${cap}`, body);
  }

  ngOnInit() {
    void this.list();
    void this.api
      .get<{ models?: InstalledModel[] }>('/api/core/models')
      .then((r) => this.installed.set(r.models ?? []))
      .catch(() => {
        /* the path box still takes any path */
      });
  }

  async list() {
    try {
      const r = await this.call<{ models: CandleModel[] }>('model.list', {});
      this.models.set(r.models ?? []);
      this.listError.set(null);
      const first = this.models()[0];
      if (first && /"model": ""/.test(this.inferBody)) {
        this.inferBody = first.kind === 'chat'
          ? JSON.stringify({ model: first.name, messages: [{ role: 'user', content: 'Hello!' }], max_tokens: 32 })
          : JSON.stringify({ model: first.name, input: ['hello world'] });
      }
    } catch (e) {
      this.listError.set(`model.list failed: ${message(e)}`);
    }
  }

  async load() {
    if (!this.loadPath.trim()) return this.loadError.set('Name a path in the models folder.');
    await this.doLoad(loadBody(this.loadPath, this.loadName, this.loadKind));
  }

  loadQuantized(q: QuantizeResult) {
    return this.doLoad({ path: q.path, kind: 'embedding' });
  }

  private async doLoad(body: ReturnType<typeof loadBody>) {
    this.loadError.set(null);
    this.loading.set(true);
    try {
      await this.call<CandleModel>('model.load', body);
      this.loadPath = '';
      this.loadName = '';
      await this.list();
    } catch (e) {
      this.loadError.set(`model.load failed: ${message(e)}`);
    } finally {
      this.loading.set(false);
    }
  }

  async unload(m: CandleModel) {
    this.pending.update((s) => new Set(s).add(m.name));
    try {
      await this.call('model.unload', { name: m.name });
      await this.list();
    } catch (e) {
      this.listError.set(`model.unload failed: ${message(e)}`);
    } finally {
      this.pending.update((s) => {
        const n = new Set(s);
        n.delete(m.name);
        return n;
      });
    }
  }

  async quantize() {
    const body = quantizeBody(this.qSource, this.qType);
    if (!body) return this.quantizeError.set('Choose a loaded embedding model or a model folder.');
    this.quantizeError.set(null);
    this.quantized.set(null);
    this.quantizing.set(true);
    try {
      this.quantized.set(await this.call<QuantizeResult>('model.quantize', body));
    } catch (e) {
      this.quantizeError.set(`model.quantize failed: ${message(e)}`);
    } finally {
      this.quantizing.set(false);
    }
  }

  async infer() {
    this.inferring.set(true);
    try {
      const r = await this.call('model.infer', JSON.parse(this.inferBody));
      this.inferResult.set(JSON.stringify(r, null, 1));
    } catch (e) {
      this.inferResult.set(`error: ${message(e)}`);
    } finally {
      this.inferring.set(false);
    }
  }
}

function message(e: unknown): string {
  const err = e as ApiError;
  return err.status ? `${err.status} ${err.message}` : (err?.message ?? String(e));
}
