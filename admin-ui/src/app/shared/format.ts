export function formatBytes(n: number | null | undefined): string {
  if (n == null || !isFinite(n)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 100 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

export function formatDuration(ms: number | null | undefined): string {
  if (ms == null || ms < 0 || !isFinite(ms)) return '–';
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h ${m % 60}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

export function formatPercent(v: number | null | undefined, digits = 1): string {
  if (v == null || !isFinite(v)) return '–';
  return `${v.toFixed(digits)}%`;
}

export function formatRate(v: number | null | undefined): string {
  if (v == null || !isFinite(v)) return '–';
  return v >= 100 ? Math.round(v).toString() : v.toFixed(1);
}

export function formatTime(ms: number | null | undefined): string {
  if (ms == null) return '–';
  return new Date(ms).toLocaleString();
}

/** SVG polyline points for a series scaled into a w×h box (0 at the bottom). */
/**
 * Polyline points for a sparkline. Rates are drawn from 0 to `max` (default: the largest
 * value); with `fit`, a level such as memory is drawn from the window's lowest to its highest
 * value, so its changes show, and a flat series runs through the middle.
 */
export function sparkPoints(values: number[], w: number, h: number, max?: number, fit = false): string {
  if (values.length === 0) return '';
  const hi = Math.max(max ?? Math.max(...values), 1e-9);
  const lo = fit ? Math.min(...values) : 0;
  const span = hi - lo;
  const step = values.length > 1 ? w / (values.length - 1) : 0;
  const y = (v: number) => (fit && span <= hi * 1e-6 ? h / 2 : h - ((Math.max(lo, v) - lo) / span) * (h - 2) - 1);
  return values.map((v, i) => `${(i * step).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
}
