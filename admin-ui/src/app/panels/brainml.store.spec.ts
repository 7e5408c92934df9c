import { HttpEventType } from '@angular/common/http';
import { HttpTestingController } from '@angular/common/http/testing';
import { TestBed } from '@angular/core/testing';
import {
  formatMs,
  BrainmlStore,
  DocSource,
  createBody,
  highlight,
  parseFilter,
  queryBody,
} from './brainml.store';
import { answerLoad as answer, brainmlTestBed, coll, stat, tick } from './brainml.testing';

const src = (id: string, text: string): DocSource => ({
  id,
  size: text.length,
  read: async () => text,
  metadata: { source: id },
});

describe('brainml request shapes and helpers', () => {
  it('builds collection.create bodies: model XOR dim, with the distance', () => {
    expect(
      createBody({
        name: ' docs ',
        kind: 'model',
        model: 'all-MiniLM-L6-v2',
        dim: 384,
        distance: 'cosine',
      }),
    ).toEqual({
      body: { name: 'docs', model: 'all-MiniLM-L6-v2', distance: 'cosine' },
    });
    expect(
      createBody({ name: 'vecs', kind: 'vectors', model: 'x', dim: 3, distance: 'l2' }),
    ).toEqual({ body: { name: 'vecs', dim: 3, distance: 'l2' } });
    expect(
      createBody({ name: 'Bad Name', kind: 'model', model: 'm', dim: null, distance: 'dot' }),
    ).toEqual({ error: expect.stringContaining('a-z') });
    expect(createBody({ name: 'v', kind: 'vectors', model: '', dim: 0, distance: 'dot' })).toEqual({
      error: expect.stringContaining('dimension'),
    });
    expect(
      createBody({ name: 'v', kind: 'model', model: ' ', dim: null, distance: 'dot' }),
    ).toEqual({ error: expect.stringContaining('model') });
  });

  it('validates the filter JSON before anything is sent', () => {
    expect(parseFilter('  ')).toEqual({ filter: null, error: null });
    expect(parseFilter('{"source": {"$in": ["a.md"]}}')).toEqual({
      filter: { source: { $in: ['a.md'] } },
      error: null,
    });
    expect(parseFilter('{"source": ').error).toMatch(/not valid JSON/);
    expect(parseFilter('[1]').error).toMatch(/JSON object/);
    expect(parseFilter('null').error).toMatch(/JSON object/);
    expect(parseFilter('"a"').error).toMatch(/JSON object/);
  });

  it('builds query bodies as in the contract and refuses a bad k or filter', () => {
    const f = { collection: 'docs', text: ' licence ', mode: 'bm25' as const, k: 5, filter: '' };
    expect(queryBody(f)).toEqual({
      body: { collection: 'docs', text: 'licence', k: 5, mode: 'bm25', with_text: true },
    });
    expect(queryBody({ ...f, filter: '{"source":"a.md"}' })).toEqual({
      body: {
        collection: 'docs',
        text: 'licence',
        k: 5,
        mode: 'bm25',
        with_text: true,
        filter: { source: 'a.md' },
      },
    });
    expect(queryBody({ ...f, k: 0 })).toEqual({ error: expect.stringContaining('1 to 1000') });
    expect(queryBody({ ...f, k: 1001 })).toEqual({ error: expect.stringContaining('1 to 1000') });
    expect(queryBody({ ...f, filter: '{x' })).toEqual({
      error: expect.stringContaining('not valid JSON'),
    });
    expect(queryBody({ ...f, text: ' ' })).toEqual({
      error: expect.stringContaining('search for'),
    });
    expect(queryBody({ ...f, collection: '' })).toEqual({
      error: expect.stringContaining('collection'),
    });
  });

  it("formats the plugin's float durations for reading", () => {
    expect([0.123456, 7.629764, 34.531317, 9999.4, 21642, null].map((v) => formatMs(v))).toEqual([
      '0.12 ms',
      '7.6 ms',
      '35 ms',
      '9999 ms',
      '21.6 s',
      '–',
    ]);
  });

  it("highlights the query's words, whole words and case-insensitively", () => {
    const runs = highlight('The Licensor grants a License; licensed works.', 'license GRANTS');
    expect(runs.filter((r) => r.match).map((r) => r.text)).toEqual(['grants', 'License']);
    expect(runs.map((r) => r.text).join('')).toBe('The Licensor grants a License; licensed works.');
    expect(highlight('nothing here', 'absent')).toEqual([{ text: 'nothing here', match: false }]);
    expect(
      highlight('Ünïcode wörds', 'wÖrds')
        .filter((r) => r.match)
        .map((r) => r.text),
    ).toEqual(['wörds']);
  });
});

describe('BrainmlStore', () => {
  let store: InstanceType<typeof BrainmlStore>;
  let http: HttpTestingController;

  const answerLoad = (collections?: object[], stats?: unknown) => answer(http, collections, stats);

  beforeEach(() => {
    http = brainmlTestBed();
    store = TestBed.inject(BrainmlStore);
  });
  afterEach(() => http.verify());

  it('lists collections with their stats merged; a stats failure still shows the list', async () => {
    const p = store.load();
    await answerLoad();
    await p;
    expect(store.collections()).toEqual([{ ...coll, stats: stat }]);
    const p2 = store.load();
    await answerLoad([coll], null);
    await p2;
    expect(store.collections()[0].stats).toBeNull();
    expect(store.statsError()).toContain('stats broke');
  });

  it('creates with the contract body and shows the server error (409)', async () => {
    const p = store.create({
      name: 'docs',
      kind: 'model',
      model: 'all-MiniLM-L6-v2',
      dim: null,
      distance: 'dot',
    });
    await tick();
    const req = http.expectOne('/api/plugins/brainml/collection.create');
    expect(req.request.body).toEqual({ name: 'docs', model: 'all-MiniLM-L6-v2', distance: 'dot' });
    req.flush(
      { error: { code: 'conflict', message: 'collection docs exists' } },
      { status: 409, statusText: 'Conflict' },
    );
    expect(await p).toBe(false);
    expect(store.createError()).toBe('collection docs exists');
  });

  it('indexes one document per file with progress, and shows the server error of a file', async () => {
    const p = store.index('docs', [
      src('a.md', 'Alpha text'),
      src('empty.txt', ''),
      { ...src('x.pdf', ''), refuse: 'not a .txt or .md file' },
    ]);
    await tick();
    expect(store.files().map((f) => f.status)).toEqual(['indexing', 'pending', 'error']);
    // An earlier brainml refuses `stream`: the file is sent again plainly, and so are the next.
    const streamed = http.expectOne('/api/plugins/brainml/index');
    expect(streamed.request.body.stream).toBe(true);
    streamed.flush(
      JSON.stringify({
        error: { code: 'bad_request', message: 'unknown field `stream`, expected `collection`' },
      }),
      { status: 400, statusText: 'Bad Request' },
    );
    await tick();
    const a = http.expectOne('/api/plugins/brainml/index');
    expect(a.request.body).toEqual({
      collection: 'docs',
      documents: [{ id: 'a.md', text: 'Alpha text', metadata: { source: 'a.md' } }],
    });
    a.flush({ indexed: 1, chunks: 1, took_ms: 12.345678 });
    await tick();
    const b = http.expectOne('/api/plugins/brainml/index');
    expect(b.request.body.documents[0].id).toBe('empty.txt');
    b.flush(
      { error: { code: 'bad_request', message: 'document empty.txt: empty text' } },
      { status: 400, statusText: 'Bad Request' },
    );
    await answerLoad();
    await p;
    expect(store.files()).toEqual([
      { name: 'a.md', size: 10, status: 'done', message: '1 chunk in 12 ms' },
      { name: 'empty.txt', size: 0, status: 'error', message: 'document empty.txt: empty text' },
      { name: 'x.pdf', size: 0, status: 'error', message: 'not a .txt or .md file' },
    ]);
    expect(store.indexing()).toBe(false);
  });

  it('streams index progress (NDJSON) into the file row, then the final line', async () => {
    const p = store.index('docs', [src('long.md', 'Many words')]);
    await tick();
    const req = http.expectOne('/api/plugins/brainml/index');
    expect(req.request.body).toEqual({
      collection: 'docs',
      documents: [{ id: 'long.md', text: 'Many words', metadata: { source: 'long.md' } }],
      stream: true,
    });
    const lines = '{"embedded": 16, "chunks": 40}\n{"embedded": 32, "chun';
    req.event({ type: HttpEventType.DownloadProgress, loaded: lines.length, partialText: lines });
    await tick();
    expect(store.files()[0]).toMatchObject({ status: 'indexing', chunksDone: 16, chunksTotal: 40 });
    const all = lines + 'ks": 40}\n{"indexed": 1, "chunks": 40, "took_ms": 950}\n';
    req.event({ type: HttpEventType.DownloadProgress, loaded: all.length, partialText: all });
    await tick();
    expect(store.files()[0].chunksDone).toBe(32);
    req.flush(all);
    await answerLoad();
    await p;
    expect(store.files()[0]).toMatchObject({ status: 'done', message: '40 chunks in 950 ms' });
    expect(store.indexStreams()).toBe(true);
  });

  it("shows an error line of a streamed index as the file's error", async () => {
    const p = store.index('docs', [src('bad.md', 'x')]);
    await tick();
    http
      .expectOne('/api/plugins/brainml/index')
      .flush('{"embedded": 0, "chunks": 3}\n{"error": {"message": "candle is not running"}}\n');
    await answerLoad();
    await p;
    expect(store.files()[0]).toMatchObject({ status: 'error', message: 'candle is not running' });
  });

  it('reads the capabilities from the manifest', async () => {
    expect(store.lacks('train')).toBe(false);
    const p = store.loadCaps();
    http
      .expectOne('/api/core/plugins/brainml')
      .flush({ capabilities: [{ name: 'query' }, { name: 'train' }] });
    await p;
    expect([store.has('train'), store.lacks('train'), store.lacks('rag.ask')]).toEqual([
      true,
      false,
      true,
    ]);
    expect(store.capsRead()).toBe(true);
  });

  it('queries with the contract body, keeps the hits with the query text; shows a 400', async () => {
    store.setPlugin('brainml');
    const form = {
      collection: 'docs',
      text: 'grants',
      mode: 'hybrid' as const,
      k: 3,
      filter: '{"source": "a.md"}',
    };
    const p = store.query(form);
    const req = http.expectOne('/api/plugins/brainml/query');
    expect(req.request.body).toEqual({
      collection: 'docs',
      text: 'grants',
      k: 3,
      mode: 'hybrid',
      with_text: true,
      filter: { source: 'a.md' },
    });
    const hits = [
      { id: 'a.md', chunk: 0, score: 0.03, text: 'grants it', metadata: { source: 'a.md' } },
    ];
    req.flush({ hits, took_ms: 4, mode: 'hybrid' });
    await p;
    expect(store.result()).toEqual({
      hits,
      took_ms: 4,
      mode: 'hybrid',
      text: 'grants',
      collection: 'docs',
    });
    await answerLoad();
    const p2 = store.query({ ...form, mode: 'bm25' });
    http
      .expectOne('/api/plugins/brainml/query')
      .flush(
        { error: { code: 'bad_request', message: 'filter: unknown operator $foo' } },
        { status: 400, statusText: 'Bad Request' },
      );
    await p2;
    expect(store.queryError()).toBe('filter: unknown operator $foo');
    expect(store.result()).toBeNull();
  });

  it('sends nothing for a malformed filter and says why', async () => {
    await store.query({ collection: 'docs', text: 'x', mode: 'dense', k: 10, filter: '{"a": }' });
    http.expectNone('/api/plugins/brainml/query');
    expect(store.queryError()).toMatch(/not valid JSON/);
  });

  it('deletes by name and reloads', async () => {
    const p = store.remove('docs');
    const req = http.expectOne('/api/plugins/brainml/collection.delete');
    expect(req.request.body).toEqual({ name: 'docs' });
    req.flush({ deleted: true });
    await answerLoad([]);
    expect(await p).toBeNull();
    expect(store.collections()).toEqual([]);
  });
});
