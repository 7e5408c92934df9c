/**
 * A WebSocket that reconnects with backoff and hands each parsed JSON message to `onMessage`.
 * `close()` stops it for good.
 */
export interface LiveSocket {
  close(): void;
}

export function openLiveSocket(
  url: () => string,
  onMessage: (data: unknown) => void,
  onState?: (state: 'open' | 'closed') => void,
  ctor: typeof WebSocket = WebSocket,
): LiveSocket {
  let socket: WebSocket | null = null;
  let stopped = false;
  let delay = 500;
  let timer: ReturnType<typeof setTimeout> | null = null;

  const connect = () => {
    if (stopped) return;
    socket = new ctor(url());
    socket.onopen = () => {
      delay = 500;
      onState?.('open');
    };
    socket.onmessage = (ev) => {
      try {
        onMessage(JSON.parse(ev.data as string));
      } catch {
        /* not JSON: ignore */
      }
    };
    socket.onclose = () => {
      onState?.('closed');
      if (stopped) return;
      timer = setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10_000);
    };
  };
  connect();
  return {
    close() {
      stopped = true;
      if (timer) clearTimeout(timer);
      socket?.close();
    },
  };
}
