import { NgTemplateOutlet } from '@angular/common';
import {
  ChangeDetectionStrategy,
  Component,
  DestroyRef,
  OnInit,
  computed,
  inject,
  input,
  signal,
} from '@angular/core';
import { FormsModule } from '@angular/forms';
import { ConfirmStore } from '../core/confirm.store';
import { formatTime } from '../shared/format';
import { citationRuns } from './brainml-ops';
import {
  RETRIEVE_MODES,
  RepoInfo,
  RepoagentStore,
  SEARCH_DEFAULTS,
  SearchForm,
  hitLines,
} from './repoagent-store';

/** Files listed in the outline browser at once (the filter narrows them). */
const FILES_SHOWN = 200;
/** How often repo.list is read again while a repository indexes. */
const POLL_MS = 1000;

/** Badge colours per kind of definition. */
const KIND_CLASS: Record<string, string> = {
  function: 'bg-sky-100 text-sky-800 dark:bg-sky-900 dark:text-sky-200',
  method: 'bg-sky-100 text-sky-800 dark:bg-sky-900 dark:text-sky-200',
  constructor: 'bg-sky-100 text-sky-800 dark:bg-sky-900 dark:text-sky-200',
  struct: 'bg-emerald-100 text-emerald-800 dark:bg-emerald-900 dark:text-emerald-200',
  class: 'bg-emerald-100 text-emerald-800 dark:bg-emerald-900 dark:text-emerald-200',
  enum: 'bg-emerald-100 text-emerald-800 dark:bg-emerald-900 dark:text-emerald-200',
  union: 'bg-emerald-100 text-emerald-800 dark:bg-emerald-900 dark:text-emerald-200',
  type: 'bg-emerald-100 text-emerald-800 dark:bg-emerald-900 dark:text-emerald-200',
  trait: 'bg-violet-100 text-violet-800 dark:bg-violet-900 dark:text-violet-200',
  interface: 'bg-violet-100 text-violet-800 dark:bg-violet-900 dark:text-violet-200',
  impl: 'bg-amber-100 text-amber-800 dark:bg-amber-900 dark:text-amber-200',
  module: 'bg-amber-100 text-amber-800 dark:bg-amber-900 dark:text-amber-200',
  namespace: 'bg-amber-100 text-amber-800 dark:bg-amber-900 dark:text-amber-200',
  macro: 'bg-rose-100 text-rose-800 dark:bg-rose-900 dark:text-rose-200',
};
const OTHER_KIND = 'bg-slate-200 text-slate-800 dark:bg-slate-700 dark:text-slate-200';

/**
 * The repoagent plugin's panel ("Code"): repositories (add by path under the allowed roots, with
 * the plugin's refusal shown as it says it; reindex; remove after a confirmation; indexing
 * progress), and for the chosen one: lines by language as a bar chart, an outline browser (files
 * -> nested definitions with kind badges; a definition's lines from `code.search`), search by
 * text (regex, case, globs, context lines) and by meaning (`code.semantic_search`, after
 * `code.index`), metrics (files ranked by complexity with their functions, hotspots), the repo map
 * and an ask box (`code.ask`, streamed, with citations). A section whose capability the manifest
 * lacks is left out.
 */
@Component({
  selector: 'app-repoagent-panel',
  changeDetection: ChangeDetectionStrategy.OnPush,
  imports: [FormsModule, NgTemplateOutlet],
  providers: [RepoagentStore],
  template: `
    <div class="space-y-4">
      <section class="card space-y-3" data-testid="ra-repos" aria-labelledby="ra-repos-h">
        <h2 id="ra-repos-h" class="font-semibold">Repositories</h2>
        <form class="flex flex-wrap items-end gap-2" (ngSubmit)="add()">
          <label class="min-w-64 flex-1"
            ><span class="label">Folder on the host</span>
            <input
              class="input mt-1 font-mono text-sm"
              name="raPath"
              [(ngModel)]="addPath"
              autocomplete="off"
              placeholder="/srv/code/my-crate"
              data-testid="ra-add-path"
            />
          </label>
          <label class="w-48"
            ><span class="label">Name (optional)</span>
            <input
              class="input mt-1"
              name="raName"
              [(ngModel)]="addName"
              autocomplete="off"
              placeholder="the folder's"
            />
          </label>
          <button class="btn btn-primary" type="submit" [disabled]="store.adding()">
            {{ store.adding() ? 'Adding…' : 'Add' }}
          </button>
        </form>
        @if (store.roots(); as roots) {
          <p class="muted text-xs" data-testid="ra-roots">
            @if (roots.length) {
              Allowed roots: <span class="font-mono">{{ roots.join(', ') }}</span>
            } @else {
              No roots are allowed yet: set <span class="font-mono">roots</span> in the plugin's
              Config tab.
            }
          </p>
        }
        @if (store.addProgress(); as p) {
          <p class="muted text-sm" data-testid="ra-add-progress">
            indexing {{ p.files_done }}/{{ p.files_total }} files…
          </p>
        }
        @if (store.addError(); as e) {
          <p
            class="text-sm text-rose-700 dark:text-rose-300"
            role="alert"
            data-testid="ra-add-error"
          >
            {{ e }}
          </p>
        }
        @if (store.listError(); as e) {
          <p class="text-sm text-rose-700 dark:text-rose-300" role="alert">{{ e }}</p>
        }
        @if (store.actionError(); as e) {
          <p
            class="text-sm text-rose-700 dark:text-rose-300"
            role="alert"
            data-testid="ra-action-error"
          >
            {{ e }}
          </p>
        }
        @if (store.repos().length) {
          <div class="overflow-x-auto">
            <table class="w-full text-left text-sm">
              <thead class="muted text-xs">
                <tr>
                  <th class="py-1 pr-2">Name</th>
                  <th class="px-2">Folder</th>
                  <th class="px-2">State</th>
                  <th class="px-2 text-right">Files</th>
                  <th class="px-2">Indexed</th>
                  <th></th>
                </tr>
              </thead>
              <tbody>
                @for (r of store.repos(); track r.name) {
                  <tr
                    class="border-t border-slate-200 dark:border-slate-700"
                    data-testid="ra-repo"
                    [attr.data-repo]="r.name"
                    [class.bg-sky-50]="store.selected() === r.name"
                    [class.dark:bg-sky-950]="store.selected() === r.name"
                  >
                    <td class="py-1 pr-2">
                      <button
                        type="button"
                        class="font-semibold text-sky-700 underline-offset-2 hover:underline dark:text-sky-300"
                        [attr.aria-pressed]="store.selected() === r.name"
                        (click)="store.select(r.name)"
                      >
                        {{ r.name }}
                      </button>
                    </td>
                    <td class="px-2 font-mono text-xs">{{ r.path }}</td>
                    <td class="px-2" data-testid="ra-repo-state" [attr.data-state]="r.state">
                      <span [class]="stateClass(r)">{{ r.state }}</span>
                      @if (r.state === 'indexing' && r.progress; as p) {
                        <span class="muted text-xs"> {{ p.files_done }}/{{ p.files_total }}</span>
                      }
                      @if (r.error) {
                        <span class="text-xs text-rose-700 dark:text-rose-300"> {{ r.error }}</span>
                      }
                      @if (r.watching) {
                        <span class="muted text-xs" title="edits are followed as they are saved">
                          · watched</span
                        >
                      }
                    </td>
                    <td class="px-2 text-right tabular-nums">{{ r.files }}</td>
                    <td class="px-2 text-xs">{{ r.indexed_at ? time(r.indexed_at) : '–' }}</td>
                    <td class="whitespace-nowrap text-right">
                      <button type="button" class="btn" (click)="store.reindex(r.name)">
                        Reindex
                      </button>
                      <button type="button" class="btn btn-danger ml-1" (click)="remove(r.name)">
                        Remove
                      </button>
                    </td>
                  </tr>
                }
              </tbody>
            </table>
          </div>
        } @else if (!store.listError()) {
          <p class="muted text-sm" data-testid="ra-no-repos">
            No repositories yet: add a folder above.
          </p>
        }
      </section>

      @if (store.repo(); as repo) {
        @if (repo.state === 'indexing') {
          <p class="muted text-sm" data-testid="ra-wait">{{ repo.name }} is being indexed…</p>
        } @else {
          <div class="grid gap-4 lg:grid-cols-2">
            <section class="card space-y-2" data-testid="ra-languages" aria-labelledby="ra-lang-h">
              <h2 id="ra-lang-h" class="font-semibold">
                Lines by language <span class="muted text-sm font-normal">({{ repo.name }})</span>
              </h2>
              @if (store.statsError(); as e) {
                <p class="text-sm text-rose-700 dark:text-rose-300" role="alert">{{ e }}</p>
              }
              @if (store.totals(); as t) {
                <p class="muted text-xs" data-testid="ra-totals">
                  {{ t.files }} files · {{ t.lines }} lines: {{ t.code }} code,
                  {{ t.comments }} comments, {{ t.blanks }} blank
                </p>
                <div class="flex gap-3 text-xs" aria-hidden="true">
                  <span><span class="mr-1 inline-block h-2 w-3 bg-sky-500"></span>code</span>
                  <span
                    ><span class="mr-1 inline-block h-2 w-3 bg-emerald-500"></span>comments</span
                  >
                  <span
                    ><span class="mr-1 inline-block h-2 w-3 bg-slate-300 dark:bg-slate-600"></span
                    >blank</span
                  >
                </div>
                <ul class="space-y-1" role="list" aria-label="lines by language">
                  @for (b of store.bars(); track b.language) {
                    <li
                      class="grid grid-cols-[8rem_1fr_5rem] items-center gap-2 text-sm"
                      data-testid="ra-lang"
                      [attr.data-language]="b.language"
                      [attr.data-code]="b.code"
                      [title]="
                        b.language +
                        ': ' +
                        b.files +
                        ' files, ' +
                        b.code +
                        ' code, ' +
                        b.comments +
                        ' comments, ' +
                        b.blanks +
                        ' blank'
                      "
                    >
                      <span class="truncate">{{ b.language }}</span>
                      <span
                        class="flex h-3 overflow-hidden rounded bg-slate-100 dark:bg-slate-800"
                        data-testid="ra-lang-bar"
                      >
                        <span class="bg-sky-500" [style.width.%]="b.codePct"></span>
                        <span class="bg-emerald-500" [style.width.%]="b.commentsPct"></span>
                        <span
                          class="bg-slate-300 dark:bg-slate-600"
                          [style.width.%]="b.blanksPct"
                        ></span>
                      </span>
                      <span class="text-right font-mono text-xs tabular-nums">{{ b.code }}</span>
                    </li>
                  } @empty {
                    <li class="muted text-sm">No file here is in a language tokei counts.</li>
                  }
                </ul>
              }
            </section>

            @if (store.has('code.metrics')) {
              <section
                class="card space-y-2"
                data-testid="ra-metrics"
                aria-labelledby="ra-metrics-h"
              >
                <h2 id="ra-metrics-h" class="font-semibold">Complexity</h2>
                @if (store.metricsError(); as e) {
                  <p class="text-sm text-rose-700 dark:text-rose-300" role="alert">{{ e }}</p>
                }
                @if (store.metrics(); as m) {
                  <p class="muted text-xs">
                    {{ m.totals.functions }} functions in {{ m.totals.files }} files, cyclomatic
                    {{ m.totals.cyclomatic }}
                  </p>
                  <table class="w-full text-left text-sm">
                    <thead class="muted text-xs">
                      <tr>
                        <th>Most complex files</th>
                        <th class="text-right" title="sum of cyclomatic">cyc.</th>
                        <th class="text-right" title="the file's most complex function">max</th>
                        <th class="text-right">fns</th>
                      </tr>
                    </thead>
                    <tbody>
                      @for (f of m.files.slice(0, 8); track f.path) {
                        <tr data-testid="ra-metric-file">
                          <td class="pr-2">
                            <button
                              type="button"
                              class="font-mono text-xs text-sky-700 hover:underline dark:text-sky-300"
                              (click)="store.fileMetricsOf(f.path)"
                            >
                              {{ f.path }}
                            </button>
                          </td>
                          <td class="text-right tabular-nums">{{ f.cyclomatic }}</td>
                          <td class="text-right tabular-nums">{{ f.max_cyclomatic }}</td>
                          <td class="text-right tabular-nums">{{ f.functions }}</td>
                        </tr>
                      }
                    </tbody>
                  </table>
                  @if (store.fileMetricsError(); as e) {
                    <p class="text-sm text-rose-700 dark:text-rose-300" role="alert">{{ e }}</p>
                  }
                  @if (store.fileMetrics(); as fm) {
                    <div data-testid="ra-functions">
                      <h3 class="text-sm font-semibold">
                        Functions of <span class="font-mono">{{ fm.path }}</span>, most complex
                        first
                      </h3>
                      <table class="w-full text-left text-xs">
                        <thead class="muted">
                          <tr>
                            <th>function</th>
                            <th class="text-right">line</th>
                            <th class="text-right">cyclomatic</th>
                            <th class="text-right">cognitive</th>
                            <th class="text-right">lines</th>
                          </tr>
                        </thead>
                        <tbody>
                          @for (f of fm.functions.slice(0, 10); track f.line + f.name) {
                            <tr data-testid="ra-function">
                              <td class="font-mono">
                                {{ f.parent ? f.parent + '::' : '' }}{{ f.name }}
                              </td>
                              <td class="text-right">{{ f.line }}</td>
                              <td class="text-right">{{ f.cyclomatic }}</td>
                              <td class="text-right">{{ f.cognitive }}</td>
                              <td class="text-right">{{ f.lines }}</td>
                            </tr>
                          }
                        </tbody>
                      </table>
                    </div>
                  }
                  <h3 class="text-sm font-semibold">
                    Hotspots <span class="muted font-normal">(commits × complexity)</span>
                  </h3>
                  @if (m.churn_error) {
                    <p class="muted text-xs" data-testid="ra-churn-error">
                      No hotspots: {{ m.churn_error }}
                    </p>
                  } @else {
                    <ol class="space-y-0.5 text-xs" data-testid="ra-hotspots">
                      @for (h of m.hotspots.slice(0, 8); track h.path) {
                        <li>
                          <span class="font-mono">{{ h.path }}</span><span class="muted ml-2"
                            >{{ h.churn.commits }} commits × {{ h.complexity }} =
                            {{ h.score }}</span
                          >
                        </li>
                      } @empty {
                        <li class="muted">No file has both history and complexity.</li>
                      }
                    </ol>
                  }
                }
              </section>
            }
          </div>

          <section class="card space-y-2" data-testid="ra-outline" aria-labelledby="ra-outline-h">
            <h2 id="ra-outline-h" class="font-semibold">Outline</h2>
            <div class="grid gap-3 lg:grid-cols-[18rem_1fr_1fr]">
              <div class="space-y-1">
                <label
                  ><span class="sr-only">Filter files</span>
                  <input
                    class="input text-sm"
                    name="raFileFilter"
                    placeholder="filter files"
                    autocomplete="off"
                    [ngModel]="fileFilter()"
                    (ngModelChange)="fileFilter.set($event)"
                  />
                </label>
                <ul class="max-h-96 overflow-auto text-xs" data-testid="ra-files">
                  @for (f of shownFiles(); track f.path) {
                    <li>
                      <button
                        type="button"
                        class="w-full truncate rounded px-1 py-0.5 text-left font-mono hover:bg-slate-100 dark:hover:bg-slate-800"
                        [class.bg-sky-100]="store.outline()?.path === f.path"
                        [class.dark:bg-sky-900]="store.outline()?.path === f.path"
                        [attr.data-path]="f.path"
                        [title]="f.path + ' (' + f.language + ', ' + f.code + ' lines of code)'"
                        (click)="store.openFile(f.path)"
                      >
                        {{ f.path }}
                      </button>
                    </li>
                  }
                </ul>
                @if (moreFiles() > 0) {
                  <p class="muted text-xs">{{ moreFiles() }} more: narrow the filter</p>
                }
              </div>
              <div class="min-w-0">
                @if (store.outlineError(); as e) {
                  <p class="text-sm text-rose-700 dark:text-rose-300" role="alert">{{ e }}</p>
                }
                @if (store.outline(); as o) {
                  <p class="muted mb-1 text-xs">
                    <span class="font-mono">{{ o.path }}</span> ·
                    {{ o.language ?? 'no grammar here' }}
                  </p>
                  <ul class="max-h-96 overflow-auto text-sm" data-testid="ra-tree">
                    <ng-container
                      [ngTemplateOutlet]="tree"
                      [ngTemplateOutletContext]="{ $implicit: o.symbols, path: o.path }"
                    />
                  </ul>
                  @if (!o.symbols.length) {
                    <p class="muted text-sm">No definitions in this file.</p>
                  }
                } @else if (!store.outlineError()) {
                  <p class="muted text-sm">Choose a file.</p>
                }
              </div>
              <div class="min-w-0">
                @if (store.snippetError(); as e) {
                  <p
                    class="text-sm text-rose-700 dark:text-rose-300"
                    role="alert"
                    data-testid="ra-snippet-error"
                  >
                    {{ e }}
                  </p>
                }
                @if (store.snippet(); as s) {
                  <p class="mb-1 text-xs" data-testid="ra-snippet-title">
                    <span [class]="kindClass(s.kind)" class="rounded px-1">{{ s.kind }}</span><span
                      class="ml-1 font-mono"
                      >{{ s.name }}</span
                    ><span class="muted ml-2">{{ s.path }}:{{ s.line }}</span>
                  </p>
                  <pre
                    class="max-h-96 overflow-auto rounded bg-slate-50 p-2 text-xs dark:bg-slate-950"
                    data-testid="ra-snippet"
                  >@for (l of s.lines; track l.n) {<span [class.bg-amber-100]="l.hit" [class.dark:bg-amber-900]="l.hit" [attr.data-line]="l.n" class="block"><span class="muted mr-2 inline-block w-10 select-none text-right">{{ l.n }}</span>{{ l.text }}</span>}</pre>
                  @if (store.has('code.refs')) {
                    <button
                      type="button"
                      class="btn mt-2 text-xs"
                      data-testid="ra-refs-btn"
                      (click)="store.refsOf(s.name)"
                    >
                      References to {{ s.name }}
                    </button>
                  }
                }
                @if (store.refsError(); as e) {
                  <p class="text-sm text-rose-700 dark:text-rose-300" role="alert">{{ e }}</p>
                }
                @if (store.refs(); as r) {
                  <p class="muted mt-2 text-xs" data-testid="ra-refs-summary">
                    {{ r.total }} reference{{ r.total === 1 ? '' : 's' }} to
                    <span class="font-mono">{{ r.name }}</span>{{
                      r.truncated ? ' (the first ' + r.references.length + ' shown)' : ''
                    }}
                  </p>
                  <ul class="max-h-60 overflow-auto text-xs" data-testid="ra-refs">
                    @for (x of r.references; track x.path + ':' + x.line) {
                      <li [attr.data-path]="x.path" [attr.data-line]="x.line">
                        <button
                          type="button"
                          class="w-full truncate rounded px-1 text-left hover:bg-slate-100 dark:hover:bg-slate-800"
                          [title]="x.text"
                          (click)="
                            store.showSymbol(x.path, {
                              name: r.name,
                              kind: x.kind + ' ref',
                              line: x.line,
                            })
                          "
                        >
                          <span class="font-mono text-sky-700 dark:text-sky-300"
                            >{{ x.path }}:{{ x.line }}</span
                          ><span class="muted ml-1">{{ x.kind }}</span
                          ><span class="ml-2 font-mono">{{ x.text }}</span>
                        </button>
                      </li>
                    }
                  </ul>
                }
              </div>
            </div>
            <ng-template #tree let-nodes let-path="path">
              @for (n of nodes; track n.line + n.name) {
                <li data-testid="ra-node" [attr.data-kind]="n.kind" [attr.data-name]="n.name">
                  <button
                    type="button"
                    class="flex w-full items-baseline gap-1 rounded px-1 text-left hover:bg-slate-100 dark:hover:bg-slate-800"
                    [title]="n.signature"
                    (click)="store.showSymbol(path, n)"
                  >
                    <span
                      [class]="kindClass(n.kind)"
                      class="rounded px-1 text-[10px] uppercase"
                      data-testid="ra-kind"
                      >{{ n.kind }}</span
                    >
                    <span class="font-mono">{{ n.name }}</span><span class="muted text-xs"
                      >:{{ n.line }}</span
                    >
                  </button>
                  @if (n.children.length) {
                    <ul class="ml-4 border-l border-slate-200 pl-1 dark:border-slate-700">
                      <ng-container
                        [ngTemplateOutlet]="tree"
                        [ngTemplateOutletContext]="{ $implicit: n.children, path: path }"
                      />
                    </ul>
                  }
                </li>
              }
            </ng-template>
          </section>

          <section class="card space-y-2" data-testid="ra-search" aria-labelledby="ra-search-h">
            <h2 id="ra-search-h" class="font-semibold">Search</h2>
            <form class="space-y-2" (ngSubmit)="search()">
              <div class="flex flex-wrap items-end gap-2">
                @if (store.has('code.semantic_search')) {
                  <label
                    ><span class="label">By</span>
                    <select class="input mt-1" name="raBy" [(ngModel)]="form.by">
                      <option value="text">text</option>
                      <option value="meaning">meaning</option>
                    </select>
                  </label>
                }
                <label class="min-w-64 flex-1"
                  ><span class="label">{{
                    form.by === 'meaning' ? 'What the code does' : 'Pattern'
                  }}</span>
                  <input
                    class="input mt-1 font-mono text-sm"
                    name="raPattern"
                    [(ngModel)]="form.pattern"
                    autocomplete="off"
                    data-testid="ra-pattern"
                  />
                </label>
                <button class="btn btn-primary" type="submit" [disabled]="store.searching()">
                  {{ store.searching() ? 'Searching…' : 'Search' }}
                </button>
              </div>
              @if (form.by === 'text') {
                <div class="flex flex-wrap items-end gap-3 text-sm">
                  <label class="flex items-center gap-1"
                    ><input type="checkbox" name="raRegex" [(ngModel)]="form.regex" /> Regex</label
                  >
                  <label class="flex items-center gap-1"
                    ><input type="checkbox" name="raCase" [(ngModel)]="form.matchCase" /> Match
                    case</label
                  >
                  <label
                    ><span class="label">Files (globs, ! excludes)</span
                    ><input
                      class="input mt-1 w-48 font-mono text-xs"
                      name="raGlob"
                      [(ngModel)]="form.glob"
                      placeholder="*.rs !tests/**"
                      autocomplete="off"
                  /></label>
                  <label
                    ><span class="label">Context lines</span
                    ><input
                      class="input mt-1 w-20"
                      type="number"
                      min="0"
                      max="20"
                      name="raContext"
                      [(ngModel)]="form.context"
                  /></label>
                  <label
                    ><span class="label">Max hits</span
                    ><input
                      class="input mt-1 w-24"
                      type="number"
                      min="1"
                      max="10000"
                      name="raMax"
                      [(ngModel)]="form.max"
                  /></label>
                </div>
              } @else {
                <div class="flex flex-wrap items-end gap-3 text-sm">
                  <label
                    ><span class="label">Mode</span>
                    <select class="input mt-1" name="raMode" [(ngModel)]="form.mode">
                      @for (m of modes; track m) {
                        <option [value]="m">{{ m }}</option>
                      }
                    </select>
                  </label>
                  <label
                    ><span class="label">k</span
                    ><input
                      class="input mt-1 w-20"
                      type="number"
                      min="1"
                      max="100"
                      name="raK"
                      [(ngModel)]="form.k"
                  /></label>
                  @if (store.has('code.index')) {
                    <button
                      type="button"
                      class="btn"
                      (click)="store.index()"
                      [disabled]="store.indexing()"
                      data-testid="ra-index"
                    >
                      {{ store.indexing() ? 'Indexing…' : 'Index for search by meaning' }}
                    </button>
                  }
                  @if (store.indexProgress(); as p) {
                    <span class="muted text-xs" data-testid="ra-index-progress"
                      >{{ p.phase }} {{ p.done }}/{{ p.total }}</span
                    >
                  }
                  @if (store.indexed(); as d) {
                    <span class="muted text-xs" data-testid="ra-indexed"
                      >{{ d.chunks }} chunks in {{ d.collection }} ({{ d.embedded }} embedded,
                      {{ d.unchanged }} unchanged, {{ d.deleted }} deleted)</span
                    >
                  }
                </div>
                @if (store.indexError(); as e) {
                  <p class="text-sm text-rose-700 dark:text-rose-300" role="alert">{{ e }}</p>
                }
              }
            </form>
            @if (store.searchError(); as e) {
              <p
                class="text-sm text-rose-700 dark:text-rose-300"
                role="alert"
                data-testid="ra-search-error"
              >
                {{ e }}
              </p>
            }
            @if (store.result(); as r) {
              <p class="muted text-xs" data-testid="ra-search-summary">
                {{ r.hits.length }} matching line{{ r.hits.length === 1 ? '' : 's'
                }}{{ r.truncated ? ' (more not shown: raise Max hits)' : '' }} in
                {{ store.groups().length }} file{{ store.groups().length === 1 ? '' : 's' }} ·
                {{ r.files_searched }} files searched
              </p>
              <div class="max-h-[32rem] space-y-2 overflow-auto">
                @for (g of store.groups(); track g.path) {
                  <div data-testid="ra-hit-file" [attr.data-path]="g.path">
                    <p class="font-mono text-xs font-semibold">{{ g.path }}</p>
                    @for (h of g.hits; track h.line) {
                      <div class="mt-1" data-testid="ra-hit" [attr.data-line]="h.line">
                        @if (h.symbol; as s) {
                          <p class="muted text-xs">
                            in
                            <span [class]="kindClass(s.kind)" class="rounded px-1">{{
                              s.kind
                            }}</span><span class="ml-1 font-mono">{{ s.name }}</span
                            ><span class="ml-1">(line {{ s.line }})</span>
                          </p>
                        }
                        <pre
                          class="overflow-x-auto rounded bg-slate-50 p-1 text-xs dark:bg-slate-950"
                        >@for (l of lines(h); track l.n) {<span class="block" [class.bg-amber-100]="l.hit" [class.dark:bg-amber-900]="l.hit" [attr.data-hit]="l.hit || null"><span class="muted mr-2 inline-block w-10 select-none text-right">{{ l.n }}</span>{{ l.text }}</span>}</pre>
                      </div>
                    }
                  </div>
                } @empty {
                  <p class="muted text-sm">Nothing matches.</p>
                }
              </div>
            }
            @if (store.semantic(); as r) {
              <p class="muted text-xs">
                {{ r.hits.length }} chunks from {{ r.collection }} ({{ r.mode }}), indexed
                {{ time(r.indexed_at) }}
              </p>
              <ol class="max-h-[32rem] space-y-2 overflow-auto" data-testid="ra-semantic">
                @for (h of r.hits; track h.id) {
                  <li data-testid="ra-semantic-hit">
                    <p class="text-xs">
                      <span [class]="kindClass(h.kind)" class="rounded px-1">{{
                        h.kind
                      }}</span><span class="ml-1 font-mono"
                        >{{ h.parent ? h.parent + '::' : '' }}{{ h.name }}</span
                      >
                      <span class="muted ml-2"
                        >{{ h.path }}:{{ h.line }}-{{ h.end_line }} · score
                        {{ h.score.toFixed(4) }}</span
                      >
                    </p>
                    @if (h.text) {
                      <pre
                        class="max-h-40 overflow-auto rounded bg-slate-50 p-1 text-xs dark:bg-slate-950"
                        >{{ h.text }}</pre>
                    }
                  </li>
                } @empty {
                  <li class="muted text-sm">Nothing found.</li>
                }
              </ol>
            }
          </section>

          @if (store.has('code.map')) {
            <section class="card space-y-2" data-testid="ra-map" aria-labelledby="ra-map-h">
              <h2 id="ra-map-h" class="font-semibold">Repository map</h2>
              <form
                class="flex flex-wrap items-end gap-2"
                (ngSubmit)="store.makeMap(mapFocus, mapTokens)"
              >
                <label class="min-w-48 flex-1"
                  ><span class="label">Focus (files or names, optional)</span>
                  <input
                    class="input mt-1 font-mono text-sm"
                    name="raFocus"
                    [(ngModel)]="mapFocus"
                    autocomplete="off"
                    placeholder="src/lib.rs from_str"
                /></label>
                <label
                  ><span class="label">Tokens</span
                  ><input
                    class="input mt-1 w-24"
                    type="number"
                    min="16"
                    max="65536"
                    name="raTokens"
                    [(ngModel)]="mapTokens"
                /></label>
                <button class="btn btn-primary" type="submit" [disabled]="store.mapping()">
                  {{ store.mapping() ? 'Mapping…' : 'Make the map' }}
                </button>
              </form>
              @if (store.mapError(); as e) {
                <p
                  class="text-sm text-rose-700 dark:text-rose-300"
                  role="alert"
                  data-testid="ra-map-error"
                >
                  {{ e }}
                </p>
              }
              @if (store.map(); as m) {
                <p class="muted text-xs" data-testid="ra-map-summary">
                  {{ m.tokens }} tokens · {{ m.included }} of {{ m.ranked }} ranked definitions{{
                    m.cached ? ' · cached' : ''
                  }}
                </p>
                <pre
                  class="max-h-[32rem] overflow-auto rounded bg-slate-50 p-2 text-xs dark:bg-slate-950"
                  data-testid="ra-map-text"
                  >{{ m.map }}</pre>
              }
            </section>
          }

          @if (store.has('code.ask')) {
            <section class="card space-y-2" data-testid="ra-ask" aria-labelledby="ra-ask-h">
              <h2 id="ra-ask-h" class="font-semibold">Ask about {{ repo.name }}</h2>
              <form
                class="flex flex-wrap items-end gap-2"
                (ngSubmit)="store.ask(question, askK, askMaxTokens)"
              >
                <label class="min-w-64 flex-1"
                  ><span class="label">Question (answered from the chunks code.index stored)</span>
                  <input
                    class="input mt-1"
                    name="raQuestion"
                    [(ngModel)]="question"
                    autocomplete="off"
                    placeholder="Where are numbers parsed?"
                /></label>
                <label
                  ><span class="label">k (chunks)</span
                  ><input
                    class="input mt-1 w-20"
                    type="number"
                    min="1"
                    max="20"
                    name="raAskK"
                    [(ngModel)]="askK"
                /></label>
                <label
                  ><span class="label">Max tokens</span
                  ><input
                    class="input mt-1 w-24"
                    type="number"
                    min="1"
                    max="4096"
                    name="raAskMaxTokens"
                    [(ngModel)]="askMaxTokens"
                /></label>
                @if (store.asking()) {
                  <button type="button" class="btn" (click)="store.stopAsk()">Stop</button>
                } @else {
                  <button class="btn btn-primary" type="submit">Ask</button>
                }
              </form>
              @if (store.askError(); as e) {
                <p
                  class="text-sm text-rose-700 dark:text-rose-300"
                  role="alert"
                  data-testid="ra-ask-error"
                >
                  {{ e }}
                </p>
              }
              @if (store.asking() || store.answer()) {
                <div
                  class="min-h-12 whitespace-pre-wrap rounded bg-slate-50 p-2 text-sm dark:bg-slate-950"
                  role="log"
                  aria-live="polite"
                  data-testid="ra-answer"
                  [attr.data-streaming]="store.asking()"
                >
                  @for (r of answerRuns(); track $index) {
                    @if (r.cite != null) {
                      <a
                        class="font-semibold text-sky-700 dark:text-sky-300"
                        [attr.href]="'#ra-cite-' + r.cite"
                        (click)="$event.preventDefault(); focusCite(r.cite)"
                        >{{ r.text }}</a
                      >
                    } @else {
                      <span>{{ r.text }}</span>
                    }
                  } @empty {
                    <span class="muted">{{ store.asking() ? 'Waiting for the answer…' : '' }}</span>
                  }
                </div>
                @if (store.answerMs() != null) {
                  <p class="muted text-xs" data-testid="ra-answer-took">
                    {{ store.answerModel() ? store.answerModel() + ' · ' : '' }}answered in
                    {{ store.answerMs()!.toFixed(0) }} ms
                  </p>
                }
              }
              @if (store.citations().length) {
                <ol class="space-y-0.5 text-xs" data-testid="ra-citations">
                  @for (c of store.citations(); track c.n) {
                    <li [id]="'ra-cite-' + c.n" tabindex="-1" [attr.data-cite]="c.cite">
                      <span class="font-semibold">[{{ c.n }}]</span
                      ><span class="ml-1 font-mono">{{ c.cite }}</span>
                      <span [class]="kindClass(c.kind)" class="ml-2 rounded px-1">{{
                        c.kind
                      }}</span><span class="ml-1 font-mono">{{ c.name }}</span>
                      <span class="muted ml-1">· score {{ c.score.toFixed(4) }}</span>
                    </li>
                  }
                </ol>
              }
            </section>
          }
        }
      }
    </div>
  `,
})
export class RepoagentPanel implements OnInit {
  readonly pluginId = input('repoagent');
  protected readonly store = inject(RepoagentStore);
  private readonly confirm = inject(ConfirmStore);
  protected readonly modes = RETRIEVE_MODES;
  protected addPath = '';
  protected addName = '';
  protected form: SearchForm = { ...SEARCH_DEFAULTS };
  protected mapFocus = '';
  protected mapTokens: number | null = 1024;
  protected question = '';
  protected askK: number | null = 5;
  protected askMaxTokens: number | null = 256;
  protected readonly fileFilter = signal('');
  private readonly filtered = computed(() => {
    const q = this.fileFilter().trim().toLowerCase();
    const files = this.store.files() ?? [];
    return q ? files.filter((f) => f.path.toLowerCase().includes(q)) : files;
  });
  protected readonly shownFiles = computed(() => this.filtered().slice(0, FILES_SHOWN));
  protected readonly moreFiles = computed(() => this.filtered().length - this.shownFiles().length);
  protected readonly answerRuns = computed(() =>
    citationRuns(
      this.store.answer(),
      this.store.citations().map((c) => c.n),
    ),
  );
  protected readonly lines = hitLines;
  protected readonly time = formatTime;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private destroyed = false;

  constructor() {
    inject(DestroyRef).onDestroy(() => {
      this.destroyed = true;
      if (this.timer) clearTimeout(this.timer);
      this.store.stopAsk();
    });
  }

  async ngOnInit() {
    this.store.setPlugin(this.pluginId());
    await Promise.all([this.store.loadCaps(), this.store.loadRepos()]);
    this.poll();
  }

  /** While a repository indexes, reads repo.list every second; the chosen one is read again once ready. */
  private poll() {
    if (this.destroyed) return;
    this.timer = setTimeout(async () => {
      this.timer = null;
      if (this.store.anyIndexing()) {
        const was = this.store.repo()?.state;
        await this.store.loadRepos();
        if (was === 'indexing' && this.store.repo()?.state === 'ready') await this.store.refresh();
      }
      this.poll();
    }, POLL_MS);
  }

  protected kindClass(kind: string): string {
    return KIND_CLASS[kind] ?? OTHER_KIND;
  }

  protected stateClass(r: RepoInfo): string {
    if (r.state === 'ready') return 'text-emerald-700 dark:text-emerald-300';
    if (r.state === 'error') return 'text-rose-700 dark:text-rose-300';
    return 'text-amber-700 dark:text-amber-300';
  }

  protected async add() {
    if (await this.store.add(this.addPath, this.addName)) {
      this.addPath = '';
      this.addName = '';
    }
  }

  protected async remove(name: string) {
    const ok = await this.confirm.ask({
      title: `Remove ${name}?`,
      message: `repoagent stops watching ${name} and forgets its index. Its files are not touched.`,
      confirmLabel: 'Remove',
    });
    if (ok) await this.store.remove(name);
  }

  protected search() {
    return this.store.search({ ...this.form });
  }

  protected focusCite(n: number) {
    (document.getElementById('ra-cite-' + n) as HTMLElement | null)?.focus();
  }
}
