import { inject } from '@angular/core';
import { patchState, signalStore, withMethods, withState } from '@ngrx/signals';
import { Api } from '../core/api';

/** rustyface's `face.detect` answer (its API contract). */
export interface FaceBox {
  x: number;
  y: number;
  w: number;
  h: number;
}
export interface Face {
  box: FaceBox;
  score: number;
  landmarks?: [number, number][];
}
export interface DetectResult {
  width: number;
  height: number;
  faces: Face[];
  took_ms: number;
}
export interface CompareResult {
  distance: number;
  same: boolean;
  threshold: number;
}

export const DETECTORS = ['ssd', 'tiny'] as const;
export type Detector = (typeof DETECTORS)[number];
/** The image types the plugin decodes. */
export const IMAGE_TYPE_RE = /^image\/(jpeg|png|webp|bmp)$/;

/** A picked photo: its name, a data URL for the <img>, the base64 payload for the plugin. */
export interface Photo {
  name: string;
  url: string;
  base64: string;
}

/** Why a picked file cannot be sent, or null. */
export function photoProblem(f: { name: string; type: string; size: number }, maxBytes = 32 * 1024 * 1024): string | null {
  if (!IMAGE_TYPE_RE.test(f.type)) return `${f.name} is not a JPEG, PNG, WebP or BMP image (${f.type || 'unknown type'})`;
  if (f.size === 0) return `${f.name} is empty`;
  if (f.size > maxBytes) return `${f.name} is ${(f.size / 1048576).toFixed(1)} MiB: the limit is ${maxBytes / 1048576} MiB`;
  return null;
}

/** Why a min_confidence as typed is refused, or null (0 < c <= 1). */
export function confidenceProblem(c: number | null | undefined): string | null {
  if (c === null || c === undefined || Number.isNaN(c)) return 'Give a minimum confidence between 0 and 1.';
  if (!(c > 0 && c <= 1)) return `Minimum confidence ${c} is outside (0, 1].`;
  return null;
}

/** The base64 payload of a data URL (`data:image/jpeg;base64,XXXX` -> `XXXX`). */
export function dataUrlBase64(url: string): string {
  const i = url.indexOf(';base64,');
  if (!url.startsWith('data:') || i < 0) throw new Error('not a base64 data URL');
  return url.slice(i + 8);
}

export function readPhoto(file: File): Promise<Photo> {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => {
      try {
        const url = r.result as string;
        resolve({ name: file.name, url, base64: dataUrlBase64(url) });
      } catch (e) {
        reject(e);
      }
    };
    r.onerror = () => reject(new Error(`could not read ${file.name}`));
    r.readAsDataURL(file);
  });
}

interface State {
  detector: Detector;
  minConfidence: number;
  photo: Photo | null;
  result: DetectResult | null;
  detecting: boolean;
  error: string | null;
  compareA: Photo | null;
  compareB: Photo | null;
  compare: CompareResult | null;
  comparing: boolean;
  compareError: string | null;
}

const initial: State = {
  detector: 'ssd',
  minConfidence: 0.5,
  photo: null,
  result: null,
  detecting: false,
  error: null,
  compareA: null,
  compareB: null,
  compare: null,
  comparing: false,
  compareError: null,
};

export const RustyfaceStore = signalStore(
  withState(initial),
  withMethods((store) => {
    const api = inject(Api);
    let pluginId = 'rustyface';
    const path = (cap: string) => `/api/plugins/${encodeURIComponent(pluginId)}/${cap}`;
    let detectSeq = 0;

    async function detect() {
      const photo = store.photo();
      if (!photo) return;
      const bad = confidenceProblem(store.minConfidence());
      if (bad) return patchState(store, { error: bad, result: null });
      const seq = ++detectSeq;
      patchState(store, { detecting: true, error: null });
      try {
        const r = await api.post<DetectResult>(path('face.detect'), {
          image: photo.base64,
          detector: store.detector(),
          min_confidence: store.minConfidence(),
          landmarks: true,
        });
        // A later photo or setting wins over an answer that comes back late.
        if (seq === detectSeq) patchState(store, { result: r });
      } catch (e) {
        if (seq === detectSeq) patchState(store, { error: `face.detect: ${(e as Error).message}`, result: null });
      } finally {
        if (seq === detectSeq) patchState(store, { detecting: false });
      }
    }

    return {
      setPlugin(id: string) {
        pluginId = id;
      },
      async setPhoto(photo: Photo) {
        patchState(store, { photo, result: null });
        await detect();
      },
      fail(message: string) {
        patchState(store, { error: message });
      },
      async setDetector(detector: Detector) {
        patchState(store, { detector });
        await detect();
      },
      async setMinConfidence(minConfidence: number) {
        patchState(store, { minConfidence });
        await detect();
      },
      detect,
      setCompare(which: 'a' | 'b', photo: Photo) {
        patchState(store, which === 'a' ? { compareA: photo, compare: null } : { compareB: photo, compare: null });
      },
      failCompare(message: string) {
        patchState(store, { compareError: message });
      },
      async runCompare() {
        const a = store.compareA();
        const b = store.compareB();
        if (!a || !b) return patchState(store, { compareError: 'Pick two photos to compare.' });
        patchState(store, { comparing: true, compareError: null, compare: null });
        try {
          const r = await api.post<CompareResult>(path('face.compare'), { image_a: a.base64, image_b: b.base64 });
          patchState(store, { compare: r });
        } catch (e) {
          patchState(store, { compareError: `face.compare: ${(e as Error).message}` });
        } finally {
          patchState(store, { comparing: false });
        }
      },
    };
  }),
);
