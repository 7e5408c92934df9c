import { HttpEventType } from '@angular/common/http';
import { HttpTestingController } from '@angular/common/http/testing';
import { ComponentFixture, TestBed } from '@angular/core/testing';
import { ConfirmStore } from '../core/confirm.store';
import { BrainmlPanel } from './brainml-panel';
import {
  answerLoad as answer,
  brainmlTestBed,
  coll,
  manifestCaps,
  stat,
  tick,
  typeInto,
} from './brainml.testing';

const FIRST_PART = manifestCaps([
  'collection.create',
  'collection.list',
  'collection.get',
  'collection.delete',
  'index',
  'delete',
  'query',
  'stats',
]);

describe('BrainmlPanel', () => {
  let fixture: ComponentFixture<BrainmlPanel>;
  let http: HttpTestingController;
  const el = () => fixture.nativeElement as HTMLElement;
  const button = (label: string) =>
    [...el().querySelectorAll('button')].find((b) => b.textContent?.trim() === label)!;
  const settle = async () => {
    await tick();
    await fixture.whenStable();
  };
  const answerLoad = async () => {
    await answer(http);
    await fixture.whenStable();
  };
  const type = (sel: string, value: string) => typeInto(el(), sel, value);

  beforeEach(async () => {
    http = brainmlTestBed([BrainmlPanel], false);
    fixture = TestBed.createComponent(BrainmlPanel);
    fixture.detectChanges();
    await answerLoad();
    // A brainml of the first part: no train, snapshots or rag.ask (their sections say so).
    http.expectOne('/api/core/plugins/brainml').flush({ capabilities: FIRST_PART });
    await settle();
  });
  afterEach(() => http.verify());

  it('shows each collection with its stats', () => {
    const row = el().querySelector('tr[data-collection=docs]')!;
    const text = row.textContent!.replace(/\s+/g, ' ');
    expect(text).toContain('all-MiniLM-L6-v2 · 384');
    expect(text).toContain('cosine');
    expect(text).toContain('4.0 KiB');
    expect(text).toContain('8.0 KiB');
    expect(text).toContain('1.5 ms / 7.0 ms');
    expect(row.querySelector('[data-testid=bm-documents]')!.textContent!.trim()).toBe('2');
  });

  it('shows the index kind and the recall it measured; the sections a first-part plugin lacks say so', async () => {
    expect(
      el()
        .querySelector('tr[data-collection=docs] [data-testid=bm-index-kind]')!
        .textContent!.trim(),
    ).toBe('exact');
    for (const id of ['bm-train-missing', 'bm-snapshots-missing', 'bm-ask-missing'])
      expect(el().querySelector(`[data-testid=${id}]`), id).not.toBeNull();
    button('Refresh').click();
    await tick();
    http.expectOne('/api/plugins/brainml/collection.list').flush({ collections: [coll] });
    http.expectOne('/api/plugins/brainml/stats').flush({
      collections: [
        {
          ...stat,
          index: 'hnsw',
          recall_at_10: 0.9734,
          index_params: { m: 16, ef_construction: 200, ef_search: 48, quantization: 'int8' },
          bytes_per_vector: 416,
          last_trained_ms: 1_700_000_000_000,
        },
      ],
    });
    await settle();
    const cell = el().querySelector('tr[data-collection=docs] [data-testid=bm-index-kind]')!;
    expect(cell.textContent!.replace(/\s+/g, ' ').trim()).toBe('hnsw · recall@10 97.3 %');
    expect(cell.getAttribute('title')).toContain(
      'm 16 · ef_construction 200 · ef_search 48 · int8',
    );
    expect(cell.getAttribute('title')).toContain('416 bytes per vector');
  });

  it('shows hit text as text, never as markup', async () => {
    type('input[name=bmQueryText]', 'img');
    await settle();
    (el().querySelector('[data-testid=bm-query] form') as HTMLFormElement).dispatchEvent(
      new Event('submit'),
    );
    http.expectOne('/api/plugins/brainml/query').flush({
      hits: [
        { id: 'x.md', chunk: 0, score: 1, text: '<img src=x onerror="alert(1)"> img <b>bold</b>' },
      ],
      took_ms: 1,
      mode: 'hybrid',
    });
    await answerLoad();
    const p = el().querySelector('[data-testid=bm-hit-text]')!;
    expect(p.querySelector('img, b')).toBeNull();
    expect(p.textContent).toBe('<img src=x onerror="alert(1)"> img <b>bold</b>');
    expect([...p.querySelectorAll('mark')].map((m) => m.textContent)).toEqual(['img', 'img']);
  });

  it('labels every control', () => {
    const controls = [...el().querySelectorAll('input, select, textarea, button')];
    expect(controls.length).toBeGreaterThan(10);
    for (const c of controls) {
      const label =
        c.closest('label')?.textContent?.trim() ||
        c.getAttribute('aria-label') ||
        (c.tagName === 'BUTTON' ? c.textContent?.trim() : '');
      expect(label, c.outerHTML).toBeTruthy();
    }
  });

  it('shows a malformed filter before sending and keeps Search disabled', async () => {
    type('textarea[name=bmFilter]', '{"source": ');
    await settle();
    expect(el().querySelector('[data-testid=bm-filter-error]')!.textContent).toContain(
      'not valid JSON',
    );
    expect(el().querySelector('textarea[name=bmFilter]')!.getAttribute('aria-invalid')).toBe(
      'true',
    );
    expect(button('Search').disabled).toBe(true);
    type('textarea[name=bmFilter]', '{"source": "a.md"}');
    await settle();
    expect(button('Search').disabled).toBe(false);
    expect(el().querySelector('[data-testid=bm-filter-error]')!.textContent).not.toContain(
      'not valid',
    );
  });

  it('queries and shows hits with rank, score, id, metadata and the words highlighted', async () => {
    type('input[name=bmQueryText]', 'Grants');
    await settle();
    (el().querySelector('[data-testid=bm-query] form') as HTMLFormElement).dispatchEvent(
      new Event('submit'),
    );
    const req = http.expectOne('/api/plugins/brainml/query');
    expect(req.request.body).toEqual({
      collection: 'docs',
      text: 'Grants',
      k: 10,
      mode: 'hybrid',
      with_text: true,
    });
    req.flush({
      hits: [
        {
          id: 'a.md',
          chunk: 0,
          score: 0.0325,
          text: 'The licensor grants you a licence.',
          metadata: { source: 'a.md' },
        },
        { id: 'b.md', chunk: 1, score: 0.01, text: 'Nothing.', metadata: {} },
      ],
      took_ms: 3,
      mode: 'hybrid',
    });
    await answerLoad();
    const first = el().querySelector('li[data-rank="1"]')!;
    expect(first.getAttribute('data-hit-id')).toBe('a.md');
    expect(first.querySelector('[data-testid=bm-score]')!.textContent).toContain('0.0325');
    expect(first.querySelector('[data-testid=bm-metadata]')!.textContent).toBe('{"source":"a.md"}');
    expect([...first.querySelectorAll('mark')].map((m) => m.textContent)).toEqual(['grants']);
    expect(first.querySelector('[data-testid=bm-hit-text]')!.textContent).toBe(
      'The licensor grants you a licence.',
    );
    expect(el().querySelector('[data-testid=bm-took]')!.textContent).toContain('2 hits');
  });

  it('deletes a collection only after the confirmation', async () => {
    const confirm = TestBed.inject(ConfirmStore);
    button('Delete').click();
    await settle();
    expect(confirm.request()!.title).toBe('Delete collection docs?');
    confirm.answer(false);
    await settle();
    http.expectNone('/api/plugins/brainml/collection.delete');
    button('Delete').click();
    await settle();
    confirm.answer(true);
    await tick();
    const req = http.expectOne('/api/plugins/brainml/collection.delete');
    expect(req.request.body).toEqual({ name: 'docs' });
    req.flush({ deleted: true });
    await answerLoad();
  });

  it('indexes a dropped file as one document named after it, and refuses other files', async () => {
    const drop = new Event('drop') as Event & { dataTransfer: unknown };
    const md = new File(['Some words.'], 'notes.md', { type: 'text/markdown' });
    const pdf = new File(['%PDF'], 'paper.pdf');
    Object.defineProperty(drop, 'dataTransfer', { value: { files: [md, pdf] } });
    el().querySelector('[data-testid=bm-drop]')!.dispatchEvent(drop);
    await tick();
    await tick();
    const req = http.expectOne('/api/plugins/brainml/index');
    expect(req.request.body).toEqual({
      collection: 'docs',
      documents: [{ id: 'notes.md', text: 'Some words.', metadata: { source: 'notes.md' } }],
      stream: true,
    });
    // The NDJSON progress shows as embedded chunks of the file.
    const part = '{"embedded": 3, "chunks": 7}\n';
    req.event({ type: HttpEventType.DownloadProgress, loaded: part.length, partialText: part });
    await settle();
    const row = () => el().querySelector('li[data-file="notes.md"]')!;
    expect(row().textContent).toContain('embedded 3/7 chunks');
    expect(row().querySelector('progress')!.getAttribute('max')).toBe('7');
    req.flush(part + '{"indexed": 1, "chunks": 7, "took_ms": 9}\n');
    await answerLoad();
    const status = (name: string) =>
      el().querySelector(`li[data-file="${name}"]`)!.getAttribute('data-status');
    expect(status('notes.md')).toBe('done');
    expect(row().textContent).toContain('7 chunks in 9.0 ms');
    expect(el().querySelector('[data-testid=bm-files-summary]')!.textContent).toMatch(
      /1\/2 files indexed\s*· 1 failed/,
    );
    expect(status('paper.pdf')).toBe('error');
    expect(el().querySelector('li[data-file="paper.pdf"]')!.textContent).toContain(
      'not a .txt or .md file',
    );
  });
});
