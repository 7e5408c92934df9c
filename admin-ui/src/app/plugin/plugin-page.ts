import { NgComponentOutlet } from '@angular/common';
import { ChangeDetectionStrategy, Component, Type, computed, effect, inject, input, signal } from '@angular/core';
import { Router, RouterLink } from '@angular/router';
import { PluginsStore } from '../core/plugins.store';
import { panelFor } from '../panels/registry';
import { StatusChip } from '../shared/status-chip';
import { PluginConfig } from './config-tab';
import { PluginLogs } from './logs-tab';
import { PluginModels } from './models-tab';
import { PluginOverview } from './overview-tab';
import { PluginTelemetry } from './telemetry-tab';
import { allowedActions } from '../pages/plugin-card';
import { LifecycleAction } from '../core/models';

export const BASE_TABS = [
  { id: 'overview', label: 'Overview' },
  { id: 'config', label: 'Config' },
  { id: 'logs', label: 'Logs' },
  { id: 'telemetry', label: 'Telemetry' },
  { id: 'models', label: 'Models' },
];

/**
 * The WAI-ARIA tabs keys: ArrowRight/ArrowLeft move to the next/previous tab (wrapping),
 * Home/End to the first/last. Returns the tab to activate, or null for any other key.
 */
export function tabForKey(ids: string[], current: string, key: string): string | null {
  if (!ids.length) return null;
  const i = Math.max(0, ids.indexOf(current));
  switch (key) {
    case 'ArrowRight':
      return ids[(i + 1) % ids.length];
    case 'ArrowLeft':
      return ids[(i - 1 + ids.length) % ids.length];
    case 'Home':
      return ids[0];
    case 'End':
      return ids[ids.length - 1];
    default:
      return null;
  }
}

/** PluginPanel: one plugin, in tabs; the plugin's own panel (if registered) is the last tab. */
@Component({
  selector: 'app-plugin-page',
  imports: [RouterLink, StatusChip, NgComponentOutlet, PluginOverview, PluginConfig, PluginLogs, PluginTelemetry, PluginModels],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <nav class="muted mb-2 text-sm" aria-label="Breadcrumb"><a routerLink="/plugins" class="hover:underline">Plugins</a> / {{ id() }}</nav>
    <div class="mb-4 flex flex-wrap items-center gap-3">
      <h1 class="text-xl font-semibold">{{ plugin()?.name || id() }}</h1>
      @if (plugin(); as p) {
        <app-status-chip [state]="p.state" />
        <span class="muted font-mono text-sm">v{{ p.version }} · gen {{ p.generation }}</span>
        <div class="ml-auto flex gap-2">
          @for (a of actions; track a) {
            <button type="button" class="btn" [class.btn-danger]="a === 'stop'" [disabled]="!!pending() || !allowed()[a]" (click)="act(a)" [attr.data-action]="a">
              {{ pending() === a ? a + '…' : a }}
            </button>
          }
        </div>
      } @else if (store.loaded()) {
        <span class="muted">not loaded</span>
      }
    </div>

    <div role="tablist" aria-label="Plugin sections" (keydown)="onTabKey($event)" class="mb-4 flex gap-1 overflow-x-auto border-b border-slate-200 dark:border-slate-700">
      @for (t of tabs(); track t.id) {
        <a role="tab" [routerLink]="['/plugins', id(), t.id]" [attr.aria-selected]="t.id === current()" [attr.data-tab]="t.id"
          [id]="'tab-' + t.id" aria-controls="plugin-tabpanel" [attr.tabindex]="t.id === current() ? 0 : -1"
          class="whitespace-nowrap border-b-2 px-3 py-2 text-sm"
          [class]="t.id === current() ? 'border-sky-600 font-medium text-sky-700 dark:text-sky-300' : 'border-transparent muted hover:text-slate-900 dark:hover:text-white'">{{ t.label }}</a>
      }
    </div>

    <section role="tabpanel" id="plugin-tabpanel" [attr.aria-labelledby]="'tab-' + current()" tabindex="0" class="focus-visible:outline-2 focus-visible:outline-sky-500">
      @if (panel()?.inTab === current()) {
        <div class="mb-4" data-testid="plugin-panel-in-tab">
          @if (panelComponent(); as c) {
            <ng-container *ngComponentOutlet="c; inputs: { pluginId: id() }" />
          } @else {
            <p class="muted">Loading panel…</p>
          }
        </div>
      }
      @switch (current()) {
        @case ('overview') { <app-plugin-overview [plugin]="plugin()" [pluginId]="id()" /> }
        @case ('config') { <app-plugin-config [pluginId]="id()" /> }
        @case ('logs') { <app-plugin-logs [pluginId]="id()" /> }
        @case ('telemetry') { <app-plugin-telemetry [pluginId]="id()" /> }
        @case ('models') { <app-plugin-models [pluginId]="id()" /> }
        @case ('panel') {
          @if (panelComponent(); as c) {
            <ng-container *ngComponentOutlet="c; inputs: { pluginId: id() }" />
          } @else {
            <p class="muted">Loading panel…</p>
          }
        }
        @default { <p class="muted">Unknown tab.</p> }
      }
    </section>
  `,
})
export class PluginPage {
  readonly id = input.required<string>();
  readonly tab = input<string>('overview');
  protected readonly store = inject(PluginsStore);
  private readonly router = inject(Router);
  protected readonly actions: LifecycleAction[] = ['start', 'stop', 'restart'];

  protected readonly plugin = computed(() => this.store.plugins().find((p) => p.id === this.id()));
  protected readonly pending = computed(() => this.store.pending()[this.id()]);
  protected readonly allowed = computed(() => allowedActions(this.plugin()?.state ?? 'unloaded'));
  protected readonly panel = computed(() => panelFor(this.id()));
  protected readonly tabs = computed(() => {
    const p = this.panel();
    if (!p) return BASE_TABS;
    // A panel shown inside a base tab gives that tab its label, and no tab of its own.
    if (p.inTab) return BASE_TABS.map((t) => (t.id === p.inTab ? { ...t, label: p.label } : t));
    return [...BASE_TABS, { id: 'panel', label: p.label }];
  });
  /** The tab shown: `panel` (an old link) goes to the tab that now holds the panel. */
  protected readonly current = computed(() => {
    const p = this.panel();
    return this.tab() === 'panel' && p?.inTab ? p.inTab : this.tab();
  });
  protected readonly panelComponent = signal<Type<unknown> | null>(null);

  constructor() {
    effect(() => {
      const entry = this.panel();
      this.panelComponent.set(null);
      const tab = this.current();
      if (entry && (entry.inTab ? tab === entry.inTab : tab === 'panel')) void entry.load().then((c) => this.panelComponent.set(c));
    });
  }

  act(a: LifecycleAction) {
    void this.store.act(this.id(), a);
  }

  protected onTabKey(event: KeyboardEvent) {
    const next = tabForKey(this.tabs().map((t) => t.id), this.current(), event.key);
    if (!next) return;
    event.preventDefault();
    const list = event.currentTarget as HTMLElement;
    (list.querySelector(`[data-tab="${next}"]`) as HTMLElement | null)?.focus();
    void this.router.navigate(['/plugins', this.id(), next]);
  }
}
