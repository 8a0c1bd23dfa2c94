// A bus's status and its color: what the manager reads at a glance.

import type { LivePosition } from "./types";

export type Status = "on_time" | "early" | "late_5" | "late_15" | "late_30" | "deviating" | "offline" | "no_trip";

/** A bus silent this long is drawn offline even before ingest's ``bus_offline`` event (65 s, as GTFS-rt). */
export const STALE_MS = 65_000;

export const COLORS: Record<Status, string> = {
  on_time: "#1a9850",
  early: "#4575b4",
  late_5: "#fdae61",
  late_15: "#f46d43",
  late_30: "#a50026",
  deviating: "#9c27b0",
  offline: "#8c8c8c",
  no_trip: "#3d6f8f",
};

export const LABELS: Record<Status, string> = {
  on_time: "on time",
  early: "early",
  late_5: "late 5–15 min",
  late_15: "late 15–30 min",
  late_30: "late 30 min or more",
  deviating: "deviating",
  offline: "offline",
  no_trip: "no trip",
};

/** The delay bands of ``delay_changed`` (fleet_schemas.events.DelayBand), in seconds. */
export function delayStatus(delay_s: number): Status {
  if (delay_s < -120) return "early";
  if (delay_s < 300) return "on_time";
  if (delay_s < 900) return "late_5";
  if (delay_s < 1800) return "late_15";
  return "late_30";
}

export function statusOf(p: LivePosition, deviating: boolean, offline: boolean, now_ms: number): Status {
  if (offline || now_ms - p.time_ms > STALE_MS) return "offline";
  if (deviating) return "deviating";
  const c = p.calculated;
  if (!c || c.state === "unassigned" || c.delay_s === undefined) return "no_trip";
  return delayStatus(c.delay_s);
}

/** The filter's groups: "late" is any late band. */
export function inGroup(status: Status, group: string): boolean {
  if (!group) return true;
  if (group === "late") return status.startsWith("late_");
  if (group === "on_time") return status === "on_time" || status === "early";
  return status === group;
}
