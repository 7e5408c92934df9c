import { ChangeDetectionStrategy, Component, OnDestroy, OnInit, computed, inject, signal } from '@angular/core';
import { Router, RouterLink, RouterLinkActive, RouterOutlet } from '@angular/router';
import { AuthStore } from '../core/auth.store';
import { PluginsStore } from '../core/plugins.store';
import { PluginUpload } from '../core/upload';
import { formatBytes, formatPercent } from '../shared/format';
import { Sparkline } from '../shared/sparkline';

@Component({
  selector: 'app-shell',
  imports: [RouterOutlet, RouterLink, RouterLinkActive, Sparkline],
  changeDetection: ChangeDetectionStrategy.OnPush,
  host: {
    '(document:dragover)': 'onDragOver($event)',
    '(document:dragleave)': 'onDragLeave($event)',
    '(document:drop)': 'onDrop($event)',
  },
  template: `
    <a href="#main" class="sr-only focus:not-sr-only focus:absolute focus:left-2 focus:top-2 focus:z-50 btn">Skip to content</a>
    <header class="sticky top-0 z-30 border-b border-slate-200 bg-white dark:border-slate-800 dark:bg-slate-900">
      <div class="mx-auto flex max-w-7xl flex-wrap items-center gap-x-4 gap-y-2 px-4 py-2">
        <a routerLink="/plugins" class="text-lg font-semibold tracking-tight">bkg</a>
        <nav class="flex gap-1 text-sm" aria-label="Main">
          <a routerLink="/plugins" routerLinkActive="bg-slate-200 dark:bg-slate-700" class="rounded px-2 py-1 hover:bg-slate-100 dark:hover:bg-slate-800">Plugins</a>
          <a routerLink="/events" routerLinkActive="bg-slate-200 dark:bg-slate-700" class="rounded px-2 py-1 hover:bg-slate-100 dark:hover:bg-slate-800">Events</a>
        </nav>
        <div class="ml-auto flex flex-wrap items-center gap-3 text-xs" data-testid="host-stats">
          <span class="flex items-center gap-1" title="Host CPU">
            <span class="muted">CPU</span>
            <app-sparkline class="w-16 text-sky-600 dark:text-sky-400" [values]="hostCpu()" [width]="60" [height]="18" label="host CPU" />
            <span class="w-12 tabular-nums">{{ cpu() }}</span>
          </span>
          <span class="flex items-center gap-1" title="Host resident memory">
            <span class="muted">RAM</span>
            <app-sparkline class="w-16 text-violet-600 dark:text-violet-400" [values]="hostRss()" [width]="60" [height]="18" [fit]="true" label="host memory" />
            <span class="w-16 tabular-nums">{{ rss() }}</span>
          </span>
          <span class="flex items-center gap-1" [title]="plugins.live() ? 'live telemetry connected' : 'telemetry disconnected'">
            <span class="h-2 w-2 rounded-full" [class]="plugins.live() ? 'bg-emerald-500' : 'bg-slate-400'"></span>
            <span class="muted">{{ plugins.live() ? 'live' : 'offline' }}</span>
          </span>
          <label class="btn cursor-pointer" role="button" tabindex="0" (keydown.enter)="fileInput.click()" (keydown.space)="fileInput.click(); $event.preventDefault()">
            {{ upload.busy() ? 'Uploading…' : 'Upload plugin' }}
            <input #fileInput type="file" class="sr-only" accept=".so,.dylib,.dll" multiple tabindex="-1" data-testid="upload-input"
              (change)="onPick(fileInput)" />
          </label>
          <button type="button" class="btn" (click)="logout()">Log out</button>
        </div>
      </div>
    </header>
    <main id="main" class="mx-auto max-w-7xl p-4" tabindex="-1">
      <router-outlet />
    </main>
    @if (dragging()) {
      <div class="pointer-events-none fixed inset-0 z-40 flex items-center justify-center bg-sky-600/20 backdrop-blur-sm" data-testid="drop-overlay">
        <div class="rounded-2xl border-4 border-dashed border-sky-500 bg-white/90 px-10 py-8 text-lg font-medium dark:bg-slate-900/90">
          Drop a plugin library (.so) to install it
        </div>
      </div>
    }
  `,
})
export class Shell implements OnInit, OnDestroy {
  protected readonly plugins = inject(PluginsStore);
  protected readonly upload = inject(PluginUpload);
  private auth = inject(AuthStore);
  private router = inject(Router);
  protected readonly dragging = signal(false);

  protected readonly hostCpu = computed(() => this.plugins.hostSeries().map((h) => h.cpu_percent));
  protected readonly hostRss = computed(() => this.plugins.hostSeries().map((h) => h.rss_bytes));
  protected readonly cpu = computed(() => formatPercent(this.plugins.host()?.cpu_percent));
  protected readonly rss = computed(() => formatBytes(this.plugins.host()?.rss_bytes));

  ngOnInit() {
    this.plugins.connect();
  }
  ngOnDestroy() {
    this.plugins.disconnect();
  }

  logout() {
    this.plugins.disconnect();
    this.auth.logout();
    void this.router.navigateByUrl('/login');
  }

  onPick(input: HTMLInputElement) {
    if (input.files?.length) void this.upload.upload(input.files);
    input.value = '';
  }

  onDragOver(e: DragEvent) {
    if (!e.dataTransfer?.types?.includes('Files')) return;
    // A panel's own drop zone (photos, documents) took it: no plugin upload offered there.
    if (e.defaultPrevented) return this.dragging.set(false);
    e.preventDefault();
    e.dataTransfer.dropEffect = 'copy';
    this.dragging.set(true);
  }
  onDragLeave(e: DragEvent) {
    if (!e.relatedTarget) this.dragging.set(false);
  }
  onDrop(e: DragEvent) {
    this.dragging.set(false);
    // Dropped on a panel's own drop zone: its files, not a plugin upload.
    if (!e.dataTransfer?.files?.length || e.defaultPrevented) return;
    e.preventDefault();
    void this.upload.upload(e.dataTransfer.files);
  }
}
