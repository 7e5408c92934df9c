import { JsonPipe } from '@angular/common';
import { ChangeDetectionStrategy, Component, OnInit, inject, input, signal } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { Api } from '../core/api';
import { ToastStore } from '../core/toast.store';
import { formatBytes } from '../shared/format';

export interface CandleModel {
  id?: string;
  name?: string;
  model?: string;
  path?: string;
  dtype?: string;
  size_bytes?: number;
  [k: string]: unknown;
}

export function modelName(m: CandleModel): string {
  return (m.id ?? m.name ?? m.model ?? m.path ?? '?') as string;
}

/**
 * The candle plugin's panel (backend in progress): capabilities model.list / model.load /
 * model.unload / model.quantize / model.infer via POST /api/plugins/candle/{capability}.
 */
@Component({
  selector: 'app-candle-panel',
  imports: [FormsModule, JsonPipe],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <div class="grid gap-4 lg:grid-cols-2">
      <section class="card">
        <div class="mb-2 flex items-center gap-2"><h2 class="font-semibold">Loaded models</h2><button type="button" class="btn ml-auto" (click)="list()">Refresh</button></div>
        <ul class="divide-y divide-slate-200 text-sm dark:divide-slate-700">
          @for (m of models(); track $index) {
            <li class="flex flex-wrap items-center gap-2 py-2">
              <span class="font-mono">{{ name(m) }}</span>
              <span class="muted text-xs">{{ m.dtype || '' }} {{ m.size_bytes != null ? bytes(m.size_bytes) : '' }}</span>
              <button type="button" class="btn ml-auto !py-0.5" (click)="unload(m)">Unload</button>
            </li>
          } @empty { <li class="muted py-2">none</li> }
        </ul>
        <form class="mt-3 flex gap-2" (ngSubmit)="load()">
          <label class="flex-1"><span class="sr-only">Model to load</span><input class="input font-mono" name="toLoad" [(ngModel)]="toLoad" placeholder="sentence-transformers/all-MiniLM-L6-v2" /></label>
          <button type="submit" class="btn btn-primary">Load</button>
        </form>
      </section>
      <section class="card space-y-3">
        <h2 class="font-semibold">Quantize</h2>
        <form class="flex flex-wrap gap-2" (ngSubmit)="quantize()">
          <label class="flex-1"><span class="sr-only">Model</span><input class="input font-mono" name="qModel" [(ngModel)]="qModel" placeholder="model" /></label>
          <label><span class="sr-only">Type</span><select class="input" name="qType" [(ngModel)]="qType">
            @for (t of qTypes; track t) { <option [value]="t">{{ t }}</option> }
          </select></label>
          <button class="btn btn-primary" type="submit" [disabled]="busy()">Quantize</button>
        </form>
        @if (quantized(); as q) {
          <div class="text-sm" data-testid="quantize-result">
            <p>before <strong>{{ bytes(q.before) }}</strong> → after <strong>{{ bytes(q.after) }}</strong>
              @if (q.before && q.after) { ({{ ((q.after / q.before) * 100).toFixed(0) }}%) }</p>
            <details><summary class="cursor-pointer text-xs">answer</summary><pre class="overflow-auto text-xs">{{ q.raw | json }}</pre></details>
          </div>
        }
        <h2 class="font-semibold">Try it (model.infer)</h2>
        <textarea class="input min-h-20 font-mono text-xs" [(ngModel)]="inferBody" name="inferBody"></textarea>
        <button type="button" class="btn" (click)="infer()">Run</button>
        @if (inferResult() !== null) { <pre class="max-h-64 overflow-auto rounded bg-slate-100 p-2 text-xs dark:bg-slate-800">{{ inferResult() | json }}</pre> }
      </section>
    </div>
  `,
})
export class CandlePanel implements OnInit {
  readonly pluginId = input('candle');
  private api = inject(Api);
  private toasts = inject(ToastStore);
  protected readonly models = signal<CandleModel[]>([]);
  protected readonly quantized = signal<{ before: number; after: number; raw: unknown } | null>(null);
  protected readonly inferResult = signal<unknown>(null);
  protected readonly busy = signal(false);
  protected readonly qTypes = ['q8_0', 'q4_0', 'q4k', 'f16'];
  protected toLoad = '';
  protected qModel = '';
  protected qType = 'q8_0';
  protected inferBody = '{"model": "", "input": ["hello world"]}';
  protected bytes = formatBytes;
  protected name = modelName;

  private call<T>(cap: string, body: unknown) {
    return this.api.post<T>(`/api/plugins/${encodeURIComponent(this.pluginId())}/${cap}`, body);
  }

  ngOnInit() {
    void this.list();
  }

  async list() {
    try {
      const r = await this.call<{ models?: CandleModel[] } | CandleModel[]>('model.list', {});
      this.models.set(Array.isArray(r) ? r : (r.models ?? []));
    } catch (e) {
      this.toasts.show('error', `model.list failed: ${(e as Error).message}`);
    }
  }

  async load() {
    if (!this.toLoad.trim()) return;
    try {
      await this.call('model.load', { model: this.toLoad.trim() });
      this.toLoad = '';
      await this.list();
    } catch (e) {
      this.toasts.show('error', `model.load failed: ${(e as Error).message}`);
    }
  }

  async unload(m: CandleModel) {
    try {
      await this.call('model.unload', { model: modelName(m) });
      await this.list();
    } catch (e) {
      this.toasts.show('error', `model.unload failed: ${(e as Error).message}`);
    }
  }

  async quantize() {
    this.busy.set(true);
    try {
      const r = await this.call<Record<string, number>>('model.quantize', { model: this.qModel.trim(), dtype: this.qType });
      this.quantized.set({
        before: r['before_bytes'] ?? r['size_before'] ?? 0,
        after: r['after_bytes'] ?? r['size_after'] ?? 0,
        raw: r,
      });
      await this.list();
    } catch (e) {
      this.toasts.show('error', `model.quantize failed: ${(e as Error).message}`);
    } finally {
      this.busy.set(false);
    }
  }

  async infer() {
    try {
      this.inferResult.set(await this.call('model.infer', JSON.parse(this.inferBody)));
    } catch (e) {
      this.inferResult.set({ error: (e as Error).message });
    }
  }
}
