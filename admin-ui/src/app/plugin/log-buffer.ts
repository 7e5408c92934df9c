import { LogLine } from '../core/models';

export const LEVELS = ['error', 'warn', 'info', 'debug', 'trace'] as const;
export const MAX_LINES = 2000;

/** Lines of a live log view: bounded, deduplicated by seq, with pause and search. */
export class LogBuffer {
  lines: LogLine[] = [];
  /** Lines that arrived while paused (shown on resume). */
  held: LogLine[] = [];
  dropped = 0;
  paused = false;
  private lastSeq = -1;

  constructor(private max = MAX_LINES) {}

  /** Takes one WebSocket message: a line, or `{dropped: n}`. Returns true when the view changed. */
  push(msg: unknown): boolean {
    if (!msg || typeof msg !== 'object') return false;
    const m = msg as Partial<LogLine> & { dropped?: number };
    if (typeof m.dropped === 'number') {
      this.dropped += m.dropped;
      return true;
    }
    if (typeof m.seq !== 'number' || typeof m.message !== 'string') return false;
    if (m.seq <= this.lastSeq) return false;
    this.lastSeq = m.seq;
    if (this.paused) {
      this.held.push(m as LogLine);
      if (this.held.length > this.max) this.held.splice(0, this.held.length - this.max);
      return true;
    }
    this.lines.push(m as LogLine);
    if (this.lines.length > this.max) this.lines.splice(0, this.lines.length - this.max);
    return true;
  }

  setPaused(p: boolean) {
    this.paused = p;
    if (!p && this.held.length) {
      this.lines.push(...this.held);
      this.held = [];
      if (this.lines.length > this.max) this.lines.splice(0, this.lines.length - this.max);
    }
  }

  clear() {
    this.lines = [];
    this.held = [];
    this.dropped = 0;
    this.lastSeq = -1;
  }
}

export function filterLines(lines: LogLine[], search: string): LogLine[] {
  const q = search.trim().toLowerCase();
  if (!q) return lines;
  return lines.filter((l) => l.message.toLowerCase().includes(q) || l.target.toLowerCase().includes(q) || l.source.includes(q));
}

export function formatLogLine(l: LogLine): string {
  return `${new Date(l.at_ms).toISOString()} ${l.level.toUpperCase().padEnd(5)} [${l.source}${l.target ? ':' + l.target : ''}] ${l.message}`;
}
