import {
  HttpClient,
  HttpDownloadProgressEvent,
  HttpErrorResponse,
  HttpEventType,
} from '@angular/common/http';
import { ApiError, toApiError } from '../core/api';
import { NAME_RE, parseFilter } from './brainml.store';

/**
 * brainml's second part (issue 12) as the admin panel uses it: train and its status, snapshots,
 * rag.ask, and the streamed answers (NDJSON progress of `index {stream: true}`, server-sent events
 * of `rag.ask {stream: true}`). Pure helpers here; the sections are brainml-train.ts,
 * brainml-snapshots.ts and brainml-ask.ts.
 */

// ---------------------------------------------------------------------------------------------
// Streamed answers

/** Splits a growing NDJSON text into its complete lines, parsed (a line that is not JSON: `{error}`). */
export class NdjsonParser {
  private buf = '';

  push(chunk: string): unknown[] {
    this.buf += chunk;
    const out: unknown[] = [];
    let i: number;
    while ((i = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, i).trim();
      this.buf = this.buf.slice(i + 1);
      if (line) out.push(parseLine(line));
    }
    return out;
  }

  /** The last line when the stream ended without a newline after it. */
  end(): unknown[] {
    const line = this.buf.trim();
    this.buf = '';
    return line ? [parseLine(line)] : [];
  }
}

function parseLine(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    return { error: `not a JSON line in the answer: ${line.slice(0, 120)}` };
  }
}

/** One server-sent event: its `event:` name (`message` when none) and its `data:` lines joined. */
export interface SseEvent {
  event: string;
  data: string;
}

/** Incremental parser of server-sent events that keeps the event names (`event: citations`). */
export class SseEventParser {
  private buf = '';

  push(chunk: string): SseEvent[] {
    this.buf += chunk.replace(/\r\n/g, '\n');
    const out: SseEvent[] = [];
    let i: number;
    while ((i = this.buf.indexOf('\n\n')) >= 0) {
      const ev = parseBlock(this.buf.slice(0, i));
      this.buf = this.buf.slice(i + 2);
      if (ev) out.push(ev);
    }
    return out;
  }

  end(): SseEvent[] {
    const ev = parseBlock(this.buf);
    this.buf = '';
    return ev ? [ev] : [];
  }
}

function parseBlock(block: string): SseEvent | null {
  let event = 'message';
  const data: string[] = [];
  for (const line of block.split('\n')) {
    if (line.startsWith('event:')) event = line.slice(6).trim();
    else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
  }
  return data.length || event !== 'message' ? { event, data: data.join('\n') } : null;
}

/** The message of an error body (`{error: {message}}`, `{error: "..."}`, or the text itself). */
export function errorMessage(body: unknown): string {
  let v = body;
  if (typeof v === 'string') {
    try {
      v = JSON.parse(v);
    } catch {
      return v as string;
    }
  }
  const e = (v as { error?: unknown } | null)?.error;
  if (typeof e === 'string') return e;
  if (e && typeof e === 'object' && 'message' in e)
    return String((e as { message: unknown }).message);
  return typeof body === 'string' ? body : JSON.stringify(body);
}

/**
 * POSTs JSON and reads the answer as text while it arrives: `onText` gets each new piece (the
 * `HttpClient` with progress events, so the auth interceptor applies and tests can answer it).
 * Resolves to the status and the whole text; rejects with an `ApiError` naming the server's
 * message, or with what `onText` threw (the request is then cancelled). `signal` aborts it.
 */
export function postStreaming(
  http: HttpClient,
  url: string,
  body: unknown,
  onText: (piece: string) => void,
  signal?: AbortSignal,
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    let seen = 0;
    let failed = false;
    const feed = (all: string) => {
      if (failed || all.length <= seen) return;
      const piece = all.slice(seen);
      seen = all.length;
      try {
        onText(piece);
      } catch (e) {
        failed = true;
        reject(e);
        queueMicrotask(() => sub.unsubscribe());
      }
    };
    const sub = http
      .post(url, body, { observe: 'events', reportProgress: true, responseType: 'text' })
      .subscribe({
        next: (ev) => {
          if (ev.type === HttpEventType.DownloadProgress) {
            const partial = (ev as HttpDownloadProgressEvent).partialText;
            if (partial != null) feed(partial);
          } else if (ev.type === HttpEventType.Response) {
            const text = ev.body ?? '';
            feed(text);
            if (!failed) resolve({ status: ev.status, text });
          }
        },
        error: (e: unknown) => {
          if (e instanceof HttpErrorResponse) {
            const err = toApiError(e);
            reject(new ApiError(e.status, err.code, errorMessage(e.error ?? err.message)));
          } else reject(toApiError(e));
        },
      });
    signal?.addEventListener('abort', () => {
      sub.unsubscribe();
      const e = new Error('stopped');
      e.name = 'AbortError';
      reject(e);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// train

export const QUANTIZATIONS = ['none', 'int8'] as const;
export type Quantization = (typeof QUANTIZATIONS)[number];

export interface TrainForm {
  m: number | null;
  ef_construction: number | null;
  /** Blank: the plugin picks the smallest ef reaching the target recall on the sample. */
  ef_search: number | null;
  target_recall: number | null;
  quantization: Quantization;
  /** Build a graph even below the exact threshold. */
  force: boolean;
}

export const TRAIN_DEFAULTS: TrainForm = {
  m: 16,
  ef_construction: 200,
  ef_search: null,
  target_recall: 0.95,
  quantization: 'none',
  force: false,
};

/** What an index was built with (`train.status` params, `stats` index_params). */
export interface IndexParams {
  m?: number;
  ef_construction?: number;
  ef_search?: number | null;
  quantization?: string;
}

export type TrainState = 'none' | 'running' | 'done' | 'failed' | 'cancelled';

export interface TrainStatus {
  collection: string;
  state: TrainState;
  progress: number;
  index: 'exact' | 'hnsw' | string;
  params?: IndexParams | null;
  recall_at_10?: number | null;
  sample?: number | null;
  build_ms?: number | null;
  bytes_per_vector?: number | null;
  index_bytes?: number | null;
  started_ms?: number | null;
  finished_ms?: number | null;
  error?: string | null;
}

/** What `train` answered: the exact-below-threshold reason, or the job it started. */
export type TrainAnswer =
  { collection: string; index: 'exact'; reason: string } | { collection: string; job: TrainStatus };

const blank = (v: unknown) => v == null || `${v}`.trim() === '';

/** The `train` body for a form, or the reason it cannot be sent. */
export function trainBody(
  collection: string,
  f: TrainForm,
): { body: Record<string, unknown> } | { error: string } {
  if (!collection) return { error: 'Choose a collection.' };
  const body: Record<string, unknown> = { collection };
  const int = (key: 'm' | 'ef_construction' | 'ef_search', min: number, max: number) => {
    const v = f[key];
    if (blank(v)) return null;
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max)
      return `${key} is a whole number from ${min} to ${max}.`;
    body[key] = n;
    return null;
  };
  const err =
    int('m', 2, 128) ?? int('ef_construction', 1, 10000) ?? int('ef_search', 1, 10000) ?? null;
  if (err) return { error: err };
  if (!blank(f.target_recall)) {
    const r = Number(f.target_recall);
    if (!(r > 0 && r <= 1))
      return { error: 'The target recall is a number above 0 and at most 1.' };
    body['target_recall'] = r;
  }
  body['quantization'] = f.quantization;
  if (f.force) body['force'] = true;
  return { body };
}

/** A recall as a percentage with one decimal (`97.3 %`), or – when not measured. */
export function formatRecall(v: number | null | undefined): string {
  return v == null || !isFinite(v) ? '–' : `${(v * 100).toFixed(1)} %`;
}

/** The index parameters in a line: `m 16 · ef_construction 200 · ef_search 64 · int8`. */
export function describeParams(p: TrainStatus['params']): string {
  if (!p) return '–';
  const parts: string[] = [];
  if (p.m != null) parts.push(`m ${p.m}`);
  if (p.ef_construction != null) parts.push(`ef_construction ${p.ef_construction}`);
  if (p.ef_search != null) parts.push(`ef_search ${p.ef_search}`);
  if (p.quantization) parts.push(p.quantization === 'none' ? 'f32' : p.quantization);
  return parts.join(' · ') || '–';
}

// ---------------------------------------------------------------------------------------------
// snapshots

export interface SnapshotFile {
  path: string;
  size: number;
  sha256: string;
}

export interface Snapshot {
  id: string;
  collection: string;
  created_ms: number;
  documents: number;
  chunks: number;
  bytes: number;
  files: SnapshotFile[];
}

/** The `snapshot.restore` body: blank `as` replaces the collection it was taken from. */
export function restoreBody(
  id: string,
  as: string,
): { body: Record<string, unknown> } | { error: string } {
  const name = as.trim();
  if (!name) return { body: { id } };
  if (!NAME_RE.test(name)) return { error: 'The new name takes 1 to 64 of a-z, 0-9, _ and -.' };
  return { body: { id, as: name } };
}

/** The file name a downloaded snapshot is saved as (`docs-<id>.tar`, only safe characters). */
export function snapshotFileName(s: Pick<Snapshot, 'id' | 'collection'>): string {
  return `${s.collection}-${s.id}.tar`.replace(/[^A-Za-z0-9._-]/g, '_');
}

/** Hands bytes to the browser as a file download. */
export function saveBlob(blob: Blob, name: string) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  a.rel = 'noopener';
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// ---------------------------------------------------------------------------------------------
// rag.ask

export interface AskForm {
  collection: string;
  question: string;
  k: number | null;
  /** Blank: llmserver's default chat model. */
  model: string;
  max_tokens: number | null;
  filter: string;
}

export interface Citation {
  n: number;
  id: string;
  chunk: number;
  score: number;
  text: string;
}

/** The `rag.ask` body (streamed) for a form, or the reason it cannot be sent. */
export function askBody(f: AskForm): { body: Record<string, unknown> } | { error: string } {
  if (!f.collection) return { error: 'Choose a collection.' };
  const question = f.question.trim();
  if (!question) return { error: 'Type a question.' };
  const body: Record<string, unknown> = { collection: f.collection, question, stream: true };
  if (!blank(f.k)) {
    const k = Number(f.k);
    if (!Number.isInteger(k) || k < 1 || k > 50)
      return { error: 'k is a whole number from 1 to 50.' };
    body['k'] = k;
  }
  if (!blank(f.max_tokens)) {
    const n = Number(f.max_tokens);
    if (!Number.isInteger(n) || n < 1 || n > 8192)
      return { error: 'Max tokens is a whole number from 1 to 8192.' };
    body['max_tokens'] = n;
  }
  if (f.model.trim()) body['model'] = f.model.trim();
  const { filter, error } = parseFilter(f.filter);
  if (error) return { error };
  if (filter) body['filter'] = filter;
  return { body };
}

/** Splits an answer into text and its citation marks `[n]` (only those of a known citation). */
export function citationRuns(
  answer: string,
  known: number[],
): { text: string; cite: number | null }[] {
  const ok = new Set(known);
  const out: { text: string; cite: number | null }[] = [];
  let at = 0;
  for (const m of answer.matchAll(/\[(\d{1,3})\]/g)) {
    const n = Number(m[1]);
    if (!ok.has(n)) continue;
    const i = m.index ?? 0;
    if (i > at) out.push({ text: answer.slice(at, i), cite: null });
    out.push({ text: m[0], cite: n });
    at = i + m[0].length;
  }
  if (at < answer.length) out.push({ text: answer.slice(at), cite: null });
  return out;
}

/** The capability path of a plugin. */
export const capPath = (pluginId: string, cap: string) =>
  `/api/plugins/${encodeURIComponent(pluginId)}/${cap}`;
