// Logic of the models tab (host/src/models: JobView, FileProgress, ModelView), kept apart from
// the component so it can be unit tested.
import { DownloadJob, FileProgress, InstalledModel, JobState } from '../core/models';

export interface DownloadRequest {
  repo: string;
  revision?: string;
  files: string[];
  sha256?: Record<string, string>;
}

/**
 * Parses the files box: one file per line (or comma separated), each optionally followed by its
 * expected SHA-256 (`model.safetensors 53aa…`). Errors name the line.
 */
export function parseFiles(text: string): { files: string[]; sha256: Record<string, string>; errors: string[] } {
  const files: string[] = [];
  const sha256: Record<string, string> = {};
  const errors: string[] = [];
  for (const raw of text.split(/[\n,]/)) {
    const parts = raw.trim().split(/\s+/).filter(Boolean);
    if (!parts.length) continue;
    const [name, hash, ...rest] = parts;
    if (rest.length) {
      errors.push(`"${raw.trim()}": write a file name, optionally followed by its sha256`);
      continue;
    }
    if (files.includes(name)) {
      errors.push(`${name} is named twice`);
      continue;
    }
    files.push(name);
    if (hash !== undefined) {
      if (!/^[0-9a-fA-F]{64}$/.test(hash)) errors.push(`the sha256 of ${name} must be 64 hex digits`);
      else sha256[name] = hash.toLowerCase();
    }
  }
  return { files, sha256, errors };
}

/** The request body for `POST /api/core/plugins/{id}/models/download`, or what is wrong. */
export function buildRequest(repo: string, revision: string, filesText: string): { request?: DownloadRequest; error?: string } {
  const r = repo.trim();
  if (!r) return { error: 'Name a repository (org/name).' };
  if (!/^[^/\s]+\/[^/\s]+$/.test(r)) return { error: 'The repository is org/name, e.g. sentence-transformers/all-MiniLM-L6-v2.' };
  const { files, sha256, errors } = parseFiles(filesText);
  if (errors.length) return { error: errors.join('; ') };
  if (!files.length) return { error: 'Name at least one file.' };
  const request: DownloadRequest = { repo: r, files };
  if (revision.trim()) request.revision = revision.trim();
  if (Object.keys(sha256).length) request.sha256 = sha256;
  return { request };
}

export function jobFinished(state: JobState): boolean {
  return state === 'installed' || state === 'failed' || state === 'cancelled';
}

/**
 * Merges a job view into the list (newest first). A finished job is never replaced by a view of
 * it still running (the POST answer can arrive after the WebSocket's later news).
 */
export function upsertJob(jobs: DownloadJob[], job: DownloadJob): DownloadJob[] {
  const i = jobs.findIndex((j) => j.id === job.id);
  if (i < 0) return sortJobs([job, ...jobs]);
  if (jobFinished(jobs[i].state) && !jobFinished(job.state)) return jobs;
  const next = jobs.slice();
  next[i] = job;
  return next;
}

/** Newest first. */
export function sortJobs(jobs: DownloadJob[]): DownloadJob[] {
  return jobs.slice().sort((a, b) => b.started_at_ms - a.started_at_ms);
}

/** Whether a WebSocket message looks like a JobView. */
export function isJob(m: unknown): m is DownloadJob {
  const j = m as DownloadJob;
  return !!j && typeof j === 'object' && typeof j.id === 'string' && typeof j.state === 'string' && Array.isArray(j.files);
}

/** A file's progress 0..1, or null while its size is unknown. */
export function fileFraction(f: Pick<FileProgress, 'bytes_done' | 'bytes_total' | 'state'>): number | null {
  if (f.state === 'verified') return 1;
  if (!f.bytes_total) return f.state === 'pending' ? 0 : null;
  return Math.min(1, f.bytes_done / f.bytes_total);
}

/** Bytes done and known total over the job's files (total null while a size is unknown). */
export function jobBytes(job: DownloadJob): { done: number; total: number | null } {
  let done = 0;
  let total: number | null = 0;
  for (const f of job.files) {
    done += f.bytes_done;
    if (f.bytes_total == null) total = null;
    else if (total != null) total += f.bytes_total;
  }
  return { done, total };
}

/** The installed models to show for a plugin: those downloaded for it and those for no plugin. */
export function modelsFor(models: InstalledModel[], pluginId: string): InstalledModel[] {
  return models.filter((m) => !m.plugin || m.plugin === pluginId).sort((a, b) => a.repo.localeCompare(b.repo));
}

/**
 * The state to show for a file: the host leaves an unfinished file of a cancelled job as it was
 * (`downloading`/`pending`), so such a file shows as `cancelled`.
 */
export function fileStateLabel(job: Pick<DownloadJob, 'state'>, f: Pick<FileProgress, 'state'>): string {
  if (job.state === 'cancelled' && (f.state === 'downloading' || f.state === 'pending')) return 'cancelled';
  if (job.state === 'failed' && (f.state === 'downloading' || f.state === 'pending')) return 'not fetched';
  return f.state;
}
