import { DownloadJob, InstalledModel } from '../core/models';
import { buildRequest, fileFraction, fileStateLabel, isJob, jobBytes, modelsFor, parseFiles, sortJobs, upsertJob } from './downloads';

const job = (id: string, state: DownloadJob['state'] = 'downloading', started = 0): DownloadJob => ({
  id, plugin: 'candle', repo: 'o/r', revision: 'main', state, files: [], error: null, path: null, actor: 'a', started_at_ms: started, finished_at_ms: null,
});
const SHA = 'AB'.repeat(32);

describe('model download helpers', () => {
  it('parses the files box, with optional sha256 per file', () => {
    expect(parseFiles(' a.json\nb.bin, c \n\n')).toEqual({ files: ['a.json', 'b.bin', 'c'], sha256: {}, errors: [] });
    expect(parseFiles(`model.safetensors ${SHA}\n1_Pooling/config.json`)).toEqual({
      files: ['model.safetensors', '1_Pooling/config.json'],
      sha256: { 'model.safetensors': SHA.toLowerCase() },
      errors: [],
    });
    expect(parseFiles('a.bin xyz').errors[0]).toMatch(/64 hex/);
    expect(parseFiles('a\na').errors[0]).toMatch(/twice/);
    expect(parseFiles('a b c').errors[0]).toMatch(/file name/);
  });
  it('builds the request body the host takes', () => {
    expect(buildRequest(' o/r ', '', 'a\nb')).toEqual({ request: { repo: 'o/r', files: ['a', 'b'] } });
    expect(buildRequest('o/r', 'v1', `a ${SHA}`).request).toEqual({ repo: 'o/r', revision: 'v1', files: ['a'], sha256: { a: SHA.toLowerCase() } });
    expect(buildRequest('', '', 'a').error).toMatch(/repository/);
    expect(buildRequest('just-a-name', '', 'a').error).toMatch(/org\/name/);
    expect(buildRequest('o/r', '', ' \n').error).toMatch(/at least one/);
  });
  it('upserts jobs newest first and never un-finishes a job', () => {
    const a = [job('1', 'downloading', 1)];
    expect(upsertJob(a, job('2', 'downloading', 2)).map((j) => j.id)).toEqual(['2', '1']);
    const done = upsertJob(a, job('1', 'installed', 1));
    expect(done[0].state).toBe('installed');
    expect(upsertJob(done, job('1', 'downloading', 1))[0].state).toBe('installed');
    expect(sortJobs([job('a', 'failed', 1), job('b', 'failed', 3)]).map((j) => j.id)).toEqual(['b', 'a']);
  });
  it('recognises JobView messages', () => {
    expect(isJob(job('1'))).toBe(true);
    expect(isJob({ id: 'x' })).toBe(false);
    expect(isJob(null)).toBe(false);
  });
  it('computes per-file and per-job progress', () => {
    expect(fileFraction({ bytes_done: 5, bytes_total: 10, state: 'downloading' })).toBe(0.5);
    expect(fileFraction({ bytes_done: 5, bytes_total: null, state: 'downloading' })).toBeNull();
    expect(fileFraction({ bytes_done: 0, bytes_total: null, state: 'pending' })).toBe(0);
    expect(fileFraction({ bytes_done: 0, bytes_total: null, state: 'verified' })).toBe(1);
    const f = (d: number, t: number | null) => ({ name: 'f', state: 'downloading' as const, bytes_done: d, bytes_total: t, sha256: null });
    expect(jobBytes({ ...job('1'), files: [f(1, 2), f(3, 4)] })).toEqual({ done: 4, total: 6 });
    expect(jobBytes({ ...job('1'), files: [f(1, 2), f(0, null)] })).toEqual({ done: 1, total: null });
  });
  it('labels the unfinished files of ended jobs', () => {
    expect(fileStateLabel({ state: 'cancelled' }, { state: 'downloading' })).toBe('cancelled');
    expect(fileStateLabel({ state: 'cancelled' }, { state: 'verified' })).toBe('verified');
    expect(fileStateLabel({ state: 'failed' }, { state: 'pending' })).toBe('not fetched');
    expect(fileStateLabel({ state: 'downloading' }, { state: 'downloading' })).toBe('downloading');
  });
  it('shows the models of this plugin and of none', () => {
    const m = (repo: string, plugin: string | null): InstalledModel => ({ repo, revision: 'main', path: repo, source: 's', files: [], total_bytes: 0, plugin, installed_at_ms: 0 });
    expect(modelsFor([m('b/x', 'echo'), m('a/y', null), m('c/z', 'candle')], 'echo').map((x) => x.repo)).toEqual(['a/y', 'b/x']);
  });
});
