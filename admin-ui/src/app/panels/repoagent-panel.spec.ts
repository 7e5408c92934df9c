import { provideHttpClient } from '@angular/common/http';
import { HttpTestingController, provideHttpClientTesting } from '@angular/common/http/testing';
import { ComponentFixture, TestBed } from '@angular/core/testing';
import { RepoagentPanel } from './repoagent-panel';

const tick = () => new Promise((r) => setTimeout(r, 5));
const P = '/api/plugins/repoagent/';
const FIRST = [
  'repo.add',
  'repo.list',
  'repo.remove',
  'repo.reindex',
  'code.stats',
  'code.search',
  'code.symbols',
  'code.outline',
  'code.refs',
  'code.metrics',
];
const ALL = [...FIRST, 'code.map', 'code.index', 'code.semantic_search', 'code.ask'];

describe('RepoagentPanel', () => {
  let fixture: ComponentFixture<RepoagentPanel>;
  let http: HttpTestingController;
  const el = () => fixture.nativeElement as HTMLElement;
  const q = (id: string) => el().querySelector(`[data-testid="${id}"]`);

  async function settle() {
    await tick();
    await fixture.whenStable();
    fixture.detectChanges();
  }

  /** The panel with a manifest of `caps` and one ready repository, chosen. */
  async function create(caps: string[]) {
    TestBed.configureTestingModule({
      imports: [RepoagentPanel],
      providers: [provideHttpClient(), provideHttpClientTesting()],
    });
    http = TestBed.inject(HttpTestingController);
    fixture = TestBed.createComponent(RepoagentPanel);
    fixture.detectChanges();
    http
      .expectOne({ method: 'GET', url: '/api/core/plugins/repoagent' })
      .flush({ id: 'repoagent', capabilities: caps.map((name) => ({ name })) });
    http.expectOne({ method: 'POST', url: P + 'repo.list' }).flush({
      repos: [
        {
          name: 'sj',
          path: '/srv/sj',
          state: 'ready',
          files: 2,
          languages: { Rust: 2 },
          indexed_at: 1,
          watching: true,
        },
      ],
    });
    await tick();
    http
      .expectOne({ method: 'GET', url: '/api/core/plugins/repoagent/config' })
      .flush({ config: { roots: ['/srv'] } });
    await settle();
    (el().querySelector('[data-repo="sj"] button') as HTMLButtonElement).click();
    await tick();
    for (const r of http.match({ method: 'POST', url: P + 'code.stats' })) {
      if (r.request.body.by === 'language')
        r.flush({
          languages: [
            { language: 'Rust', files: 1, lines: 100, code: 80, comments: 10, blanks: 10 },
            { language: 'TOML', files: 1, lines: 10, code: 8, comments: 1, blanks: 1 },
          ],
          totals: { files: 2, lines: 110, code: 88, comments: 11, blanks: 11 },
        });
      else
        r.flush({
          files: [
            {
              path: 'src/lib.rs',
              language: 'Rust',
              lines: 100,
              code: 80,
              comments: 10,
              blanks: 10,
            },
          ],
          totals: {},
        });
    }
    for (const r of http.match({ method: 'POST', url: P + 'code.metrics' }))
      r.flush({
        files: [],
        truncated: false,
        totals: { files: 1, functions: 0, cyclomatic: 0, cognitive: 0 },
        hotspots: [],
        churn_commits: 0,
        churn_error: 'not a git repository',
      });
    await settle();
  }

  afterEach(() => fixture?.destroy());

  it('shows the roots, the repository and a bar per language scaled to the largest', async () => {
    await create(FIRST);
    expect(q('ra-roots')?.textContent).toContain('/srv');
    const bars = [...el().querySelectorAll('[data-testid="ra-lang"]')] as HTMLElement[];
    expect(bars.map((b) => b.dataset['language'])).toEqual(['Rust', 'TOML']);
    const code = (b: HTMLElement) =>
      (b.querySelector('[data-testid="ra-lang-bar"] span') as HTMLElement).style.width;
    expect(code(bars[0])).toBe('80%');
    expect(code(bars[1])).toBe('8%');
    expect(q('ra-churn-error')?.textContent).toContain('not a git repository');
  });

  it('leaves out the sections whose capability the manifest lacks', async () => {
    await create(FIRST);
    expect(q('ra-map')).toBeNull();
    expect(q('ra-ask')).toBeNull();
    expect(el().querySelector('select[name="raBy"]')).toBeNull();
    fixture.destroy();
    TestBed.resetTestingModule();
    await create(ALL);
    expect(q('ra-map')).not.toBeNull();
    expect(q('ra-ask')).not.toBeNull();
    expect(el().querySelector('select[name="raBy"]')).not.toBeNull();
  });

  it('reads repo.list again while a repository indexes, and the chosen one once it is ready', async () => {
    TestBed.configureTestingModule({
      imports: [RepoagentPanel],
      providers: [provideHttpClient(), provideHttpClientTesting()],
    });
    http = TestBed.inject(HttpTestingController);
    fixture = TestBed.createComponent(RepoagentPanel);
    fixture.detectChanges();
    const info = (state: string) => ({
      repos: [
        {
          name: 'sj',
          path: '/srv/sj',
          state,
          files: 0,
          languages: {},
          indexed_at: null,
          watching: true,
          progress: { files_done: 4, files_total: 10 },
        },
      ],
    });
    http
      .expectOne({ method: 'GET', url: '/api/core/plugins/repoagent' })
      .flush({ id: 'repoagent', capabilities: [] });
    http.expectOne({ method: 'POST', url: P + 'repo.list' }).flush(info('indexing'));
    await tick();
    http
      .expectOne({ method: 'GET', url: '/api/core/plugins/repoagent/config' })
      .flush({ config: { roots: [] } });
    await settle();
    expect(q('ra-roots')?.textContent).toContain('No roots are allowed');
    (el().querySelector('[data-repo="sj"] button') as HTMLButtonElement).click();
    await settle();
    expect(q('ra-wait')?.textContent).toContain('sj is being indexed');
    expect(q('ra-repo-state')?.textContent).toContain('4/10');
    http.expectNone({ url: P + 'code.stats' });
    /** The next request to `url` (polled for up to 3.5 s: the panel reads again every second). */
    const next = async (url: string) => {
      for (const end = Date.now() + 3500; Date.now() < end;) {
        const r = http.match({ method: 'POST', url });
        if (r.length) return r[0];
        await tick();
      }
      throw new Error(`no request to ${url}`);
    };
    (await next(P + 'repo.list')).flush(info('ready'));
    const stats = await next(P + 'code.stats');
    expect(stats.request.body.repo).toBe('sj');
  }, 10_000);

  it('nests the outline with kind badges and shows the lines of a clicked definition', async () => {
    await create(FIRST);
    (
      el().querySelector(
        '[data-testid="ra-files"] button[data-path="src/lib.rs"]',
      ) as HTMLButtonElement
    ).click();
    await tick();
    http.expectOne({ method: 'POST', url: P + 'code.outline' }).flush({
      path: 'src/lib.rs',
      language: 'rust',
      symbols: [
        {
          kind: 'impl',
          name: 'Foo',
          line: 5,
          end_line: 20,
          signature: 'impl Foo',
          children: [
            {
              kind: 'method',
              name: 'new',
              line: 6,
              end_line: 8,
              signature: 'pub fn new() -> Foo',
              children: [],
            },
          ],
        },
      ],
    });
    await settle();
    const impl = el().querySelector('[data-testid="ra-node"][data-name="Foo"]') as HTMLElement;
    const method = impl.querySelector('ul [data-testid="ra-node"][data-name="new"]') as HTMLElement;
    expect(method).not.toBeNull();
    expect(method.querySelector('[data-testid="ra-kind"]')?.textContent?.trim()).toBe('method');
    (method.querySelector('button') as HTMLButtonElement).click();
    await tick();
    const req = http.expectOne({ method: 'POST', url: P + 'code.search' });
    expect(req.request.body).toEqual(
      expect.objectContaining({ pattern: 'new', path: 'src/lib.rs' }),
    );
    req.flush({
      hits: [
        {
          path: 'src/lib.rs',
          line: 6,
          column: 12,
          text: '    pub fn new() -> Foo {',
          before: ['impl Foo {'],
          after: ['        Foo'],
        },
      ],
      truncated: false,
      files_searched: 1,
    });
    await settle();
    const lines = [...el().querySelectorAll('[data-testid="ra-snippet"] [data-line]')].map(
      (l) => (l as HTMLElement).dataset['line'],
    );
    expect(lines).toEqual(['5', '6', '7']);
    expect(q('ra-snippet')?.querySelector('[data-line="6"]')?.className).toContain('bg-amber-100');
  });
});
