import { JsonPipe } from '@angular/common';
import { ChangeDetectionStrategy, Component, effect, inject, input, signal } from '@angular/core';
import { Api } from '../core/api';
import { HistoryEntry, PluginDetail } from '../core/models';
import { formatBytes, formatTime } from '../shared/format';
import { StatusChip } from '../shared/status-chip';
import { PluginIsolation } from './isolation-card';

@Component({
  selector: 'app-plugin-overview',
  imports: [StatusChip, JsonPipe, PluginIsolation],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    @if (plugin(); as p) {
      <div class="grid gap-4 lg:grid-cols-2">
        <section class="card">
          <h2 class="mb-2 font-semibold">Manifest</h2>
          <dl class="grid grid-cols-[8rem_1fr] gap-x-3 gap-y-1 text-sm">
            <dt class="muted">id</dt><dd class="font-mono">{{ p.id }}</dd>
            <dt class="muted">name</dt><dd>{{ p.name }}</dd>
            <dt class="muted">version</dt><dd class="font-mono">{{ p.version }}</dd>
            <dt class="muted">description</dt><dd>{{ p.description || '–' }}</dd>
            <dt class="muted">generation</dt><dd>{{ p.generation }}</dd>
            <dt class="muted">file</dt><dd class="break-all font-mono text-xs">{{ p.file || '–' }}</dd>
            <dt class="muted">size</dt><dd>{{ bytes(p.size_bytes) }}</dd>
            <dt class="muted">sha256</dt><dd class="break-all font-mono text-xs">{{ p.sha256 || '–' }}</dd>
            <dt class="muted">loaded</dt><dd>{{ time(p.loaded_at_ms) }}</dd>
            <dt class="muted">route prefix</dt><dd class="font-mono">{{ p.route_prefix || '–' }}</dd>
            @if (p.calls; as c) {
              <dt class="muted">calls</dt><dd>{{ c.total }} total · {{ c.errors }} errors · {{ c.rejected }} rejected · {{ c.in_flight }} in flight</dd>
            }
          </dl>
          @if (p.files && p.files.length > 1) {
            <h3 class="mt-4 mb-1 text-sm font-semibold">Files ({{ p.files.length }})</h3>
            <p class="muted mb-1 text-xs">
              Several files in the plugins folder provide <code>{{ p.id }}</code>: the newest serves, the others stand by.
              Deleting the serving file swaps to the next one.
            </p>
            <div class="overflow-x-auto">
              <table class="w-full text-left text-sm" data-testid="plugin-files">
                <thead class="muted text-xs"><tr><th class="py-1 pr-3">file</th><th class="pr-3">sha256</th><th class="pr-3">modified</th><th>role</th></tr></thead>
                <tbody>
                  @for (f of p.files; track f.file) {
                    <tr class="border-t border-slate-200 dark:border-slate-700" [attr.data-file]="baseName(f.file)" [attr.data-serving]="f.serving">
                      <td class="py-1 pr-3 font-mono text-xs break-all" [title]="f.file">{{ baseName(f.file) }}</td>
                      <td class="pr-3 font-mono text-xs" [title]="f.sha256">{{ f.sha256.slice(0, 12) }}</td>
                      <td class="pr-3 whitespace-nowrap">{{ time(f.modified_ms) }}</td>
                      <td class="whitespace-nowrap" data-testid="file-role">
                        @if (f.serving) {
                          <span class="rounded bg-emerald-100 px-1.5 text-xs text-emerald-800 dark:bg-emerald-900 dark:text-emerald-200">serving</span>
                        } @else {
                          <span class="rounded bg-slate-100 px-1.5 text-xs dark:bg-slate-800">standing by</span>
                        }
                      </td>
                    </tr>
                  }
                </tbody>
              </table>
            </div>
          }
          @if (p.last_error; as e) {
            <div class="mt-3 rounded bg-rose-50 p-2 text-sm text-rose-800 dark:bg-rose-950 dark:text-rose-200" role="alert">
              <strong>Last error</strong> ({{ time(e.at_ms) }}): {{ e.message }}
            </div>
          }
          <h3 class="mt-4 mb-1 text-sm font-semibold">Status report</h3>
          <pre class="max-h-48 overflow-auto rounded bg-slate-100 p-2 text-xs dark:bg-slate-800" data-testid="status-report">{{ status() | json }}</pre>
        </section>

        <app-plugin-isolation [plugin]="p" />

        <section class="card">
          <h2 class="mb-2 font-semibold">Capabilities ({{ p.capabilities.length }})</h2>
          <ul class="divide-y divide-slate-200 text-sm dark:divide-slate-700">
            @for (c of p.capabilities; track c.name) {
              <li class="py-2">
                <div class="flex flex-wrap items-center gap-2">
                  <code class="font-semibold">{{ c.name }}</code>
                  <span class="rounded bg-slate-100 px-1.5 text-xs dark:bg-slate-800">{{ c.scope }}</span>
                  @if (c.streaming) { <span class="rounded bg-sky-100 px-1.5 text-xs text-sky-800 dark:bg-sky-900 dark:text-sky-200">streaming</span> }
                  <code class="muted text-xs">POST /api/plugins/{{ p.id }}/{{ c.name }}</code>
                </div>
                <p class="muted">{{ c.description }}</p>
                @if (c.input_schema || c.output_schema) {
                  <details class="mt-1"><summary class="cursor-pointer text-xs">schemas</summary>
                    <pre class="overflow-auto rounded bg-slate-100 p-2 text-xs dark:bg-slate-800">input: {{ c.input_schema | json }}
output: {{ c.output_schema | json }}</pre>
                  </details>
                }
              </li>
            } @empty { <li class="muted py-2">none</li> }
          </ul>
          @if (p.routes.length) {
            <h3 class="mt-3 mb-1 text-sm font-semibold">Admin routes</h3>
            <ul class="font-mono text-xs">@for (r of p.routes; track r.method + r.path) { <li>{{ r.method }} {{ r.path }}</li> }</ul>
          }
        </section>

        <section class="card lg:col-span-2">
          <h2 class="mb-2 font-semibold">Load history</h2>
          <div class="overflow-x-auto">
            <table class="w-full text-left text-sm" data-testid="history">
              <thead class="muted text-xs"><tr><th class="py-1 pr-3">gen</th><th class="pr-3">version</th><th class="pr-3">loaded</th><th class="pr-3">retired</th><th class="pr-3">reason</th><th class="pr-3">residency</th><th class="pr-3">abandoned</th><th class="pr-3" title="Calls still running when a drain deadline passed get their cancel flag raised: cancelled ones stopped after that, ignored ones ran on in plugin code (then the generation stays pinned)">calls at deadline</th><th class="pr-3" title="Heap the library still held after its plugin object was dropped: memory it leaked, which stays in the process">heap left</th><th>sha256</th></tr></thead>
              <tbody>
                @for (h of historyDesc(p); track h.generation) {
                  <tr class="border-t border-slate-200 dark:border-slate-700">
                    <td class="py-1 pr-3">{{ h.generation }}</td>
                    <td class="pr-3 font-mono">{{ h.version }}</td>
                    <td class="pr-3 whitespace-nowrap">{{ time(h.loaded_at_ms) }}</td>
                    <td class="pr-3 whitespace-nowrap">{{ h.retired_at_ms ? time(h.retired_at_ms) : 'current' }}</td>
                    <td class="pr-3">{{ h.reason || '–' }}</td>
                    <td class="pr-3">@if (h.residency) { <app-status-chip [state]="h.residency" /> } @else { – }</td>
                    <td class="pr-3">{{ h.abandoned_calls }}</td>
                    <td class="pr-3 whitespace-nowrap" data-testid="deadline-calls" [title]="deadlineHint(h)">{{ deadlineCalls(h) }}</td>
                    <td class="pr-3 tabular-nums whitespace-nowrap" data-testid="heap-left" [title]="heapLeftHint(h)">{{ h.heap_left_bytes == null ? '–' : bytes(h.heap_left_bytes) }}</td>
                    <td class="font-mono text-xs" [title]="h.sha256">{{ h.sha256.slice(0, 12) }}</td>
                  </tr>
                }
              </tbody>
            </table>
          </div>
        </section>
      </div>
    } @else {
      <p class="muted">Plugin {{ pluginId() }} is not loaded.</p>
    }
  `,
})
export class PluginOverview {
  readonly plugin = input<PluginDetail | undefined>(undefined);
  readonly pluginId = input.required<string>();
  private api = inject(Api);
  protected readonly status = signal<unknown>(null);
  protected bytes = formatBytes;
  protected time = formatTime;

  constructor() {
    effect(() => {
      const id = this.pluginId();
      const state = this.plugin()?.state;
      if (state !== 'running') {
        this.status.set(state ? `(${state})` : null);
        return;
      }
      this.api
        .get<{ status: unknown }>(`/api/core/plugins/${encodeURIComponent(id)}/status`)
        .then((r) => this.status.set(r.status))
        .catch((e: Error) => this.status.set(`unavailable: ${e.message}`));
    });
  }

  /** What the heap-left cell means, on hover. */
  protected heapLeftHint(h: HistoryEntry): string {
    if (h.heap_left_bytes != null) {
      return `${h.heap_left_bytes.toLocaleString('en')} bytes of heap this library still held after its plugin object was dropped: leaked (or kept in statics), it stays in the process`;
    }
    if (!h.retired_at_ms) return 'still loaded: see the heap figure on its card and the telemetry tab';
    return h.residency === 'pinned' ? 'not measured: the library was left loaded because a thread was stuck in it' : 'not counted by this library';
  }

  /** The calls whose cancel flag was raised at a drain deadline: "2 cancelled, 1 ignored", or – when none. */
  protected deadlineCalls(h: HistoryEntry): string {
    const parts: string[] = [];
    if (h.cancelled_calls) parts.push(`${h.cancelled_calls} cancelled`);
    if (h.ignored_cancel_calls) parts.push(`${h.ignored_cancel_calls} ignored`);
    return parts.length ? parts.join(', ') : '–';
  }

  /** What the calls-at-deadline cell means, on hover. */
  protected deadlineHint(h: HistoryEntry): string {
    const cancelled = h.cancelled_calls ?? 0;
    const ignored = h.ignored_cancel_calls ?? 0;
    if (!cancelled && !ignored) return 'no call had its cancel flag raised at a drain deadline';
    const calls = (n: number) => `${n} call${n === 1 ? '' : 's'}`;
    let text = `calls still running when a drain deadline passed get their cancel flag raised: ${calls(cancelled)} stopped after that (cancelled), ${calls(ignored)} ignored it`;
    if (ignored) text += ' and ran on in plugin code, so the library stays loaded (pinned)';
    return text;
  }

  /** The file name without its folder (the full path is the cell's hover text). */
  protected baseName(path: string): string {
    return path.split(/[\\/]/).pop() || path;
  }

  historyDesc(p: PluginDetail) {
    return [...p.history].sort((a, b) => b.generation - a.generation);
  }
}
