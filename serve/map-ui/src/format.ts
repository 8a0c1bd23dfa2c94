// Numbers as a person reads them: km/h, minutes, local clock times. Conversions happen only here.

export function clock(ms: number): string {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
}

export function minutes(seconds: number): string {
  const m = Math.round(seconds / 60);
  return m === 0 ? "on time" : m > 0 ? `${m} min late` : `${-m} min early`;
}

export function kmh(mps: number | undefined | null): string {
  return mps === undefined || mps === null ? "–" : `${Math.round(mps * 3.6)} km/h`;
}

export function age(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 120 ? `${s} s ago` : `${Math.round(s / 60)} min ago`;
}

/** ± half the p10–p90 spread, in minutes (GTFS-rt's ``uncertainty`` is the same half spread). */
export function spread(early_ms: number, late_ms: number): string {
  return `±${Math.max(0, Math.round((late_ms - early_ms) / 2 / 60_000))} min`;
}

/** Build a DOM element with text children only (never innerHTML: ids come from operators). */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: (string | Node)[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  node.append(...children);
  return node;
}
