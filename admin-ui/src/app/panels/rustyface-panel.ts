import { ChangeDetectionStrategy, Component, OnInit, inject, input, signal } from '@angular/core';
import { ConfirmStore } from '../core/confirm.store';
import { DETECTORS, Detector, Face, Photo, RustyfaceStore, photoProblem, readPhoto } from './rustyface-store';

/**
 * The rustyface plugin's panel: a photo (dropped or picked) goes to `face.detect` with landmarks
 * and is drawn with its boxes and 68 points over it (an SVG whose viewBox is the image's pixel
 * size, so the overlay scales with the shown photo); the detector and minimum confidence; and
 * `face.compare` of two photos.
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
        </div>
        <div class="rounded border-2 border-dashed border-slate-300 p-3 text-sm dark:border-slate-600" data-testid="rf-drop"
          (dragover)="$event.preventDefault()" (drop)="dropped($event)">
          <label class="block">Drop a photo here, or
            <input type="file" accept="image/jpeg,image/png,image/webp,image/bmp" data-testid="rf-file" aria-label="photo to detect faces in"
              (change)="picked($event)" />
          </label>
        </div>
        @if (store.error(); as e) { <p class="text-sm text-rose-700 dark:text-rose-300" role="alert" data-testid="rf-error">{{ e }}</p> }
        @if (store.photo(); as p) {
          <div class="text-sm" aria-live="polite">
            @if (store.detecting()) { <p class="muted">detecting…</p> }
            @if (store.result(); as r) {
              <p data-testid="rf-summary">{{ r.faces.length }} face{{ r.faces.length === 1 ? '' : 's' }} in {{ r.width }}×{{ r.height }}, {{ r.took_ms.toFixed(0) }} ms ({{ store.detector() }})</p>
              <ol class="mt-1 list-decimal pl-5" data-testid="rf-faces">
                @for (f of r.faces; track $index) {
                  <li [attr.data-face]="$index">
                    @if (store.hasGalleries()) {
                      <input type="radio" name="rfChosenFace" class="mr-1" [checked]="store.chosenFace() === $index" (change)="store.chooseFace($index)" [attr.aria-label]="'enrol face ' + ($index + 1)" />
                    }
                    score <span class="font-mono" data-testid="rf-score">{{ f.score.toFixed(3) }}</span>
                    <span class="muted"> at {{ box(f) }}</span></li>
                }
              </ol>
            }
          </div>
          <figure class="relative inline-block max-w-full" data-testid="rf-figure">
            <img [src]="p.url" [alt]="p.name" class="block h-auto max-h-[60vh] max-w-full" />
            @if (store.result(); as r) {
              <svg class="pointer-events-none absolute inset-0 h-full w-full" [attr.viewBox]="'0 0 ' + r.width + ' ' + r.height"
                preserveAspectRatio="none" data-testid="rf-overlay" aria-hidden="true">
                @for (f of r.faces; track $index) {
                  <g [attr.data-face]="$index">
                    <rect [attr.x]="f.box.x" [attr.y]="f.box.y" [attr.width]="f.box.w" [attr.height]="f.box.h"
                      fill="none" [attr.stroke]="store.hasGalleries() && store.chosenFace() === $index ? '#f59e0b' : '#10b981'"
                      [attr.stroke-width]="store.hasGalleries() && store.chosenFace() === $index ? 4 : 2" vector-effect="non-scaling-stroke"
                      data-testid="rf-box" [attr.pointer-events]="store.hasGalleries() ? 'all' : 'none'" [class.cursor-pointer]="store.hasGalleries()"
                      (click)="store.chooseFace($index)" />
                    @for (pt of f.landmarks ?? []; track $index) {
                      <circle [attr.cx]="pt[0]" [attr.cy]="pt[1]" [attr.r]="dot(r.width, r.height)" fill="#f43f5e" data-testid="rf-point" />
                    }
                  </g>
                }
                @for (f of store.recognized() ?? []; track $index) {
                  <text [attr.x]="f.box.x" [attr.y]="f.box.y - label(r.width, r.height) * 0.3" [attr.font-size]="label(r.width, r.height)"
                    fill="#fbbf24" stroke="#000" [attr.stroke-width]="label(r.width, r.height) / 12" paint-order="stroke" font-weight="bold"
                    data-testid="rf-name" [attr.data-person]="f.person ?? ''">{{ f.person ?? 'unknown' }}{{ f.distance != null ? ' ' + f.distance.toFixed(2) : '' }}</text>
                }
              </svg>
            }
          </figure>
        }
      </section>

      <div class="space-y-4">
      @if (store.hasGalleries()) {
        <section class="card space-y-3" data-testid="rf-gallery" aria-label="Gallery">
          <h2 class="font-semibold">Gallery</h2>
          <div class="flex flex-wrap items-end gap-3">
            <button type="button" class="btn" (click)="store.recognize()" [disabled]="store.busy() || !store.photo()">Recognize</button>
            <form class="flex flex-wrap items-end gap-2" (submit)="$event.preventDefault(); enrol()" data-testid="rf-enrol">
              <label class="block"><span class="label">Name</span>
                <input class="input mt-1" name="rfPerson" [value]="person()" (input)="person.set($any($event.target).value)" placeholder="obama" />
              </label>
              <button type="submit" class="btn btn-primary" [disabled]="store.busy() || store.chosenFace() === null">Enrol face {{ store.chosenFace() === null ? '' : store.chosenFace()! + 1 }}</button>
            </form>
            <span class="muted text-sm">Pick the face by its box or its row; Recognize names the faces on the photo.</span>
          </div>
          @if (store.galleryError(); as e) { <p class="text-sm text-rose-700 dark:text-rose-300" role="alert" data-testid="rf-gallery-error">{{ e }}</p> }
          <table class="w-full text-left text-sm" data-testid="rf-persons">
            <thead class="muted text-xs"><tr><th class="py-1 pr-3">person</th><th class="pr-3">faces</th><th></th></tr></thead>
            <tbody>
              @for (p of store.persons(); track p.person) {
                <tr class="border-t border-slate-200 dark:border-slate-700" [attr.data-person]="p.person">
                  <td class="py-1 pr-3">{{ p.person }}</td><td class="pr-3">{{ p.entries }}</td>
                  <td class="text-right"><button type="button" class="btn !py-0.5" (click)="remove(p.person)">Delete</button></td>
                </tr>
              } @empty { <tr><td colspan="3" class="muted py-2">nobody enrolled</td></tr> }
            </tbody>
          </table>
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
        <button type="button" class="btn btn-primary" (click)="store.runCompare()" [disabled]="store.comparing() || !store.compareA() || !store.compareB()">Compare</button>
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

  private readonly confirm = inject(ConfirmStore);
  protected readonly person = signal('');

  ngOnInit() {
    this.store.setPlugin(this.pluginId());
    void this.store.loadCaps();
  }

  /** A name's font size in image pixels: about 1/30 of the image. */
  protected label(w: number, h: number) {
    return Math.max(10, Math.max(w, h) / 30);
  }

  protected async enrol() {
    if (await this.store.enrol(this.person())) this.person.set('');
  }

  protected async remove(person: string) {
    const ok = await this.confirm.ask({
      title: `Delete ${person}?`,
      message: `Every face enrolled as ${person} is removed from the gallery, on disk too.`,
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
