import {
  ChangeDetectionStrategy,
  Component,
  OnInit,
  computed,
  effect,
  inject,
  input,
  signal,
} from '@angular/core';
import { FormsModule } from '@angular/forms';
import { ConfirmStore } from '../core/confirm.store';
import { ToastStore } from '../core/toast.store';
import { formatBytes, formatTime } from '../shared/format';
import { BrainmlAsk } from './brainml-ask';
import { BrainmlAlert, BrainmlCollectionSelect, chosenOrFirst } from './brainml-controls';
import { describeParams, formatRecall } from './brainml-ops';
import { BrainmlSnapshots } from './brainml-snapshots';
import { BrainmlTrain } from './brainml-train';
import {
  BrainmlStore,
  CollectionRow,
  DEFAULT_MODEL,
  DISTANCES,
  DocSource,
  Distance,
  MODES,
  Mode,
  TEXT_FILE_RE,
  fileSource,
  formatMs,
  highlight,
  parseFilter,
} from './brainml.store';

/**
 * The brainml plugin's panel: its collections with their stats (index kind and measured recall
 * included), create and delete, indexing (pasted text, or dropped .txt/.md files: one document
 * each, progress per file, embedded chunks when `index` streams), and a query playground whose
 * hits show the query's words highlighted. Below, once the manifest is read: train, snapshots and
 * ask (brainml-train.ts, brainml-snapshots.ts, brainml-ask.ts), which share this panel's store.
 */
@Component({
  selector: 'app-brainml-panel',
  imports: [
    FormsModule,
    BrainmlAlert,
    BrainmlCollectionSelect,
    BrainmlTrain,
    BrainmlSnapshots,
    BrainmlAsk,
  ],
  providers: [BrainmlStore],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <div class="space-y-4">
      <section class="card" aria-labelledby="bm-collections-h">
        <div class="mb-2 flex items-center gap-2">
          <h2 id="bm-collections-h" class="font-semibold">Collections</h2>
          <button
            type="button"
            class="btn ml-auto"
            (click)="store.load()"
            [disabled]="store.loading()"
          >
            Refresh
          </button>
        </div>
        @if (store.listError(); as e) {
          <p bmAlert>{{ e }}</p>
        }
        @if (store.statsError(); as e) {
          <p class="text-sm text-amber-700 dark:text-amber-300" role="status">{{ e }}</p>
        }
        <div class="overflow-x-auto">
          <table class="w-full text-left text-sm" data-testid="bm-collections">
            <thead class="muted text-xs">
              <tr>
                <th class="py-1 pr-3">name</th>
                <th class="pr-3">model / dim</th>
                <th class="pr-3">distance</th>
                <th class="pr-3 text-right">documents</th>
                <th class="pr-3 text-right">chunks</th>
                <th class="pr-3 text-right">on disk</th>
                <th class="pr-3 text-right">in memory</th>
                <th class="pr-3">index</th>
                <th class="pr-3 text-right">queries</th>
                <th class="pr-3 text-right">p50 / p99</th>
                <th></th>
              </tr>
            </thead>
            <tbody>
              @for (c of store.collections(); track c.name) {
                <tr
                  class="border-t border-slate-200 dark:border-slate-700"
                  [attr.data-collection]="c.name"
                >
                  <td class="py-1 pr-3 font-mono">{{ c.name }}</td>
                  <td class="pr-3">{{ c.model ?? 'vectors' }} · {{ c.dim }}</td>
                  <td class="pr-3">{{ c.distance }}</td>
                  <td class="pr-3 text-right" data-testid="bm-documents">
                    {{ c.stats?.documents ?? c.documents }}
                  </td>
                  <td class="pr-3 text-right" data-testid="bm-chunks">
                    {{ c.stats?.chunks ?? c.chunks }}
                  </td>
                  <td class="pr-3 text-right">{{ bytes(c.stats?.bytes_on_disk) }}</td>
                  <td class="pr-3 text-right">{{ bytes(c.stats?.bytes_in_memory) }}</td>
                  <td
                    class="pr-3 whitespace-nowrap"
                    data-testid="bm-index-kind"
                    [title]="indexTitle(c)"
                  >
                    {{ c.stats?.index ?? '–' }}
                    @if (c.stats?.recall_at_10 != null) {
                      <span class="muted text-xs" data-testid="bm-recall"
                        >· recall@10 {{ recall(c.stats?.recall_at_10) }}</span
                      >
                    }
                  </td>
                  <td class="pr-3 text-right">{{ c.stats?.queries ?? '–' }}</td>
                  <td class="pr-3 text-right whitespace-nowrap">
                    {{ ms(c.stats?.p50_ms) }} / {{ ms(c.stats?.p99_ms) }}
                  </td>
                  <td class="text-right">
                    <button
                      type="button"
                      class="btn !py-0.5"
                      (click)="remove(c)"
                      [attr.aria-label]="'Delete collection ' + c.name"
                    >
                      Delete
                    </button>
                  </td>
                </tr>
              } @empty {
                <tr>
                  <td colspan="11" class="muted py-2">
                    {{ store.loading() ? 'Loading…' : 'No collections yet: create one below.' }}
                  </td>
                </tr>
              }
            </tbody>
          </table>
        </div>
      </section>

      <div class="grid gap-4 lg:grid-cols-2">
        <form
          class="card space-y-3"
          (ngSubmit)="create()"
          data-testid="bm-create"
          aria-labelledby="bm-create-h"
        >
          <h2 id="bm-create-h" class="font-semibold">Create a collection</h2>
          <label class="block"
            ><span class="label">Name</span>
            <input
              class="input mt-1"
              name="bmName"
              [(ngModel)]="name"
              placeholder="docs"
              autocomplete="off"
          /></label>
          <fieldset>
            <legend class="label">Vectors</legend>
            <div class="mt-1 flex flex-wrap gap-4 text-sm">
              <label class="flex items-center gap-1"
                ><input type="radio" name="bmKind" value="model" [(ngModel)]="kind" />embedded from
                text by a model</label
              >
              <label class="flex items-center gap-1"
                ><input type="radio" name="bmKind" value="vectors" [(ngModel)]="kind" />supplied by
                the caller</label
              >
            </div>
          </fieldset>
          @if (kind === 'model') {
            <label class="block"
              ><span class="label">Model (served by candle)</span>
              <input class="input mt-1" name="bmModel" [(ngModel)]="model"
            /></label>
          } @else {
            <label class="block"
              ><span class="label">Dimension</span>
              <input class="input mt-1" type="number" min="1" name="bmDim" [(ngModel)]="dim"
            /></label>
          }
          <label class="block"
            ><span class="label">Distance</span>
            <select class="input mt-1" name="bmDistance" [(ngModel)]="distance">
              @for (d of distances; track d) {
                <option [value]="d">{{ d }}</option>
              }
            </select>
          </label>
          @if (store.createError(); as e) {
            <p bmAlert data-testid="bm-create-error">{{ e }}</p>
          }
          <button class="btn btn-primary" type="submit" [disabled]="store.creating()">
            {{ store.creating() ? 'Creating…' : 'Create' }}
          </button>
        </form>

        <section class="card space-y-3" data-testid="bm-index" aria-labelledby="bm-index-h">
          <h2 id="bm-index-h" class="font-semibold">Index documents</h2>
          <label
            bmCollectionSelect="bmIndexCollection"
            class="block"
            [value]="indexCollection()"
            (chosen)="indexChoice.set($event)"
          ></label>
          <div
            class="rounded-lg border-2 border-dashed p-4 text-center text-sm"
            [class]="
              dragging()
                ? 'border-sky-500 bg-sky-50 dark:bg-sky-950'
                : 'border-slate-300 dark:border-slate-600'
            "
            data-testid="bm-drop"
            (dragover)="$event.preventDefault(); dragging.set(true)"
            (dragleave)="dragging.set(false)"
            (drop)="drop($event)"
          >
            <p class="muted">
              Drop .txt or .md files here (each file is one document; its id is the file name)
            </p>
            <label class="mt-2 inline-block"
              ><span class="sr-only">Choose text or markdown files to index</span>
              <input
                type="file"
                multiple
                accept=".txt,.md,.markdown,text/plain,text/markdown"
                name="bmFiles"
                (change)="chosen($event)"
                data-testid="bm-file-input"
                class="text-sm"
            /></label>
          </div>
          <details
            class="text-sm"
            [open]="pasteOpen()"
            (toggle)="pasteOpen.set($any($event.target).open)"
          >
            <summary class="cursor-pointer">…or paste text</summary>
            <div class="mt-2 space-y-2">
              <label class="block"
                ><span class="label">Document id</span>
                <input
                  class="input mt-1"
                  name="bmPasteId"
                  [(ngModel)]="pasteId"
                  placeholder="note-1"
                  autocomplete="off"
              /></label>
              <label class="block"
                ><span class="label">Text</span>
                <textarea
                  class="input mt-1 h-28"
                  name="bmPasteText"
                  [(ngModel)]="pasteText"
                ></textarea>
              </label>
              <button
                type="button"
                class="btn"
                (click)="indexPasted()"
                [disabled]="store.indexing()"
              >
                Index text
              </button>
            </div>
          </details>
          @if (indexError(); as e) {
            <p bmAlert>{{ e }}</p>
          }
          @if (store.files().length) {
            <p class="text-xs" data-testid="bm-files-summary" aria-live="polite">
              {{ store.filesSummary().done }}/{{ store.filesSummary().total }} files indexed
              @if (store.filesSummary().failed) {
                <span class="text-rose-700 dark:text-rose-300"
                  >· {{ store.filesSummary().failed }} failed</span
                >
              }
            </p>
            <ul class="space-y-1 text-sm" data-testid="bm-files" aria-live="polite">
              @for (f of store.files(); track $index) {
                <li
                  class="flex items-center gap-2"
                  [attr.data-file]="f.name"
                  [attr.data-status]="f.status"
                >
                  <span class="truncate font-mono">{{ f.name }}</span>
                  <span class="muted text-xs">{{ bytes(f.size) }}</span>
                  @if (f.status === 'indexing' && f.chunksTotal) {
                    <progress
                      class="ml-auto w-24"
                      [max]="f.chunksTotal"
                      [value]="f.chunksDone ?? 0"
                      [attr.aria-label]="'progress of ' + f.name"
                    ></progress>
                  } @else {
                    <progress
                      class="ml-auto w-24"
                      max="2"
                      [value]="progress(f.status)"
                      [attr.aria-label]="'progress of ' + f.name"
                    ></progress>
                  }
                  <span
                    class="w-64 truncate text-xs"
                    [class]="f.status === 'error' ? 'text-rose-700 dark:text-rose-300' : 'muted'"
                    [title]="f.message"
                    >{{
                      f.status === 'done' || f.status === 'error'
                        ? f.message || f.status
                        : f.status === 'indexing' && f.chunksTotal
                          ? 'embedded ' + (f.chunksDone ?? 0) + '/' + f.chunksTotal + ' chunks…'
                          : f.status + '…'
                    }}</span
                  >
                </li>
              }
            </ul>
          }
        </section>
      </div>

      <section class="card space-y-3" data-testid="bm-query" aria-labelledby="bm-query-h">
        <h2 id="bm-query-h" class="font-semibold">Query</h2>
        <form class="grid gap-3 md:grid-cols-[1fr_2fr]" (ngSubmit)="query()">
          <div class="space-y-3">
            <label
              bmCollectionSelect="bmQueryCollection"
              class="block"
              [value]="queryCollection()"
              (chosen)="queryChoice.set($event)"
            ></label>
            <div class="flex gap-2">
              <label class="flex-1"
                ><span class="label">Mode</span>
                <select class="input mt-1" name="bmMode" [(ngModel)]="mode">
                  @for (m of modes; track m) {
                    <option [value]="m">{{ m }}</option>
                  }
                </select>
              </label>
              <label class="w-24"
                ><span class="label">k</span>
                <input
                  class="input mt-1"
                  type="number"
                  min="1"
                  max="1000"
                  name="bmK"
                  [(ngModel)]="k"
              /></label>
            </div>
          </div>
          <div class="space-y-3">
            <label class="block"
              ><span class="label">Text</span>
              <input
                class="input mt-1"
                name="bmQueryText"
                [(ngModel)]="queryText"
                placeholder="what to search for"
                autocomplete="off"
            /></label>
            <label class="block"
              ><span class="label">Filter on metadata (JSON, optional)</span>
              <textarea
                class="input mt-1 h-16 font-mono text-xs"
                name="bmFilter"
                [ngModel]="filterText()"
                (ngModelChange)="filterText.set($event)"
                [class.input-invalid]="filterError()"
                [attr.aria-invalid]="!!filterError()"
                aria-describedby="bm-filter-msg"
                placeholder='{"source": "notes.md"}'
              ></textarea>
            </label>
            <p
              id="bm-filter-msg"
              class="text-xs"
              [class]="filterError() ? 'text-rose-700 dark:text-rose-300' : 'muted'"
              data-testid="bm-filter-error"
            >
              {{ filterError() ?? filterHint }}
            </p>
          </div>
          <div class="md:col-span-2 flex items-center gap-3">
            <button
              class="btn btn-primary"
              type="submit"
              [disabled]="store.querying() || !!filterError()"
            >
              {{ store.querying() ? 'Searching…' : 'Search' }}
            </button>
            @if (store.result(); as r) {
              <span class="muted text-xs" data-testid="bm-took"
                >{{ r.hits.length }} hit{{ r.hits.length === 1 ? '' : 's' }} · {{ r.mode }} ·
                {{ ms(r.took_ms) }}</span
              >
            }
          </div>
        </form>
        @if (store.queryError(); as e) {
          <p bmAlert data-testid="bm-query-error">{{ e }}</p>
        }
        @if (store.result(); as r) {
          <ol class="space-y-2" data-testid="bm-hits">
            @for (h of r.hits; track $index) {
              <li
                class="rounded-lg p-2 ring-1 ring-slate-200 dark:ring-slate-700"
                [attr.data-hit-id]="h.id"
                [attr.data-rank]="$index + 1"
              >
                <div class="flex flex-wrap items-baseline gap-x-3 text-sm">
                  <span class="font-semibold" data-testid="bm-rank">#{{ $index + 1 }}</span>
                  <span class="font-mono" data-testid="bm-hit-id">{{ h.id }}</span>
                  <span class="muted text-xs">chunk {{ h.chunk }}</span>
                  <span class="font-mono text-xs" data-testid="bm-score"
                    >score {{ score(h.score) }}</span
                  >
                  @if (h.metadata && hasKeys(h.metadata)) {
                    <span class="muted font-mono text-xs" data-testid="bm-metadata">{{
                      json(h.metadata)
                    }}</span>
                  }
                </div>
                @if (h.text) {
                  <p class="mt-1 whitespace-pre-wrap text-sm" data-testid="bm-hit-text">
                    @for (s of marks(h.text, r.text); track $index) {
                      @if (s.match) {
                        <mark
                          class="rounded bg-amber-200 px-0.5 text-slate-900 dark:bg-amber-500/40 dark:text-amber-50"
                          >{{ s.text }}</mark
                        >
                      } @else {
                        <span>{{ s.text }}</span>
                      }
                    }
                  </p>
                }
              </li>
            } @empty {
              <li class="muted text-sm">No hits.</li>
            }
          </ol>
        }
      </section>

      @if (store.capsRead()) {
        <app-brainml-train />
        <app-brainml-snapshots />
        <app-brainml-ask />
      }
    </div>
  `,
})
export class BrainmlPanel implements OnInit {
  readonly pluginId = input('brainml');
  protected readonly store = inject(BrainmlStore);
  private confirm = inject(ConfirmStore);
  private toasts = inject(ToastStore);
  protected readonly distances = DISTANCES;
  protected readonly modes = MODES;
  protected name = '';
  protected kind: 'model' | 'vectors' = 'model';
  protected model = DEFAULT_MODEL;
  protected dim: number | null = 384;
  protected distance: Distance = 'cosine';
  protected pasteId = '';
  protected pasteText = '';
  protected readonly pasteOpen = signal(false);
  protected readonly dragging = signal(false);
  protected readonly indexError = signal<string | null>(null);
  protected readonly indexChoice = signal('');
  protected readonly queryChoice = signal('');
  /** The chosen collection, or the first one while none is chosen (or the chosen one is gone). */
  protected readonly indexCollection = computed(() =>
    chosenOrFirst(this.store.names(), this.indexChoice()),
  );
  protected readonly queryCollection = computed(() =>
    chosenOrFirst(this.store.names(), this.queryChoice()),
  );
  protected queryText = '';
  protected mode: Mode = 'hybrid';
  protected k = 10;
  protected readonly filterText = signal('');
  protected readonly filterError = computed(() => parseFilter(this.filterText()).error);
  protected readonly filterHint =
    'e.g. {"source": {"$in": ["a.md", "b.md"]}}, {"year": {"$gte": 2020}}, {"$not": {"source": "a.md"}}';
  protected bytes = formatBytes;
  protected marks = highlight;
  protected json = (v: unknown) => JSON.stringify(v);
  protected hasKeys = (o: object) => Object.keys(o).length > 0;
  protected score = (s: number) => (Math.abs(s) >= 100 ? s.toFixed(1) : s.toFixed(4));
  protected ms = formatMs;
  protected recall = formatRecall;
  protected progress = (s: string) =>
    s === 'done' || s === 'error' ? 2 : s === 'indexing' ? 1 : 0;

  constructor() {
    effect(() => this.store.setPlugin(this.pluginId()));
  }

  ngOnInit() {
    this.store.setPlugin(this.pluginId());
    void this.store.load();
    void this.store.loadCaps();
  }

  /** The index's parameters and when it was trained, for the index cell's title. */
  protected indexTitle(c: CollectionRow): string {
    const s = c.stats;
    if (!s) return '';
    const parts = [describeParams(s.index_params)];
    if (s.bytes_per_vector != null) parts.push(`${s.bytes_per_vector} bytes per vector`);
    if (s.last_trained_ms != null) parts.push(`trained ${formatTime(s.last_trained_ms)}`);
    return parts.filter((p) => p && p !== '–').join(' · ');
  }

  async create() {
    const name = this.name.trim();
    const ok = await this.store.create({
      name,
      kind: this.kind,
      model: this.model,
      dim: this.dim,
      distance: this.distance,
    });
    if (ok) {
      this.toasts.show('success', `Collection ${name} created`);
      this.name = '';
      this.indexChoice.set(name);
      this.queryChoice.set(name);
    }
  }

  async remove(c: CollectionRow) {
    const ok = await this.confirm.ask({
      title: `Delete collection ${c.name}?`,
      message: `Its ${c.documents} document${c.documents === 1 ? '' : 's'} (${c.chunks} chunks) and its files are removed for good.`,
      confirmLabel: 'Delete collection',
    });
    if (!ok) return;
    const err = await this.store.remove(c.name);
    if (err) this.toasts.show('error', `Could not delete ${c.name}: ${err}`);
    else this.toasts.show('success', `Collection ${c.name} deleted`);
  }

  drop(ev: DragEvent) {
    ev.preventDefault();
    this.dragging.set(false);
    void this.indexFiles([...(ev.dataTransfer?.files ?? [])]);
  }

  chosen(ev: Event) {
    const input = ev.target as HTMLInputElement;
    const files = [...(input.files ?? [])];
    input.value = '';
    void this.indexFiles(files);
  }

  async indexFiles(files: File[]) {
    if (!this.ready()) return;
    const sources = files.map((f) =>
      TEXT_FILE_RE.test(f.name)
        ? fileSource(f)
        : { ...fileSource(f), refuse: 'not a .txt or .md file: not sent' },
    );
    await this.store.index(this.indexCollection(), sources);
  }

  async indexPasted() {
    if (!this.ready()) return;
    const id = this.pasteId.trim();
    if (!id) return this.indexError.set('Give the pasted document an id.');
    const text = this.pasteText;
    const source: DocSource = {
      id,
      size: new Blob([text]).size,
      read: async () => text,
      metadata: { source: 'pasted' },
    };
    await this.store.index(this.indexCollection(), [source]);
    if (this.store.files()[0]?.status === 'done') this.pasteText = '';
  }

  private ready() {
    if (this.store.indexing()) return false;
    if (!this.indexCollection()) {
      this.indexError.set('Create a collection first.');
      return false;
    }
    this.indexError.set(null);
    return true;
  }

  query() {
    void this.store.query({
      collection: this.queryCollection(),
      text: this.queryText,
      mode: this.mode,
      k: this.k,
      filter: this.filterText(),
    });
  }
}
