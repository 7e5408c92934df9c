/**
 * Incremental parser for OpenAI-style server-sent events: feed it text chunks, get back the
 * `data:` payloads of complete events (`[DONE]` included as is).
 */
export class SseParser {
  private buf = '';

  push(chunk: string): string[] {
    this.buf += chunk.replace(/\r\n/g, '\n');
    const out: string[] = [];
    let i: number;
    while ((i = this.buf.indexOf('\n\n')) >= 0) {
      const block = this.buf.slice(0, i);
      this.buf = this.buf.slice(i + 2);
      const data = block
        .split('\n')
        .filter((l) => l.startsWith('data:'))
        .map((l) => l.slice(5).replace(/^ /, ''))
        .join('\n');
      if (data) out.push(data);
    }
    return out;
  }
}

/** The text delta of one chat.completion.chunk payload. */
export function chatDelta(payload: string): string {
  if (payload === '[DONE]') return '';
  try {
    const j = JSON.parse(payload);
    return j?.choices?.[0]?.delta?.content ?? j?.choices?.[0]?.text ?? '';
  } catch {
    return '';
  }
}

export function cosine(a: number[], b: number[]): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return na && nb ? dot / Math.sqrt(na * nb) : 0;
}

/** The error message of an in-stream `{"error": {...}}` payload (a stream that failed half-way), or null. */
export function sseError(payload: string): string | null {
  if (payload === '[DONE]') return null;
  try {
    const j = JSON.parse(payload);
    return j?.error ? String(j.error.message ?? JSON.stringify(j.error)) : null;
  } catch {
    return null;
  }
}

/** The finish_reason of a chat.completion.chunk payload, or null. */
export function finishReason(payload: string): string | null {
  try {
    return JSON.parse(payload)?.choices?.[0]?.finish_reason ?? null;
  } catch {
    return null;
  }
}

/** Splits /v1/models' data into chat and embedding model ids (by their `kind`; unknown kinds are offered for chat). */
export function modelsByKind(data: { id: string; kind?: string }[]): { chat: string[]; embedding: string[] } {
  const chat: string[] = [];
  const embedding: string[] = [];
  for (const m of data) (m.kind === 'embedding' ? embedding : chat).push(m.id);
  return { chat, embedding };
}
