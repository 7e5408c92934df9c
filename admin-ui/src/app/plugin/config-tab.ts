import { JsonPipe } from '@angular/common';
import { ChangeDetectionStrategy, Component, computed, effect, inject, input, signal, untracked } from '@angular/core';
import { Api, ApiError } from '../core/api';
import { ConfigDoc } from '../core/models';
import { ToastStore } from '../core/toast.store';
import { formatTime } from '../shared/format';
import { FormField, assignErrors, buildConfig, fieldsFromSchema, shownValue } from './schema';

@Component({
  selector: 'app-plugin-config',
  imports: [JsonPipe],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    @if (loadError(); as err) {
      <p class="rounded-md bg-rose-50 p-3 text-sm text-rose-800 dark:bg-rose-950 dark:text-rose-200" role="alert">{{ err }}</p>
    } @else if (doc(); as d) {
      @if (!d.schema) {
        <p class="card muted">This plugin has no config schema: it takes no configuration.</p>
      } @else {
        <div class="grid gap-4 lg:grid-cols-[2fr_1fr]">
          <form class="card space-y-4" (submit)="$event.preventDefault(); save()" novalidate data-testid="config-form">
            <div class="flex flex-wrap items-center gap-2">
              <h2 class="font-semibold">Configuration</h2>
              <span class="muted text-xs">version {{ d.version }} · source {{ d.source }}</span>
              <label class="ml-auto flex items-center gap-2 text-sm"><input type="checkbox" [checked]="rawMode()" (change)="toggleRaw()" /> edit as JSON</label>
            </div>
            @if (rawMode()) {
              <label class="label" for="cfg-raw">Config (JSON)</label>
              <textarea id="cfg-raw" class="input min-h-64 font-mono text-xs" [value]="rawText()" (input)="rawText.set($any($event.target).value)"></textarea>
            } @else {
              @for (f of fields(); track f.path) {
                <div [attr.data-field]="f.path">
                  @if (f.kind === 'boolean') {
                    <label class="flex items-center gap-2 text-sm">
                      <input type="checkbox" [id]="inputId(f)" [checked]="form()[f.path] === true" (change)="set(f, $any($event.target).checked)" />
                      {{ f.label }}
                    </label>
                  } @else {
                    <label class="label" [for]="inputId(f)">{{ f.label }} @if (f.required) { <span class="text-rose-600" aria-hidden="true">*</span> }</label>
                    @switch (f.kind) {
                      @case ('enum') {
                        <select class="input mt-1" [id]="inputId(f)" [value]="form()[f.path]" (change)="set(f, $any($event.target).value)" [class.input-invalid]="!!errors()[f.path]">
                          @if (!f.required) { <option value="" [selected]="form()[f.path] === ''">(default)</option> }
                          @for (o of f.options; track $index) { <option [value]="json(o)" [selected]="json(o) === form()[f.path]">{{ o }}</option> }
                        </select>
                      }
                      @case ('string-list') {
                        <textarea class="input mt-1 min-h-20 font-mono text-xs" [id]="inputId(f)" [value]="form()[f.path]" (input)="set(f, $any($event.target).value)" [class.input-invalid]="!!errors()[f.path]" placeholder="one per line"></textarea>
                      }
                      @case ('json') {
                        <textarea class="input mt-1 min-h-24 font-mono text-xs" [id]="inputId(f)" [value]="form()[f.path]" (input)="set(f, $any($event.target).value)" [class.input-invalid]="!!errors()[f.path]"></textarea>
                      }
                      @default {
                        <input class="input mt-1" [id]="inputId(f)" [type]="f.kind === 'string' ? (f.secret ? 'password' : 'text') : 'number'"
                          [attr.min]="f.min" [attr.max]="f.max" [attr.maxlength]="null" [value]="form()[f.path]"
                          (input)="set(f, $any($event.target).value)" [class.input-invalid]="!!errors()[f.path]"
                          [attr.aria-invalid]="!!errors()[f.path]" [attr.aria-describedby]="inputId(f) + '-err'" />
                      }
                    }
                  }
                  <p class="muted mt-1 text-xs">{{ f.description }} {{ hint(f) }}</p>
                  @if (errors()[f.path]; as errs) {
                    <p class="mt-1 text-sm text-rose-700 dark:text-rose-300" [id]="inputId(f) + '-err'" role="alert" data-testid="field-error">{{ errs.join('; ') }}</p>
                  }
                </div>
              }
            }
            @if (general().length) {
              <ul class="rounded bg-rose-50 p-2 text-sm text-rose-800 dark:bg-rose-950 dark:text-rose-200" role="alert" data-testid="form-error">
                @for (g of general(); track $index) { <li>{{ g }}</li> }
              </ul>
            }
            <div class="flex gap-2">
              <button type="submit" class="btn btn-primary" [disabled]="saving()">{{ saving() ? 'Saving…' : 'Save' }}</button>
              <button type="button" class="btn" (click)="reset()" [disabled]="saving()">Reset</button>
            </div>
          </form>
          <aside class="card space-y-3 text-sm">
            <h2 class="font-semibold">Current (v{{ d.version }})</h2>
            <pre class="overflow-auto rounded bg-slate-100 p-2 text-xs dark:bg-slate-800" data-testid="current-config">{{ d.config | json }}</pre>
            <h2 class="font-semibold">History</h2>
            <ul class="space-y-1">
              @for (h of d.history; track $index) {
                <li><details><summary class="cursor-pointer">v{{ h.version }} {{ h.at_ms ? time(h.at_ms) : '' }} {{ h.actor || '' }}</summary>
                  <pre class="overflow-auto rounded bg-slate-100 p-2 text-xs dark:bg-slate-800">{{ h.config | json }}</pre></details></li>
              } @empty { <li class="muted">no changes yet</li> }
            </ul>
            <details><summary class="cursor-pointer">Schema</summary><pre class="overflow-auto rounded bg-slate-100 p-2 text-xs dark:bg-slate-800">{{ d.schema | json }}</pre></details>
          </aside>
        </div>
      }
    } @else {
      <p class="muted">Loading…</p>
    }
  `,
})
export class PluginConfig {
  readonly pluginId = input.required<string>();
  private api = inject(Api);
  private toasts = inject(ToastStore);

  protected readonly doc = signal<ConfigDoc | null>(null);
  protected readonly loadError = signal<string | null>(null);
  protected readonly form = signal<Record<string, string | boolean>>({});
  protected readonly errors = signal<Record<string, string[]>>({});
  protected readonly general = signal<string[]>([]);
  protected readonly saving = signal(false);
  protected readonly rawMode = signal(false);
  protected readonly rawText = signal('');
  protected readonly fields = computed<FormField[]>(() => fieldsFromSchema(this.doc()?.schema));
  protected time = formatTime;
  protected json = (v: unknown) => JSON.stringify(v);

  constructor() {
    effect(() => {
      const id = this.pluginId();
      untracked(() => void this.load(id));
    });
  }

  async load(id = this.pluginId()) {
    try {
      const d = await this.api.get<ConfigDoc>(`/api/core/plugins/${encodeURIComponent(id)}/config`);
      this.doc.set(d);
      this.loadError.set(null);
      this.reset();
      if (d.schema && this.fields().length === 0) this.rawMode.set(true);
    } catch (e) {
      this.loadError.set(`Could not read the config: ${(e as Error).message}`);
    }
  }

  reset() {
    const d = this.doc();
    const form: Record<string, string | boolean> = {};
    for (const f of this.fields()) form[f.path] = shownValue(f, d?.config);
    this.form.set(form);
    this.rawText.set(JSON.stringify(d?.config ?? {}, null, 2));
    this.errors.set({});
    this.general.set([]);
  }

  toggleRaw() {
    if (!this.rawMode()) {
      this.rawText.set(JSON.stringify(buildConfig(this.fields(), this.form(), this.doc()?.config).value, null, 2));
    } else {
      try {
        const v = JSON.parse(this.rawText());
        const form: Record<string, string | boolean> = {};
        for (const f of this.fields()) form[f.path] = shownValue(f, v);
        this.form.set(form);
      } catch {
        /* keep the form as it was */
      }
    }
    this.rawMode.update((r) => !r);
  }

  set(f: FormField, v: string | boolean) {
    this.form.update((form) => ({ ...form, [f.path]: v }));
    if (this.errors()[f.path]) {
      const { [f.path]: _, ...rest } = this.errors();
      this.errors.set(rest);
    }
  }

  inputId(f: FormField) {
    return 'cfg' + f.path.replace(/[^A-Za-z0-9_-]/g, '_');
  }

  hint(f: FormField) {
    const parts: string[] = [];
    if (f.min != null) parts.push(`min ${f.min}`);
    if (f.max != null) parts.push(`max ${f.max}`);
    if (f.maxLength != null) parts.push(`up to ${f.maxLength} characters`);
    if (f.minLength != null) parts.push(`at least ${f.minLength} characters`);
    if (f.default !== undefined && !f.secret) parts.push(`default ${JSON.stringify(f.default)}`);
    return parts.join(', ');
  }

  async save() {
    let value: unknown;
    if (this.rawMode()) {
      try {
        value = JSON.parse(this.rawText());
      } catch (e) {
        this.general.set([`Not valid JSON: ${(e as Error).message}`]);
        return;
      }
    } else {
      const built = buildConfig(this.fields(), this.form(), this.doc()?.config);
      if (Object.keys(built.errors).length) {
        this.errors.set(Object.fromEntries(Object.entries(built.errors).map(([k, v]) => [k, [v]])));
        return;
      }
      value = built.value;
    }
    this.saving.set(true);
    this.errors.set({});
    this.general.set([]);
    try {
      await this.api.post(`/api/core/plugins/${encodeURIComponent(this.pluginId())}/config`, value);
      this.toasts.show('success', 'Config saved and applied');
      await this.load();
    } catch (e) {
      const err = e as ApiError;
      if (err.status === 422 && err.fieldErrors?.length) {
        const { byField, general } = assignErrors(this.fields(), err.fieldErrors);
        this.errors.set(this.rawMode() ? {} : byField);
        this.general.set(this.rawMode() ? err.fieldErrors.map((x) => `${x.path || '/'}: ${x.message}`) : general);
      } else {
        this.general.set([err.message]);
        this.toasts.show('error', `Saving the config failed: ${err.message}`);
      }
    } finally {
      this.saving.set(false);
    }
  }
}
