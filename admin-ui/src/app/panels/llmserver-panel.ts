import { ChangeDetectionStrategy, Component, OnInit, inject, input, signal } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { Api } from '../core/api';
import { AuthStore } from '../core/auth.store';
import { SseParser, chatDelta, cosine } from './sse';

interface ChatMessage {
  role: 'user' | 'assistant' | 'system';
  content: string;
}

/**
 * The llmserver plugin's panel (backend in progress): a chat box streaming from
 * POST /v1/chat/completions (stream: true, SSE), and an embeddings playground on /v1/embeddings.
 */
@Component({
  selector: 'app-llmserver-panel',
  imports: [FormsModule],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <div class="grid gap-4 lg:grid-cols-2">
      <section class="card flex flex-col gap-3" aria-label="Chat">
        <div class="flex flex-wrap items-center gap-2">
          <h2 class="font-semibold">Chat</h2>
          <label class="ml-auto text-sm"><span class="sr-only">Model</span>
            <select class="input" [ngModel]="model()" (ngModelChange)="model.set($event)" name="model">
              @for (m of models(); track m) { <option [value]="m">{{ m }}</option> } @empty { <option value="">(no models)</option> }
            </select>
          </label>
        </div>
        <div class="h-80 space-y-2 overflow-auto rounded bg-slate-50 p-2 text-sm dark:bg-slate-950" role="log" aria-live="polite" data-testid="chat-log">
          @for (m of messages(); track $index) {
            <div [class]="m.role === 'user' ? 'ml-8 rounded-lg bg-sky-100 p-2 dark:bg-sky-900' : 'mr-8 rounded-lg bg-white p-2 ring-1 ring-slate-200 dark:bg-slate-800 dark:ring-slate-700'" [attr.data-role]="m.role">
              <span class="whitespace-pre-wrap">{{ m.content }}</span>
            </div>
          } @empty { <p class="muted">Ask something.</p> }
        </div>
        @if (chatError(); as e) { <p class="text-sm text-rose-700 dark:text-rose-300" role="alert">{{ e }}</p> }
        <form class="flex gap-2" (ngSubmit)="send()">
          <label class="flex-1"><span class="sr-only">Message</span><input class="input" name="prompt" [(ngModel)]="prompt" placeholder="Message" data-testid="chat-input" /></label>
          @if (streaming()) { <button type="button" class="btn" (click)="stop()">Stop</button> }
          @else { <button type="submit" class="btn btn-primary">Send</button> }
        </form>
      </section>

      <section class="card space-y-3" aria-label="Embeddings">
        <h2 class="font-semibold">Embeddings</h2>
        <label class="block"><span class="label">Text A</span><textarea class="input mt-1" name="a" [(ngModel)]="textA"></textarea></label>
        <label class="block"><span class="label">Text B (optional, for similarity)</span><textarea class="input mt-1" name="b" [(ngModel)]="textB"></textarea></label>
        <button type="button" class="btn btn-primary" (click)="embed()">Embed</button>
        @if (embedResult(); as r) {
          <dl class="text-sm" data-testid="embed-result">
            <dt class="muted">dimensions</dt><dd>{{ r.dims }}</dd>
            <dt class="muted">first values</dt><dd class="font-mono text-xs">{{ r.head }}</dd>
            @if (r.similarity != null) { <dt class="muted">cosine similarity</dt><dd>{{ r.similarity.toFixed(4) }}</dd> }
          </dl>
        }
        @if (embedError(); as e) { <p class="text-sm text-rose-700 dark:text-rose-300" role="alert">{{ e }}</p> }
      </section>
    </div>
  `,
})
export class LlmServerPanel implements OnInit {
  readonly pluginId = input('llmserver');
  private api = inject(Api);
  private auth = inject(AuthStore);
  protected readonly models = signal<string[]>([]);
  protected readonly model = signal('');
  protected readonly messages = signal<ChatMessage[]>([]);
  protected readonly streaming = signal(false);
  protected readonly chatError = signal<string | null>(null);
  protected readonly embedResult = signal<{ dims: number; head: string; similarity: number | null } | null>(null);
  protected readonly embedError = signal<string | null>(null);
  protected prompt = '';
  protected textA = '';
  protected textB = '';
  private abort: AbortController | null = null;

  async ngOnInit() {
    try {
      const r = await this.api.get<{ data: { id: string }[] }>('/v1/models');
      const ids = (r.data ?? []).map((m) => m.id);
      this.models.set(ids);
      if (ids.length) this.model.set(ids[0]);
    } catch (e) {
      this.chatError.set(`Could not list models: ${(e as Error).message}`);
    }
  }

  private headers() {
    return { 'Content-Type': 'application/json', Authorization: 'Bearer ' + (this.auth.key() ?? '') };
  }

  async send() {
    const text = this.prompt.trim();
    if (!text || this.streaming()) return;
    this.prompt = '';
    this.chatError.set(null);
    const history = [...this.messages(), { role: 'user' as const, content: text }];
    this.messages.set([...history, { role: 'assistant', content: '' }]);
    this.streaming.set(true);
    this.abort = new AbortController();
    try {
      const res = await fetch(this.api.base + '/v1/chat/completions', {
        method: 'POST',
        headers: this.headers(),
        body: JSON.stringify({ model: this.model() || undefined, messages: history, stream: true }),
        signal: this.abort.signal,
      });
      if (!res.ok || !res.body) {
        const body = await res.text();
        throw new Error(`${res.status}: ${safeMessage(body)}`);
      }
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      const parser = new SseParser();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const data of parser.push(value)) {
          const delta = chatDelta(data);
          if (delta) this.appendAssistant(delta);
        }
      }
    } catch (e) {
      if ((e as Error).name !== 'AbortError') this.chatError.set(`Chat failed: ${(e as Error).message}`);
    } finally {
      this.streaming.set(false);
      this.abort = null;
    }
  }

  private appendAssistant(delta: string) {
    this.messages.update((m) => {
      const last = m[m.length - 1];
      return [...m.slice(0, -1), { ...last, content: last.content + delta }];
    });
  }

  stop() {
    this.abort?.abort();
  }

  async embed() {
    this.embedError.set(null);
    const input = [this.textA, this.textB].map((t) => t.trim()).filter(Boolean);
    if (!input.length) return this.embedError.set('Enter some text.');
    try {
      const r = await this.api.post<{ data: { embedding: number[] }[] }>('/v1/embeddings', { model: this.model() || undefined, input });
      const [a, b] = r.data.map((d) => d.embedding);
      this.embedResult.set({
        dims: a.length,
        head: a.slice(0, 6).map((x) => x.toFixed(4)).join(', ') + ' …',
        similarity: b ? cosine(a, b) : null,
      });
    } catch (e) {
      this.embedError.set((e as Error).message);
    }
  }
}

function safeMessage(body: string): string {
  try {
    return JSON.parse(body)?.error?.message ?? body;
  } catch {
    return body;
  }
}
