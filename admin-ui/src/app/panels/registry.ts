import { Type } from '@angular/core';

/**
 * Plugin-specific panels, by plugin id. Adding one is this one line plus the component:
 * the component gets the plugin id as its `pluginId` input and is loaded lazily.
 */
export interface PanelEntry {
  label: string;
  load: () => Promise<Type<unknown>>;
  /**
   * Show the panel inside this base tab (above its own content) instead of a tab of its own:
   * candle's loaded models and quantizer belong with the model downloads, in one "Models" tab.
   */
  inTab?: string;
}

export const PLUGIN_PANELS: Record<string, PanelEntry> = {
  apikeys: { label: 'API keys', load: () => import('./apikeys-panel').then((m) => m.ApiKeysPanel) },
  brainml: { label: 'Collections', load: () => import('./brainml-panel').then((m) => m.BrainmlPanel) },
  candle: { label: 'Models', inTab: 'models', load: () => import('./candle-panel').then((m) => m.CandlePanel) },
  llmserver: { label: 'Chat & embeddings', load: () => import('./llmserver-panel').then((m) => m.LlmServerPanel) },
  rustyface: { label: 'Faces', load: () => import('./rustyface-panel').then((m) => m.RustyfacePanel) },
  repoagent: { label: 'Code', load: () => import('./repoagent-panel').then((m) => m.RepoagentPanel) },
};

export function panelFor(id: string): PanelEntry | undefined {
  return Object.prototype.hasOwnProperty.call(PLUGIN_PANELS, id) ? PLUGIN_PANELS[id] : undefined;
}
