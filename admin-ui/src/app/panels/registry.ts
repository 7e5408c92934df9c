import { Type } from '@angular/core';

/**
 * Plugin-specific panels, by plugin id. Adding one is this one line plus the component:
 * the component gets the plugin id as its `pluginId` input and is loaded lazily.
 */
export interface PanelEntry {
  label: string;
  load: () => Promise<Type<unknown>>;
}

export const PLUGIN_PANELS: Record<string, PanelEntry> = {
  apikeys: { label: 'API keys', load: () => import('./apikeys-panel').then((m) => m.ApiKeysPanel) },
  candle: { label: 'Models (candle)', load: () => import('./candle-panel').then((m) => m.CandlePanel) },
  llmserver: { label: 'Chat & embeddings', load: () => import('./llmserver-panel').then((m) => m.LlmServerPanel) },
};

export function panelFor(id: string): PanelEntry | undefined {
  return Object.prototype.hasOwnProperty.call(PLUGIN_PANELS, id) ? PLUGIN_PANELS[id] : undefined;
}
