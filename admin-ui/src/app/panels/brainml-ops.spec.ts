import {
  NdjsonParser,
  SseEventParser,
  TRAIN_DEFAULTS,
  askBody,
  citationRuns,
  describeParams,
  errorMessage,
  formatRecall,
  restoreBody,
  snapshotFileName,
  trainBody,
} from './brainml-ops';

describe('brainml ops helpers', () => {
  it('parses NDJSON split anywhere, and the last line without a newline', () => {
    const p = new NdjsonParser();
    expect(p.push('{"embedded": 1, "chu')).toEqual([]);
    expect(p.push('nks": 4}\n\n{"embedded": 4, "chunks": 4}\n{"indexed"')).toEqual([
      { embedded: 1, chunks: 4 },
      { embedded: 4, chunks: 4 },
    ]);
    expect(p.push(': 1, "chunks": 4, "took_ms": 3}')).toEqual([]);
    expect(p.end()).toEqual([{ indexed: 1, chunks: 4, took_ms: 3 }]);
    expect(new NdjsonParser().push('oops\n')).toEqual([
      { error: expect.stringContaining('not a JSON line') },
    ]);
  });

  it('parses server-sent events with their names, split anywhere', () => {
    const p = new SseEventParser();
    expect(p.push('event: citations\r\ndata: [{"n": 1}]\r\n\r\ndata: {"del')).toEqual([
      { event: 'citations', data: '[{"n": 1}]' },
    ]);
    expect(p.push('ta": "Hi"}\n\n: a comment\n\nevent: done\ndata: {"answer": "Hi"}\n\n')).toEqual([
      { event: 'message', data: '{"delta": "Hi"}' },
      { event: 'done', data: '{"answer": "Hi"}' },
    ]);
    expect(p.push('data: a\ndata: b')).toEqual([]);
    expect(p.end()).toEqual([{ event: 'message', data: 'a\nb' }]);
  });

  it("reads the server's message out of any error body", () => {
    expect(errorMessage('{"error": {"code": "conflict", "message": "exists"}}')).toBe('exists');
    expect(errorMessage({ error: 'plain' })).toBe('plain');
    expect(errorMessage('Bad Gateway')).toBe('Bad Gateway');
  });

  it('builds train bodies: defaults, blank ef_search is auto, bad numbers refused', () => {
    expect(trainBody('docs', TRAIN_DEFAULTS)).toEqual({
      body: {
        collection: 'docs',
        m: 16,
        ef_construction: 200,
        target_recall: 0.95,
        quantization: 'none',
      },
    });
    expect(
      trainBody('docs', { ...TRAIN_DEFAULTS, ef_search: 64, quantization: 'int8', force: true }),
    ).toEqual({
      body: {
        collection: 'docs',
        m: 16,
        ef_construction: 200,
        ef_search: 64,
        target_recall: 0.95,
        quantization: 'int8',
        force: true,
      },
    });
    expect(trainBody('docs', { ...TRAIN_DEFAULTS, m: 1 })).toEqual({
      error: 'm is a whole number from 2 to 128.',
    });
    expect(trainBody('docs', { ...TRAIN_DEFAULTS, ef_construction: 2.5 })).toEqual({
      error: expect.stringContaining('ef_construction'),
    });
    expect(trainBody('docs', { ...TRAIN_DEFAULTS, target_recall: 1.5 })).toEqual({
      error: expect.stringContaining('recall'),
    });
    expect(trainBody('', TRAIN_DEFAULTS)).toEqual({ error: 'Choose a collection.' });
  });

  it('describes what an index measured', () => {
    expect(formatRecall(0.9734)).toBe('97.3 %');
    expect(formatRecall(null)).toBe('–');
    expect(
      describeParams({ m: 16, ef_construction: 200, ef_search: 64, quantization: 'int8' }),
    ).toBe('m 16 · ef_construction 200 · ef_search 64 · int8');
    expect(describeParams({ m: 8, quantization: 'none' })).toBe('m 8 · f32');
    expect(describeParams(null)).toBe('–');
  });

  it('builds restore bodies: blank replaces, a new name is checked', () => {
    expect(restoreBody('s1', ' ')).toEqual({ body: { id: 's1' } });
    expect(restoreBody('s1', 'docs-copy')).toEqual({ body: { id: 's1', as: 'docs-copy' } });
    expect(restoreBody('s1', 'Docs Copy')).toEqual({ error: expect.stringContaining('a-z') });
    expect(snapshotFileName({ id: 'a/b', collection: 'docs' })).toBe('docs-a_b.tar');
  });

  it('builds rag.ask bodies (streamed) and refuses what cannot be sent', () => {
    const f = {
      collection: 'docs',
      question: ' Who grants? ',
      k: 3,
      model: '',
      max_tokens: 128,
      filter: '',
    };
    expect(askBody(f)).toEqual({
      body: { collection: 'docs', question: 'Who grants?', stream: true, k: 3, max_tokens: 128 },
    });
    expect(askBody({ ...f, model: 'qwen', filter: '{"source": "a.md"}', k: null })).toEqual({
      body: {
        collection: 'docs',
        question: 'Who grants?',
        stream: true,
        max_tokens: 128,
        model: 'qwen',
        filter: { source: 'a.md' },
      },
    });
    expect(askBody({ ...f, question: '' })).toEqual({ error: 'Type a question.' });
    expect(askBody({ ...f, k: 0 })).toEqual({ error: expect.stringContaining('k is') });
    expect(askBody({ ...f, filter: '{' })).toEqual({
      error: expect.stringContaining('not valid JSON'),
    });
  });

  it('marks only the citations that exist in the answer', () => {
    expect(citationRuns('Patents [2] and copyright [1][9].', [1, 2])).toEqual([
      { text: 'Patents ', cite: null },
      { text: '[2]', cite: 2 },
      { text: ' and copyright ', cite: null },
      { text: '[1]', cite: 1 },
      { text: '[9].', cite: null },
    ]);
  });
});
