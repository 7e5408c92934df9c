/** The sampling settings a chat request is sent with. */
export interface ChatSettings {
  temperature: number;
  top_p: number;
  max_tokens: number;
}

/**
 * Greedy decoding: the most likely token every time. Small models (SmolLM2-135M) ramble and
 * invent at 0.7 ("Le Bourg-la-Chasse is the capital of France") and answer plainly at 0, so
 * greedy is the default unless the model states settings of its own.
 */
export const GREEDY: ChatSettings = { temperature: 0, top_p: 1, max_tokens: 256 };

export interface ModelSettings {
  settings: ChatSettings;
  /** Where the settings come from: the model's own recommendation, or the greedy default. */
  source: 'model' | 'greedy';
}

function num(v: unknown, min: number, max: number): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) && v >= min && v <= max ? v : undefined;
}

/**
 * The settings to start a chat with, for a `/v1/models` entry: the ones the model recommends
 * (an object under `recommended`, `recommended_settings`, `generation_config` or `sampling`,
 * with `temperature`, `top_p`, `max_tokens` / `max_new_tokens`; values out of range are
 * ignored), each missing one from the greedy default. No recommendation at all: greedy.
 */
export function defaultChatSettings(entry: Record<string, unknown> | undefined): ModelSettings {
  const rec = ['recommended', 'recommended_settings', 'generation_config', 'sampling']
    .map((k) => entry?.[k])
    .find((v): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v));
  if (!rec) return { settings: { ...GREEDY }, source: 'greedy' };
  const temperature = num(rec['temperature'], 0, 2);
  const top_p = num(rec['top_p'], 0, 1);
  const max = num(rec['max_tokens'] ?? rec['max_new_tokens'], 1, 1 << 20);
  if (temperature == null && top_p == null && max == null) return { settings: { ...GREEDY }, source: 'greedy' };
  return {
    settings: {
      temperature: temperature ?? GREEDY.temperature,
      top_p: top_p ?? GREEDY.top_p,
      max_tokens: max != null ? Math.floor(max) : GREEDY.max_tokens,
    },
    source: 'model',
  };
}

/** "temperature 0 · top_p 1 · max_tokens 256": what a request is sent with. */
export function describeSettings(s: Partial<ChatSettings>): string {
  const show = (v: number | undefined) => (v == null ? '(host default)' : String(v));
  return `temperature ${show(s.temperature)} · top_p ${show(s.top_p)} · max_tokens ${show(s.max_tokens)}`;
}
