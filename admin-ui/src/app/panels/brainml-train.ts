import {
  ChangeDetectionStrategy,
  Component,
  DestroyRef,
  computed,
  effect,
  inject,
  signal,
  untracked,
} from '@angular/core';
import { FormsModule } from '@angular/forms';
import { Api } from '../core/api';
import { formatBytes } from '../shared/format';
import {
  BrainmlAlert,
  BrainmlCollectionSelect,
  BrainmlLacks,
  chosenOrFirst,
} from './brainml-controls';
import {
  QUANTIZATIONS,
  TRAIN_DEFAULTS,
  TrainAnswer,
  TrainForm,
  TrainStatus,
  capPath,
  describeParams,
  formatRecall,
  trainBody,
} from './brainml-ops';
import { BrainmlStore, formatMs } from './brainml.store';

/**
 * Train a collection's approximate index (`train`): the graph's parameters, then its progress
 * from polling `train.status` until it is done, with the recall it measured on its sample, the
 * build time and the bytes per vector. Below the plugin's exact threshold the answer is that the
 * collection is searched exactly: shown as such.
 */
@Component({
  selector: 'app-brainml-train',
  imports: [FormsModule, BrainmlAlert, BrainmlCollectionSelect, BrainmlLacks],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <section class="card space-y-3" data-testid="bm-train" aria-labelledby="bm-train-h">
      <h2 id="bm-train-h" class="font-semibold">Train an index</h2>
      @if (store.lacks('train')) {
        <p
          bmLacks="train"
          note="every query is answered by an exact search"
          data-testid="bm-train-missing"
        ></p>
      } @else {
        <form class="space-y-3" (ngSubmit)="train()">
          <label
            bmCollectionSelect="bmTrainCollection"
            class="block"
            [value]="collection()"
            (chosen)="choice.set($event)"
          ></label>
          <div class="grid grid-cols-2 gap-2 sm:grid-cols-3">
            <label
              ><span class="label">m (links per node)</span>
              <input
                class="input mt-1"
                type="number"
                min="2"
                max="128"
                name="bmM"
                [(ngModel)]="form.m"
            /></label>
            <label
              ><span class="label">ef_construction</span>
              <input
                class="input mt-1"
                type="number"
                min="1"
                name="bmEfConstruction"
                [(ngModel)]="form.ef_construction"
            /></label>
            <label
              ><span class="label">ef_search (blank: auto)</span>
              <input
                class="input mt-1"
                type="number"
                min="1"
                name="bmEfSearch"
                [(ngModel)]="form.ef_search"
                placeholder="auto"
            /></label>
            <label
              ><span class="label">Target recall</span>
              <input
                class="input mt-1"
                type="number"
                min="0.01"
                max="1"
                step="0.01"
                name="bmTargetRecall"
                [(ngModel)]="form.target_recall"
            /></label>
            <label
              ><span class="label">Quantization</span>
              <select class="input mt-1" name="bmQuantization" [(ngModel)]="form.quantization">
                @for (q of quantizations; track q) {
                  <option [value]="q">{{ q === 'none' ? 'none (f32)' : q }}</option>
                }
              </select>
            </label>
            <label class="flex items-end gap-1 pb-2 text-sm"
              ><input type="checkbox" name="bmForce" [(ngModel)]="form.force" />build a graph even
              below the exact threshold</label
            >
          </div>
          <button class="btn btn-primary" type="submit" [disabled]="running() || starting()">
            {{ running() ? 'Training…' : 'Train' }}
          </button>
        </form>
        @if (error(); as e) {
          <p bmAlert data-testid="bm-train-error">{{ e }}</p>
        }
        @if (exact(); as reason) {
          <p class="text-sm" role="status" data-testid="bm-train-exact">
            <span class="font-semibold">Exact search</span> (recall 1.0): {{ reason }}
          </p>
        }
        @if (status(); as s) {
          <div
            class="space-y-2 text-sm"
            data-testid="bm-train-status"
            [attr.data-state]="s.state"
            aria-live="polite"
          >
            <div class="flex items-center gap-2">
              <span class="font-mono">{{ s.collection }}</span>
              <span data-testid="bm-train-state">{{
                s.state === 'none' ? 'no index trained: queries are searched exactly' : s.state
              }}</span>
              @if (s.state === 'running') {
                <progress
                  class="w-40"
                  max="1"
                  [value]="s.progress"
                  aria-label="training progress"
                ></progress>
                <span class="muted text-xs">{{ (s.progress * 100).toFixed(0) }} %</span>
              }
            </div>
            @if (s.state !== 'none') {
              <dl class="grid grid-cols-[auto_1fr] gap-x-3 gap-y-0.5">
                <dt class="muted">index</dt>
                <dd data-testid="bm-train-index">{{ s.index }}</dd>
                <dt class="muted">parameters</dt>
                <dd class="font-mono text-xs">{{ params(s.params) }}</dd>
                <dt class="muted">recall@10</dt>
                <dd data-testid="bm-train-recall">
                  {{ recall(s.recall_at_10) }}
                  @if (s.sample) {
                    <span class="muted text-xs"> on a sample of {{ s.sample }} queries</span>
                  }
                </dd>
                <dt class="muted">build time</dt>
                <dd data-testid="bm-train-build">{{ ms(s.build_ms) }}</dd>
                <dt class="muted">bytes per vector</dt>
                <dd data-testid="bm-train-bpv">{{ s.bytes_per_vector ?? '–' }}</dd>
                <dt class="muted">index size</dt>
                <dd>{{ bytes(s.index_bytes) }}</dd>
              </dl>
            }
            @if (s.error) {
              <p class="text-rose-700 dark:text-rose-300" role="alert">{{ s.error }}</p>
            }
          </div>
        }
      }
    </section>
  `,
})
export class BrainmlTrain {
  protected readonly store = inject(BrainmlStore);
  private api = inject(Api);
  /** How often `train.status` is asked while a job runs. */
  pollMs = 1000;
  protected readonly quantizations = QUANTIZATIONS;
  protected form: TrainForm = { ...TRAIN_DEFAULTS };
  protected readonly choice = signal('');
  protected readonly collection = computed(() => chosenOrFirst(this.store.names(), this.choice()));
  protected readonly status = signal<TrainStatus | null>(null);
  protected readonly exact = signal<string | null>(null);
  protected readonly error = signal<string | null>(null);
  protected readonly starting = signal(false);
  protected readonly running = computed(() => this.status()?.state === 'running');
  protected params = describeParams;
  protected recall = formatRecall;
  protected ms = formatMs;
  protected bytes = formatBytes;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private destroyed = false;
  /** Counts the collections asked about: an answer about an earlier choice is dropped. */
  private asked = 0;

  constructor() {
    inject(DestroyRef).onDestroy(() => {
      this.destroyed = true;
      this.stopPolling();
    });
    // The chosen collection's current state (a job may already run: then it is followed).
    effect(() => {
      const c = this.collection();
      if (c && this.store.has('train.status')) untracked(() => void this.refresh(c));
    });
  }

  private stopPolling() {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Asks `train.status` once, and again after `pollMs` while the job runs. */
  async refresh(collection = this.collection()) {
    this.stopPolling();
    const ticket = ++this.asked;
    try {
      const s = await this.api.post<TrainStatus>(capPath(this.store.pluginId(), 'train.status'), {
        collection,
      });
      if (ticket !== this.asked || this.destroyed) return;
      this.status.set(s);
      if (s.state === 'running') {
        this.timer = setTimeout(() => void this.refresh(collection), this.pollMs);
      } else if (s.state === 'done') {
        void this.store.load();
      }
    } catch (e) {
      if (ticket !== this.asked || this.destroyed) return;
      this.error.set(`Could not read the training status: ${(e as Error).message}`);
    }
  }

  async train() {
    const collection = this.collection();
    const r = trainBody(collection, this.form);
    if ('error' in r) return this.error.set(r.error);
    this.error.set(null);
    this.exact.set(null);
    this.starting.set(true);
    try {
      const a = await this.api.post<TrainAnswer>(capPath(this.store.pluginId(), 'train'), r.body);
      if ('reason' in a) {
        this.exact.set(a.reason);
        this.status.set(null);
        void this.store.load();
      } else {
        this.status.set(a.job);
        if (a.job.state === 'running') {
          this.timer = setTimeout(() => void this.refresh(collection), this.pollMs);
        } else void this.refresh(collection);
      }
    } catch (e) {
      this.error.set((e as Error).message);
    } finally {
      this.starting.set(false);
    }
  }
}
