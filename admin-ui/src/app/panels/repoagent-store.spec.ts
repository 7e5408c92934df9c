import { HttpEventType, provideHttpClient } from '@angular/common/http';
import { HttpTestingController, provideHttpClientTesting } from '@angular/common/http/testing';
import { TestBed } from '@angular/core/testing';
import {
  RepoagentStore,
  SEARCH_DEFAULTS,
  addProblem,
  askBody,
  groupByPath,
  hitLines,
  languageBars,
  mapBody,
  searchBody,
  semanticBody,
} from './repoagent-store';

const tick = () => new Promise((r) => setTimeout(r));
const P = '/api/plugins/repoagent/';
const repo = (name: string, state = 'ready') => ({
  name,
  path: `/srv/${name}`,
  state,
  files: 3,
  languages: { Rust: 2, TOML: 1 },
  indexed_at: 1_700_000_000_000,
  watching: true,
});
const hit = (path: string, line: number, before: string[] = [], after: string[] = []) => ({
  path,
  line,
  column: 1,
  text: `line ${line}`,
  before,
  after,
});

describe('repoagent request bodies and helpers', () => {
  it('builds code.search bodies: regex, case, globs, context, max; refuses bad numbers', () => {
    const f = {
      ...SEARCH_DEFAULTS,
      pattern: 'fn from_str',
      regex: true,
      matchCase: false,
      glob: '*.rs !tests/**',
      context: 3,
      max: 50,
    };
    expect(searchBody('sj', f)).toEqual({
      body: {
        repo: 'sj',
        pattern: 'fn from_str',
        regex: true,
        case_sensitive: false,
        context: 3,
        max: 50,
        glob: ['*.rs', '!tests/**'],
      },
    });
    expect(searchBody('sj', { ...f, glob: ' src/** ' })).toEqual({
      body: expect.objectContaining({ glob: 'src/**' }),
    });
    expect('glob' in (searchBody('sj', { ...f, glob: '' }) as { body: object }).body).toBe(false);
    expect(searchBody('sj', { ...f, pattern: '' })).toEqual({
      error: expect.stringContaining('what to search'),
    });
    expect(searchBody('', f)).toEqual({ error: expect.stringContaining('repository') });
    expect(searchBody('sj', { ...f, context: 21 })).toEqual({
      error: expect.stringContaining('0 to 20'),
    });
    expect(searchBody('sj', { ...f, context: null })).toEqual({
      error: expect.stringContaining('0 to 20'),
    });
    expect(searchBody('sj', { ...f, max: 0 })).toEqual({
      error: expect.stringContaining('1 to 10000'),
    });
    expect(searchBody('sj', { ...f, max: 1.5 })).toEqual({
      error: expect.stringContaining('1 to 10000'),
    });
  });

  it('builds code.semantic_search, code.map and code.ask bodies', () => {
    const f = {
      ...SEARCH_DEFAULTS,
      by: 'meaning' as const,
      pattern: ' parse a number ',
      k: 5,
      mode: 'bm25' as const,
    };
    expect(semanticBody('sj', f)).toEqual({
      body: { repo: 'sj', query: 'parse a number', k: 5, mode: 'bm25' },
    });
    expect(semanticBody('sj', { ...f, k: 101 })).toEqual({
      error: expect.stringContaining('1 to 100'),
    });
    expect(semanticBody('sj', { ...f, pattern: '  ' })).toEqual({
      error: expect.stringContaining('Describe'),
    });
    expect(mapBody('sj', 'src/lib.rs, from_str', 512)).toEqual({
      body: { repo: 'sj', tokens: 512, focus: ['src/lib.rs', 'from_str'] },
    });
    expect(mapBody('sj', '', 1024)).toEqual({ body: { repo: 'sj', tokens: 1024 } });
    expect(mapBody('sj', '', 8)).toEqual({ error: expect.stringContaining('16 to 65536') });
    expect(askBody('sj', ' where? ', 5)).toEqual({
      body: { repo: 'sj', question: 'where?', k: 5, max_tokens: 256, stream: true },
    });
    expect(askBody('sj', 'q', 2, 64)).toEqual({
      body: { repo: 'sj', question: 'q', k: 2, max_tokens: 64, stream: true },
    });
    expect(askBody('sj', 'q', 2, 0)).toEqual({ error: expect.stringContaining('1 to 4096') });
    expect(askBody('sj', '', 5)).toEqual({ error: expect.stringContaining('question') });
    expect(askBody('sj', 'q', 21)).toEqual({ error: expect.stringContaining('1 to 20') });
  });

  it('checks the add box before anything is sent', () => {
    expect(addProblem('/srv/x', '')).toBeNull();
    expect(addProblem('/srv/x', 'my.repo-2')).toBeNull();
    expect(addProblem('  ', '')).toContain('folder');
    expect(addProblem('/srv/x', 'a/b')).toContain('1 to 64');
    expect(addProblem('/srv/x', '.hidden')).toContain('not starting');
  });

  it('numbers a hit with its context lines and groups hits by file in order', () => {
    expect(hitLines(hit('a.rs', 10, ['l8', 'l9'], ['l11']))).toEqual([
      { n: 8, text: 'l8', hit: false },
      { n: 9, text: 'l9', hit: false },
      { n: 10, text: 'line 10', hit: true },
      { n: 11, text: 'l11', hit: false },
    ]);
    expect(hitLines({ ...hit('a.rs', 1), before: undefined, after: undefined })).toEqual([
      { n: 1, text: 'line 1', hit: true },
    ]);
    const g = groupByPath([hit('a.rs', 1), hit('a.rs', 5), hit('b.rs', 2), hit('a.rs', 9)]);
    expect(g.map((x) => [x.path, x.hits.map((h) => h.line)])).toEqual([
      ['a.rs', [1, 5]],
      ['b.rs', [2]],
      ['a.rs', [9]],
    ]);
  });

  it('scales the language bars to the language with most lines', () => {
    const bars = languageBars([
      { language: 'Rust', files: 2, lines: 200, code: 150, comments: 30, blanks: 20 },
      { language: 'TOML', files: 1, lines: 50, code: 40, comments: 5, blanks: 5 },
    ]);
    expect(bars.map((b) => [b.language, b.codePct, b.commentsPct, b.blanksPct])).toEqual([
      ['Rust', 75, 15, 10],
      ['TOML', 20, 2.5, 2.5],
    ]);
    expect(
      languageBars([{ language: 'Text', files: 1, lines: 0, code: 0, comments: 0, blanks: 0 }])[0]
        .codePct,
    ).toBe(0);
  });
});

describe('RepoagentStore', () => {
  let http: HttpTestingController;
  let store: InstanceType<typeof RepoagentStore>;

  beforeEach(() => {
    TestBed.configureTestingModule({
      providers: [RepoagentStore, provideHttpClient(), provideHttpClientTesting()],
    });
    http = TestBed.inject(HttpTestingController);
    store = TestBed.inject(RepoagentStore);
  });
  afterEach(() => http.verify());

  /** Answers a `repo.list`. */
  async function list(repos: object[]) {
    await tick();
    http.expectOne({ method: 'POST', url: P + 'repo.list' }).flush({ repos });
    await tick();
  }
  /** Answers the stats (by language, by file) and metrics a selection reads. */
  async function answerSelect(metrics = true) {
    await tick();
    const stats = http.match({ method: 'POST', url: P + 'code.stats' });
    expect(stats.map((r) => r.request.body.by).sort()).toEqual(['file', 'language']);
    for (const r of stats) {
      if (r.request.body.by === 'language')
        r.flush({
          languages: [{ language: 'Rust', files: 2, lines: 10, code: 8, comments: 1, blanks: 1 }],
          totals: { files: 2, lines: 10, code: 8, comments: 1, blanks: 1 },
        });
      else
        r.flush({
          files: [
            { path: 'src/z.rs', language: 'Rust', lines: 5, code: 4, comments: 0, blanks: 1 },
            { path: 'src/a.rs', language: 'Rust', lines: 5, code: 4, comments: 1, blanks: 0 },
          ],
          totals: {},
        });
    }
    if (metrics)
      http.expectOne({ method: 'POST', url: P + 'code.metrics' }).flush({
        files: [],
        truncated: false,
        totals: { files: 0, functions: 0, cyclomatic: 0, cognitive: 0 },
        hotspots: [],
        churn_commits: 0,
        churn_error: 'not a git repository',
      });
    await tick();
  }
  async function caps(names: string[], roots: unknown = ['/srv']) {
    const p = store.loadCaps();
    http
      .expectOne({ method: 'GET', url: '/api/core/plugins/repoagent' })
      .flush({ id: 'repoagent', capabilities: names.map((name) => ({ name })) });
    await tick();
    http
      .expectOne({ method: 'GET', url: '/api/core/plugins/repoagent/config' })
      .flush({ config: { roots } });
    await p;
  }

  it('reads the manifest and the allowed roots', async () => {
    await caps(['repo.add', 'code.map'], []);
    expect(store.has('code.map')).toBe(true);
    expect(store.has('code.ask')).toBe(false);
    expect(store.roots()).toEqual([]);
  });

  it('adds a repository with streamed progress, lists it and chooses it', async () => {
    await caps(['repo.add', 'code.metrics']);
    const added = store.add(' /srv/sj ', 'sj');
    await tick();
    const req = http.expectOne({ method: 'POST', url: P + 'repo.add' });
    expect(req.request.body).toEqual({ path: '/srv/sj', name: 'sj', stream: true });
    req.event({
      type: HttpEventType.DownloadProgress,
      loaded: 1,
      partialText: '{"files_done":3,"files_total":9}\n',
    });
    expect(store.addProgress()).toEqual({ files_done: 3, files_total: 9 });
    expect(store.adding()).toBe(true);
    req.flush(
      '{"files_done":3,"files_total":9}\n{"name":"sj","path":"/srv/sj","files":9,"indexed_ms":4}\n',
    );
    await list([repo('sj')]);
    await answerSelect();
    expect(await added).toBe(true);
    expect(store.selected()).toBe('sj');
    expect(store.adding()).toBe(false);
    expect(store.addProgress()).toBeNull();
    expect(store.languages()?.map((l) => l.language)).toEqual(['Rust']);
    expect(store.files()?.map((f) => f.path)).toEqual(['src/a.rs', 'src/z.rs']);
    expect(store.metrics()?.churn_error).toBe('not a git repository');
  });

  it("shows the plugin's refusal of a path as it says it", async () => {
    const added = store.add('/etc/passwd', '');
    await tick();
    http.expectOne({ method: 'POST', url: P + 'repo.add' }).flush(
      {
        error: {
          code: 'bad_request',
          message: 'no roots are allowed: set `roots` in the config',
        },
      },
      { status: 400, statusText: 'Bad Request' },
    );
    expect(await added).toBe(false);
    expect(store.addError()).toBe(
      'repo.add refused /etc/passwd: no roots are allowed: set `roots` in the config',
    );
    expect(store.adding()).toBe(false);
    // Nothing is sent for an empty path.
    expect(await store.add('', '')).toBe(false);
    expect(store.addError()).toContain('Type the folder');
  });

  it('reindexes and removes; a chosen repository that is gone is unchosen', async () => {
    const l = store.loadRepos();
    await list([repo('a'), repo('b')]);
    await l;
    expect(store.repos().map((r) => r.name)).toEqual(['a', 'b']);
    const s = store.select('a');
    await answerSelect(false);
    await s;
    const r = store.reindex('b');
    await tick();
    const rreq = http.expectOne({ method: 'POST', url: P + 'repo.reindex' });
    expect(rreq.request.body).toEqual({ name: 'b', stream: true });
    rreq.event({
      type: HttpEventType.DownloadProgress,
      loaded: 1,
      partialText: '{"files_done":1,"files_total":3}\n',
    });
    expect(store.repos().find((x) => x.name === 'b')).toEqual(
      expect.objectContaining({ state: 'indexing', progress: { files_done: 1, files_total: 3 } }),
    );
    expect(store.repos().find((x) => x.name === 'a')?.state).toBe('ready');
    rreq.flush(
      '{"files_done":1,"files_total":3}\n{"name":"b","path":"/srv/b","files":3,"indexed_ms":1}\n',
    );
    await list([repo('a'), repo('b')]);
    await r;
    const rm = store.remove('a');
    await tick();
    const req = http.expectOne({ method: 'POST', url: P + 'repo.remove' });
    expect(req.request.body).toEqual({ name: 'a' });
    req.flush({ removed: 'a' });
    await list([repo('b')]);
    await rm;
    expect(store.selected()).toBeNull();
    expect(store.languages()).toBeNull();
    // A failed remove says why.
    const bad = store.remove('zz');
    await tick();
    http
      .expectOne({ method: 'POST', url: P + 'repo.remove' })
      .flush(
        { error: { code: 'not_found', message: 'no repository zz' } },
        { status: 404, statusText: 'x' },
      );
    await list([repo('b')]);
    await bad;
    expect(store.actionError()).toBe('repo.remove zz failed: no repository zz');
  });

  it('does not read stats of a repository still indexing', async () => {
    await list_then_select([repo('a', 'indexing')]);
    http.expectNone({ url: P + 'code.stats' });
    expect(store.anyIndexing()).toBe(true);
  });
  async function list_then_select(repos: object[]) {
    const l = store.loadRepos();
    await list(repos);
    await l;
    await store.select('a');
    await tick();
  }

  it("opens a file's outline and shows a definition's lines from code.search", async () => {
    await list_then_select([repo('a', 'indexing')]);
    const o = store.openFile('src/lib.rs');
    await tick();
    const oreq = http.expectOne({ method: 'POST', url: P + 'code.outline' });
    expect(oreq.request.body).toEqual({ repo: 'a', path: 'src/lib.rs' });
    oreq.flush({
      path: 'src/lib.rs',
      language: 'rust',
      symbols: [
        {
          kind: 'struct',
          name: 'Foo',
          line: 3,
          end_line: 9,
          signature: 'pub struct Foo',
          children: [],
        },
      ],
    });
    await o;
    expect(store.outline()?.symbols[0].name).toBe('Foo');
    const s = store.showSymbol('src/lib.rs', { name: 'Foo', kind: 'struct', line: 3 }, 2);
    await tick();
    const sreq = http.expectOne({ method: 'POST', url: P + 'code.search' });
    expect(sreq.request.body).toEqual({
      repo: 'a',
      pattern: 'Foo',
      path: 'src/lib.rs',
      case_sensitive: true,
      context: 2,
      max: 10000,
    });
    // Two hits: a use of Foo above, then its definition on line 3.
    sreq.flush({
      hits: [hit('src/lib.rs', 1, [], ['x', 'y']), hit('src/lib.rs', 3, ['a', 'b'], ['c'])],
      truncated: false,
      files_searched: 1,
    });
    await s;
    expect(store.snippet()?.lines).toEqual([
      { n: 1, text: 'a', hit: false },
      { n: 2, text: 'b', hit: false },
      { n: 3, text: 'line 3', hit: true },
      { n: 4, text: 'c', hit: false },
    ]);
    // The line no longer holds the name: said so, no stale snippet.
    const s2 = store.showSymbol('src/lib.rs', { name: 'Gone', kind: 'function', line: 7 });
    await tick();
    http
      .expectOne({ method: 'POST', url: P + 'code.search' })
      .flush({ hits: [hit('src/lib.rs', 2)], truncated: false, files_searched: 1 });
    await s2;
    expect(store.snippet()).toBeNull();
    expect(store.snippetError()).toContain('Line 7 of src/lib.rs no longer holds Gone');
  });

  it('searches by text, shows a bad regex as the plugin says, and by meaning', async () => {
    await list_then_select([repo('a', 'indexing')]);
    const f = { ...SEARCH_DEFAULTS, pattern: 'fn (', regex: true };
    const s = store.search(f);
    await tick();
    http
      .expectOne({ method: 'POST', url: P + 'code.search' })
      .flush(
        { error: { code: 'bad_request', message: 'regex parse error: unclosed group' } },
        { status: 400, statusText: 'x' },
      );
    await s;
    expect(store.searchError()).toBe('code.search failed: regex parse error: unclosed group');
    expect(store.searching()).toBe(false);
    const s2 = store.search({ ...f, pattern: 'fn main' });
    await tick();
    http
      .expectOne({ method: 'POST', url: P + 'code.search' })
      .flush({ hits: [hit('a.rs', 4), hit('b.rs', 1)], truncated: true, files_searched: 7 });
    await s2;
    expect(store.searchError()).toBeNull();
    expect(store.result()?.truncated).toBe(true);
    expect(store.groups().map((g) => g.path)).toEqual(['a.rs', 'b.rs']);
    const s3 = store.search({ ...f, by: 'meaning', pattern: 'entry point' });
    await tick();
    const req = http.expectOne({ method: 'POST', url: P + 'code.semantic_search' });
    expect(req.request.body).toEqual({ repo: 'a', query: 'entry point', k: 10, mode: 'hybrid' });
    req.flush({
      hits: [
        { path: 'a.rs', line: 4, end_line: 9, kind: 'function', name: 'main', score: 0.5, id: 'x' },
      ],
      mode: 'hybrid',
      collection: 'repo-a',
      indexed_at: 1,
    });
    await s3;
    expect(store.semantic()?.hits[0].name).toBe('main');
    expect(store.result()).toBeNull();
    // A form error sends nothing.
    await store.search({ ...f, context: 99 });
    expect(store.searchError()).toContain('0 to 20');
  });

  it('indexes with streamed progress and says what was embedded', async () => {
    await list_then_select([repo('a', 'indexing')]);
    const p = store.index();
    await tick();
    const req = http.expectOne({ method: 'POST', url: P + 'code.index' });
    expect(req.request.body).toEqual({ repo: 'a', stream: true });
    req.event({
      type: HttpEventType.DownloadProgress,
      loaded: 1,
      partialText: '{"phase":"embedding","done":64,"total":100}\n',
    });
    expect(store.indexProgress()).toEqual({ phase: 'embedding', done: 64, total: 100 });
    req.flush(
      '{"phase":"embedding","done":64,"total":100}\n{"repo":"a","collection":"repo-a","chunks":100,"embedded":100,"unchanged":0,"deleted":0,"files":3,"took_ms":9}\n',
    );
    await p;
    expect(store.indexed()?.chunks).toBe(100);
    expect(store.indexing()).toBe(false);
    // A 503 naming brainml is shown.
    const p2 = store.index();
    await tick();
    http
      .expectOne({ method: 'POST', url: P + 'code.index' })
      .flush(
        { error: { code: 'unavailable', message: 'brainml is not running' } },
        { status: 503, statusText: 'x' },
      );
    await p2;
    expect(store.indexError()).toBe('code.index failed: brainml is not running');
  });

  it("reads a file's functions most complex first, and makes the map", async () => {
    await list_then_select([repo('a', 'indexing')]);
    const m = store.fileMetricsOf('src/a.rs');
    await tick();
    const req = http.expectOne({ method: 'POST', url: P + 'code.metrics' });
    expect(req.request.body).toEqual({ repo: 'a', path: 'src/a.rs' });
    const fn = (name: string, line: number, cyclomatic: number) => ({
      name,
      parent: null,
      line,
      end_line: line + 3,
      cyclomatic,
      cognitive: 0,
      lines: 4,
      params: 0,
      exits: 1,
    });
    req.flush({
      path: 'src/a.rs',
      language: 'rust',
      functions: [fn('low', 1, 1), fn('high', 9, 7), fn('mid', 20, 3)],
      cyclomatic: 11,
      cognitive: 0,
      max_cyclomatic: 7,
    });
    await m;
    expect(store.fileMetrics()?.functions.map((f) => f.name)).toEqual(['high', 'mid', 'low']);
    const mp = store.makeMap('src/a.rs', 256);
    await tick();
    const mreq = http.expectOne({ method: 'POST', url: P + 'code.map' });
    expect(mreq.request.body).toEqual({ repo: 'a', tokens: 256, focus: ['src/a.rs'] });
    mreq.flush({
      map: 'src/a.rs:\n│fn high()',
      tokens: 12,
      ranked: 3,
      included: 1,
      cached: false,
      updated: 3,
    });
    await mp;
    expect(store.map()?.map).toContain('fn high()');
    await store.makeMap('', 1);
    expect(store.mapError()).toContain('16 to 65536');
  });

  it('streams an answer: citations first, then the tokens, then done', async () => {
    await list_then_select([repo('a', 'indexing')]);
    const p = store.ask('Where is main?', 3, 100);
    await tick();
    const req = http.expectOne({ method: 'POST', url: P + 'code.ask' });
    expect(req.request.body).toEqual({
      repo: 'a',
      question: 'Where is main?',
      k: 3,
      max_tokens: 100,
      stream: true,
    });
    const cite = {
      n: 1,
      cite: 'src/main.rs:4',
      path: 'src/main.rs',
      line: 4,
      end_line: 9,
      kind: 'function',
      name: 'main',
      score: 0.4,
    };
    let text = `event: citations\ndata: ${JSON.stringify({ citations: [cite], model: 'smol' })}\n\n`;
    req.event({ type: HttpEventType.DownloadProgress, loaded: 1, partialText: text });
    expect(store.citations()).toEqual([cite]);
    expect(store.answer()).toBe('');
    text += 'data: {"delta":"In "}\n\n';
    req.event({ type: HttpEventType.DownloadProgress, loaded: 2, partialText: text });
    text += 'data: {"delta":"src/main.rs:4 [1]"}\n\n';
    req.event({ type: HttpEventType.DownloadProgress, loaded: 3, partialText: text });
    expect(store.answer()).toBe('In src/main.rs:4 [1]');
    expect(store.asking()).toBe(true);
    text += 'event: done\ndata: {"answer":"In src/main.rs:4 [1].","took_ms":812}\n\n';
    req.flush(text);
    await p;
    expect(store.answer()).toBe('In src/main.rs:4 [1].');
    expect(store.answerMs()).toBe(812);
    expect(store.answerModel()).toBe('smol');
    expect(store.asking()).toBe(false);
    // An error event is shown.
    const p2 = store.ask('again', 3);
    await tick();
    http
      .expectOne({ method: 'POST', url: P + 'code.ask' })
      .flush('event: error\ndata: {"error":{"message":"llmserver is not running"}}\n\n');
    await p2;
    expect(store.askError()).toBe('code.ask failed: llmserver is not running');
  });

  it("lists a name's references and says why it could not", async () => {
    await list_then_select([repo('a', 'indexing')]);
    const p = store.refsOf('Foo');
    await tick();
    const req = http.expectOne({ method: 'POST', url: P + 'code.refs' });
    expect(req.request.body).toEqual({ repo: 'a', name: 'Foo', limit: 100 });
    const ref = { path: 'src/b.rs', line: 7, kind: 'type', text: 'let f: Foo = x;' };
    req.flush({ name: 'Foo', definitions: [], references: [ref], total: 1, truncated: false });
    await p;
    expect(store.refs()?.references).toEqual([ref]);
    const p2 = store.refsOf('');
    await tick();
    http
      .expectOne({ method: 'POST', url: P + 'code.refs' })
      .flush(
        { error: { code: 'bad_request', message: 'name is empty' } },
        { status: 400, statusText: 'x' },
      );
    await p2;
    expect(store.refs()).toBeNull();
    expect(store.refsError()).toBe('code.refs  failed: name is empty');
  });

  it('drops an answer for a repository no longer chosen', async () => {
    const l = store.loadRepos();
    await list([repo('a', 'indexing'), repo('b', 'indexing')]);
    await l;
    await store.select('a');
    const o = store.openFile('x.rs');
    await tick();
    const req = http.expectOne({ method: 'POST', url: P + 'code.outline' });
    await store.select('b');
    req.flush({ path: 'x.rs', language: 'rust', symbols: [] });
    await o;
    expect(store.outline()).toBeNull();
  });
});
