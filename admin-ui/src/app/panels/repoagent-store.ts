import { HttpClient } from '@angular/common/http';
import { computed, inject } from '@angular/core';
import { patchState, signalStore, withComputed, withMethods, withState } from '@ngrx/signals';
import { Api } from '../core/api';
import { PluginDetail } from '../core/models';
import { NdjsonParser, SseEventParser, capPath, postStreaming } from './brainml-ops';

// ---------------------------------------------------------------------------------------------
// repoagent's answers (plugins/repoagent/src/api.rs), as the panel reads them

/** `repo.list`'s repositories. */
export interface RepoInfo {
  name: string;
  path: string;
  state: 'indexing' | 'ready' | 'error' | string;
  files: number;
  languages: Record<string, number>;
  indexed_at: number | null;
  watching: boolean;
  generation?: number;
  builds?: number;
  skipped_large?: number;
  skipped_binary?: number;
  progress?: { files_done: number; files_total: number } | null;
  error?: string | null;
}

export interface Counts {
  lines: number;
  code: number;
  comments: number;
  blanks: number;
}
export type LanguageStats = Counts & { language: string; files: number };
export type FileStats = Counts & { path: string; language: string };
export type Totals = Counts & { files: number };

export interface HitSymbol {
  kind: string;
  name: string;
  line: number;
}
export interface SearchHit {
  path: string;
  line: number;
  column: number;
  text: string;
  before?: string[];
  after?: string[];
  symbol?: HitSymbol | null;
}
export interface SearchResult {
  hits: SearchHit[];
  truncated: boolean;
  files_searched: number;
  binary_files?: number;
}

export interface OutlineNode {
  kind: string;
  name: string;
  line: number;
  end_line: number;
  signature: string;
  children: OutlineNode[];
}
export interface Outline {
  path: string;
  language: string | null;
  symbols: OutlineNode[];
}

export interface FileComplexity {
  path: string;
  language: string;
  functions: number;
  cyclomatic: number;
  cognitive: number;
  max_cyclomatic: number;
}
export interface Hotspot {
  path: string;
  churn: { commits: number; lines_changed: number };
  complexity: number;
  score: number;
}
export interface RepoMetrics {
  files: FileComplexity[];
  truncated: boolean;
  totals: { files: number; functions: number; cyclomatic: number; cognitive: number };
  hotspots: Hotspot[];
  churn_commits: number;
  churn_error?: string | null;
  errors?: string[];
}
export interface FnMetrics {
  name: string;
  parent: string | null;
  line: number;
  end_line: number;
  cyclomatic: number;
  cognitive: number;
  lines: number;
  params: number;
  exits: number;
}
export interface FileMetrics {
  path: string;
  language: string;
  functions: FnMetrics[];
  cyclomatic: number;
  cognitive: number;
  max_cyclomatic: number;
}

export interface MapAnswer {
  map: string;
  tokens: number;
  ranked: number;
  included: number;
  cached: boolean;
  updated: number;
  graph_files?: number;
}

/** `code.refs`: a name's definitions and references. */
export interface RefHit {
  path: string;
  line: number;
  kind: string;
  text: string;
  symbol?: HitSymbol | null;
}
export interface RefsAnswer {
  name: string;
  definitions: { path: string; kind: string; name: string; line: number }[];
  references: RefHit[];
  total: number;
  truncated: boolean;
}

export interface SemanticHit {
  path: string;
  line: number;
  end_line: number;
  kind: string;
  name: string;
  parent?: string | null;
  score: number;
  id: string;
  text?: string | null;
}
export interface SemanticResult {
  hits: SemanticHit[];
  mode: string;
  collection: string;
  indexed_at: number;
}
export interface CodeIndexed {
  chunks: number;
  embedded: number;
  unchanged: number;
  deleted: number;
  files: number;
  took_ms: number;
  collection: string;
}
export interface CodeCitation {
  n: number;
  cite: string;
  path: string;
  line: number;
  end_line: number;
  kind: string;
  name: string;
  score: number;
}

// ---------------------------------------------------------------------------------------------
// Forms and request bodies (checked before anything is sent)

export const MAX_CONTEXT = 20;
export const MAX_HITS = 10_000;
export const RETRIEVE_MODES = ['hybrid', 'dense', 'bm25'] as const;
export type RetrieveMode = (typeof RETRIEVE_MODES)[number];

export interface SearchForm {
  /** `text`: ripgrep's search (`code.search`); `meaning`: `code.semantic_search`. */
  by: 'text' | 'meaning';
  pattern: string;
  regex: boolean;
  matchCase: boolean;
  /** Globs separated by spaces (`!` excludes), blank for all files. */
  glob: string;
  context: number | null;
  max: number | null;
  k: number | null;
  mode: RetrieveMode;
}

export const SEARCH_DEFAULTS: SearchForm = {
  by: 'text',
  pattern: '',
  regex: false,
  matchCase: true,
  glob: '',
  context: 2,
  max: 100,
  k: 10,
  mode: 'hybrid',
};

const whole = (v: unknown, lo: number, hi: number) =>
  v !== null && v !== '' && Number.isInteger(Number(v)) && Number(v) >= lo && Number(v) <= hi;

/** The `code.search` body for a form, or the reason it cannot be sent. */
export function searchBody(
  repo: string,
  f: SearchForm,
): { body: Record<string, unknown> } | { error: string } {
  if (!repo) return { error: 'Choose a repository first.' };
  if (!f.pattern) return { error: 'Type what to search for.' };
  if (!whole(f.context, 0, MAX_CONTEXT))
    return { error: `Context is a whole number of lines from 0 to ${MAX_CONTEXT}.` };
  if (!whole(f.max, 1, MAX_HITS))
    return { error: `Max hits is a whole number from 1 to ${MAX_HITS}.` };
  const body: Record<string, unknown> = {
    repo,
    pattern: f.pattern,
    regex: f.regex,
    case_sensitive: f.matchCase,
    context: Number(f.context),
    max: Number(f.max),
  };
  const globs = f.glob.split(/\s+/).filter(Boolean);
  if (globs.length) body['glob'] = globs.length === 1 ? globs[0] : globs;
  return { body };
}

/** The `code.semantic_search` body for a form, or the reason it cannot be sent. */
export function semanticBody(
  repo: string,
  f: SearchForm,
): { body: Record<string, unknown> } | { error: string } {
  if (!repo) return { error: 'Choose a repository first.' };
  const query = f.pattern.trim();
  if (!query) return { error: 'Describe what the code you look for does.' };
  if (!whole(f.k, 1, 100)) return { error: 'k is a whole number from 1 to 100.' };
  return { body: { repo, query, k: Number(f.k), mode: f.mode } };
}

/** The `code.map` body: focus names or paths separated by spaces or commas, a token budget. */
export function mapBody(
  repo: string,
  focus: string,
  tokens: number | null,
): { body: Record<string, unknown> } | { error: string } {
  if (!repo) return { error: 'Choose a repository first.' };
  if (!whole(tokens, 16, 65536))
    return { error: 'The budget is a whole number of tokens from 16 to 65536.' };
  const body: Record<string, unknown> = { repo, tokens: Number(tokens) };
  const f = focus.split(/[\s,]+/).filter(Boolean);
  if (f.length) body['focus'] = f;
  return { body };
}

/** The `code.ask` body, or the reason it cannot be sent. */
export function askBody(
  repo: string,
  question: string,
  k: number | null,
  maxTokens: number | null = 256,
): { body: Record<string, unknown> } | { error: string } {
  if (!repo) return { error: 'Choose a repository first.' };
  const q = question.trim();
  if (!q) return { error: 'Type a question about the code.' };
  if (!whole(k, 1, 20)) return { error: 'k is a whole number of chunks from 1 to 20.' };
  if (!whole(maxTokens, 1, 4096)) return { error: 'Max tokens is a whole number from 1 to 4096.' };
  return { body: { repo, question: q, k: Number(k), max_tokens: Number(maxTokens), stream: true } };
}

/** Why a path typed into the add box cannot be sent (the plugin checks the rest), or null. */
export function addProblem(path: string, name: string): string | null {
  if (!path.trim()) return 'Type the folder of the repository (an absolute path on the host).';
  if (name.trim() && !/^(?!\.)[A-Za-z0-9._-]{1,64}$/.test(name.trim()))
    return 'A name takes 1 to 64 of A-Z, a-z, 0-9, ".", "_" and "-", not starting with ".".';
  return null;
}

/** One line of a snippet: its number, its text, and whether it is the line asked about. */
export interface SnippetLine {
  n: number;
  text: string;
  hit: boolean;
}

/** A hit's lines in order, numbered: its `before` lines, the line itself, its `after` lines. */
export function hitLines(h: SearchHit): SnippetLine[] {
  const before = h.before ?? [];
  return [
    ...before.map((text, i) => ({ n: h.line - before.length + i, text, hit: false })),
    { n: h.line, text: h.text, hit: true },
    ...(h.after ?? []).map((text, i) => ({ n: h.line + 1 + i, text, hit: false })),
  ];
}

/** Search hits grouped by file, in the order the plugin gave them. */
export function groupByPath(hits: SearchHit[]): { path: string; hits: SearchHit[] }[] {
  const out: { path: string; hits: SearchHit[] }[] = [];
  for (const h of hits) {
    const last = out[out.length - 1];
    if (last && last.path === h.path) last.hits.push(h);
    else out.push({ path: h.path, hits: [h] });
  }
  return out;
}

/** A language's bar: its code, comment and blank lines as percents of the largest language's lines. */
export interface LanguageBar {
  language: string;
  files: number;
  lines: number;
  code: number;
  comments: number;
  blanks: number;
  /** Widths in percent of the chart (the language with most lines fills it). */
  codePct: number;
  commentsPct: number;
  blanksPct: number;
}

/** The bars of the chart: most code first (as the plugin orders them), scaled to the largest. */
export function languageBars(languages: LanguageStats[]): LanguageBar[] {
  const max = Math.max(0, ...languages.map((l) => l.lines));
  const pct = (v: number) => (max > 0 ? (100 * v) / max : 0);
  return languages.map((l) => ({
    language: l.language,
    files: l.files,
    lines: l.lines,
    code: l.code,
    comments: l.comments,
    blanks: l.blanks,
    codePct: pct(l.code),
    commentsPct: pct(l.comments),
    blanksPct: pct(l.blanks),
  }));
}

/** The error message of an in-stream line or event (`{error: {message}}` or `{error: "..."}`). */
function streamError(o: unknown): string | null {
  if (!o || typeof o !== 'object' || !('error' in o)) return null;
  const e = (o as { error: unknown }).error;
  if (typeof e === 'string') return e;
  return String((e as { message?: string })?.message ?? JSON.stringify(e));
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

const message = (e: unknown) => (e instanceof Error ? e.message : String(e));

// ---------------------------------------------------------------------------------------------
// The store

export interface Snippet {
  path: string;
  /** What was clicked: a definition's name and kind. */
  name: string;
  kind: string;
  line: number;
  lines: SnippetLine[];
}

interface RepoagentState {
  pluginId: string;
  caps: string[] | null;
  /** The allowed roots from the plugin's config (null: not read). */
  roots: string[] | null;
  repos: RepoInfo[];
  listError: string | null;
  adding: boolean;
  addError: string | null;
  addProgress: { files_done: number; files_total: number } | null;
  /** Why a reindex or remove failed. */
  actionError: string | null;
  selected: string | null;
  languages: LanguageStats[] | null;
  totals: Totals | null;
  statsError: string | null;
  files: FileStats[] | null;
  outline: Outline | null;
  outlineError: string | null;
  snippet: Snippet | null;
  snippetError: string | null;
  refs: RefsAnswer | null;
  refsError: string | null;
  searching: boolean;
  searchError: string | null;
  result: (SearchResult & { pattern: string }) | null;
  semantic: SemanticResult | null;
  indexing: boolean;
  indexProgress: { phase: string; done: number; total: number } | null;
  indexed: CodeIndexed | null;
  indexError: string | null;
  metrics: RepoMetrics | null;
  metricsError: string | null;
  fileMetrics: FileMetrics | null;
  fileMetricsError: string | null;
  map: MapAnswer | null;
  mapping: boolean;
  mapError: string | null;
  asking: boolean;
  askError: string | null;
  answer: string;
  citations: CodeCitation[];
  answerModel: string | null;
  answerMs: number | null;
}

const initial: RepoagentState = {
  pluginId: 'repoagent',
  caps: null,
  roots: null,
  repos: [],
  listError: null,
  adding: false,
  addError: null,
  addProgress: null,
  actionError: null,
  selected: null,
  languages: null,
  totals: null,
  statsError: null,
  files: null,
  outline: null,
  outlineError: null,
  snippet: null,
  snippetError: null,
  refs: null,
  refsError: null,
  searching: false,
  searchError: null,
  result: null,
  semantic: null,
  indexing: false,
  indexProgress: null,
  indexed: null,
  indexError: null,
  metrics: null,
  metricsError: null,
  fileMetrics: null,
  fileMetricsError: null,
  map: null,
  mapping: false,
  mapError: null,
  asking: false,
  askError: null,
  answer: '',
  citations: [],
  answerModel: null,
  answerMs: null,
};

/** What belongs to the chosen repository (cleared when another is chosen). */
const perRepo: Partial<RepoagentState> = {
  languages: null,
  totals: null,
  statsError: null,
  files: null,
  outline: null,
  outlineError: null,
  snippet: null,
  snippetError: null,
  refs: null,
  refsError: null,
  searchError: null,
  result: null,
  semantic: null,
  indexProgress: null,
  indexed: null,
  indexError: null,
  metrics: null,
  metricsError: null,
  fileMetrics: null,
  fileMetricsError: null,
  map: null,
  mapError: null,
  askError: null,
  answer: '',
  citations: [],
  answerModel: null,
  answerMs: null,
};

/** The repoagent panel's state and its calls to the plugin (`POST /api/plugins/<id>/<capability>`). */
export const RepoagentStore = signalStore(
  withState<RepoagentState>(initial),
  withComputed((s) => ({
    repo: computed(() => s.repos().find((r) => r.name === s.selected()) ?? null),
    anyIndexing: computed(() => s.repos().some((r) => r.state === 'indexing')),
    bars: computed(() => languageBars(s.languages() ?? [])),
    groups: computed(() => groupByPath(s.result()?.hits ?? [])),
  })),
  withMethods((store) => {
    const api = inject(Api);
    const http = inject(HttpClient);
    const path = (cap: string) => capPath(store.pluginId(), cap);
    const call = <T>(cap: string, body: unknown) => api.post<T>(path(cap), body);
    /** Whether an answer for `repo` still belongs on screen (no other repository chosen since). */
    const current = (repo: string) => store.selected() === repo;
    let askAbort: AbortController | null = null;

    async function loadRepos() {
      try {
        const r = await call<{ repos: RepoInfo[] }>('repo.list', {});
        const repos = [...r.repos].sort((a, b) => a.name.localeCompare(b.name));
        patchState(store, { repos, listError: null });
        const sel = store.selected();
        if (sel && !repos.some((x) => x.name === sel))
          patchState(store, { selected: null, ...perRepo });
      } catch (e) {
        patchState(store, { listError: `Could not list repositories: ${message(e)}` });
      }
    }

    async function loadStats(repo: string) {
      try {
        const [langs, files] = await Promise.all([
          call<{ languages: LanguageStats[]; totals: Totals }>('code.stats', {
            repo,
            by: 'language',
          }),
          call<{ files: FileStats[] }>('code.stats', { repo, by: 'file' }),
        ]);
        if (!current(repo)) return;
        patchState(store, {
          languages: langs.languages,
          totals: langs.totals,
          files: [...files.files].sort((a, b) => a.path.localeCompare(b.path)),
          statsError: null,
        });
      } catch (e) {
        if (current(repo)) patchState(store, { statsError: `code.stats failed: ${message(e)}` });
      }
    }

    async function loadMetrics(repo: string) {
      try {
        const m = await call<RepoMetrics>('code.metrics', { repo, limit: 15 });
        if (current(repo)) patchState(store, { metrics: m, metricsError: null });
      } catch (e) {
        if (current(repo))
          patchState(store, { metricsError: `code.metrics failed: ${message(e)}` });
      }
    }

    /** Reads an NDJSON stream: `onLine` gets each line as it arrives; the last one is returned. */
    async function ndjson(
      cap: string,
      body: unknown,
      onLine: (o: Record<string, unknown>) => void,
    ) {
      const parser = new NdjsonParser();
      let last: Record<string, unknown> | null = null;
      const take = (lines: unknown[]) => {
        for (const l of lines) {
          const err = streamError(l);
          if (err) throw new Error(err);
          last = l as Record<string, unknown>;
          onLine(last);
        }
      };
      await postStreaming(http, api.base + path(cap), body, (t) => take(parser.push(t)));
      take(parser.end());
      if (!last) throw new Error('the streamed answer was empty');
      return last as Record<string, unknown>;
    }

    /** Whether the plugin's manifest lists a capability (false while unknown). */
    const has = (cap: string) => store.caps()?.includes(cap) ?? false;

    /** Reads the chosen repository's stats, files and metrics again (when it is ready). */
    async function refresh() {
      const repo = store.selected();
      if (!repo || store.repo()?.state === 'indexing') return;
      await Promise.all([loadStats(repo), has('code.metrics') ? loadMetrics(repo) : null]);
    }

    /** Chooses a repository: its stats, files and metrics are read. */
    async function select(name: string) {
      if (store.selected() !== name) {
        askAbort?.abort();
        patchState(store, { selected: name, ...perRepo });
      }
      await refresh();
    }

    return {
      setPlugin(id: string) {
        patchState(store, { pluginId: id });
      },
      /** Reads the manifest (which capabilities this build has) and the allowed roots. */
      async loadCaps() {
        const id = encodeURIComponent(store.pluginId());
        try {
          const d = await api.get<PluginDetail>(`/api/core/plugins/${id}`);
          patchState(store, { caps: (d.capabilities ?? []).map((c) => c.name) });
        } catch {
          patchState(store, { caps: [] });
        }
        try {
          const c = await api.get<{ config?: { roots?: unknown } | null }>(
            `/api/core/plugins/${id}/config`,
          );
          const roots = c.config?.roots;
          patchState(store, { roots: Array.isArray(roots) ? roots.map(String) : [] });
        } catch {
          patchState(store, { roots: null });
        }
      },
      has,
      loadRepos,
      /**
       * Adds a repository (`repo.add {stream: true}`: its progress shown while it indexes); true
       * when it was added (and chosen). The plugin's refusal is shown as it says it.
       */
      async add(pathText: string, name: string): Promise<boolean> {
        const problem = addProblem(pathText, name);
        if (problem) {
          patchState(store, { addError: problem });
          return false;
        }
        patchState(store, { adding: true, addError: null, addProgress: null });
        const body: Record<string, unknown> = { path: pathText.trim(), stream: true };
        if (name.trim()) body['name'] = name.trim();
        try {
          const done = await ndjson('repo.add', body, (o) => {
            if (typeof o['files_total'] === 'number')
              patchState(store, { addProgress: o as unknown as RepoagentState['addProgress'] });
          });
          await loadRepos();
          const added = String(done['name'] ?? '');
          if (added) await select(added);
          return true;
        } catch (e) {
          patchState(store, { addError: `repo.add refused ${pathText.trim()}: ${message(e)}` });
          return false;
        } finally {
          patchState(store, { adding: false, addProgress: null });
        }
      },
      /** Walks a repository again (`repo.reindex {stream: true}`: its row shows the progress). */
      async reindex(name: string) {
        patchState(store, { actionError: null });
        try {
          await ndjson('repo.reindex', { name, stream: true }, (o) => {
            if (typeof o['files_total'] !== 'number') return;
            const progress = o as unknown as RepoInfo['progress'];
            patchState(store, {
              repos: store
                .repos()
                .map((r) => (r.name === name ? { ...r, state: 'indexing', progress } : r)),
            });
          });
        } catch (e) {
          patchState(store, { actionError: `repo.reindex ${name} failed: ${message(e)}` });
        }
        await loadRepos();
        if (current(name)) await refresh();
      },
      /** Removes a repository (the caller has asked for confirmation). */
      async remove(name: string) {
        patchState(store, { actionError: null });
        try {
          await call('repo.remove', { name });
        } catch (e) {
          patchState(store, { actionError: `repo.remove ${name} failed: ${message(e)}` });
        }
        await loadRepos();
      },
      select,
      refresh,
      /** A file's definitions, nested (`code.outline`). */
      async openFile(file: string) {
        const repo = store.selected();
        if (!repo) return;
        patchState(store, { outlineError: null, snippet: null, snippetError: null });
        try {
          const o = await call<Outline>('code.outline', { repo, path: file });
          if (current(repo)) patchState(store, { outline: o });
        } catch (e) {
          if (current(repo))
            patchState(store, {
              outline: null,
              outlineError: `code.outline ${file} failed: ${message(e)}`,
            });
        }
      },
      /**
       * The lines around a definition: `code.search` for its name in its file with context, the
       * hit on its line (the plugin has no file view).
       */
      /** The references to a name in the repository (`code.refs`, the first 100). */
      async refsOf(name: string) {
        const repo = store.selected();
        if (!repo) return;
        patchState(store, { refsError: null });
        try {
          const r = await call<RefsAnswer>('code.refs', { repo, name, limit: 100 });
          if (current(repo)) patchState(store, { refs: r });
        } catch (e) {
          if (current(repo))
            patchState(store, { refs: null, refsError: `code.refs ${name} failed: ${message(e)}` });
        }
      },
      async showSymbol(
        file: string,
        sym: { name: string; kind: string; line: number },
        context = 8,
      ) {
        const repo = store.selected();
        if (!repo) return;
        patchState(store, { snippetError: null });
        try {
          const r = await call<SearchResult>('code.search', {
            repo,
            pattern: sym.name,
            path: file,
            case_sensitive: true,
            context,
            max: MAX_HITS,
          });
          if (!current(repo)) return;
          const hit = r.hits.find((h) => h.path === file && h.line === sym.line);
          if (!hit) {
            patchState(store, {
              snippet: null,
              snippetError: `Line ${sym.line} of ${file} no longer holds ${sym.name} (the file changed since it was indexed?).`,
            });
            return;
          }
          patchState(store, {
            snippet: {
              path: file,
              name: sym.name,
              kind: sym.kind,
              line: sym.line,
              lines: hitLines(hit),
            },
          });
        } catch (e) {
          if (current(repo))
            patchState(store, { snippet: null, snippetError: `code.search failed: ${message(e)}` });
        }
      },
      /** `code.search` (by text) or `code.semantic_search` (by meaning). */
      async search(form: SearchForm) {
        const repo = store.selected() ?? '';
        const meaning = form.by === 'meaning';
        const r = meaning ? semanticBody(repo, form) : searchBody(repo, form);
        if ('error' in r) {
          patchState(store, { searchError: r.error });
          return;
        }
        patchState(store, { searching: true, searchError: null });
        try {
          if (meaning) {
            const res = await call<SemanticResult>('code.semantic_search', r.body);
            if (current(repo)) patchState(store, { semantic: res, result: null });
          } else {
            const res = await call<SearchResult>('code.search', r.body);
            if (current(repo))
              patchState(store, { result: { ...res, pattern: form.pattern }, semantic: null });
          }
        } catch (e) {
          const cap = meaning ? 'code.semantic_search' : 'code.search';
          if (current(repo))
            patchState(store, {
              searchError: `${cap} failed: ${message(e)}`,
              result: null,
              semantic: null,
            });
        } finally {
          patchState(store, { searching: false });
        }
      },
      /** `code.index {stream: true}`: the repository's chunks embedded for search by meaning. */
      async index() {
        const repo = store.selected();
        if (!repo || store.indexing()) return;
        patchState(store, { indexing: true, indexError: null, indexProgress: null, indexed: null });
        try {
          const done = await ndjson('code.index', { repo, stream: true }, (o) => {
            if (typeof o['phase'] === 'string' && current(repo))
              patchState(store, { indexProgress: o as unknown as RepoagentState['indexProgress'] });
          });
          if (current(repo)) patchState(store, { indexed: done as unknown as CodeIndexed });
        } catch (e) {
          if (current(repo)) patchState(store, { indexError: `code.index failed: ${message(e)}` });
        } finally {
          patchState(store, { indexing: false, indexProgress: null });
        }
      },
      /** One file's functions with their metrics (`code.metrics {path}`), most cyclomatic first. */
      async fileMetricsOf(file: string) {
        const repo = store.selected();
        if (!repo) return;
        patchState(store, { fileMetricsError: null });
        try {
          const m = await call<FileMetrics>('code.metrics', { repo, path: file });
          const functions = [...m.functions].sort(
            (a, b) => b.cyclomatic - a.cyclomatic || a.line - b.line,
          );
          if (current(repo)) patchState(store, { fileMetrics: { ...m, functions } });
        } catch (e) {
          if (current(repo))
            patchState(store, {
              fileMetrics: null,
              fileMetricsError: `code.metrics ${file} failed: ${message(e)}`,
            });
        }
      },
      async makeMap(focus: string, tokens: number | null) {
        const repo = store.selected() ?? '';
        const r = mapBody(repo, focus, tokens);
        if ('error' in r) {
          patchState(store, { mapError: r.error });
          return;
        }
        patchState(store, { mapping: true, mapError: null });
        try {
          const m = await call<MapAnswer>('code.map', r.body);
          if (current(repo)) patchState(store, { map: m });
        } catch (e) {
          if (current(repo))
            patchState(store, { map: null, mapError: `code.map failed: ${message(e)}` });
        } finally {
          patchState(store, { mapping: false });
        }
      },
      /**
       * `code.ask {stream: true}`: `event: citations` first, then `data: {"delta"}` per token,
       * then `event: done` {answer, took_ms}. A plain JSON answer is taken too.
       */
      async ask(question: string, k: number | null, maxTokens: number | null = 256) {
        const repo = store.selected() ?? '';
        const r = askBody(repo, question, k, maxTokens);
        if ('error' in r) {
          patchState(store, { askError: r.error });
          return;
        }
        askAbort?.abort();
        const abort = new AbortController();
        askAbort = abort;
        patchState(store, {
          asking: true,
          askError: null,
          answer: '',
          citations: [],
          answerModel: null,
          answerMs: null,
        });
        const parser = new SseEventParser();
        let done = false;
        const take = (events: { event: string; data: string }[]) => {
          for (const ev of events) {
            const data = parseJson(ev.data) as Record<string, unknown> | null;
            const err = ev.event === 'error' ? (streamError(data) ?? ev.data) : streamError(data);
            if (err) throw new Error(err);
            if (ev.event === 'citations') {
              const list = Array.isArray(data)
                ? data
                : (data?.['citations'] as CodeCitation[] | undefined);
              patchState(store, { citations: (list ?? []) as CodeCitation[] });
              if (typeof data?.['model'] === 'string')
                patchState(store, { answerModel: data['model'] as string });
            } else if (ev.event === 'done') {
              done = true;
              if (typeof data?.['answer'] === 'string')
                patchState(store, { answer: data['answer'] as string });
              if (typeof data?.['took_ms'] === 'number')
                patchState(store, { answerMs: data['took_ms'] as number });
              if (typeof data?.['model'] === 'string')
                patchState(store, { answerModel: data['model'] as string });
            } else if (typeof data?.['delta'] === 'string') {
              patchState(store, { answer: store.answer() + (data['delta'] as string) });
            }
          }
        };
        try {
          const res = await postStreaming(
            http,
            api.base + path('code.ask'),
            r.body,
            (t) => take(parser.push(t)),
            abort.signal,
          );
          take(parser.end());
          if (!done) {
            const whole = parseJson(res.text) as {
              answer?: string;
              citations?: CodeCitation[];
              took_ms?: number;
              model?: string;
            } | null;
            if (whole && typeof whole.answer === 'string') {
              patchState(store, {
                answer: whole.answer,
                citations: whole.citations ?? [],
                answerMs: whole.took_ms ?? null,
                answerModel: whole.model ?? null,
              });
            } else if (!store.answer()) throw new Error('the answer ended before it began');
          }
        } catch (e) {
          if ((e as Error).name !== 'AbortError' && current(repo))
            patchState(store, { askError: `code.ask failed: ${message(e)}` });
        } finally {
          if (askAbort === abort) {
            askAbort = null;
            patchState(store, { asking: false });
          }
        }
      },
      stopAsk() {
        askAbort?.abort();
      },
    };
  }),
);
