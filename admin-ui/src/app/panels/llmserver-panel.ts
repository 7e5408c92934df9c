import { ChangeDetectionStrategy, Component, OnInit, computed, inject, input, signal } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { Api } from '../core/api';
import { AuthStore } from '../core/auth.store';
import { ChatSettings, GREEDY, ModelSettings, defaultChatSettings, describeSettings } from './chat-settings';
import { SseParser, chatDelta, cosine, finishReason, modelsByKind, sseError } from './sse';

interface ChatMessage {
  role: 'user' | 'assistant' | 'system';
  content: string;
}

/**
 * The llmserver plugin's panel: a chat box streaming from POST /v1/chat/completions
 * (stream: true -> SSE chat.completion.chunk ... [DONE]), and an embeddings playground on
 * POST /v1/embeddings. Models come from GET /v1/models (each with its `kind`); llmserver loads
 * them into candle on first use, so the first answer can take a few seconds.
 */
@Component({
  selector: 'app-llmserver-panel',
  imports: [FormsModule],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <div class="grid gap-4 lg:grid-cols-2">
      <section class="card flex flex-col gap-3" aria-label="Chat">
        <div class="flex flex-wrap items-end gap-2">
          <h2 class="font-semibold">Chat</h2>
          <label class="ml-auto text-sm"><span class="label">Model</span>
            <select class="input mt-1" [ngModel]="model()" (ngModelChange)="chooseModel($event)" name="model" data-testid="chat-model">
              @for (m of chatModels(); track m) { <option [value]="m">{{ m }}</option> } @empty { <option value="">(no chat models)</option> }
            </select>
          </label>
          <button type="button" class="btn" (click)="clear()" [disabled]="streaming() || !messages().length">Clear</button>
        </div>
        <fieldset class="flex flex-wrap items-end gap-2 rounded border border-slate-200 p-2 dark:border-slate-700" data-testid="chat-settings">
          <legend class="label px-1">Sampling settings</legend>
          <label class="w-24 text-sm"><span class="label">Temperature</span>
            <input class="input mt-1" type="number" min="0" max="2" step="0.1" name="temperature" [ngModel]="temperature()" (ngModelChange)="temperature.set($event)" data-testid="chat-temperature" /></label>
          <label class="w-24 text-sm"><span class="label">top_p</span>
            <input class="input mt-1" type="number" min="0" max="1" step="0.05" name="topP" [ngModel]="topP()" (ngModelChange)="topP.set($event)" data-testid="chat-top-p" /></label>
          <label class="w-24 text-sm"><span class="label">Max tokens</span>
            <input class="input mt-1" type="number" min="1" max="4096" name="maxTokens" [ngModel]="maxTokens()" (ngModelChange)="maxTokens.set($event)" data-testid="chat-max-tokens" /></label>
          <button type="button" class="btn" (click)="resetSettings()" [disabled]="!edited()" data-testid="chat-settings-reset">{{ defaults().source === 'model' ? "Model's settings" : 'Greedy defaults' }}</button>
          <p class="muted w-full text-xs" data-testid="chat-settings-summary">
            Sent with {{ summary() }}@if (!edited()) { · {{ defaults().source === 'model' ? "the model's recommended settings" : 'greedy: the model states no recommended settings' }} } @else { · edited }
          </p>
        </fieldset>
        <div class="h-80 space-y-2 overflow-auto rounded bg-slate-50 p-2 text-sm dark:bg-slate-950" role="log" aria-live="polite" data-testid="chat-log" [attr.data-streaming]="streaming()">
          @for (m of messages(); track $index) {
            <div [class]="m.role === 'user' ? 'ml-8 rounded-lg bg-sky-100 p-2 dark:bg-sky-900' : 'mr-8 rounded-lg bg-white p-2 ring-1 ring-slate-200 dark:bg-slate-800 dark:ring-slate-700'" [attr.data-role]="m.role">
              <span class="whitespace-pre-wrap">{{ m.content }}</span>
            </div>
          } @empty { <p class="muted">Ask something.</p> }
        </div>
        @if (stats(); as st) { <p class="muted text-xs" data-testid="chat-stats">{{ st }}</p> }
        @if (chatError(); as e) { <p class="text-sm text-rose-700 dark:text-rose-300" role="alert">{{ e }}</p> }
        <form class="flex gap-2" (ngSubmit)="send()">
          <label class="flex-1"><span class="sr-only">Message</span><input class="input" name="prompt" [(ngModel)]="prompt" placeholder="Message" data-testid="chat-input" /></label>
          @if (streaming()) { <button type="button" class="btn" (click)="stop()">Stop</button> }
          @else { <button type="submit" class="btn btn-primary">Send</button> }
        </form>
      </section>

      <section class="card space-y-3" aria-label="Embeddings">
        <div class="flex flex-wrap items-end gap-2">
          <h2 class="font-semibold">Embeddings</h2>
          <label class="ml-auto text-sm"><span class="label">Model</span>
            <select class="input mt-1" [ngModel]="embedModel()" (ngModelChange)="embedModel.set($event)" name="embedModel" data-testid="embed-model">
              @for (m of embeddingModels(); track m) { <option [value]="m">{{ m }}</option> } @empty { <option value="">(no embedding models)</option> }
            </select>
          </label>
        </div>
        <label class="block"><span class="label">Text A</span><textarea class="input mt-1" name="a" [(ngModel)]="textA"></textarea></label>
        <label class="block"><span class="label">Text B (optional, for similarity)</span><textarea class="input mt-1" name="b" [(ngModel)]="textB"></textarea></label>
        <button type="button" class="btn btn-primary" (click)="embed()" [disabled]="embedding()">{{ embedding() ? 'Embedding…' : 'Embed' }}</button>
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
  protected readonly chatModels = signal<string[]>([]);
  protected readonly embeddingModels = signal<string[]>([]);
  protected readonly model = signal('');
  protected readonly embedModel = signal('');
  protected readonly stats = signal<string | null>(null);
  protected readonly embedding = signal(false);
  /** The model's recommended settings, or greedy when it states none. */
  protected readonly defaults = signal<ModelSettings>({ settings: { ...GREEDY }, source: 'greedy' });
  protected readonly temperature = signal<number | null>(GREEDY.temperature);
  protected readonly topP = signal<number | null>(GREEDY.top_p);
  protected readonly maxTokens = signal<number | null>(GREEDY.max_tokens);
  /** The settings the next request is sent with (a cleared field: left to the host). */
  readonly settings = computed<Partial<ChatSettings>>(() => {
    const out: Partial<ChatSettings> = {};
    const put = (k: keyof ChatSettings, v: number | string | null) => {
      if (v != null && `${v}` !== '' && Number.isFinite(Number(v))) out[k] = Number(v);
    };
    put('temperature', this.temperature());
    put('top_p', this.topP());
    put('max_tokens', this.maxTokens());
    return out;
  });
  protected readonly summary = computed(() => describeSettings(this.settings()));
  protected readonly edited = computed(() => {
    const d = this.defaults().settings;
    const s = this.settings();
    return s.temperature !== d.temperature || s.top_p !== d.top_p || s.max_tokens !== d.max_tokens;
  });
  private modelEntries = new Map<string, Record<string, unknown>>();
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
      const r = await this.api.get<{ data: ({ id: string; kind?: string } & Record<string, unknown>)[] }>('/v1/models');
      const { chat, embedding } = modelsByKind(r.data ?? []);
      this.modelEntries = new Map((r.data ?? []).map((m) => [m.id, m]));
      this.chatModels.set(chat);
      this.embeddingModels.set(embedding);
      if (chat.length) this.chooseModel(chat[0]);
      if (embedding.length) this.embedModel.set(embedding[0]);
    } catch (e) {
      this.chatError.set(`Could not list models: ${(e as Error).message}`);
    }
  }

  /** Picks a chat model and starts from its recommended settings (greedy when it states none). */
  chooseModel(id: string) {
    this.model.set(id);
    this.defaults.set(defaultChatSettings(this.modelEntries.get(id)));
    this.resetSettings();
  }

  resetSettings() {
    const d = this.defaults().settings;
    this.temperature.set(d.temperature);
    this.topP.set(d.top_p);
    this.maxTokens.set(d.max_tokens);
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
    this.stats.set(null);
    this.abort = new AbortController();
    const sentWith = this.summary();
    const t0 = performance.now();
    let first: number | null = null;
    let pieces = 0;
    let finish: string | null = null;
    try {
      const res = await fetch(this.api.base + '/v1/chat/completions', {
        method: 'POST',
        headers: this.headers(),
        body: JSON.stringify(this.chatBody(history)),
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
          const failed = sseError(data);
          if (failed) throw new Error(failed);
          const delta = chatDelta(data);
          if (delta) {
            first ??= performance.now();
            pieces++;
            this.appendAssistant(delta);
          }
          finish = finishReason(data) ?? finish;
        }
      }
      const total = (performance.now() - t0) / 1000;
      this.stats.set(
        `${pieces} pieces · first after ${first == null ? '–' : ((first - t0) / 1000).toFixed(2) + ' s'} · ${total.toFixed(2)} s in all` +
          (finish ? ` · finish: ${finish}` : '') +
          ` · ${sentWith}`,
      );
    } catch (e) {
      if ((e as Error).name !== 'AbortError') this.chatError.set(`Chat failed: ${(e as Error).message}`);
      // Drop an answer that never started.
      this.messages.update((m) => (m.length && m[m.length - 1].role === 'assistant' && !m[m.length - 1].content ? m.slice(0, -1) : m));
    } finally {
      this.streaming.set(false);
      this.abort = null;
    }
  }

  /** The request: the chosen model, the conversation, the sampling settings shown, stream: true. */
  chatBody(messages: ChatMessage[]) {
    return { model: this.model(), messages, stream: true, ...this.settings() };
  }

  clear() {
    this.messages.set([]);
    this.stats.set(null);
    this.chatError.set(null);
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
    this.embedding.set(true);
    try {
      const r = await this.api.post<{ data: { embedding: number[] }[] }>('/v1/embeddings', { model: this.embedModel(), input });
      const [a, b] = r.data.map((d) => d.embedding);
      this.embedResult.set({
        dims: a.length,
        head: a.slice(0, 6).map((x) => x.toFixed(4)).join(', ') + ' …',
        similarity: b ? cosine(a, b) : null,
      });
    } catch (e) {
      this.embedError.set((e as Error).message);
    } finally {
      this.embedding.set(false);
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
