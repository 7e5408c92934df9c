import { TestBed } from '@angular/core/testing';
import { AuthStore, KEY_STORAGE, loginErrorMessage } from './auth.store';

describe('loginErrorMessage', () => {
  it('says what 401 and 403 mean', () => {
    expect(loginErrorMessage(401, 'invalid API key')).toMatch(/401.*invalid API key/);
    expect(loginErrorMessage(403)).toMatch(/403.*scope/);
    expect(loginErrorMessage(0)).toMatch(/could not be reached/);
  });
});

describe('AuthStore', () => {
  beforeEach(() => sessionStorage.clear());
  afterEach(() => vi.unstubAllGlobals());

  const respond = (status: number, body: unknown = {}) =>
    vi.stubGlobal('fetch', vi.fn(async () => new Response(JSON.stringify(body), { status })));

  it('keeps an accepted key in session storage', async () => {
    respond(200, { plugins: [] });
    const auth = TestBed.inject(AuthStore);
    expect(await auth.login('  good-key  ')).toBe(true);
    expect(auth.key()).toBe('good-key');
    expect(auth.loggedIn()).toBe(true);
    expect(sessionStorage.getItem(KEY_STORAGE)).toBe('good-key');
    const [, init] = (fetch as unknown as { mock: { calls: [string, RequestInit][] } }).mock.calls[0];
    expect((init.headers as Record<string, string>)['Authorization']).toBe('Bearer good-key');
  });

  it('explains a 401 and a 403', async () => {
    const auth = TestBed.inject(AuthStore);
    respond(401, { error: { code: 'unauthorized', message: 'invalid API key' } });
    expect(await auth.login('bad')).toBe(false);
    expect(auth.error()).toMatch(/401/);
    respond(403, { error: { code: 'forbidden', message: 'needs read' } });
    expect(await auth.login('weak')).toBe(false);
    expect(auth.error()).toMatch(/403.*needs read/);
    expect(auth.loggedIn()).toBe(false);
    expect(sessionStorage.getItem(KEY_STORAGE)).toBeNull();
  });

  it('refuses an empty key without asking the host, and logout forgets the key', async () => {
    respond(200);
    const auth = TestBed.inject(AuthStore);
    expect(await auth.login('   ')).toBe(false);
    expect(fetch).not.toHaveBeenCalled();
    await auth.login('k');
    auth.logout('bye');
    expect(auth.key()).toBeNull();
    expect(auth.error()).toBe('bye');
    expect(sessionStorage.getItem(KEY_STORAGE)).toBeNull();
  });
});
