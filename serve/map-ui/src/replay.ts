// History replay: a bus's stored track over a time range, played back with a slider and a speed,
// its stops and events drawn along it.

import type { Map as MapLibreMap } from "maplibre-gl";
import { ApiError, operatorPath, type Api } from "./api";
import { clock } from "./format";
import { EMPTY, setData } from "./layers";
import type { FleetEvent, TrackFeature } from "./types";

export class Replay {
  private readonly form = document.getElementById("replay-form") as HTMLFormElement;
  private readonly controls = document.getElementById("replay-controls") as HTMLElement;
  private readonly play = document.getElementById("replay-play") as HTMLButtonElement;
  private readonly speed = document.getElementById("replay-speed") as HTMLSelectElement;
  private readonly slider = document.getElementById("replay-slider") as HTMLInputElement;
  private readonly timeOut = document.getElementById("replay-time") as HTMLOutputElement;
  private readonly status = document.getElementById("replay-status") as HTMLElement;
  private times: number[] = [];
  private coords: [number, number][] = [];
  private playing = false;
  private last = 0;
  /** the replayed moment (epoch ms) and where the bus was then */
  timeMs = 0;
  position: [number, number] | null = null;

  constructor(
    private readonly api: Api,
    private readonly map: MapLibreMap,
    private readonly operator: () => string,
  ) {
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      void this.load();
    });
    this.play.addEventListener("click", () => this.toggle());
    this.slider.addEventListener("input", () => this.seek(Number(this.slider.value)));
  }

  /** Fill the form for a bus: the last hour. */
  prefill(bus: string): void {
    (document.getElementById("replay-bus") as HTMLInputElement).value = bus;
    const now = Date.now();
    (document.getElementById("replay-from") as HTMLInputElement).value = localInput(now - 3_600_000);
    (document.getElementById("replay-to") as HTMLInputElement).value = localInput(now);
  }

  get loadedPoints(): number {
    return this.times.length;
  }

  async load(): Promise<void> {
    const data = new FormData(this.form);
    const bus = String(data.get("bus"));
    const from = new Date(String(data.get("from"))).getTime();
    const to = new Date(String(data.get("to"))).getTime();
    this.stop();
    if (!(from < to)) {
      this.status.textContent = "The range must end after it starts.";
      return;
    }
    this.status.textContent = "Loading…";
    try {
      const op = this.operator();
      const [track, events] = await Promise.all([
        this.api.get<TrackFeature>(operatorPath(op, `buses/${encodeURIComponent(bus)}/track`), { from, to }),
        this.api.get<{ events: FleetEvent[] }>(operatorPath(op, "events"), { bus, from, to, limit: 500 }),
      ]);
      this.times = track.properties.times_ms;
      this.coords = track.geometry?.coordinates ?? [];
      if (this.coords.length < 2) {
        this.controls.hidden = true;
        this.status.textContent = `No track stored for ${bus} in that range.`;
        setData(this.map, "replay-line", EMPTY);
        return;
      }
      setData(this.map, "replay-line", { type: "FeatureCollection", features: [{ type: "Feature", geometry: track.geometry!, properties: {} }] });
      setData(this.map, "replay-events", {
        type: "FeatureCollection",
        features: events.events
          .filter((e) => e.lat !== undefined && e.lon !== undefined)
          .map((e) => ({ type: "Feature", geometry: { type: "Point", coordinates: [e.lon!, e.lat!] }, properties: { kind: e.kind, time_ms: e.time_ms } })),
      });
      this.slider.min = String(this.times[0]);
      this.slider.max = String(this.times[this.times.length - 1]);
      this.controls.hidden = false;
      this.status.textContent = `${plural(this.times.length, "fix", "fixes")}, ${plural(events.events.length, "event", "events")}.`;
      const lons = this.coords.map((c) => c[0]);
      const lats = this.coords.map((c) => c[1]);
      this.map.fitBounds([Math.min(...lons), Math.min(...lats), Math.max(...lons), Math.max(...lats)], { padding: 60, maxZoom: 14, duration: 0 });
      this.seek(this.times[0]);
    } catch (e) {
      this.status.textContent = e instanceof ApiError ? `${e.message} (${e.code})` : String(e);
    }
  }

  toggle(): void {
    if (this.playing) this.stop();
    else if (this.times.length) {
      if (this.timeMs >= this.times[this.times.length - 1]) this.seek(this.times[0]);
      this.playing = true;
      this.play.textContent = "Pause";
      this.play.setAttribute("aria-pressed", "true");
      this.last = performance.now();
      requestAnimationFrame((t) => this.frame(t));
    }
  }

  private stop(): void {
    this.playing = false;
    this.play.textContent = "Play";
    this.play.setAttribute("aria-pressed", "false");
  }

  private frame(t: number): void {
    if (!this.playing) return;
    const end = this.times[this.times.length - 1];
    this.seek(Math.min(end, this.timeMs + (t - this.last) * Number(this.speed.value)));
    this.last = t;
    if (this.timeMs >= end) this.stop();
    else requestAnimationFrame((next) => this.frame(next));
  }

  private seek(time_ms: number): void {
    this.timeMs = time_ms;
    this.slider.value = String(time_ms);
    this.timeOut.textContent = clock(time_ms);
    this.position = at(this.times, this.coords, time_ms);
    setData(this.map, "replay-point", { type: "FeatureCollection", features: [{ type: "Feature", geometry: { type: "Point", coordinates: this.position }, properties: {} }] });
  }
}

/** Where the track was at a moment: linear between the two fixes around it. */
function at(times: number[], coords: [number, number][], t: number): [number, number] {
  let hi = times.findIndex((x) => x >= t);
  if (hi <= 0) return coords[hi === 0 ? 0 : coords.length - 1];
  const lo = hi - 1;
  const share = (t - times[lo]) / (times[hi] - times[lo] || 1);
  return [coords[lo][0] + share * (coords[hi][0] - coords[lo][0]), coords[lo][1] + share * (coords[hi][1] - coords[lo][1])];
}

function localInput(ms: number): string {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60_000);
  return d.toISOString().slice(0, 19);
}

function plural(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}
