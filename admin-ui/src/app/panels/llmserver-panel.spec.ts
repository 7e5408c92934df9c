import { provideHttpClient } from '@angular/common/http';
import { HttpTestingController, provideHttpClientTesting } from '@angular/common/http/testing';
import { ComponentFixture, TestBed } from '@angular/core/testing';
import { defaultChatSettings, describeSettings, GREEDY } from './chat-settings';
import { LlmServerPanel } from './llmserver-panel';

const tick = () => new Promise((r) => setTimeout(r));
const models = [
  { id: 'SmolLM2-135M-Instruct', object: 'model', kind: 'chat' },
  { id: 'tuned', object: 'model', kind: 'chat', recommended: { temperature: 0.3, top_p: 0.9 } },
  { id: 'all-MiniLM-L6-v2', object: 'model', kind: 'embedding' },
];

describe('defaultChatSettings', () => {
  it('is greedy (temperature 0) when the model states no settings', () => {
    expect(defaultChatSettings({ id: 'm' })).toEqual({ settings: GREEDY, source: 'greedy' });
    expect(defaultChatSettings(undefined).settings.temperature).toBe(0);
    expect(defaultChatSettings({ recommended: { temperature: 'hot' } }).source).toBe('greedy');
  });
  it("takes the model's recommended settings, the rest from greedy; out of range is ignored", () => {
    expect(defaultChatSettings({ recommended: { temperature: 0.3, top_p: 0.9 } })).toEqual({
      settings: { temperature: 0.3, top_p: 0.9, max_tokens: 256 },
      source: 'model',
    });
    expect(defaultChatSettings({ generation_config: { temperature: 9, max_new_tokens: 64 } }).settings).toEqual({ temperature: 0, top_p: 1, max_tokens: 64 });
  });
  it('describes what is sent', () => {
    expect(describeSettings(GREEDY)).toBe('temperature 0 · top_p 1 · max_tokens 256');
    expect(describeSettings({ temperature: 0 })).toBe('temperature 0 · top_p (host default) · max_tokens (host default)');
  });
});

describe('LlmServerPanel chat settings', () => {
  let fixture: ComponentFixture<LlmServerPanel>;
  let http: HttpTestingController;
  const el = () => fixture.nativeElement as HTMLElement;
  const field = (id: string) => el().querySelector(`[data-testid=${id}]`) as HTMLInputElement;

  beforeEach(async () => {
    TestBed.configureTestingModule({ imports: [LlmServerPanel], providers: [provideHttpClient(), provideHttpClientTesting()] });
    http = TestBed.inject(HttpTestingController);
    fixture = TestBed.createComponent(LlmServerPanel);
    fixture.detectChanges();
    http.expectOne('/v1/models').flush({ object: 'list', data: models });
    await tick();
    await fixture.whenStable();
  });
  afterEach(() => vi.unstubAllGlobals());

  it('the default request is greedy: temperature 0 (top_p 1, max_tokens 256), and the panel shows it', async () => {
    const sent: unknown[] = [];
    vi.stubGlobal('fetch', async (_url: string, init: RequestInit) => {
      sent.push(JSON.parse(init.body as string));
      const sse = 'data: {"choices":[{"delta":{"content":"Paris"}}]}\n\ndata: {"choices":[{"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n';
      return new Response(sse, { status: 200, headers: { 'content-type': 'text/event-stream' } });
    });
    expect(field('chat-temperature').value).toBe('0');
    expect(field('chat-top-p').value).toBe('1');
    expect(field('chat-max-tokens').value).toBe('256');
    expect(field('chat-settings-summary').textContent).toContain('temperature 0 · top_p 1 · max_tokens 256');
    expect(field('chat-settings-summary').textContent).toMatch(/greedy/);
    const input = field('chat-input');
    input.value = 'What is the capital of France?';
    input.dispatchEvent(new Event('input'));
    (el().querySelector('form') as HTMLFormElement).dispatchEvent(new Event('submit'));
    for (let i = 0; i < 50 && !el().querySelector('[data-testid=chat-stats]'); i++) {
      await tick();
      await fixture.whenStable();
    }
    expect(sent).toEqual([
      {
        model: 'SmolLM2-135M-Instruct',
        messages: [{ role: 'user', content: 'What is the capital of France?' }],
        stream: true,
        temperature: 0,
        top_p: 1,
        max_tokens: 256,
      },
    ]);
    expect(el().querySelector('[data-role=assistant]')!.textContent).toContain('Paris');
    expect(field('chat-stats').textContent).toContain('temperature 0');
  });

  it("edits are sent and marked; choosing a model with recommended settings applies them; reset goes back", async () => {
    const t = field('chat-temperature');
    t.value = '0.8';
    t.dispatchEvent(new Event('input'));
    await fixture.whenStable();
    expect((fixture.componentInstance.chatBody([]) as Record<string, unknown>)['temperature']).toBe(0.8);
    expect(field('chat-settings-summary').textContent).toMatch(/edited/);
    const reset = field('chat-settings-reset') as unknown as HTMLButtonElement;
    reset.click();
    await fixture.whenStable();
    expect((fixture.componentInstance.chatBody([]) as Record<string, unknown>)['temperature']).toBe(0);
    const select = el().querySelector('[data-testid=chat-model]') as HTMLSelectElement;
    select.value = 'tuned';
    select.dispatchEvent(new Event('change'));
    await fixture.whenStable();
    expect(fixture.componentInstance.chatBody([])).toMatchObject({ model: 'tuned', temperature: 0.3, top_p: 0.9, max_tokens: 256 });
    expect(field('chat-temperature').value).toBe('0.3');
    expect(field('chat-settings-summary').textContent).toMatch(/recommended/);
  });
});
