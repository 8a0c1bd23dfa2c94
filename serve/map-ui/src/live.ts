// The /v1/live websocket: token in the URL, one subscription at a time, reconnect with backoff.

import type { LiveMessage } from "./types";

export interface Subscription {
  operator: string;
  bbox?: [number, number, number, number];
}

/** Close codes after which reconnecting cannot help (fleet_serve.fanout). */
const FINAL = new Set([3500, 3503, 3005]);

export class LiveClient {
  private socket: WebSocket | null = null;
  private wanted: Subscription | null = null;
  private backoff_ms = 500;
  private stopped = false;

  constructor(
    private readonly token: string,
    private readonly onMessage: (m: LiveMessage) => void,
    private readonly onState: (state: string, closeReason?: string, code?: number) => void,
  ) {}

  start(): void {
    this.stopped = false;
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${scheme}//${window.location.host}/v1/live?token=${encodeURIComponent(this.token)}`;
    const socket = new WebSocket(url);
    this.socket = socket;
    this.onState("connecting");
    socket.onopen = () => {
      this.backoff_ms = 500;
      this.onState("live");
      if (this.wanted) this.send(this.wanted);
    };
    socket.onmessage = (ev: MessageEvent<string>) => {
      const data = JSON.parse(ev.data) as LiveMessage | LiveMessage[];
      for (const m of Array.isArray(data) ? data : [data]) this.onMessage(m);
    };
    socket.onclose = (ev: CloseEvent) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.stopped) return;
      if (FINAL.has(ev.code)) {
        this.onState("refused", ev.reason, ev.code);
        return;
      }
      this.onState("reconnecting");
      window.setTimeout(() => this.start(), this.backoff_ms);
      this.backoff_ms = Math.min(this.backoff_ms * 2, 15_000);
    };
  }

  subscribe(s: Subscription): void {
    const same = JSON.stringify(s) === JSON.stringify(this.wanted);
    this.wanted = s;
    if (!same && this.socket?.readyState === WebSocket.OPEN) this.send(s);
  }

  stop(): void {
    this.stopped = true;
    this.socket?.close(1000);
    this.socket = null;
  }

  private send(s: Subscription): void {
    this.socket?.send(JSON.stringify({ type: "subscribe", ...s }));
  }
}
