import { uploadProblem } from './upload';
import { keyStatus } from '../panels/apikeys-panel';
import { allowedActions } from '../pages/plugin-card';
import { filterEvents } from '../pages/events';
import { panelFor } from '../panels/registry';

describe('uploadProblem', () => {
  it('accepts libraries and refuses the rest', () => {
    expect(uploadProblem({ name: 'libhello.so', size: 10 })).toBeNull();
    expect(uploadProblem({ name: 'hello.dylib', size: 10 })).toBeNull();
    expect(uploadProblem({ name: 'notes.txt', size: 10 })).toMatch(/not a plugin/);
    expect(uploadProblem({ name: 'a b.so', size: 10 })).toMatch(/letters/);
    expect(uploadProblem({ name: 'x.so', size: 0 })).toMatch(/empty/);
  });
});

describe('small logic', () => {
  it('key status', () => {
    const k = { id: 'a', name: 'a', prefix: 'p', scopes: [], created_at_ms: 0, expires_at_ms: null, revoked_at_ms: null };
    expect(keyStatus(k)).toBe('active');
    expect(keyStatus({ ...k, revoked_at_ms: 1 })).toBe('revoked');
    expect(keyStatus({ ...k, expires_at_ms: 5 }, 10)).toBe('expired');
  });
  it('lifecycle buttons by state', () => {
    expect(allowedActions('running')).toEqual({ start: false, stop: true, restart: true });
    expect(allowedActions('stopped')).toEqual({ start: true, stop: false, restart: true });
    expect(allowedActions('unloaded')).toEqual({ start: false, stop: false, restart: false });
  });
  it('event filter', () => {
    const ev = [
      { seq: 1, at_ms: 0, kind: 'loaded', actor: 'watcher', plugin: 'echo', details: { version: '1.0.0' } },
      { seq: 2, at_ms: 0, kind: 'stopped', actor: 'api', plugin: 'echo', details: {} },
    ];
    expect(filterEvents(ev, 'stopped', '').map((e) => e.seq)).toEqual([2]);
    expect(filterEvents(ev, '', '1.0.0').map((e) => e.seq)).toEqual([1]);
  });
  it('panel registry', () => {
    expect(panelFor('apikeys')?.label).toBe('API keys');
    expect(panelFor('toString')).toBeUndefined();
    expect(panelFor('echo')).toBeUndefined();
  });
});
