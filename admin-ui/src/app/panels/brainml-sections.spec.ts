import { HttpEventType } from '@angular/common/http';
import { HttpTestingController } from '@angular/common/http/testing';
import { Type } from '@angular/core';
import { ComponentFixture, TestBed } from '@angular/core/testing';
import { ConfirmStore } from '../core/confirm.store';
import { BrainmlAsk } from './brainml-ask';
import { BrainmlSnapshots } from './brainml-snapshots';
import { BrainmlTrain } from './brainml-train';
import { BrainmlStore } from './brainml.store';
import {
  P,
  answerLoad as answer,
  brainmlTestBed,
  coll,
  manifestCaps,
  tick,
  typeInto,
} from './brainml.testing';

const ALL_CAPS = manifestCaps([
  'collection.list',
  'stats',
  'index',
  'query',
  'train',
  'train.status',
  'snapshot.create',
  'snapshot.list',
  'snapshot.verify',
  'snapshot.restore',
  'snapshot.delete',
  'snapshot.export',
  'rag.ask',
]);

/** The sections live inside the panel, which provides the store: here the test bed does. */
describe('brainml sections', () => {
  let http: HttpTestingController;
  let store: InstanceType<typeof BrainmlStore>;
  const settle = async <T>(f: ComponentFixture<T>) => {
    await tick();
    await f.whenStable();
  };
  const answerLoad = () => answer(http, [coll], { collections: [] });
  async function mount<T>(
    cmp: Type<T>,
    caps = ALL_CAPS,
    before?: (c: T) => void,
  ): Promise<ComponentFixture<T>> {
    http = brainmlTestBed([cmp]);
    store = TestBed.inject(BrainmlStore);
    const loaded = store.load();
    await answerLoad();
    await loaded;
    const c = store.loadCaps();
    http.expectOne('/api/core/plugins/brainml').flush({ capabilities: caps });
    await c;
    const f = TestBed.createComponent(cmp);
    before?.(f.componentInstance);
    f.detectChanges();
    await settle(f);
    return f;
  }
  const el = (f: ComponentFixture<unknown>) => f.nativeElement as HTMLElement;
  const submit = (f: ComponentFixture<unknown>, sel = 'form') =>
    el(f).querySelector(sel)!.dispatchEvent(new Event('submit'));
  const type = (f: ComponentFixture<unknown>, sel: string, value: string) =>
    typeInto(el(f), sel, value);
  afterEach(() => http.verify());

  for (const cmp of [BrainmlTrain, BrainmlSnapshots, BrainmlAsk] as Type<unknown>[]) {
    it(`${cmp.name}: labels every control`, async () => {
      const f = await mount(cmp);
      http
        .match(() => true)
        .forEach((r) => r.flush(r.request.url.endsWith('snapshot.list') ? { snapshots: [] } : {}));
      await settle(f);
      const controls = [...el(f).querySelectorAll('input, select, textarea, button')];
      expect(controls.length).toBeGreaterThan(1);
      for (const c of controls) {
        const label =
          c.closest('label')?.textContent?.trim() ||
          c.getAttribute('aria-label') ||
          (c.tagName === 'BUTTON' ? c.textContent?.trim() : '');
        expect(label, c.outerHTML).toBeTruthy();
      }
    });
  }

  describe('train', () => {
    const status = (over: object) => ({
      collection: 'docs',
      state: 'none',
      progress: 0,
      index: 'exact',
      params: null,
      recall_at_10: null,
      ...over,
    });

    it('shows the exact-below-threshold answer as such', async () => {
      const f = await mount(BrainmlTrain);
      http.expectOne(P + 'train.status').flush(status({}));
      await settle(f);
      submit(f);
      await tick();
      const req = http.expectOne(P + 'train');
      expect(req.request.body).toEqual({
        collection: 'docs',
        m: 16,
        ef_construction: 200,
        target_recall: 0.95,
        quantization: 'none',
      });
      const reason = '3 vectors are below the exact_threshold 20000: searched exactly (recall 1.0)';
      req.flush({ collection: 'docs', index: 'exact', reason });
      await answerLoad();
      await settle(f);
      const exact = el(f).querySelector('[data-testid=bm-train-exact]')!.textContent!;
      expect(exact).toContain('Exact search');
      expect(exact).toContain(reason);
    });

    it('polls train.status while the job runs, then shows recall, build time and bytes per vector', async () => {
      const f = await mount(BrainmlTrain, ALL_CAPS, (c) => (c.pollMs = 0));
      http.expectOne(P + 'train.status').flush(status({}));
      await settle(f);
      type(f, 'input[name=bmEfSearch]', '64');
      (el(f).querySelector('select[name=bmQuantization]') as HTMLSelectElement).value = 'int8';
      el(f).querySelector('select[name=bmQuantization]')!.dispatchEvent(new Event('change'));
      type(f, 'input[name=bmM]', '1');
      await settle(f);
      submit(f);
      await settle(f);
      // A bad m is refused before sending.
      http.expectNone(P + 'train');
      expect(el(f).querySelector('[data-testid=bm-train-error]')!.textContent).toContain('m is');
      type(f, 'input[name=bmM]', '8');
      await settle(f);
      submit(f);
      await tick();
      const req = http.expectOne(P + 'train');
      expect(req.request.body).toMatchObject({ m: 8, ef_search: 64, quantization: 'int8' });
      req.flush(
        { collection: 'docs', job: status({ state: 'running', progress: 0.1, index: 'exact' }) },
        { status: 202, statusText: 'Accepted' },
      );
      await settle(f);
      expect(el(f).querySelector('[data-testid=bm-train-status]')!.getAttribute('data-state')).toBe(
        'running',
      );
      await tick();
      http.expectOne(P + 'train.status').flush(status({ state: 'running', progress: 0.6 }));
      await settle(f);
      expect(el(f).querySelector('progress')!.value).toBeCloseTo(0.6);
      expect(el(f).querySelector('button[type=submit]')!.textContent).toContain('Training');
      await tick();
      http.expectOne(P + 'train.status').flush(
        status({
          state: 'done',
          progress: 1,
          index: 'hnsw',
          params: { m: 8, ef_construction: 200, ef_search: 64, quantization: 'int8' },
          recall_at_10: 0.973,
          sample: 1000,
          build_ms: 1234,
          bytes_per_vector: 416,
          index_bytes: 4_259_840,
        }),
      );
      await answerLoad();
      await settle(f);
      const text = el(f).querySelector('[data-testid=bm-train-status]')!.textContent!;
      expect(el(f).querySelector('[data-testid=bm-train-recall]')!.textContent).toContain('97.3 %');
      expect(el(f).querySelector('[data-testid=bm-train-build]')!.textContent).toContain('1234 ms');
      expect(el(f).querySelector('[data-testid=bm-train-bpv]')!.textContent!.trim()).toBe('416');
      expect(text).toContain('m 8 · ef_construction 200 · ef_search 64 · int8');
      expect(text).toContain('4.1 MiB');
      // Done: no more polling.
      await tick();
      http.expectNone(P + 'train.status');
    });

    it("shows the server's refusal (a job already runs)", async () => {
      const f = await mount(BrainmlTrain);
      http.expectOne(P + 'train.status').flush(status({}));
      submit(f);
      await tick();
      http
        .expectOne(P + 'train')
        .flush(
          { error: { code: 'conflict', message: 'a train job for docs is running' } },
          { status: 409, statusText: 'Conflict' },
        );
      await settle(f);
      expect(el(f).querySelector('[data-testid=bm-train-error]')!.textContent).toContain(
        'a train job for docs is running',
      );
    });

    it('says so when the plugin has no train capability, and asks nothing', async () => {
      const f = await mount(
        BrainmlTrain,
        ALL_CAPS.filter((c) => !c.name.startsWith('train')),
      );
      expect(el(f).querySelector('[data-testid=bm-train-missing]')).not.toBeNull();
      expect(el(f).querySelector('form')).toBeNull();
    });
  });

  describe('snapshots', () => {
    const snap = (id: string, created_ms: number, collection = 'docs') => ({
      id,
      collection,
      created_ms,
      documents: 2,
      chunks: 3,
      bytes: 2048,
      files: [{ path: 'log.wal', size: 2048, sha256: 'ab' }],
    });
    const list = async (f: ComponentFixture<unknown>, snaps: object[]) => {
      await tick();
      http.expectOne(P + 'snapshot.list').flush({ snapshots: snaps });
      await settle(f);
    };
    const row = (f: ComponentFixture<unknown>, id: string) =>
      el(f).querySelector(`tr[data-snapshot="${id}"]`)!;
    const btn = (f: ComponentFixture<unknown>, label: string) =>
      el(f).querySelector(`button[aria-label="${label}"]`) as HTMLButtonElement;

    it('lists newest first and creates a snapshot of the chosen collection', async () => {
      const f = await mount(BrainmlSnapshots);
      await list(f, [snap('old', 1000), snap('new', 2000)]);
      const ids = [...el(f).querySelectorAll('tr[data-snapshot]')].map((r) =>
        r.getAttribute('data-snapshot'),
      );
      expect(ids).toEqual(['new', 'old']);
      submit(f);
      await tick();
      const req = http.expectOne(P + 'snapshot.create');
      expect(req.request.body).toEqual({ collection: 'docs' });
      req.flush(snap('newer', 3000), { status: 201, statusText: 'Created' });
      await list(f, [snap('newer', 3000), snap('new', 2000), snap('old', 1000)]);
      expect(row(f, 'newer').textContent).toContain('2.0 KiB');
    });

    it('verifies: ok with the counts, or damaged with the file the plugin names', async () => {
      const f = await mount(BrainmlSnapshots);
      await list(f, [snap('s1', 1000), snap('s2', 2000)]);
      btn(f, 'Verify snapshot s1').click();
      http
        .expectOne((r) => r.url === P + 'snapshot.verify' && r.body.id === 's1')
        .flush({ id: 's1', ok: true, files: 3, bytes: 2048 });
      await settle(f);
      const ok = el(f).querySelector('tr[data-verify="s1"] [data-testid=bm-verify]')!;
      expect(ok.getAttribute('data-ok')).toBe('true');
      expect(ok.textContent).toContain('ok: 3 files, 2.0 KiB');
      btn(f, 'Verify snapshot s2').click();
      const damaged = 'snapshot s2 is damaged: log.wal: sha256 00ff != manifest abcd';
      http
        .expectOne(P + 'snapshot.verify')
        .flush(
          { error: { code: 'conflict', message: damaged } },
          { status: 409, statusText: 'Conflict' },
        );
      await settle(f);
      const bad = el(f).querySelector('tr[data-verify="s2"] [data-testid=bm-verify]')!;
      expect(bad.getAttribute('data-ok')).toBe('false');
      expect(bad.getAttribute('role')).toBe('alert');
      expect(bad.textContent).toContain(damaged);
    });

    it('restores over the collection or as a new one, only after the confirmation', async () => {
      const f = await mount(BrainmlSnapshots);
      const confirm = TestBed.inject(ConfirmStore);
      await list(f, [snap('s1', 1000)]);
      btn(f, 'Restore snapshot s1').click();
      await settle(f);
      submit(f, 'tr[data-restore="s1"] form');
      await settle(f);
      expect(confirm.request()!.title).toBe('Replace collection docs with snapshot s1?');
      confirm.answer(false);
      await settle(f);
      http.expectNone(P + 'snapshot.restore');
      type(f, 'input[name=bmRestoreAs]', 'docs-copy');
      await settle(f);
      submit(f, 'tr[data-restore="s1"] form');
      await settle(f);
      expect(confirm.request()!.title).toBe('Restore snapshot s1 as docs-copy?');
      confirm.answer(true);
      await tick();
      const req = http.expectOne(P + 'snapshot.restore');
      expect(req.request.body).toEqual({ id: 's1', as: 'docs-copy' });
      req.flush({ ...coll, name: 'docs-copy' });
      await answerLoad();
      await settle(f);
      expect(el(f).querySelector('tr[data-restore]')).toBeNull();
    });

    it('deletes after the confirmation', async () => {
      const f = await mount(BrainmlSnapshots);
      const confirm = TestBed.inject(ConfirmStore);
      await list(f, [snap('s1', 1000)]);
      btn(f, 'Delete snapshot s1').click();
      await settle(f);
      expect(confirm.request()!.title).toBe('Delete snapshot s1?');
      confirm.answer(true);
      await tick();
      const req = http.expectOne(P + 'snapshot.delete');
      expect(req.request.body).toEqual({ id: 's1' });
      req.flush({ deleted: true });
      await list(f, []);
      expect(el(f).querySelector('tr[data-snapshot]')).toBeNull();
    });

    it('downloads snapshot.export as a file named after the collection and id', async () => {
      const created = vi.fn(() => 'blob:snap');
      vi.stubGlobal(
        'URL',
        Object.assign(URL, { createObjectURL: created, revokeObjectURL: vi.fn() }),
      );
      const clicked: string[] = [];
      const click = vi.spyOn(HTMLAnchorElement.prototype, 'click').mockImplementation(function (
        this: HTMLAnchorElement,
      ) {
        clicked.push(`${this.download} ${this.href}`);
      });
      try {
        const f = await mount(BrainmlSnapshots);
        await list(f, [snap('s1', 1000)]);
        btn(f, 'Download snapshot s1').click();
        const req = http.expectOne(P + 'snapshot.export');
        expect(req.request.body).toEqual({ id: 's1' });
        expect(req.request.responseType).toBe('blob');
        const tar = new Blob(['manifest'], { type: 'application/x-tar' });
        req.flush(tar);
        await settle(f);
        expect(created).toHaveBeenCalledWith(tar);
        expect(clicked).toEqual(['docs-s1.tar blob:snap']);
      } finally {
        click.mockRestore();
        vi.unstubAllGlobals();
      }
    });

    it('says so when the plugin has no snapshots, and asks nothing', async () => {
      const f = await mount(
        BrainmlSnapshots,
        ALL_CAPS.filter((c) => !c.name.startsWith('snapshot')),
      );
      expect(el(f).querySelector('[data-testid=bm-snapshots-missing]')).not.toBeNull();
    });
  });

  describe('ask', () => {
    it('streams the answer after its citations, marks [n] and shows the citations as text', async () => {
      const f = await mount(BrainmlAsk);
      type(f, 'input[name=bmQuestion]', 'Who grants a patent licence?');
      await settle(f);
      submit(f);
      await tick();
      const req = http.expectOne(P + 'rag.ask');
      expect(req.request.body).toEqual({
        collection: 'docs',
        question: 'Who grants a patent licence?',
        stream: true,
        k: 5,
        max_tokens: 256,
      });
      const citations = [
        {
          n: 1,
          id: 'patent.md',
          chunk: 0,
          score: 0.71,
          text: 'Each Contributor grants <b>You</b> a patent license',
        },
        { n: 2, id: 'copyright.txt', chunk: 0, score: 0.42, text: 'copyright license' },
      ];
      let sent = `event: citations\ndata: ${JSON.stringify({ citations, model: 'SmolLM2' })}\n\ndata: {"delta": "Each Contributor"}\n\n`;
      req.event({ type: HttpEventType.DownloadProgress, loaded: sent.length, partialText: sent });
      await settle(f);
      const answer = () => el(f).querySelector('[data-testid=bm-answer]')!;
      expect(answer().textContent!.trim()).toBe('Each Contributor');
      expect(answer().getAttribute('data-streaming')).toBe('true');
      const items = [...el(f).querySelectorAll('[data-testid=bm-citations] li')];
      expect(items.map((i) => i.getAttribute('data-id'))).toEqual(['patent.md', 'copyright.txt']);
      expect(items[0].textContent).toContain('[1]');
      expect(items[0].textContent).toContain('0.7100');
      // Text, never markup.
      expect(items[0].querySelector('b')).toBeNull();
      expect(items[0].querySelector('[data-testid=bm-cite-text]')!.textContent).toContain(
        '<b>You</b>',
      );
      sent +=
        'data: {"delta": " does [1]."}\n\nevent: done\ndata: {"answer": "Each Contributor does [1].", "took_ms": 812}\n\n';
      req.event({ type: HttpEventType.DownloadProgress, loaded: sent.length, partialText: sent });
      req.flush(sent);
      await settle(f);
      expect(answer().textContent!.replace(/\s+/g, ' ').trim()).toBe('Each Contributor does [1].');
      expect(answer().getAttribute('data-streaming')).toBe('false');
      const cite = answer().querySelector('a[data-cite]')!;
      expect(cite.getAttribute('data-cite')).toBe('1');
      expect(cite.getAttribute('href')).toBe('#bm-cite-1');
      expect(el(f).querySelector('[data-testid=bm-ask-took]')!.textContent).toContain(
        'SmolLM2 · answered in 812 ms',
      );
    });

    it("shows the server's error (llmserver not running) and a malformed filter before sending", async () => {
      const f = await mount(BrainmlAsk);
      type(f, 'input[name=bmAskFilter]', '{"source":');
      await settle(f);
      expect(el(f).querySelector('[data-testid=bm-ask-filter-error]')!.textContent).toContain(
        'not valid JSON',
      );
      expect((el(f).querySelector('button[type=submit]') as HTMLButtonElement).disabled).toBe(true);
      type(f, 'input[name=bmAskFilter]', '');
      type(f, 'input[name=bmQuestion]', 'Why?');
      await settle(f);
      submit(f);
      await tick();
      http
        .expectOne(P + 'rag.ask')
        .flush(
          JSON.stringify({ error: { code: 'unavailable', message: 'llmserver is not running' } }),
          { status: 503, statusText: 'Service Unavailable' },
        );
      await settle(f);
      expect(el(f).querySelector('[data-testid=bm-ask-error]')!.textContent).toContain(
        'Ask failed: llmserver is not running',
      );
    });

    it('says so when the plugin has no rag.ask', async () => {
      const f = await mount(
        BrainmlAsk,
        ALL_CAPS.filter((c) => c.name !== 'rag.ask'),
      );
      expect(el(f).querySelector('[data-testid=bm-ask-missing]')).not.toBeNull();
      expect(el(f).querySelector('input[name=bmQuestion]')).toBeNull();
    });
  });
});
