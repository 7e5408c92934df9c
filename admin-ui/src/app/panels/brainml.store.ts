import { HttpClient } from '@angular/common/http';
import { computed, inject } from '@angular/core';
import { patchState, signalStore, withComputed, withMethods, withState } from '@ngrx/signals';
import { Api, ApiError } from '../core/api';
import { PluginDetail } from '../core/models';
import { IndexParams, NdjsonParser, postStreaming } from './brainml-ops';

/** `collection.list` / `collection.get` (brainml's API contract). */
export interface CollectionInfo {
  name: string;
  model: string | null;
  dim: number;
  distance: Distance;
  documents: number;
  chunks: number;
}

/** One entry of `stats`. */
export interface CollectionStats {
  name: string;
  documents: number;
  chunks: number;
  vectors: number;
  bytes_on_disk: number;
  bytes_in_memory: number;
  index: string;
  queries: number;
  p50_ms: number | null;
  p99_ms: number | null;
  /** Since `train` (issue 12, second part): what the index was built with and what it measured. */
  index_params?: IndexParams | null;
  recall_at_10?: number | null;
  last_trained_ms?: number | null;
  bytes_per_vector?: number | null;
}

/** A collection with its stats (null until `stats` answered, or when it failed). */
export type CollectionRow = CollectionInfo & { stats: CollectionStats | null };

export const DISTANCES = ['cosine', 'dot', 'l2'] as const;
export type Distance = (typeof DISTANCES)[number];
export const MODES = ['hybrid', 'dense', 'bm25'] as const;
export type Mode = (typeof MODES)[number];
export const DEFAULT_MODEL = 'all-MiniLM-L6-v2';
export const NAME_RE = /^[a-z0-9_-]{1,64}$/;
/** The files the index box takes: plain text and markdown, one document each. */
export const TEXT_FILE_RE = /\.(txt|md|markdown)$/i;

export interface Hit {
  id: string;
  chunk: number;
  score: number;
  text?: string | null;
  metadata?: Record<string, unknown> | null;
}

export interface QueryResult {
  hits: Hit[];
  took_ms: number;
  mode: Mode;
  /** The text the query was sent with (what the hits highlight). */
  text: string;
  collection: string;
}

/** What the create form holds: a model collection, or one of caller-supplied vectors of `dim`. */
export interface CreateForm {
  name: string;
  kind: 'model' | 'vectors';
  model: string;
  dim: number | null;
  distance: Distance;
}

export interface QueryForm {
  collection: string;
  text: string;
  mode: Mode;
  k: number;
  /** The filter as typed (JSON); blank for none. */
  filter: string;
}

export type FileStatus = 'pending' | 'reading' | 'indexing' | 'done' | 'error';
export interface FileProgress {
  name: string;
  size: number;
  status: FileStatus;
  /** The server's answer (`N chunks in M ms`) or its error. */
  message: string;
  /** While a streamed `index` embeds: the chunks embedded so far and in all. */
  chunksDone?: number;
  chunksTotal?: number;
}

/** A source of one document: a dropped file or the pasted text. */
export interface DocSource {
  id: string;
  size: number;
  read: () => Promise<string>;
  metadata: Record<string, string>;
}

/** The `collection.create` body for a form, or the reason it cannot be sent. */
export function createBody(f: CreateForm): { body: Record<string, unknown> } | { error: string } {
  const name = f.name.trim();
  if (!NAME_RE.test(name)) return { error: 'The name takes 1 to 64 of a-z, 0-9, _ and -.' };
  const body: Record<string, unknown> = { name, distance: f.distance };
  if (f.kind === 'model') {
    const model = f.model.trim();
    if (!model)
      return {
        error: 'Name the embedding model (candle serves it), or choose "vectors of a dimension".',
      };
    body['model'] = model;
  } else {
    const dim = Number(f.dim);
    if (!Number.isInteger(dim) || dim < 1)
      return { error: 'The dimension is a whole number of at least 1.' };
    body['dim'] = dim;
  }
  return { body };
}

/**
 * Parses the filter box: blank is no filter; otherwise a JSON object, or the reason it is not one
 * (shown before anything is sent).
 */
export function parseFilter(text: string): {
  filter: Record<string, unknown> | null;
  error: string | null;
} {
  if (!text.trim()) return { filter: null, error: null };
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    return { filter: null, error: `The filter is not valid JSON: ${(e as Error).message}` };
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    return {
      filter: null,
      error: 'The filter is a JSON object, e.g. {"source": "a.md"} or {"year": {"$gte": 2020}}.',
    };
  }
  return { filter: v as Record<string, unknown>, error: null };
}

/** The `query` body for a form, or the reason it cannot be sent. */
export function queryBody(f: QueryForm): { body: Record<string, unknown> } | { error: string } {
  if (!f.collection) return { error: 'Choose a collection.' };
  const text = f.text.trim();
  if (!text) return { error: 'Type what to search for.' };
  const k = Number(f.k);
  if (!Number.isInteger(k) || k < 1 || k > 1000)
    return { error: 'k is a whole number from 1 to 1000.' };
  const { filter, error } = parseFilter(f.filter);
  if (error) return { error };
  const body: Record<string, unknown> = {
    collection: f.collection,
    text,
    k,
    mode: f.mode,
    with_text: true,
  };
  if (filter) body['filter'] = filter;
  return { body };
}

/**
 * A duration in ms as the plugin reports it (a float), for reading: `0.42 ms`, `7.6 ms`, `35 ms`,
 * and from 10 s on in seconds (`21.6 s`).
 */
export function formatMs(v: number | null | undefined): string {
  if (v == null || !isFinite(v)) return '–';
  if (v >= 10_000) return `${(v / 1000).toFixed(1)} s`;
  return `${v < 1 ? v.toFixed(2) : v < 10 ? v.toFixed(1) : Math.round(v)} ms`;
}

/** The lower-cased words of a text (letters and digits, any script). */
export function words(text: string): string[] {
  return (text.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? []).filter(Boolean);
}

/**
 * Splits a hit's text into runs, marking the words that are words of the query (whole words,
 * case-insensitive), for `<mark>`.
 */
export function highlight(text: string, query: string): { text: string; match: boolean }[] {
  const wanted = new Set(words(query));
  const out: { text: string; match: boolean }[] = [];
  const push = (t: string, match: boolean) => {
    if (!t) return;
    const last = out[out.length - 1];
    if (last && last.match === match && !match) last.text += t;
    else out.push({ text: t, match });
  };
  let at = 0;
  for (const m of text.matchAll(/[\p{L}\p{N}]+/gu)) {
    const i = m.index ?? 0;
    if (!wanted.has(m[0].toLowerCase())) continue;
    push(text.slice(at, i), false);
    push(m[0], true);
    at = i + m[0].length;
  }
  push(text.slice(at), false);
  return out;
}

/** A dropped or chosen file as one document: id = the file name, metadata {source: file name}. */
export function fileSource(file: File): DocSource {
  return {
    id: file.name,
    size: file.size,
    read: () => file.text(),
    metadata: { source: file.name },
  };
}

interface BrainmlState {
  pluginId: string;
  collections: CollectionRow[];
  loading: boolean;
  /** Why the list could not be read. */
  listError: string | null;
  /** Why stats could not be read (the list is still shown). */
  statsError: string | null;
  createError: string | null;
  creating: boolean;
  files: FileProgress[];
  indexing: boolean;
  querying: boolean;
  queryError: string | null;
  result: QueryResult | null;
  /** The plugin's capabilities (from its manifest), or null while unknown. */
  caps: string[] | null;
  /** Whether the manifest was asked for (read or not): the sections that depend on it wait. */
  capsRead: boolean;
  /** Whether `index` takes `stream: true` (NDJSON progress): null until the first file tells. */
  indexStreams: boolean | null;
}

const initial: BrainmlState = {
  pluginId: 'brainml',
  collections: [],
  loading: false,
  listError: null,
  statsError: null,
  createError: null,
  creating: false,
  files: [],
  indexing: false,
  querying: false,
  queryError: null,
  result: null,
  caps: null,
  capsRead: false,
  indexStreams: null,
};

const message = (e: unknown) => (e instanceof Error ? e.message : String(e));

/** The brainml panel's state and its calls to the plugin (`POST /api/plugins/<id>/<capability>`). */
export const BrainmlStore = signalStore(
  withState<BrainmlState>(initial),
  withComputed((s) => ({
    names: computed(() => s.collections().map((c) => c.name)),
    /** Files done, failed and in all, for `3/5 done, 1 failed`. */
    filesSummary: computed(() => {
      const f = s.files();
      return {
        total: f.length,
        done: f.filter((x) => x.status === 'done').length,
        failed: f.filter((x) => x.status === 'error').length,
      };
    }),
  })),
  withMethods((store) => {
    const api = inject(Api);
    const http = inject(HttpClient);
    const path = (cap: string) => `/api/plugins/${encodeURIComponent(store.pluginId())}/${cap}`;
    const setFile = (i: number, p: Partial<FileProgress>) =>
      patchState(store, { files: store.files().map((f, j) => (j === i ? { ...f, ...p } : f)) });

    async function load() {
      patchState(store, { loading: true });
      try {
        const [list, stats] = await Promise.all([
          api.post<{ collections: CollectionInfo[] }>(path('collection.list'), {}),
          api
            .post<{ collections: CollectionStats[] }>(path('stats'), {})
            .catch((e: unknown) => e as Error),
        ]);
        const byName = new Map(
          stats instanceof Error ? [] : stats.collections.map((s) => [s.name, s]),
        );
        patchState(store, {
          collections: [...list.collections]
            .sort((a, b) => a.name.localeCompare(b.name))
            .map((c) => ({ ...c, stats: byName.get(c.name) ?? null })),
          listError: null,
          statsError: stats instanceof Error ? `Could not read stats: ${stats.message}` : null,
        });
      } catch (e) {
        patchState(store, { listError: `Could not list collections: ${message(e)}` });
      } finally {
        patchState(store, { loading: false });
      }
    }

    /**
     * One `index` call for a document. Sent with `stream: true` (NDJSON lines `{embedded, chunks}`
     * then the final `{indexed, chunks, took_ms}`), unless the plugin refused that field once: then
     * as a plain call.
     */
    async function indexOne(
      i: number,
      collection: string,
      doc: Record<string, unknown>,
    ): Promise<{ indexed: number; chunks: number; took_ms: number }> {
      const body = { collection, documents: [doc] };
      if (store.indexStreams() === false) return api.post(path('index'), body);
      const parser = new NdjsonParser();
      let final: { indexed: number; chunks: number; took_ms: number } | null = null;
      const take = (lines: unknown[]) => {
        for (const l of lines) {
          const o = l as Record<string, unknown>;
          if (o['error'] != null) {
            const e = o['error'] as { message?: string } | string;
            throw new Error(typeof e === 'string' ? e : (e.message ?? JSON.stringify(e)));
          }
          if (typeof o['embedded'] === 'number') {
            setFile(i, {
              chunksDone: o['embedded'] as number,
              chunksTotal: (o['chunks'] as number) ?? undefined,
            });
          } else if (typeof o['indexed'] === 'number') {
            final = o as unknown as typeof final;
          }
        }
      };
      try {
        await postStreaming(http, api.base + path('index'), { ...body, stream: true }, (t) =>
          take(parser.push(t)),
        );
      } catch (e) {
        // An earlier brainml refuses the unknown field: send it plainly from now on.
        if (e instanceof ApiError && e.status === 400 && /\bstream\b/.test(e.message)) {
          patchState(store, { indexStreams: false });
          return api.post(path('index'), body);
        }
        throw e;
      }
      take(parser.end());
      if (!final) throw new Error('the streamed answer ended without its final line');
      patchState(store, { indexStreams: true });
      return final;
    }

    return {
      setPlugin(id: string) {
        patchState(store, { pluginId: id });
      },
      load,
      /** Reads the plugin's manifest: which capabilities this brainml build has. */
      async loadCaps() {
        try {
          const d = await api.get<PluginDetail>(
            `/api/core/plugins/${encodeURIComponent(store.pluginId())}`,
          );
          patchState(store, { caps: (d.capabilities ?? []).map((c) => c.name), capsRead: true });
        } catch {
          patchState(store, { caps: null, capsRead: true });
        }
      },
      /** Whether the plugin's manifest lists a capability (false while unknown). */
      has(cap: string): boolean {
        return store.caps()?.includes(cap) ?? false;
      },
      /** Whether the manifest is known and lacks a capability (then its section says so). */
      lacks(cap: string): boolean {
        const c = store.caps();
        return c != null && !c.includes(cap);
      },
      /** Creates a collection; true when it was created. */
      async create(form: CreateForm): Promise<boolean> {
        const r = createBody(form);
        if ('error' in r) {
          patchState(store, { createError: r.error });
          return false;
        }
        patchState(store, { creating: true, createError: null });
        try {
          await api.post(path('collection.create'), r.body);
          await load();
          return true;
        } catch (e) {
          patchState(store, { createError: message(e) });
          return false;
        } finally {
          patchState(store, { creating: false });
        }
      },
      /** Deletes a collection (the caller has asked for confirmation); the error, or null. */
      async remove(name: string): Promise<string | null> {
        try {
          await api.post(path('collection.delete'), { name });
          if (store.result()?.collection === name) patchState(store, { result: null });
          await load();
          return null;
        } catch (e) {
          return message(e);
        }
      },
      /**
       * Indexes the sources one `index` call each, in order, with the progress and the server's
       * answer or error per source. Files that are not text are refused without a call.
       */
      async index(collection: string, sources: (DocSource & { refuse?: string })[]) {
        if (!collection || !sources.length) return;
        patchState(store, {
          indexing: true,
          files: sources.map((s) => ({
            name: s.id,
            size: s.size,
            status: s.refuse ? 'error' : 'pending',
            message: s.refuse ?? '',
          })),
        });
        for (const [i, s] of sources.entries()) {
          if (s.refuse) continue;
          try {
            setFile(i, { status: 'reading' });
            const text = await s.read();
            setFile(i, { status: 'indexing' });
            const r = await indexOne(i, collection, { id: s.id, text, metadata: s.metadata });
            setFile(i, {
              status: 'done',
              message: `${r.chunks} chunk${r.chunks === 1 ? '' : 's'} in ${formatMs(r.took_ms)}`,
            });
          } catch (e) {
            setFile(i, { status: 'error', message: message(e) });
          }
        }
        patchState(store, { indexing: false });
        await load();
      },
      async query(form: QueryForm) {
        const r = queryBody(form);
        if ('error' in r) {
          patchState(store, { queryError: r.error });
          return;
        }
        patchState(store, { querying: true, queryError: null });
        try {
          const res = await api.post<Omit<QueryResult, 'text' | 'collection'>>(
            path('query'),
            r.body,
          );
          const text = r.body['text'] as string;
          patchState(store, {
            result: { ...res, mode: res.mode ?? form.mode, text, collection: form.collection },
          });
          void load();
        } catch (e) {
          patchState(store, { queryError: message(e), result: null });
        } finally {
          patchState(store, { querying: false });
        }
      },
    };
  }),
);
