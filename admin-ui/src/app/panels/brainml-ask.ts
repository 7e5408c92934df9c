import { HttpClient } from '@angular/common/http';
import {
  ChangeDetectionStrategy,
  Component,
  DestroyRef,
  computed,
  inject,
  signal,
} from '@angular/core';
import { FormsModule } from '@angular/forms';
import { Api } from '../core/api';
import {
  BrainmlAlert,
  BrainmlCollectionSelect,
  BrainmlLacks,
  chosenOrFirst,
} from './brainml-controls';
import {
  Citation,
  SseEventParser,
  askBody,
  capPath,
  citationRuns,
  postStreaming,
} from './brainml-ops';
import { BrainmlStore, formatMs, parseFilter } from './brainml.store';

/**
 * Ask a collection (`rag.ask {stream: true}`): the citations arrive first (`event: citations`),
 * then the answer token by token (`data: {"delta"}`), then `event: done` with the whole answer
 * and its time. The answer's [n] marks point at the numbered citations below it.
 */
@Component({
  selector: 'app-brainml-ask',
  imports: [FormsModule, BrainmlAlert, BrainmlCollectionSelect, BrainmlLacks],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <section class="card space-y-3" data-testid="bm-ask" aria-labelledby="bm-ask-h">
      <h2 id="bm-ask-h" class="font-semibold">Ask</h2>
      @if (store.lacks('rag.ask')) {
        <p bmLacks="rag.ask" data-testid="bm-ask-missing"></p>
      } @else {
        <form class="space-y-3" (ngSubmit)="ask()">
          <div class="grid grid-cols-2 gap-2 sm:grid-cols-4">
            <label
              bmCollectionSelect="bmAskCollection"
              class="col-span-2"
              [value]="collection()"
              (chosen)="choice.set($event)"
            ></label>
            <label
              ><span class="label">k (chunks)</span>
              <input
                class="input mt-1"
                type="number"
                min="1"
                max="50"
                name="bmAskK"
                [(ngModel)]="k"
            /></label>
            <label
              ><span class="label">Max tokens</span>
              <input
                class="input mt-1"
                type="number"
                min="1"
                name="bmAskMaxTokens"
                [(ngModel)]="maxTokens"
            /></label>
            <label class="col-span-2"
              ><span class="label">Chat model (blank: llmserver's default)</span>
              <input
                class="input mt-1"
                name="bmAskModel"
                [(ngModel)]="model"
                autocomplete="off"
                placeholder="default"
            /></label>
            <label class="col-span-2"
              ><span class="label">Filter on metadata (JSON, optional)</span>
              <input
                class="input mt-1 font-mono text-xs"
                name="bmAskFilter"
                [ngModel]="filterText()"
                (ngModelChange)="filterText.set($event)"
                [class.input-invalid]="filterError()"
                [attr.aria-invalid]="!!filterError()"
                placeholder='{"source": "notes.md"}'
            /></label>
          </div>
          @if (filterError(); as e) {
            <p class="text-xs text-rose-700 dark:text-rose-300" data-testid="bm-ask-filter-error">
              {{ e }}
            </p>
          }
          <div class="flex gap-2">
            <label class="flex-1"
              ><span class="sr-only">Question</span>
              <input
                class="input"
                name="bmQuestion"
                [(ngModel)]="question"
                placeholder="Ask a question about the collection"
                autocomplete="off"
            /></label>
            @if (streaming()) {
              <button type="button" class="btn" (click)="stop()">Stop</button>
            } @else {
              <button class="btn btn-primary" type="submit" [disabled]="!!filterError()">
                Ask
              </button>
            }
          </div>
        </form>
        @if (error(); as e) {
          <p bmAlert data-testid="bm-ask-error">{{ e }}</p>
        }
        @if (asked()) {
          <div
            class="min-h-12 whitespace-pre-wrap rounded bg-slate-50 p-2 text-sm dark:bg-slate-950"
            role="log"
            aria-live="polite"
            data-testid="bm-answer"
            [attr.data-streaming]="streaming()"
          >
            @for (r of runs(); track $index) {
              @if (r.cite != null) {
                <a
                  class="font-semibold text-sky-700 dark:text-sky-300"
                  [attr.href]="'#bm-cite-' + r.cite"
                  [attr.data-cite]="r.cite"
                  (click)="$event.preventDefault(); focusCite(r.cite)"
                  >{{ r.text }}</a
                >
              } @else {
                <span>{{ r.text }}</span>
              }
            } @empty {
              <span class="muted">{{ streaming() ? 'Waiting for the answer…' : '' }}</span>
            }
          </div>
          @if (took(); as t) {
            <p class="muted text-xs" data-testid="bm-ask-took">
              {{ answeredBy() ? answeredBy() + ' · ' : '' }}{{ t }}
            </p>
          }
          @if (citations().length) {
            <ol class="space-y-1 text-sm" data-testid="bm-citations">
              @for (c of citations(); track c.n) {
                <li
                  [id]="'bm-cite-' + c.n"
                  tabindex="-1"
                  class="rounded p-1 ring-1 ring-slate-200 dark:ring-slate-700"
                  [attr.data-n]="c.n"
                  [attr.data-id]="c.id"
                >
                  <span class="mr-1 font-semibold">[{{ c.n }}]</span>
                  <span class="font-mono">{{ c.id }}</span>
                  <span class="muted text-xs">
                    chunk {{ c.chunk }} · score {{ score(c.score) }}</span
                  >
                  <p class="muted mt-0.5 line-clamp-3 text-xs" data-testid="bm-cite-text">
                    {{ c.text }}
                  </p>
                </li>
              }
            </ol>
          }
        }
      }
    </section>
  `,
})
export class BrainmlAsk {
  protected readonly store = inject(BrainmlStore);
  private api = inject(Api);
  private http = inject(HttpClient);
  protected readonly choice = signal('');
  protected readonly collection = computed(() => chosenOrFirst(this.store.names(), this.choice()));
  protected question = '';
  protected k: number | null = 5;
  protected maxTokens: number | null = 256;
  protected model = '';
  protected readonly filterText = signal('');
  protected readonly filterError = computed(() => parseFilter(this.filterText()).error);
  readonly answer = signal('');
  readonly citations = signal<Citation[]>([]);
  readonly streaming = signal(false);
  readonly asked = signal(false);
  protected readonly error = signal<string | null>(null);
  protected readonly took = signal<string | null>(null);
  /** The model that answered (from the final event, when it names one). */
  protected readonly answeredBy = signal<string | null>(null);
  protected readonly runs = computed(() =>
    citationRuns(
      this.answer(),
      this.citations().map((c) => c.n),
    ),
  );
  protected score = (s: number) => (typeof s === 'number' ? s.toFixed(4) : String(s));
  private abort: AbortController | null = null;

  constructor() {
    inject(DestroyRef).onDestroy(() => this.abort?.abort());
  }

  focusCite(n: number) {
    (document.getElementById('bm-cite-' + n) as HTMLElement | null)?.focus();
  }

  stop() {
    this.abort?.abort();
  }

  async ask() {
    if (this.streaming()) return;
    const r = askBody({
      collection: this.collection(),
      question: this.question,
      k: this.k,
      model: this.model,
      max_tokens: this.maxTokens,
      filter: this.filterText(),
    });
    if ('error' in r) return this.error.set(r.error);
    this.error.set(null);
    this.answer.set('');
    this.citations.set([]);
    this.took.set(null);
    this.answeredBy.set(null);
    this.asked.set(true);
    this.streaming.set(true);
    this.abort = new AbortController();
    const parser = new SseEventParser();
    let done = false;
    const take = (events: { event: string; data: string }[]) => {
      for (const ev of events) {
        const data = parseJson(ev.data);
        if (ev.event === 'error' || (data && typeof data === 'object' && 'error' in data)) {
          const e = (data as { error?: unknown })?.error ?? data ?? ev.data;
          throw new Error(
            typeof e === 'string'
              ? e
              : String((e as { message?: string }).message ?? JSON.stringify(e)),
          );
        }
        if (ev.event === 'citations') {
          // `{citations, model}` (or the bare list).
          const list = Array.isArray(data) ? data : (data as { citations?: Citation[] })?.citations;
          this.citations.set((list ?? []) as Citation[]);
          const model = (data as { model?: unknown } | null)?.model;
          if (typeof model === 'string') this.answeredBy.set(model);
        } else if (ev.event === 'done') {
          done = true;
          const d = (data ?? {}) as { answer?: string; took_ms?: number; model?: string };
          if (typeof d.answer === 'string') this.answer.set(d.answer);
          this.took.set(`answered in ${formatMs(d.took_ms)}`);
          if (d.model) this.answeredBy.set(d.model);
        } else {
          const delta = (data as { delta?: string } | null)?.delta;
          if (typeof delta === 'string') this.answer.update((a) => a + delta);
        }
      }
    };
    try {
      const res = await postStreaming(
        this.http,
        this.api.base + capPath(this.store.pluginId(), 'rag.ask'),
        r.body,
        (t) => take(parser.push(t)),
        this.abort.signal,
      );
      take(parser.end());
      if (!done) {
        // A plugin that answered in one piece (JSON) instead of events.
        const whole = parseJson(res.text) as {
          answer?: string;
          citations?: Citation[];
          took_ms?: number;
        } | null;
        if (whole && typeof whole.answer === 'string') {
          this.answer.set(whole.answer);
          this.citations.set(whole.citations ?? []);
          this.took.set(`answered in ${formatMs(whole.took_ms)}`);
        } else if (!this.answer()) {
          throw new Error('the answer ended before it began');
        }
      }
    } catch (e) {
      if ((e as Error).name !== 'AbortError') this.error.set(`Ask failed: ${(e as Error).message}`);
      else this.took.set('stopped');
    } finally {
      this.streaming.set(false);
      this.abort = null;
    }
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}
