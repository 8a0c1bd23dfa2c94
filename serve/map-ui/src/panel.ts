// The side panel: a bus (trip, next stops with ETAs and their spread, delay, speed, fix age,
// recent events, trail of the last minutes) or a stop (its arrivals board).

import type { Map as MapLibreMap } from "maplibre-gl";
import { ApiError, operatorPath, type Api } from "./api";
import { age, clock, el, kmh, minutes, spread } from "./format";
import { EMPTY, setData } from "./layers";
import { COLORS, LABELS, type Status } from "./status";
import type { FleetEvent, LivePosition, StopArrival, TrackFeature, TripEtas } from "./types";

export const TRAIL_MS = 10 * 60_000;
const NEXT_STOPS = 8;

export class Panel {
  private readonly section = document.getElementById("panel") as HTMLElement;
  private readonly body = document.getElementById("panel-body") as HTMLElement;
  private shown: { kind: "bus" | "stop"; id: string } | null = null;
  private generation = 0;

  constructor(
    private readonly api: Api,
    private readonly map: MapLibreMap,
    private readonly stopNames: Map<string, string>,
    private readonly onClose: () => void,
  ) {
    document.getElementById("panel-close")!.addEventListener("click", () => this.close());
    this.section.addEventListener("keydown", (e) => {
      if (e.key === "Escape") this.close();
    });
  }

  get busShown(): string | null {
    return this.shown?.kind === "bus" ? this.shown.id : null;
  }

  close(): void {
    this.shown = null;
    this.generation += 1;
    this.section.hidden = true;
    setData(this.map, "trail", EMPTY);
    this.onClose();
  }

  async showBus(operator: string, bus: string, status: () => Status | null, focus = true): Promise<void> {
    const generation = ++this.generation;
    this.shown = { kind: "bus", id: bus };
    this.open(focus);
    const now = Date.now();
    try {
      const position = await this.api.get<LivePosition>(operatorPath(operator, `buses/${encodeURIComponent(bus)}`));
      const trip = position.calculated?.trip_id;
      const [etas, events, track] = await Promise.all([
        trip ? this.api.get<{ instances: TripEtas[] }>(operatorPath(operator, `trips/${encodeURIComponent(trip)}/etas`)) : null,
        this.api.get<{ events: FleetEvent[] }>(operatorPath(operator, "events"), { bus, limit: 10 }),
        this.api.get<TrackFeature>(operatorPath(operator, `buses/${encodeURIComponent(bus)}/track`), { from: now - TRAIL_MS, to: now + 1 }),
      ]);
      if (generation !== this.generation) return;
      const instance = etas?.instances.find((i) => i.bus === bus) ?? null;
      this.renderBus(position, instance, events.events, status());
      setData(this.map, "trail", track.geometry ? { type: "FeatureCollection", features: [{ type: "Feature", geometry: track.geometry, properties: {} }] } : EMPTY);
    } catch (e) {
      if (generation === this.generation) this.failed(e);
    }
  }

  async showStop(operator: string, stop: string): Promise<void> {
    const generation = ++this.generation;
    this.shown = { kind: "stop", id: stop };
    this.open(true);
    try {
      const board = await this.api.get<{ arrivals: StopArrival[] }>(operatorPath(operator, `stops/${encodeURIComponent(stop)}/arrivals`), { limit: 15 });
      if (generation !== this.generation) return;
      const rows = board.arrivals.map((a) =>
        el("tr", { "data-bus": a.bus, "data-arrival-ms": String(a.arrival_ms) }, el("td", {}, a.route_id), el("td", {}, a.bus), el("td", {}, clock(a.arrival_ms)), el("td", {}, spread(a.arrival_early_ms, a.arrival_late_ms)), el("td", {}, minutes((a.arrival_ms - a.scheduled_arrival_ms) / 1000))),
      );
      this.body.replaceChildren(
        el("h2", {}, `Stop ${this.stopNames.get(stop) ?? stop}`),
        rows.length
          ? el("table", { id: "board", "aria-label": "Arrivals" }, el("thead", {}, el("tr", {}, ...["route", "bus", "ETA", "spread", "delay"].map((h) => el("th", { scope: "col" }, h)))), el("tbody", {}, ...rows))
          : el("p", {}, "No bus is coming to this stop now."),
      );
    } catch (e) {
      if (generation === this.generation) this.failed(e);
    }
  }

  private open(focus: boolean): void {
    this.section.hidden = false;
    this.body.replaceChildren(el("p", {}, "Loading…"));
    if (focus) this.section.focus();
  }

  private failed(e: unknown): void {
    const message = e instanceof ApiError ? `${e.message} (${e.code})` : String(e);
    this.body.replaceChildren(el("p", { role: "alert" }, message));
  }

  private renderBus(p: LivePosition, etas: TripEtas | null, events: FleetEvent[], status: Status | null): void {
    const c = p.calculated;
    const facts: [string, string][] = [
      ["status", status ? LABELS[status] : "–"],
      ["trip", c?.trip_id ? `${c.trip_id} (${c.state})` : "none"],
      ["delay", c?.delay_s !== undefined ? minutes(c.delay_s) : "–"],
      ["speed", kmh(p.speed_mps)],
      ["last fix", `${clock(p.time_ms)}, ${age(Date.now() - p.time_ms)}`],
    ];
    const swatch = el("span", { class: "swatch", style: `background:${status ? COLORS[status] : "#999"}` });
    const stops = (etas?.stops ?? []).slice(0, NEXT_STOPS).map((s) =>
      el("tr", { "data-stop-id": s.stop_id, "data-arrival-ms": String(s.arrival_ms) }, el("td", {}, this.stopNames.get(s.stop_id) ?? s.stop_id), el("td", {}, clock(s.arrival_ms)), el("td", {}, spread(s.arrival_early_ms, s.arrival_late_ms))),
    );
    this.body.replaceChildren(
      el("h2", {}, swatch, ` Bus ${p.bus}`),
      el("table", { id: "bus-facts", "aria-label": "Bus" }, el("tbody", {}, ...facts.map(([k, v]) => el("tr", {}, el("th", { scope: "row" }, k), el("td", { "data-fact": k }, v))))),
      el("h3", {}, "Next stops"),
      stops.length
        ? el("table", { id: "next-stops", "aria-label": "Next stops" }, el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "stop"), el("th", { scope: "col" }, "ETA"), el("th", { scope: "col" }, "p10–p90"))), el("tbody", {}, ...stops))
        : el("p", {}, "No predictions for this bus."),
      el("h3", {}, "Recent events"),
      events.length ? el("ol", { id: "bus-events" }, ...events.map((e) => el("li", {}, `${clock(e.time_ms)} ${e.kind.replace(/_/g, " ")}`))) : el("p", {}, "None."),
    );
  }
}
