import { ChangeDetectionStrategy, Component, computed, inject, signal } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { LifecycleAction } from '../core/models';
import { PluginsStore } from '../core/plugins.store';
import { PluginCard } from './plugin-card';

@Component({
  selector: 'app-dashboard',
  imports: [PluginCard, FormsModule],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <div class="mb-4 flex flex-wrap items-center gap-3">
      <h1 class="text-xl font-semibold">Plugins</h1>
      <span class="muted text-sm" data-testid="plugin-count">
        {{ store.plugins().length }} plugins
        @for (c of countList(); track c[0]) { · {{ c[1] }} {{ c[0] }} }
      </span>
      <label class="ml-auto w-full sm:w-64">
        <span class="sr-only">Filter plugins</span>
        <input class="input" type="search" placeholder="Filter by id, name or state" [ngModel]="filter()" (ngModelChange)="filter.set($event)" />
      </label>
    </div>
    @if (store.listError(); as err) {
      <p class="mb-4 rounded-md bg-rose-50 p-3 text-sm text-rose-800 dark:bg-rose-950 dark:text-rose-200" role="alert">Could not read the plugin list: {{ err }}</p>
    }
    @if (store.loaded() && store.plugins().length === 0) {
      <div class="card text-center">
        <p class="font-medium">No plugins loaded.</p>
        <p class="muted text-sm">Copy a plugin library into the host's plugins folder, or drop a <code>.so</code> file onto this page.</p>
      </div>
    }
    <div class="grid grid-cols-1 gap-4 md:grid-cols-2 xl:grid-cols-3" data-testid="plugin-grid">
      <!-- Filtering hides cards rather than destroying them: no re-creation when the filter clears. -->
      @for (p of store.plugins(); track p.id) {
        <app-plugin-card [hidden]="!shown().has(p.id)" [plugin]="p" [series]="store.series()[p.id]" [pending]="store.pending()[p.id]" [startedAt]="store.startedAt()[p.id]" (action)="act(p.id, $event)" />
      }
    </div>
  `,
})
export class Dashboard {
  protected readonly store = inject(PluginsStore);
  protected readonly filter = signal('');
  protected readonly visible = computed(() => {
    const f = this.filter().trim().toLowerCase();
    const all = this.store.plugins();
    if (!f) return all;
    return all.filter((p) => p.id.toLowerCase().includes(f) || p.name.toLowerCase().includes(f) || p.state.includes(f));
  });
  protected readonly shown = computed(() => new Set(this.visible().map((p) => p.id)));
  protected readonly countList = computed(() => Object.entries(this.store.counts()));

  act(id: string, action: LifecycleAction) {
    void this.store.act(id, action);
  }
}
