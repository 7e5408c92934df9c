import { inject } from '@angular/core';
import { patchState, signalStore, withMethods, withState } from '@ngrx/signals';
import { Api } from '../core/api';
import { PluginDetail } from '../core/models';

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

/** `face.recognize`: a face with the nearest enrolled person (null when none is under the threshold). */
export interface RecognizedFace {
  box: FaceBox;
  person: string | null;
  distance: number | null;
}
export interface GalleryPerson {
  person: string;
  entries: number;
}
/** Person names the plugin takes (checked before sending; the plugin checks again). */
export const PERSON_RE = /^[A-Za-z0-9_-]{1,64}$/;

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
  /** The plugin's capabilities (its manifest), null while unknown. */
  caps: string[] | null;
  persons: GalleryPerson[];
  galleryError: string | null;
  recognized: RecognizedFace[] | null;
  /** The face (index in the detection) chosen for enrolment. */
  chosenFace: number | null;
  busy: boolean;
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
  caps: null,
  persons: [],
  galleryError: null,
  recognized: null,
  chosenFace: null,
  busy: false,
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
      // Names from Recognize belong to the detection they were made with: cleared when a new
      // one starts, kept when its answer lands after them.
      patchState(store, { detecting: true, error: null, recognized: null });
      try {
        const r = await api.post<DetectResult>(path('face.detect'), {
          image: photo.base64,
          detector: store.detector(),
          min_confidence: store.minConfidence(),
          landmarks: true,
        });
        // A later photo or setting wins over an answer that comes back late.
        if (seq === detectSeq) patchState(store, { result: r, chosenFace: r.faces.length === 1 ? 0 : null });
      } catch (e) {
        if (seq === detectSeq) patchState(store, { error: `face.detect: ${(e as Error).message}`, result: null });
      } finally {
        if (seq === detectSeq) patchState(store, { detecting: false });
      }
    }

    async function loadGallery() {
      try {
        const r = await api.post<{ persons: GalleryPerson[] }>(path('gallery.list'), {});
        patchState(store, { persons: r.persons });
      } catch (e) {
        patchState(store, { galleryError: `gallery.list: ${(e as Error).message}` });
      }
    }

    return {
      /** Reads the manifest: whether this rustyface has galleries. */
      async loadCaps() {
        try {
          const d = await api.get<PluginDetail>(`/api/core/plugins/${encodeURIComponent(pluginId)}`);
          patchState(store, { caps: (d.capabilities ?? []).map((c) => c.name) });
        } catch {
          patchState(store, { caps: [] });
        }
        if (store.caps()?.includes('gallery.list')) await loadGallery();
      },
      hasGalleries(): boolean {
        const c = store.caps();
        return !!c && ['gallery.list', 'gallery.enrol', 'gallery.delete', 'face.recognize'].every((x) => c.includes(x));
      },
      loadGallery,
      chooseFace(i: number) {
        patchState(store, { chosenFace: i });
      },
      async recognize() {
        const photo = store.photo();
        if (!photo) return;
        const seq = detectSeq;
        patchState(store, { busy: true, galleryError: null });
        try {
          const r = await api.post<{ faces: RecognizedFace[] }>(path('face.recognize'), {
            image: photo.base64,
            detector: store.detector(),
            min_confidence: store.minConfidence(),
          });
          if (store.photo() === photo && seq === detectSeq) patchState(store, { recognized: r.faces });
        } catch (e) {
          patchState(store, { galleryError: `face.recognize: ${(e as Error).message}` });
        } finally {
          patchState(store, { busy: false });
        }
      },
      /** Enrols the chosen face under `person`; true when enrolled. */
      async enrol(person: string): Promise<boolean> {
        const photo = store.photo();
        const i = store.chosenFace();
        const name = person.trim();
        if (!photo || i === null) return (patchState(store, { galleryError: 'Pick a face (its box or its row) to enrol.' }), false);
        if (!PERSON_RE.test(name)) return (patchState(store, { galleryError: `“${name}” is not a name the gallery takes: 1 to 64 letters, digits, _ or -.` }), false);
        patchState(store, { busy: true, galleryError: null });
        try {
          await api.post(path('gallery.enrol'), {
            person: name,
            image: photo.base64,
            face_index: i,
            detector: store.detector(),
            min_confidence: store.minConfidence(),
          });
          await loadGallery();
          return true;
        } catch (e) {
          patchState(store, { galleryError: `gallery.enrol: ${(e as Error).message}` });
          return false;
        } finally {
          patchState(store, { busy: false });
        }
      },
      async deletePerson(person: string) {
        patchState(store, { galleryError: null });
        try {
          await api.post(path('gallery.delete'), { person });
          patchState(store, { recognized: null });
        } catch (e) {
          patchState(store, { galleryError: `gallery.delete: ${(e as Error).message}` });
        }
        await loadGallery();
      },
      setPlugin(id: string) {
        pluginId = id;
      },
      async setPhoto(photo: Photo) {
        patchState(store, { photo, result: null, recognized: null, chosenFace: null });
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
