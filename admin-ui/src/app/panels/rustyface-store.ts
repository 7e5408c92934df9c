import { HttpClient } from '@angular/common/http';
import { inject } from '@angular/core';
import { patchState, signalStore, withComputed, withHooks, withMethods, withState } from '@ngrx/signals';
import { firstValueFrom } from 'rxjs';
import { Api, ApiError, toApiError } from '../core/api';
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

/** A person `face.recognize` ranks for a face, by its nearest enrolled descriptor. */
export interface Candidate {
  person: string;
  distance: number;
}
/**
 * `face.recognize`: a face with the nearest enrolled person (null when none is under the
 * threshold), the distance to the nearest one (null when the gallery is empty), and the next
 * candidates.
 */
export interface RecognizedFace {
  box: FaceBox;
  person: string | null;
  distance: number | null;
  candidates?: Candidate[];
}
export interface GalleryPerson {
  person: string;
  entries: number;
}
/** `gallery.person`'s entry: `crop` is the JPEG as base64, null when it has none (enrolled from a descriptor). */
export interface GalleryEntry {
  id: string;
  created_ms: number;
  box: FaceBox | null;
  crop?: string | null;
}
/** A stored face as the panel shows it: its thumbnail (a data or blob URL; null: no crop stored). */
export interface Thumb {
  id: string;
  created_ms: number;
  url: string | null;
}
/** Person names the plugin takes (checked before sending; the plugin checks again). */
export const PERSON_RE = /^[A-Za-z0-9_-]{1,64}$/;
/** Gallery names the plugin takes: lower case only. */
export const GALLERY_RE = /^[a-z0-9_-]{1,64}$/;
/** The gallery a request without `gallery` uses; it always exists. */
export const DEFAULT_GALLERY = 'default';
/** `face.recognize`'s default: the customary 0.6 for dlib/face-api descriptors. */
export const DEFAULT_THRESHOLD = 0.6;

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

/** Why a gallery name is refused, or null. */
export function galleryProblem(name: string): string | null {
  return GALLERY_RE.test(name) ? null : `“${name}” is not a gallery name: 1 to 64 lower-case letters, digits, _ or -.`;
}

/** Why a recognition threshold is refused, or null (0 < t <= 2: descriptors are unit vectors). */
export function thresholdProblem(t: number | null | undefined): string | null {
  if (t === null || t === undefined || Number.isNaN(t)) return 'Give a threshold between 0 and 2.';
  if (!(t > 0 && t <= 2)) return `Threshold ${t} is outside (0, 2].`;
  return null;
}

/** How much two boxes overlap (intersection over union, 0..1). */
export function iou(a: FaceBox, b: FaceBox): number {
  const w = Math.min(a.x + a.w, b.x + b.w) - Math.max(a.x, b.x);
  const h = Math.min(a.y + a.h, b.y + b.h) - Math.max(a.y, b.y);
  if (w <= 0 || h <= 0) return 0;
  const inter = w * h;
  return inter / (a.w * a.h + b.w * b.h - inter);
}

/**
 * For each detected face, the recognized face with the same box (IoU >= 0.5, best first, each
 * used once), or null: `face.recognize` detects again, so the lists are matched by box, not by
 * position.
 */
export function matchRecognized(faces: Face[], recognized: RecognizedFace[]): (RecognizedFace | null)[] {
  const pairs: [number, number, number][] = [];
  faces.forEach((f, i) => recognized.forEach((r, j) => pairs.push([iou(f.box, r.box), i, j])));
  pairs.sort((a, b) => b[0] - a[0]);
  const out: (RecognizedFace | null)[] = faces.map(() => null);
  const used = new Set<number>();
  for (const [o, i, j] of pairs) {
    if (o < 0.5) break;
    if (out[i] || used.has(j)) continue;
    out[i] = recognized[j];
    used.add(j);
  }
  return out;
}

/** An image capability's failure, said plainly: a 413 names the plugin's limit. */
export function imageError(capability: string, photo: string, e: unknown): string {
  const err = e instanceof ApiError ? e : toApiError(e);
  if (err.status === 413) return `${photo} is too large for the plugin: ${err.message}`;
  return `${capability} refused ${photo}: ${err.message}`;
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
  /** The gallery shown and used by enrol, recognize and delete. */
  gallery: string;
  /** The galleries on disk (`gallery.list`'s `galleries`), with the default and the chosen one. */
  galleries: string[];
  persons: GalleryPerson[];
  /** Each person's stored faces, oldest first. */
  thumbs: Record<string, Thumb[]>;
  galleryLoading: boolean;
  galleryError: string | null;
  recognized: RecognizedFace[] | null;
  /** `face.recognize`'s threshold: a face nearer than this to a person is that person. */
  threshold: number;
  showLandmarks: boolean;
  /** The face (index in the detection) chosen for enrolment. */
  chosenFace: number | null;
  /** What the gallery section is doing (`recognizing`, `enrolling`, `deleting`), or null. */
  busy: string | null;
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
  gallery: DEFAULT_GALLERY,
  galleries: [DEFAULT_GALLERY],
  persons: [],
  thumbs: {},
  galleryLoading: false,
  galleryError: null,
  recognized: null,
  threshold: DEFAULT_THRESHOLD,
  showLandmarks: true,
  chosenFace: null,
  busy: null,
};

/** The sorted union of gallery names, without duplicates. */
const galleryNames = (...lists: string[][]) => [...new Set(lists.flat())].sort();


export const RustyfaceStore = signalStore(
  withState(initial),
  withComputed((store) => ({
    /** Per detected face, its recognized person (matched by box), or null. */
    namesByFace: () => {
      const r = store.result();
      const rec = store.recognized();
      return r && rec ? matchRecognized(r.faces, rec) : (r?.faces.map(() => null) ?? []);
    },
    /** How many faces the shown gallery holds, over all persons. */
    faceCount: () => store.persons().reduce((n, p) => n + p.entries, 0),
  })),
  withMethods((store) => {
    const api = inject(Api);
    const http = inject(HttpClient);
    let pluginId = 'rustyface';
    const path = (cap: string) => `/api/plugins/${encodeURIComponent(pluginId)}/${cap}`;
    let detectSeq = 0;
    let gallerySeq = 0;
    /** Frees the blob URLs among `thumbs` (those `keep` does not show). */
    const revoke = (thumbs: Record<string, Thumb[]>, keep: Record<string, Thumb[]> = {}) => {
      const kept = new Set(Object.values(keep).flatMap((t) => t.map((x) => x.url)));
      for (const t of Object.values(thumbs).flat()) if (t.url?.startsWith('blob:') && !kept.has(t.url)) URL.revokeObjectURL(t.url);
    };

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
        if (seq === detectSeq) patchState(store, { error: imageError('face.detect', photo.name, e), result: null });
      } finally {
        if (seq === detectSeq) patchState(store, { detecting: false });
      }
    }

    /** A stored face's thumbnail: the crop `gallery.person` sent inline, else `gallery.crop` as a blob URL. */
    async function thumbUrl(gallery: string, person: string, e: GalleryEntry): Promise<string | null> {
      if (typeof e.crop === 'string') return `data:image/jpeg;base64,${e.crop}`;
      if (e.crop === null) return null;
      try {
        // An <img> cannot send the API key: the JPEG is fetched with it and shown from memory.
        const blob = await firstValueFrom(
          http.post(api.base + path('gallery.crop'), { gallery, person, entry: e.id }, { responseType: 'blob' }),
        );
        return URL.createObjectURL(blob);
      } catch {
        return null;
      }
    }

    async function loadThumbs(gallery: string, person: string): Promise<Thumb[]> {
      try {
        const r = await api.post<{ entries: GalleryEntry[] }>(path('gallery.person'), { gallery, person });
        return await Promise.all(
          r.entries.map(async (e) => ({ id: e.id, created_ms: e.created_ms, url: await thumbUrl(gallery, person, e) })),
        );
      } catch (e) {
        // Deleted meanwhile (by another tab or client): nothing to show.
        if (e instanceof ApiError && e.status === 404) return [];
        throw e;
      }
    }

    /** Reads the shown gallery: its persons, their thumbnails, and the galleries there are. */
    async function loadGallery() {
      const seq = ++gallerySeq;
      const gallery = store.gallery();
      patchState(store, { galleryLoading: true });
      try {
        const r = await api.post<{ persons: GalleryPerson[]; galleries?: string[] }>(path('gallery.list'), { gallery });
        if (seq !== gallerySeq) return;
        const canList = store.caps()?.includes('gallery.person') ?? false;
        const thumbs: Record<string, Thumb[]> = {};
        if (canList) {
          const all = await Promise.all(r.persons.map((p) => loadThumbs(gallery, p.person)));
          r.persons.forEach((p, i) => (thumbs[p.person] = all[i]));
        }
        // A newer read (or the panel's end) overtook this one: its URLs are nobody's.
        if (seq !== gallerySeq) return revoke(thumbs);
        const before = store.thumbs();
        patchState(store, {
          persons: r.persons,
          thumbs,
          galleries: galleryNames(r.galleries ?? [], [DEFAULT_GALLERY, gallery]),
          galleryError: null,
        });
        revoke(before, thumbs);
      } catch (e) {
        if (seq !== gallerySeq) return;
        const err = toApiError(e);
        // A gallery named here but not enrolled into yet does not exist on disk: it is empty.
        if (err.status === 404 && /gallery/.test(err.message)) {
          revoke(store.thumbs());
          patchState(store, { persons: [], thumbs: {}, galleryError: null });
        } else {
          patchState(store, { galleryError: `gallery.list: ${err.message}` });
        }
      } finally {
        if (seq === gallerySeq) patchState(store, { galleryLoading: false });
      }
    }

    async function recognize() {
      const photo = store.photo();
      if (!photo) return;
      const bad = thresholdProblem(store.threshold());
      if (bad) return patchState(store, { galleryError: bad });
      const seq = detectSeq;
      const gallery = store.gallery();
      patchState(store, { busy: 'recognizing', galleryError: null });
      try {
        const r = await api.post<{ faces: RecognizedFace[] }>(path('face.recognize'), {
          image: photo.base64,
          gallery,
          threshold: store.threshold(),
          detector: store.detector(),
          min_confidence: store.minConfidence(),
        });
        if (store.photo() === photo && seq === detectSeq && store.gallery() === gallery) patchState(store, { recognized: r.faces });
      } catch (e) {
        patchState(store, { galleryError: imageError('face.recognize', photo.name, e) });
      } finally {
        patchState(store, { busy: null });
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
      /** Shows and uses another gallery (a new name is created on disk by its first enrolment). */
      async setGallery(name: string) {
        const gallery = name.trim();
        const bad = galleryProblem(gallery);
        if (bad) return patchState(store, { galleryError: bad });
        revoke(store.thumbs());
        patchState(store, {
          gallery,
          galleries: galleryNames(store.galleries(), [gallery]),
          persons: [],
          thumbs: {},
          recognized: null,
          galleryError: null,
        });
        await loadGallery();
      },
      chooseFace(i: number) {
        patchState(store, { chosenFace: i });
      },
      setShowLandmarks(showLandmarks: boolean) {
        patchState(store, { showLandmarks });
      },
      /** A new threshold; names already shown are recognized again with it. */
      async setThreshold(threshold: number) {
        const bad = thresholdProblem(threshold);
        patchState(store, { threshold, galleryError: bad });
        if (!bad && store.recognized()) await recognize();
      },
      recognize,
      /** Enrols the chosen face under `person`; true when enrolled. */
      async enrol(person: string): Promise<boolean> {
        const photo = store.photo();
        const i = store.chosenFace();
        const name = person.trim();
        if (!photo || i === null) return (patchState(store, { galleryError: 'Pick a face (its box or its row) to enrol.' }), false);
        if (!PERSON_RE.test(name)) return (patchState(store, { galleryError: `“${name}” is not a name the gallery takes: 1 to 64 letters, digits, _ or -.` }), false);
        patchState(store, { busy: 'enrolling', galleryError: null });
        try {
          await api.post(path('gallery.enrol'), {
            gallery: store.gallery(),
            person: name,
            image: photo.base64,
            face_index: i,
            detector: store.detector(),
            min_confidence: store.minConfidence(),
          });
          // Names shown were recognized against the gallery as it was.
          patchState(store, { recognized: null });
          await loadGallery();
          return true;
        } catch (e) {
          patchState(store, { galleryError: imageError('gallery.enrol', photo.name, e) });
          return false;
        } finally {
          patchState(store, { busy: null });
        }
      },
      async deletePerson(person: string) {
        patchState(store, { busy: 'deleting', galleryError: null });
        try {
          await api.post(path('gallery.delete'), { gallery: store.gallery(), person });
          patchState(store, { recognized: null });
        } catch (e) {
          patchState(store, { galleryError: `gallery.delete: ${(e as Error).message}` });
        } finally {
          patchState(store, { busy: null });
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
      /** A file that cannot be sent: its reason instead of the photo before it. */
      fail(message: string) {
        detectSeq++;
        patchState(store, { error: message, photo: null, result: null, recognized: null, chosenFace: null, detecting: false });
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
          patchState(store, { compareError: imageError('face.compare', `${a.name} or ${b.name}`, e) });
        } finally {
          patchState(store, { comparing: false });
        }
      },
      /** Frees the thumbnails' blob URLs (the panel is gone). */
      releaseThumbs() {
        gallerySeq++;
        revoke(store.thumbs());
        patchState(store, { thumbs: {} });
      },
    };
  }),
  withHooks({
    onDestroy(store) {
      store.releaseThumbs();
    },
  }),
);
