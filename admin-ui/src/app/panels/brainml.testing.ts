// What the brainml specs share: the test bed, a collection with its stats, the manifest's
// capabilities and the answers to a store load. Test code only (tsconfig.app.json leaves it out).
import { provideHttpClient } from '@angular/common/http';
import { HttpTestingController, provideHttpClientTesting } from '@angular/common/http/testing';
import { TestBed } from '@angular/core/testing';
import { BrainmlStore } from './brainml.store';

/** Lets the pending promises and a zero timeout run. */
export const tick = () => new Promise((r) => setTimeout(r));

/** Where the brainml plugin's capabilities are called. */
export const P = '/api/plugins/brainml/';

/** A collection as `collection.list` lists it. */
export const coll = {
  name: 'docs',
  model: 'all-MiniLM-L6-v2',
  dim: 384,
  distance: 'cosine',
  documents: 2,
  chunks: 3,
};

/** Its row in `stats`. */
export const stat = {
  name: 'docs',
  documents: 2,
  chunks: 3,
  vectors: 3,
  bytes_on_disk: 4096,
  bytes_in_memory: 8192,
  index: 'exact',
  queries: 5,
  p50_ms: 1.5,
  p99_ms: 7,
};

/** The manifest's capabilities of these names (`rag.ask` streams). */
export const manifestCaps = (names: string[]) =>
  names.map((name) => ({ name, description: '', streaming: name === 'rag.ask', scope: 'write' }));

/**
 * A test bed with a testing HttpClient, the given standalone components, and the store (unless
 * `store` is false: the panel provides its own). Answers the testing controller.
 */
export function brainmlTestBed(imports: unknown[] = [], store = true): HttpTestingController {
  TestBed.configureTestingModule({
    imports,
    providers: [...(store ? [BrainmlStore] : []), provideHttpClient(), provideHttpClientTesting()],
  });
  return TestBed.inject(HttpTestingController);
}

/**
 * Answers the `collection.list` and `stats` of a store load (`stats: null`: a 500 for stats),
 * with a tick before and after.
 */
export async function answerLoad(
  http: HttpTestingController,
  collections: object[] = [coll],
  stats: unknown = { collections: [stat] },
) {
  await tick();
  http.expectOne({ method: 'POST', url: P + 'collection.list' }).flush({ collections });
  const s = http.expectOne({ method: 'POST', url: P + 'stats' });
  if (stats) s.flush(stats);
  else
    s.flush(
      { error: { code: 'internal', message: 'stats broke' } },
      { status: 500, statusText: 'x' },
    );
  await tick();
}

/** Types `value` into the input (or textarea) `sel` under `root`. */
export function typeInto(root: HTMLElement, sel: string, value: string) {
  const i = root.querySelector(sel) as HTMLInputElement;
  i.value = value;
  i.dispatchEvent(new Event('input'));
}
