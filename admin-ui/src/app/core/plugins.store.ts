import { computed, inject } from '@angular/core';
import { patchState, signalStore, withComputed, withMethods, withState } from '@ngrx/signals';
import { Api, ApiError, wsUrl } from './api';
import { AuthStore } from './auth.store';
import { ConfirmRequest, ConfirmStore } from './confirm.store';
import { BkgEvent, HostSample, IsolationMode, LifecycleAction, PluginDetail, ProcessLimits, TelemetrySample, TelemetryTick } from './models';
import { ToastStore } from './toast.store';
import { LiveSocket, openLiveSocket } from './ws';

/** Samples kept per plugin for the card sparklines (one a second). */
export const SERIES_LENGTH = 60;
/** How often the plugin list is re-read (a new file in the plugins folder shows within a second). */
export const POLL_MS = 1000;

interface PluginsState {
  plugins: PluginDetail[];
  loaded: boolean;
  listError: string | null;
  series: Record<string, TelemetrySample[]>;
  host: HostSample | null;
  hostSeries: HostSample[];
  pending: Record<string, LifecycleAction>;
  /** Isolation switches sent and not answered yet, by plugin id. */
  isolationPending: Record<string, IsolationMode>;
  live: boolean;
  /**
   * When each plugin was last seen to start (ms since the epoch): from the event log's
   * `started`/`restarted` events when the page connects, then from the transitions to
   * `running` this page sees and the starts it makes. The card's uptime counts from the later
   * of this and the generation's `loaded_at_ms`, unless the host says `started_at_ms`.
   */
  startedAt: Record<string, number>;
}

/**
 * Merges a fresh plugin list into the current one, keeping the old object for every plugin
 * that did not change so that its card does not re-render. Returns `current` itself when
 * nothing changed.
 */
export function mergePlugins(current: PluginDetail[], incoming: PluginDetail[]): PluginDetail[] {
  const byId = new Map(current.map((p) => [p.id, p]));
  let changed = current.length !== incoming.length;
  const sorted = [...incoming].sort((a, b) => a.id.localeCompare(b.id));
  const out = sorted.map((p, i) => {
    const old = byId.get(p.id);
    if (old && JSON.stringify(old) === JSON.stringify(p)) {
      if (current[i] !== old) changed = true;
      return old;
    }
    changed = true;
    return p;
  });
  return changed ? out : current;
}

/** Event kinds that mean "the plugin started running" without a new generation. */
export const START_KINDS = new Set(['started', 'restarted']);

/** The newest start per plugin in an event list (any order). */
export function startsFromEvents(events: BkgEvent[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const e of events) {
    if (!e.plugin || !START_KINDS.has(e.kind) || typeof e.at_ms !== 'number') continue;
    if (!(out[e.plugin] >= e.at_ms)) out[e.plugin] = e.at_ms;
  }
  return out;
}

/** The plugins that went from not running to running between two lists. */
export function newlyRunning(before: PluginDetail[], after: PluginDetail[]): string[] {
  const was = new Map(before.map((p) => [p.id, p.state]));
  return after.filter((p) => p.state === 'running' && was.has(p.id) && was.get(p.id) !== 'running').map((p) => p.id);
}

/** Takes the later of each pair of start times. */
export function laterStarts(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out = { ...a };
  for (const [id, at] of Object.entries(b)) if (!(out[id] >= at)) out[id] = at;
  return out;
}

/** Appends a tick's samples to each plugin's series (bounded), dropping ids that left the tick. */
export function appendSeries(
  series: Record<string, TelemetrySample[]>,
  plugins: Record<string, TelemetrySample | null | undefined>,
  max = SERIES_LENGTH,
): Record<string, TelemetrySample[]> {
  const out: Record<string, TelemetrySample[]> = {};
  for (const [id, sample] of Object.entries(plugins)) {
    if (!sample) continue;
    const prev = series[id] ?? [];
    if (prev.length && prev[prev.length - 1].at_ms === sample.at_ms) {
      out[id] = prev;
      continue;
    }
    const next = prev.length >= max ? prev.slice(prev.length - max + 1) : prev.slice();
    next.push(sample);
    out[id] = next;
  }
  return out;
}

/** The id of the host's default auth provider (`--auth-provider`). */
export const DEFAULT_AUTH_PROVIDER = 'apikeys';

/**
 * Whether a plugin is the host's auth provider: as the API says (`auth_provider`), else by the
 * default id. A host configured with another provider still refuses an unconfirmed stop (409
 * `confirm_required`), which `act` turns into the same question.
 */
export function isAuthProvider(p: Pick<PluginDetail, 'id' | 'auth_provider'> | undefined): boolean {
  if (!p) return false;
  return p.auth_provider ?? p.id === DEFAULT_AUTH_PROVIDER;
}

/** The question asked before stopping the auth provider (the host's own words when it asked). */
export function stopAuthProviderQuestion(id: string, hostMessage?: string): ConfirmRequest {
  return {
    title: `Stop ${id}, the auth provider?`,
    message:
      hostMessage ||
      `While ${id} is stopped the host accepts no API key except the bootstrap admin key (BKG_ADMIN_KEY). ` +
        `Unless you are logged in with that key, this session ends and only the bootstrap key can start ${id} again.`,
    confirmLabel: 'Stop anyway',
    cancelLabel: 'Cancel',
  };
}

/** The host refused a stop until it is confirmed (`?confirm=true`). */
export function isConfirmRequired(e: unknown): e is ApiError {
  return e instanceof ApiError && e.status === 409 && e.code === 'confirm_required';
}

export const PluginsStore = signalStore(
  { providedIn: 'root' },
  withState<PluginsState>({
    plugins: [],
    loaded: false,
    listError: null,
    series: {},
    host: null,
    hostSeries: [],
    pending: {},
    isolationPending: {},
    live: false,
    startedAt: {},
  }),
  withComputed((s) => ({
    ids: computed(() => s.plugins().map((p) => p.id)),
    counts: computed(() => {
      const c: Record<string, number> = {};
      for (const p of s.plugins()) c[p.state] = (c[p.state] ?? 0) + 1;
      return c;
    }),
  })),
  withMethods((store, api = inject(Api), auth = inject(AuthStore), toasts = inject(ToastStore), confirm = inject(ConfirmStore)) => {
    let inFlight: Promise<void> | null = null;
    let poll: ReturnType<typeof setInterval> | null = null;
    let socket: LiveSocket | null = null;

    const refresh = (): Promise<void> => {
      if (inFlight) return inFlight;
      inFlight = (async () => {
        try {
          const res = await api.get<{ plugins: PluginDetail[] }>('/api/core/plugins');
          const merged = mergePlugins(store.plugins(), res.plugins);
          if (merged !== store.plugins() || !store.loaded() || store.listError()) {
            const started = newlyRunning(store.plugins(), merged);
            const now = Date.now();
            patchState(store, {
              plugins: merged,
              loaded: true,
              listError: null,
              ...(started.length ? { startedAt: laterStarts(store.startedAt(), Object.fromEntries(started.map((id) => [id, now]))) } : {}),
            });
          }
        } catch (e) {
          patchState(store, { listError: (e as Error).message, loaded: true });
        } finally {
          inFlight = null;
        }
      })();
      return inFlight;
    };

    const applyTick = (tick: TelemetryTick) => {
      if (!tick || typeof tick !== 'object' || !tick.plugins) return;
      const hostSeries = tick.host ? [...store.hostSeries().slice(-(SERIES_LENGTH - 1)), tick.host] : store.hostSeries();
      patchState(store, {
        series: appendSeries(store.series(), tick.plugins),
        host: tick.host ?? store.host(),
        hostSeries,
      });
      // A plugin the list does not know yet: read the list now rather than at the next poll.
      const known = new Set(store.plugins().map((p) => p.id));
      for (const id of Object.keys(tick.plugins)) {
        if (!known.has(id)) {
          void refresh();
          break;
        }
      }
    };

    return {
      refresh,
      applyTick,
      /** Starts polling the list and following the telemetry WebSocket. */
      connect() {
        if (poll) return;
        void refresh();
        // Seed the host figures and the first sample before the socket's first tick.
        api.get<TelemetryTick>('/api/core/telemetry').then(applyTick, () => undefined);
        // When each plugin last started, for uptimes that restart on stop/start.
        api.get<{ events: BkgEvent[] }>('/api/core/events?limit=1000').then(
          (r) => patchState(store, { startedAt: laterStarts(store.startedAt(), startsFromEvents(r.events ?? [])) }),
          () => undefined,
        );
        poll = setInterval(() => void refresh(), POLL_MS);
        socket = openLiveSocket(
          () => wsUrl(api.base, '/ws/core/telemetry', auth.key()),
          (m) => applyTick(m as TelemetryTick),
          (state) => patchState(store, { live: state === 'open' }),
        );
      },
      disconnect() {
        if (poll) clearInterval(poll);
        poll = null;
        socket?.close();
        socket = null;
      },
      /**
       * Switches where a plugin's code runs (`POST /api/core/plugins/{id}/isolation`). The host
       * loads a running plugin again in the new mode (a swap that fails no request) before it
       * answers. Resolves to whether the switch was done; a failure is a toast with the host's
       * message. With `limits` it also sets the limits of the plugin's child in process mode
       * (they replace the stored ones; null fields are the host's defaults).
       */
      async setIsolation(id: string, mode: IsolationMode, limits?: ProcessLimits): Promise<boolean> {
        if (store.isolationPending()[id]) return false;
        patchState(store, { isolationPending: { ...store.isolationPending(), [id]: mode } });
        try {
          await api.post(`/api/core/plugins/${encodeURIComponent(id)}/isolation`, limits === undefined ? { mode } : { mode, limits });
          toasts.show('success', limits !== undefined ? `${id}: limits saved` : `${id}: ${mode === 'process' ? 'runs in its own process now' : 'runs in the host now'}`);
          return true;
        } catch (e) {
          toasts.show('error', `${id}: switching to ${mode} failed: ${(e as Error).message}`);
          return false;
        } finally {
          const { [id]: _, ...rest } = store.isolationPending();
          patchState(store, { isolationPending: rest });
          await refresh();
        }
      },
      /**
       * Runs a lifecycle action. Stopping the auth provider asks first (and then sends
       * `?confirm=true`); any stop the host refuses with 409 `confirm_required` asks with the
       * host's message and, confirmed, is sent again with `?confirm=true`. Resolves to whether
       * the action was done.
       */
      async act(id: string, action: LifecycleAction): Promise<boolean> {
        if (store.pending()[id]) return false;
        const path = (confirmed: boolean) => `/api/core/plugins/${encodeURIComponent(id)}/${action}${confirmed ? '?confirm=true' : ''}`;
        let confirmed = false;
        if (action === 'stop' && isAuthProvider(store.plugins().find((p) => p.id === id))) {
          if (!(await confirm.ask(stopAuthProviderQuestion(id)))) {
            toasts.show('info', `${id}: stop cancelled`);
            return false;
          }
          confirmed = true;
          if (store.pending()[id]) return false;
        }
        patchState(store, { pending: { ...store.pending(), [id]: action } });
        try {
          try {
            await api.post(path(confirmed));
          } catch (e) {
            if (confirmed || !isConfirmRequired(e)) throw e;
            if (!(await confirm.ask(stopAuthProviderQuestion(id, e.message)))) {
              toasts.show('info', `${id}: ${action} cancelled`);
              return false;
            }
            await api.post(path(true));
          }
          if (action !== 'stop') patchState(store, { startedAt: laterStarts(store.startedAt(), { [id]: Date.now() }) });
          toasts.show('success', `${id}: ${action} done`);
          return true;
        } catch (e) {
          toasts.show('error', `${id}: ${action} failed: ${(e as Error).message}`);
          return false;
        } finally {
          const { [id]: _, ...rest } = store.pending();
          patchState(store, { pending: rest });
          await refresh();
        }
      },
    };
  }),
);
