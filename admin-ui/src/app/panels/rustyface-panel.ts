import { ChangeDetectionStrategy, Component, OnInit, inject, input, signal } from '@angular/core';
import { ConfirmStore } from '../core/confirm.store';
import { DETECTORS, Detector, Face, Photo, RecognizedFace, RustyfaceStore, Thumb, photoProblem, readPhoto } from './rustyface-store';

/** Thumbnails shown per person before "+n". */
const THUMBS_SHOWN = 6;

/**
 * The rustyface plugin's panel: a photo (dropped or picked) goes to `face.detect` with landmarks
 * and is drawn with its boxes and 68 points over it (an SVG whose viewBox is the image's pixel
 * size, so the overlay scales with the shown photo); the detector, minimum confidence and
 * landmarks toggle; galleries (chosen or created by name): Recognize writes each face's person
 * or "unknown" with the distance over its box and its next candidates in its row, a face picked
 * by its box or row is enrolled under a name, the persons with thumbnails of their stored crops,
 * each deleted after a confirmation; and `face.compare` of two photos.
 */
@Component({
  selector: 'app-rustyface-panel',
  changeDetection: ChangeDetectionStrategy.OnPush,
  providers: [RustyfaceStore],
  template: `
    <div class="grid gap-4 lg:grid-cols-[2fr_1fr]">
      <section class="card space-y-3" data-testid="rf-detect" aria-label="Detect faces">
        <div class="flex flex-wrap items-end gap-3">
          <h2 class="font-semibold">Detect faces</h2>
          <label class="block"><span class="label">Detector</span>
            <select class="input mt-1" name="rfDetector" [value]="store.detector()" (change)="setDetector($any($event.target).value)">
              @for (d of detectors; track d) { <option [value]="d">{{ d }}</option> }
            </select>
          </label>
          <label class="block"><span class="label">Min confidence</span>
            <input class="input mt-1 w-24" type="number" name="rfMinConfidence" min="0.05" max="1" step="0.05"
              [value]="store.minConfidence()" (change)="setConfidence($any($event.target).value)" />
          </label>
          <label class="flex items-center gap-1.5 pb-1.5 text-sm">
            <input type="checkbox" name="rfLandmarks" [checked]="store.showLandmarks()" (change)="store.setShowLandmarks($any($event.target).checked)" />
            Landmarks
          </label>
        </div>
        <div class="rounded border-2 border-dashed p-3 text-sm" data-testid="rf-drop"
          [class]="dragging() ? 'border-sky-500 bg-sky-50 dark:bg-sky-950' : 'border-slate-300 dark:border-slate-600'"
          (dragover)="$event.preventDefault(); dragging.set(true)" (dragleave)="dragging.set(false)" (drop)="dropped($event)">
          <label class="block">Drop a photo here, or
            <input type="file" accept="image/jpeg,image/png,image/webp,image/bmp" data-testid="rf-file" aria-label="photo to detect faces in"
              (change)="picked($event)" />
          </label>
          <span class="muted text-xs">JPEG, PNG, WebP or BMP, up to 32 MiB</span>
        </div>
        @if (store.error(); as e) { <p class="text-sm text-rose-700 dark:text-rose-300" role="alert" data-testid="rf-error">{{ e }}</p> }
        @if (store.photo(); as p) {
          <div class="text-sm" aria-live="polite">
            @if (store.detecting()) {
              <p class="muted flex items-center gap-2" data-testid="rf-detecting">
                <span class="h-3 w-3 animate-spin rounded-full border-2 border-current border-t-transparent" aria-hidden="true"></span>
                detecting faces in {{ p.name }}…
              </p>
            }
            @if (store.result(); as r) {
              <p data-testid="rf-summary">{{ r.faces.length }} face{{ r.faces.length === 1 ? '' : 's' }} in {{ r.width }}×{{ r.height }}, {{ r.took_ms.toFixed(0) }} ms ({{ store.detector() }})</p>
              <ol class="mt-1 space-y-0.5" data-testid="rf-faces">
                @for (f of r.faces; track $index; let i = $index) {
                  <li [attr.data-face]="i" class="rounded px-1 ring-amber-400" [class.ring-2]="hovered() === i"
                    (mouseenter)="hovered.set(i)" (mouseleave)="hovered.set(null)">
                    @if (store.hasGalleries()) {
                      <input type="radio" name="rfChosenFace" class="mr-1" [checked]="store.chosenFace() === i" (change)="store.chooseFace(i)" [attr.aria-label]="'enrol face ' + (i + 1)" />
                    }
                    {{ i + 1 }}. score <span class="font-mono" data-testid="rf-score">{{ f.score.toFixed(3) }}</span>
                    <span class="muted"> at {{ box(f) }}</span>
                    @if (store.namesByFace()[i]; as n) {
                      <span class="ml-2" data-testid="rf-face-name" [attr.data-person]="n.person ?? ''">
                        @if (n.person) { <strong class="text-emerald-700 dark:text-emerald-300">{{ n.person }}</strong> }
                        @else { <strong class="text-rose-700 dark:text-rose-300">unknown</strong> }
                        @if (n.distance != null) { <span class="font-mono"> {{ n.distance.toFixed(3) }}</span> }
                      </span>
                      @if (n.candidates?.length) {
                        <span class="muted" data-testid="rf-candidates"> · next: {{ candidates(n) }}</span>
                      }
                    }
                  </li>
                }
              </ol>
            }
          </div>
          @if (store.result() || store.detecting()) {
          <figure class="relative inline-block max-w-full" data-testid="rf-figure" [attr.aria-busy]="store.detecting()">
            <img [src]="p.url" [alt]="p.name" class="block h-auto max-h-[60vh] max-w-full transition-opacity" [class.opacity-50]="store.detecting()" />
            @if (store.result(); as r) {
              <svg class="pointer-events-none absolute inset-0 h-full w-full" [attr.viewBox]="'0 0 ' + r.width + ' ' + r.height"
                preserveAspectRatio="none" data-testid="rf-overlay" aria-hidden="true">
                @for (f of r.faces; track $index; let i = $index) {
                  <g [attr.data-face]="i">
                    <rect [attr.x]="f.box.x" [attr.y]="f.box.y" [attr.width]="f.box.w" [attr.height]="f.box.h"
                      fill="none" [attr.stroke]="stroke(i)"
                      [attr.stroke-width]="(store.hasGalleries() && store.chosenFace() === i) || hovered() === i ? 4 : 2" vector-effect="non-scaling-stroke"
                      data-testid="rf-box" [attr.pointer-events]="store.hasGalleries() ? 'all' : 'none'" [class.cursor-pointer]="store.hasGalleries()"
                      (click)="store.chooseFace(i)" (mouseenter)="hovered.set(i)" (mouseleave)="hovered.set(null)">
                      <title>{{ faceTitle(i) }}</title>
                    </rect>
                    @if (store.showLandmarks()) {
                      @for (pt of f.landmarks ?? []; track $index) {
                        <circle [attr.cx]="pt[0]" [attr.cy]="pt[1]" [attr.r]="dot(r.width, r.height)" fill="#f43f5e" data-testid="rf-point" />
                      }
                    }
                  </g>
                }
                @for (f of store.recognized() ?? []; track $index) {
                  <text [attr.x]="f.box.x" [attr.y]="f.box.y - label(r.width, r.height) * 0.3" [attr.font-size]="label(r.width, r.height)"
                    [attr.fill]="f.person ? '#fbbf24' : '#fb7185'" stroke="#000" [attr.stroke-width]="label(r.width, r.height) / 12" paint-order="stroke" font-weight="bold"
                    data-testid="rf-name" [attr.data-person]="f.person ?? ''">{{ f.person ?? 'unknown' }}{{ f.distance != null ? ' ' + f.distance.toFixed(2) : '' }}</text>
                }
              </svg>
            }
          </figure>
          }
        }
      </section>

      <div class="space-y-4">
      @if (store.hasGalleries()) {
        <section class="card space-y-3" data-testid="rf-gallery" aria-label="Gallery">
          <div class="flex flex-wrap items-end gap-2">
            <h2 class="mr-auto font-semibold">Gallery</h2>
            <label class="block"><span class="sr-only">Gallery</span>
              <select class="input" name="rfGallery" (change)="setGallery($any($event.target).value)" aria-label="gallery">
                @for (g of store.galleries(); track g) { <option [value]="g" [selected]="g === store.gallery()">{{ g }}</option> }
              </select>
            </label>
            <form class="flex items-end gap-1" (submit)="$event.preventDefault(); createGallery()" data-testid="rf-new-gallery">
              <input class="input w-32" name="rfNewGallery" aria-label="new gallery name" placeholder="new gallery"
                [value]="newGallery()" (input)="newGallery.set($any($event.target).value)" />
              <button type="submit" class="btn" [disabled]="!newGallery().trim()">Create</button>
            </form>
          </div>
          <p class="muted flex items-center gap-2 text-xs" data-testid="rf-gallery-count">
            {{ store.gallery() }}: {{ store.persons().length }} person{{ store.persons().length === 1 ? '' : 's' }}, {{ store.faceCount() }} face{{ store.faceCount() === 1 ? '' : 's' }}
            @if (store.galleryLoading()) { <span class="h-3 w-3 animate-spin rounded-full border-2 border-current border-t-transparent" aria-label="loading the gallery"></span> }
          </p>
          <div class="flex flex-wrap items-end gap-2">
            <button type="button" class="btn" (click)="store.recognize()" [disabled]="!!store.busy() || !store.photo()">
              {{ store.busy() === 'recognizing' ? 'Recognizing…' : 'Recognize' }}</button>
            <label class="block"><span class="label text-xs">Threshold</span>
              <input class="input mt-1 w-20" type="number" name="rfThreshold" min="0.05" max="2" step="0.05"
                [value]="store.threshold()" (change)="setThreshold($any($event.target).value)" />
            </label>
          </div>
          <form class="flex flex-wrap items-end gap-2" (submit)="$event.preventDefault(); enrol()" data-testid="rf-enrol">
            <label class="block"><span class="label">Name</span>
              <input class="input mt-1" name="rfPerson" [value]="person()" (input)="person.set($any($event.target).value)" placeholder="obama" />
            </label>
            <button type="submit" class="btn btn-primary" [disabled]="!!store.busy() || store.chosenFace() === null">
              {{ store.busy() === 'enrolling' ? 'Enrolling…' : 'Enrol face ' + (store.chosenFace() === null ? '' : store.chosenFace()! + 1) }}</button>
          </form>
          <p class="muted text-xs">Pick a face by its box or its row to enrol it; Recognize names the faces on the photo.</p>
          @if (store.galleryError(); as e) { <p class="text-sm text-rose-700 dark:text-rose-300" role="alert" data-testid="rf-gallery-error">{{ e }}</p> }
          <ul class="text-sm" data-testid="rf-persons">
            @for (p of store.persons(); track p.person) {
              <li class="flex items-center gap-2 border-t border-slate-200 py-2 dark:border-slate-700" [attr.data-person]="p.person">
                <div class="min-w-0 flex-1">
                  <div class="font-medium">{{ p.person }}</div>
                  <div class="muted text-xs" data-testid="rf-entries">{{ p.entries }} face{{ p.entries === 1 ? '' : 's' }}</div>
                  <div class="mt-1 flex flex-wrap gap-1">
                    @for (t of shown(store.thumbs()[p.person]); track t.id) {
                      @if (t.url) {
                        <img [src]="t.url" [alt]="p.person + ', enrolled ' + when(t)" [title]="'enrolled ' + when(t)" data-testid="rf-thumb"
                          class="h-12 w-12 rounded object-cover ring-1 ring-slate-200 dark:ring-slate-700" />
                      } @else {
                        <span class="muted flex h-12 w-12 items-center justify-center rounded text-center text-[10px] ring-1 ring-slate-200 dark:ring-slate-700"
                          [title]="'enrolled ' + when(t) + ' from a descriptor'">no photo</span>
                      }
                    }
                    @if ((store.thumbs()[p.person]?.length ?? 0) > thumbsShown) {
                      <span class="muted self-center text-xs">+{{ store.thumbs()[p.person].length - thumbsShown }}</span>
                    }
                  </div>
                </div>
                <button type="button" class="btn !py-0.5" (click)="remove(p.person)" [disabled]="!!store.busy()">Delete</button>
              </li>
            } @empty { <li class="muted border-t border-slate-200 py-2 dark:border-slate-700">nobody enrolled{{ store.gallery() === 'default' ? '' : ' in ' + store.gallery() + ' yet: enrolling a face creates it' }}</li> }
          </ul>
        </section>
      }

      <section class="card space-y-3" data-testid="rf-compare" aria-label="Compare two faces">
        <h2 class="font-semibold">Compare two faces</h2>
        @for (w of sides; track w) {
          <label class="block text-sm"><span class="label">Photo {{ w.toUpperCase() }}</span>
            <input type="file" accept="image/jpeg,image/png,image/webp,image/bmp" [attr.data-testid]="'rf-compare-' + w" (change)="pickedCompare(w, $event)" />
          </label>
          @if (w === 'a' ? store.compareA() : store.compareB(); as p) { <img [src]="p.url" [alt]="p.name" class="max-h-32" /> }
        }
        <button type="button" class="btn btn-primary" (click)="store.runCompare()" [disabled]="store.comparing() || !store.compareA() || !store.compareB()">
          {{ store.comparing() ? 'Comparing…' : 'Compare' }}</button>
        @if (store.compareError(); as e) { <p class="text-sm text-rose-700 dark:text-rose-300" role="alert" data-testid="rf-compare-error">{{ e }}</p> }
        @if (store.compare(); as c) {
          <p data-testid="rf-compare-result" [attr.data-same]="c.same">
            <strong>{{ c.same ? 'same person' : 'different people' }}</strong>: distance {{ c.distance.toFixed(3) }} (threshold {{ c.threshold }})
          </p>
        }
      </section>
      </div>
    </div>
  `,
})
export class RustyfacePanel implements OnInit {
  readonly pluginId = input('rustyface');
  protected readonly store = inject(RustyfaceStore);
  protected readonly detectors = DETECTORS;
  protected readonly sides = ['a', 'b'] as const;
  protected readonly thumbsShown = THUMBS_SHOWN;

  private readonly confirm = inject(ConfirmStore);
  protected readonly person = signal('');
  protected readonly newGallery = signal('');
  /** The face under the pointer (its box or its row), highlighted in both. */
  protected readonly hovered = signal<number | null>(null);
  protected readonly dragging = signal(false);

  ngOnInit() {
    this.store.setPlugin(this.pluginId());
    void this.store.loadCaps();
  }

  /** A name's font size in image pixels: about 1/30 of the image. */
  protected label(w: number, h: number) {
    return Math.max(10, Math.max(w, h) / 30);
  }

  /** A box's colour: amber when picked for enrolment, then emerald for a known person, rose for unknown, sky before Recognize. */
  protected stroke(i: number) {
    if (this.store.hasGalleries() && this.store.chosenFace() === i) return '#f59e0b';
    const n = this.store.namesByFace()[i];
    if (!n) return '#10b981';
    return n.person ? '#10b981' : '#f43f5e';
  }

  protected candidates(n: RecognizedFace) {
    return (n.candidates ?? []).map((c) => `${c.person} ${c.distance.toFixed(3)}`).join(', ');
  }

  /** The box's tooltip: its number and score, and what Recognize said. */
  protected faceTitle(i: number) {
    const f = this.store.result()?.faces[i];
    const n = this.store.namesByFace()[i];
    let t = `face ${i + 1}${f ? `, score ${f.score.toFixed(3)}` : ''}`;
    if (n) t += `: ${n.person ?? 'unknown'}${n.distance != null ? ` ${n.distance.toFixed(3)}` : ''}`;
    if (n?.candidates?.length) t += `; next: ${this.candidates(n)}`;
    return t;
  }

  protected shown(thumbs: Thumb[] | undefined) {
    return (thumbs ?? []).slice(0, THUMBS_SHOWN);
  }

  protected when(t: Thumb) {
    return new Date(t.created_ms).toLocaleString();
  }

  protected async enrol() {
    if (await this.store.enrol(this.person())) this.person.set('');
  }

  protected async createGallery() {
    await this.store.setGallery(this.newGallery());
    if (this.store.gallery() === this.newGallery().trim()) this.newGallery.set('');
  }

  protected setGallery(name: string) {
    void this.store.setGallery(name);
  }

  protected setThreshold(v: string) {
    void this.store.setThreshold(v === '' ? NaN : Number(v));
  }

  protected async remove(person: string) {
    const ok = await this.confirm.ask({
      title: `Delete ${person}?`,
      message: `Every face enrolled as ${person} in the gallery ${this.store.gallery()} is removed, its photos on disk too.`,
      confirmLabel: 'Delete',
    });
    if (ok) await this.store.deletePerson(person);
  }

  /** A landmark's radius in image pixels: about 1/250 of the image, at least 1. */
  protected dot(w: number, h: number) {
    return Math.max(1, Math.max(w, h) / 250);
  }

  protected box(f: Face) {
    const b = f.box;
    return `${Math.round(b.x)},${Math.round(b.y)} ${Math.round(b.w)}×${Math.round(b.h)}`;
  }

  protected setDetector(d: string) {
    if ((DETECTORS as readonly string[]).includes(d)) void this.store.setDetector(d as Detector);
  }

  protected setConfidence(v: string) {
    void this.store.setMinConfidence(v === '' ? NaN : Number(v));
  }

  private async load(file: File | undefined): Promise<Photo | string> {
    if (!file) return 'No file picked.';
    const bad = photoProblem(file);
    if (bad) return bad;
    try {
      return await readPhoto(file);
    } catch (e) {
      return (e as Error).message;
    }
  }

  protected async picked(ev: Event) {
    await this.take((ev.target as HTMLInputElement).files?.[0]);
  }

  protected async dropped(ev: DragEvent) {
    ev.preventDefault();
    this.dragging.set(false);
    await this.take(ev.dataTransfer?.files?.[0]);
  }

  private async take(file: File | undefined) {
    const p = await this.load(file);
    if (typeof p === 'string') this.store.fail(p);
    else await this.store.setPhoto(p);
  }

  protected async pickedCompare(w: 'a' | 'b', ev: Event) {
    const p = await this.load((ev.target as HTMLInputElement).files?.[0]);
    if (typeof p === 'string') this.store.failCompare(`Photo ${w.toUpperCase()}: ${p}`);
    else this.store.setCompare(w, p);
  }
}
