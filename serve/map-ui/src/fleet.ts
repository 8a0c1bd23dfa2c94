// The buses the page holds: newest position of each, where it is drawn now, and its status.
//
// A new position does not jump the dot: the bus glides from where it is
// drawn to the new fix over the time updates take to come (at most GLIDE_MAX_MS),
// so the map moves smoothly at the display's frame rate.

import { statusOf, COLORS, type Status } from "./status";
import type { FleetEvent, LivePosition, TripEtas } from "./types";

const GLIDE_MAX_MS = 5_000;
const GLIDE_MIN_MS = 300;
/** a step faster than this (m/s) is a jump (a fix after an outage, a reassigned id): drawn at once */
const JUMP_MPS = 70;

export interface Bus {
  position: LivePosition;
  from: [number, number];
  to: [number, number];
  glideStart: number;
  glideMs: number;
  deviating: boolean;
  offline: boolean;
  etas?: TripEtas;
}

export interface BusView {
  bus: string;
  status: Status;
  color: string;
  lon: number;
  lat: number;
  trip_id: string | null;
  route_id: string | null;
  delay_s: number | null;
  time_ms: number;
  moving: boolean;
}

export class Fleet {
  readonly buses = new Map<string, Bus>();
  private readonly routes = new Map<string, string>();
  /** how many positions came in (the debug hook shows it) */
  updates = 0;

  constructor(private readonly now: () => number = () => performance.now()) {}

  /** A snapshot replaces what was held, but keeps the deviations learnt from events. */
  snapshot(positions: LivePosition[], etas: TripEtas[]): void {
    const kept = new Map(this.buses);
    this.buses.clear();
    for (const p of positions) {
      const old = kept.get(p.bus);
      this.buses.set(p.bus, this.fresh(p, old));
    }
    for (const e of etas) this.etas(e);
  }

  position(p: LivePosition): void {
    const held = this.buses.get(p.bus);
    if (held && (held.position.time_ms > p.time_ms || (held.position.time_ms === p.time_ms && held.position.seq >= p.seq)))
      return;
    this.updates += 1;
    if (!held) {
      this.buses.set(p.bus, this.fresh(p, undefined));
      return;
    }
    const t = this.now();
    const dt_ms = p.time_ms - held.position.time_ms;
    const jump = metres(held.to, [p.lon, p.lat]) > (JUMP_MPS * Math.max(dt_ms, 1_000)) / 1000;
    held.from = jump ? [p.lon, p.lat] : this.drawnAt(held, t);
    held.to = [p.lon, p.lat];
    held.glideStart = t;
    held.glideMs = jump ? 0 : Math.min(GLIDE_MAX_MS, Math.max(GLIDE_MIN_MS, dt_ms));
    held.position = p;
    held.offline = false;
  }

  gone(bus: string): void {
    this.buses.delete(bus);
  }

  etas(e: TripEtas): void {
    this.routes.set(e.trip_id, e.route_id);
    const bus = this.buses.get(e.bus);
    if (bus) bus.etas = e;
  }

  /** Deviations and outages come as events; a position after an outage brings the bus back. */
  event(e: FleetEvent): void {
    if (e.trip_id && e.route_id) this.routes.set(e.trip_id, e.route_id);
    const bus = this.buses.get(e.bus);
    if (!bus) return;
    if (e.kind === "deviation_started") bus.deviating = true;
    else if (e.kind === "deviation_ended" || e.kind === "trip_completed" || e.kind === "trip_unassigned")
      bus.deviating = false;
    else if (e.kind === "bus_offline") bus.offline = true;
    else if (e.kind === "bus_online") bus.offline = false;
  }

  /** The past events (oldest first) that still say something about buses now: deviations, outages. */
  replayEvents(events: FleetEvent[]): void {
    for (const e of events) this.event(e);
  }

  routeOf(trip_id: string | undefined): string | null {
    return (trip_id && this.routes.get(trip_id)) || null;
  }

  learnRoutes(trips: Record<string, string>): void {
    for (const [trip, route] of Object.entries(trips)) this.routes.set(trip, route);
  }

  view(bus: Bus, wall_ms: number, t: number = this.now()): BusView {
    const [lon, lat] = this.drawnAt(bus, t);
    const status = statusOf(bus.position, bus.deviating, bus.offline, wall_ms);
    const trip = bus.position.calculated?.trip_id ?? bus.position.trip_id ?? null;
    return {
      bus: bus.position.bus,
      status,
      color: COLORS[status],
      lon,
      lat,
      trip_id: trip,
      route_id: this.routeOf(trip ?? undefined),
      delay_s: bus.position.calculated?.delay_s ?? null,
      time_ms: bus.position.time_ms,
      moving: t < bus.glideStart + bus.glideMs,
    };
  }

  /** Whether any bus is still gliding (the page redraws only then). */
  gliding(t: number = this.now()): boolean {
    for (const bus of this.buses.values()) if (t < bus.glideStart + bus.glideMs) return true;
    return false;
  }

  private fresh(p: LivePosition, old: Bus | undefined): Bus {
    return {
      position: p,
      from: [p.lon, p.lat],
      to: [p.lon, p.lat],
      glideStart: 0,
      glideMs: 0,
      deviating: old?.deviating ?? false,
      offline: false,
      etas: old?.etas,
    };
  }

  private drawnAt(bus: Bus, t: number): [number, number] {
    if (bus.glideMs <= 0) return bus.to;
    const share = Math.min(1, Math.max(0, (t - bus.glideStart) / bus.glideMs));
    return [bus.from[0] + share * (bus.to[0] - bus.from[0]), bus.from[1] + share * (bus.to[1] - bus.from[1])];
  }
}

/** Equirectangular distance, metres: enough to tell a drive from a jump. */
function metres(a: [number, number], b: [number, number]): number {
  const k = Math.cos(((a[1] + b[1]) / 2) * (Math.PI / 180));
  return Math.hypot((b[0] - a[0]) * k, b[1] - a[1]) * 111_195;
}
