import { ChangeDetectionStrategy, Component, DestroyRef, computed, effect, inject, input, signal, untracked } from '@angular/core';
import { Api, wsUrl } from '../core/api';
import { AuthStore } from '../core/auth.store';
import { TelemetrySample } from '../core/models';
import { LiveSocket, openLiveSocket } from '../core/ws';
import { formatBytes } from '../shared/format';
import { LineChart } from '../shared/line-chart';

/** Five minutes at one sample a second. */
const KEEP = 300;

interface TelemetryDoc {
  current: TelemetrySample | null;
  history: TelemetrySample[];
  totals: { calls: number; errors: number; rejected: number; timeouts: number; cpu_seconds: number; in_flight: number };
}

/** PluginTelemetry: charts over the last five minutes, kept live by the plugin's telemetry WebSocket. */
@Component({
  selector: 'app-plugin-telemetry',
  imports: [LineChart],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    @if (error(); as e) { <p class="mb-3 rounded bg-rose-50 p-3 text-sm text-rose-800 dark:bg-rose-950 dark:text-rose-200" role="alert">{{ e }}</p> }
    @if (totals(); as t) {
      <dl class="mb-4 grid grid-cols-2 gap-3 sm:grid-cols-3 lg:grid-cols-6" data-testid="telemetry-totals">
        @for (kv of totalList(); track kv[0]) {
          <div class="card !p-3"><dt class="muted text-xs">{{ kv[0] }}</dt><dd class="text-lg font-semibold tabular-nums">{{ kv[1] }}</dd></div>
        }
      </dl>
    }
    <div class="grid gap-4 lg:grid-cols-2">
      <app-line-chart title="Calls per second" [series]="calls()" [span]="span()" />
      <app-line-chart title="Error rate" unit="%" [series]="errors()" [span]="span()" />
      <app-line-chart title="CPU" unit="%" [series]="cpu()" [span]="span()" />
      <app-line-chart title="Heap held by the library" [format]="bytes" [series]="heap()" [span]="span()" data-testid="heap-chart"
        hint="Heap held by the plugin's library: its Rust allocations, as the allocator export_plugin! installs counts them" />
      <app-line-chart title="Latency" unit=" ms" [series]="latency()" [span]="span()" />
    </div>
  `,
})
export class PluginTelemetry {
  readonly pluginId = input.required<string>();
  private api = inject(Api);
  private auth = inject(AuthStore);
  protected readonly bytes = formatBytes;
  protected readonly samples = signal<TelemetrySample[]>([]);
  protected readonly totals = signal<TelemetryDoc['totals'] | null>(null);
  protected readonly error = signal<string | null>(null);
  private socket: LiveSocket | null = null;

  protected readonly span = computed(() => {
    const s = this.samples();
    return s.length > 1 ? `last ${Math.round((s[s.length - 1].at_ms - s[0].at_ms) / 1000)} s` : '';
  });
  protected readonly calls = computed(() => [
    { name: 'calls/s', color: '#10b981', values: this.samples().map((s) => s.calls_per_s) },
    { name: 'errors/s', color: '#f43f5e', values: this.samples().map((s) => s.errors_per_s) },
  ]);
  protected readonly errors = computed(() => [{ name: 'error rate', color: '#f43f5e', values: this.samples().map((s) => s.error_rate * 100) }]);
  protected readonly latency = computed(() => [
    { name: 'p50', color: '#0ea5e9', values: this.samples().map((s) => s.p50_ms) },
    { name: 'p95', color: '#8b5cf6', values: this.samples().map((s) => s.p95_ms) },
    { name: 'p99', color: '#f59e0b', values: this.samples().map((s) => s.p99_ms) },
  ]);
  protected readonly cpu = computed(() => [{ name: 'CPU', color: '#0ea5e9', values: this.samples().map((s) => s.cpu_percent) }]);
  protected readonly heap = computed(() => [
    { name: 'heap', color: '#8b5cf6', values: this.samples().map((s) => s.heap_bytes ?? null) },
  ]);
  protected readonly totalList = computed(() => {
    const t = this.totals();
    if (!t) return [];
    return [
      ['calls', t.calls],
      ['errors', t.errors],
      ['rejected', t.rejected],
      ['timeouts', t.timeouts],
      ['in flight', t.in_flight],
      ['CPU seconds', +t.cpu_seconds.toFixed(3)],
    ] as [string, number][];
  });

  constructor() {
    effect(() => {
      const id = this.pluginId();
      untracked(() => void this.open(id));
    });
    inject(DestroyRef).onDestroy(() => this.socket?.close());
  }

  private async open(id: string) {
    this.socket?.close();
    try {
      const doc = await this.api.get<TelemetryDoc>(`/api/core/plugins/${encodeURIComponent(id)}/telemetry`);
      this.samples.set(doc.history.slice(-KEEP));
      this.totals.set(doc.totals);
      this.error.set(null);
    } catch (e) {
      this.error.set(`Telemetry unavailable: ${(e as Error).message}`);
    }
    this.socket = openLiveSocket(
      () => wsUrl(this.api.base, `/ws/core/plugins/${encodeURIComponent(id)}/telemetry`, this.auth.key()),
      (m) => {
        const sample = (m as { sample?: TelemetrySample | null }).sample;
        if (!sample) return;
        this.samples.update((s) => {
          if (s.length && s[s.length - 1].at_ms >= sample.at_ms) return s;
          return [...s.slice(-(KEEP - 1)), sample];
        });
        this.totals.update((t) => (t ? { ...t, calls: sample.calls_total, errors: sample.errors_total, in_flight: sample.in_flight } : t));
      },
    );
  }
}
