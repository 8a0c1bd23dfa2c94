// The live map's entry: login, the map and its layers, the live websocket, filters and the URL.
//
// `window.fleetMap` is a small read-only hook for people debugging the page and for the browser
// test: a bus's drawn state (status, color, position), the replay's moment.

import * as maplibregl from "maplibre-gl";
import { Api, ApiError, forgetToken, keepToken, operatorPath, readClaims, takeToken } from "./api";
import { EventsFeed } from "./feed";
import { Fleet, type BusView } from "./fleet";
import { addOverlay, addWorld, baseStyle, setData, type MapConfig } from "./layers";
import { LiveClient } from "./live";
import { Panel } from "./panel";
import { Replay } from "./replay";
import { COLORS, LABELS, inGroup, type Status } from "./status";
import type { FeatureCollection, Feature, Point } from "geojson";
import type { FleetEvent, LiveMessage } from "./types";
import { el } from "./format";
import { readView, writeView, type View } from "./view";

const ALGERIA: [number, number, number, number] = [-1.8, 34.6, 8.7, 37.2];
const REDRAW_MS = 33;
const EVENTS_BACK_MS = 3_600_000;
const EVENT_KINDS = [
  "deviation_started", "deviation_ended", "geofence_entered", "geofence_exited", "geofence_dwell", "overspeed",
  "stop_arrived", "stop_departed", "stop_skipped", "delay_changed", "bus_offline", "bus_online",
  "trip_assigned", "trip_unassigned", "trip_started", "trip_completed",
];

const script = document.getElementById("fleet-map-script") as HTMLScriptElement;
const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

interface Hook {
  ready: boolean;
  updates: () => number;
  buses: () => string[];
  busState: (bus: string) => BusView | null;
  selected: () => string | null;
  replay: () => { timeMs: number; position: [number, number] | null; points: number } | null;
  map: maplibregl.Map | null;
}
const hook: Hook = { ready: false, updates: () => 0, buses: () => [], busState: () => null, selected: () => null, replay: () => null, map: null };
(window as unknown as { fleetMap: Hook }).fleetMap = hook;

function login(message: string): void {
  const dialog = $<HTMLDialogElement>("login");
  $("login-message").textContent = message;
  $<HTMLFormElement>("login-form").onsubmit = () => {
    const token = $<HTMLInputElement>("login-token").value.trim();
    keepToken(token);
    window.location.reload();
  };
  if (!dialog.open) dialog.showModal();
}

function refusal(code: string, message: string): string {
  if (code === "token_expired") return "Your token has expired. Ask for a new manager token (fleet tokens issue --role manager) and enter it here.";
  if (code === "token_revoked") return "This token has been revoked. Enter another manager token.";
  return `The server refused this token: ${message} (${code}).`;
}

async function start(): Promise<void> {
  const config = (await (await fetch("/map/config.json")).json()) as MapConfig;
  const token = takeToken();
  if (!token) return login("Enter a manager token to open the map.");
  let claims;
  try {
    claims = readClaims(token);
  } catch (e) {
    forgetToken();
    return login((e as ApiError).message);
  }
  if (claims.exp * 1000 <= Date.now()) {
    forgetToken();
    return login(refusal("token_expired", ""));
  }
  if (claims.role !== "manager") {
    forgetToken();
    return login(`This is a ${claims.role} token: the map needs a manager token.`);
  }
  let live: LiveClient | null = null;
  const refuse = (code: string, message: string) => {
    live?.stop();
    forgetToken();
    login(refusal(code, message));
  };
  const api = new Api(token, (e) => refuse(e.code, e.message));
  $("logout").addEventListener("click", () => refuse("logged_out", "logged out"));

  const view: View = readView();
  const operator = view.operator && claims.operators.includes(view.operator) ? view.operator : claims.operators[0];
  view.operator = operator;
  const opSelect = $<HTMLSelectElement>("f-operator");
  for (const op of claims.operators) opSelect.append(el("option", { value: op }, op));
  opSelect.value = operator;
  opSelect.addEventListener("change", () => {
    writeView({ ...view, operator: opSelect.value, route: "", bus: null });
    window.location.reload();
  });
  const routeSelect = $<HTMLSelectElement>("f-route");
  const statusSelect = $<HTMLSelectElement>("f-status");
  statusSelect.value = view.status;

  maplibregl.setWorkerUrl(script.dataset.worker!);
  const map = new maplibregl.Map({
    container: "map",
    style: await baseStyle(config),
    bounds: view.bbox ?? ALGERIA,
    attributionControl: { compact: true },
    keyboard: true,
  });
  hook.map = map;
  map.addControl(new maplibregl.NavigationControl(), "top-left");
  map.addControl(new maplibregl.ScaleControl({ unit: "metric" }));

  const fleet = new Fleet();
  const stopNames = new Map<string, string>();
  let dirty = true;
  let lastDraw = 0;
  const panel = new Panel(api, map, stopNames, () => {
    view.bus = null;
    writeView(view);
    dirty = true;
  });
  const replay = new Replay(api, map, () => operator);
  const feed = new EventsFeed(EVENT_KINDS, (e: FleetEvent) => select(e.bus, true));

  const select = (bus: string, fly: boolean) => {
    view.bus = bus;
    writeView(view);
    dirty = true;
    replay.prefill(bus);
    const held = fleet.buses.get(bus);
    if (fly && held) map.easeTo({ center: [held.position.lon, held.position.lat], zoom: Math.max(map.getZoom(), 11) });
    void panel.showBus(operator, bus, () => (held ? fleet.view(held, Date.now()).status : null));
  };

  // keyboard access to any bus: type its id (the list offers those held), Enter
  const ids = $<HTMLDataListElement>("bus-ids");
  window.setInterval(() => ids.replaceChildren(...[...fleet.buses.keys()].sort().map((b) => el("option", { value: b }))), 3_000);
  $<HTMLFormElement>("find").addEventListener("submit", (e) => {
    e.preventDefault();
    const bus = $<HTMLInputElement>("find-bus").value.trim();
    if (fleet.buses.has(bus)) select(bus, true);
    else $("connection").textContent = `no live bus ${bus} in view`;
  });
  $("legend-list").replaceChildren(
    ...(Object.keys(COLORS) as Status[]).map((s) => el("li", {}, el("span", { class: "swatch", style: `background:${COLORS[s]}` }), ` ${LABELS[s]}`)),
  );

  hook.updates = () => fleet.updates;
  hook.buses = () => [...fleet.buses.keys()];
  hook.busState = (bus) => {
    const held = fleet.buses.get(bus);
    return held ? fleet.view(held, Date.now()) : null;
  };
  hook.selected = () => view.bus;
  hook.replay = () => ({ timeMs: replay.timeMs, position: replay.position, points: replay.loadedPoints });

  const draw = () => {
    const wall = Date.now();
    const features: Feature<Point>[] = [];
    for (const bus of fleet.buses.values()) {
      const v = fleet.view(bus, wall);
      if (view.route && v.route_id !== view.route) continue;
      if (!inGroup(v.status, view.status)) continue;
      features.push({ type: "Feature", geometry: { type: "Point", coordinates: [v.lon, v.lat] }, properties: { bus: v.bus, color: v.color, status: v.status, selected: v.bus === view.bus } });
    }
    setData(map, "buses", { type: "FeatureCollection", features } as FeatureCollection);
  };
  // A new setData waits for the worker to have applied the previous one: on a slow machine the
  // buses then move in fewer, larger steps instead of never being drawn at all.
  let applying = false;
  map.on("sourcedata", (e) => {
    if (e.sourceId === "buses" && e.isSourceLoaded) applying = false;
  });
  const tick = (t: number) => {
    if (!applying && (dirty || fleet.gliding()) && t - lastDraw >= REDRAW_MS) {
      applying = true;
      dirty = false;
      lastDraw = t;
      draw();
    }
    requestAnimationFrame(tick);
  };
  window.setInterval(() => (dirty = true), 5_000); // silent buses turn offline without a message

  const onMessage = (m: LiveMessage) => {
    if (m.type === "snapshot") fleet.snapshot(m.positions, m.etas);
    else if (m.type === "position") fleet.position(m.position);
    else if (m.type === "gone") fleet.gone(m.bus);
    else if (m.type === "etas") fleet.etas(m.etas);
    else if (m.type === "event" || m.type === "offline") {
      fleet.event(m.event);
      feed.add(m.event);
    } else if (m.type === "error") console.warn(`live: ${m.code}: ${m.message}`);
    dirty = true;
  };
  const connection = $("connection");
  live = new LiveClient(token, onMessage, (state, reason, code) => {
    connection.textContent = state;
    if (state === "refused") {
      const [refusedCode, ...rest] = (reason ?? "").split(": ");
      refuse(code === 3005 ? "token_expired" : refusedCode || "token_refused", rest.join(": "));
    }
  });
  const subscribe = () => {
    const b = map.getBounds();
    const bbox: [number, number, number, number] = [
      Math.max(-180, b.getWest()), Math.max(-90, b.getSouth()), Math.min(180, b.getEast()), Math.min(90, b.getNorth()),
    ];
    view.bbox = bbox;
    writeView(view);
    live!.subscribe({ operator, bbox });
  };

  map.on("load", () => {
    onLoad().catch((e: unknown) => {
      connection.textContent = `the map's layers could not load: ${e instanceof ApiError ? `${e.message} (${e.code})` : String(e)}`;
    });
  });
  const onLoad = async () => {
    addOverlay(map);
    if (config.tiles.kind === "none") await addWorld(map, script.dataset.world!);
    subscribe();
    live!.start();
    map.on("moveend", subscribe);
    requestAnimationFrame(tick);
    routeSelect.addEventListener("change", () => ((view.route = routeSelect.value), writeView(view), (dirty = true)));
    statusSelect.addEventListener("change", () => ((view.status = statusSelect.value), writeView(view), (dirty = true)));
    const [shapes, stops, fences, recent] = await Promise.all([
      api.get<FeatureCollection>(operatorPath(operator, "map/routes")),
      api.get<FeatureCollection>(operatorPath(operator, "map/stops")),
      api.get<FeatureCollection>(operatorPath(operator, "map/geofences")),
      api.get<{ events: FleetEvent[] }>(operatorPath(operator, "events"), { from: Date.now() - EVENTS_BACK_MS, limit: 200 }),
    ]);
    setData(map, "routes", shapes);
    setData(map, "stops", stops);
    setData(map, "fences", fences);
    const routes = new Map<string, string>();
    const trips: Record<string, string> = {};
    for (const f of shapes.features) {
      const p = f.properties as { route_id: string; name: string; trip_ids: string[] };
      routes.set(p.route_id, p.name);
      for (const trip of p.trip_ids) trips[trip] = p.route_id;
    }
    fleet.learnRoutes(trips);
    for (const [id, name] of [...routes].sort((a, b) => a[1].localeCompare(b[1]))) routeSelect.append(el("option", { value: id }, name));
    routeSelect.value = view.route;
    for (const f of stops.features) stopNames.set(String(f.properties!.stop_id), String(f.properties!.name));
    feed.load(recent.events);
    fleet.replayEvents([...recent.events].reverse());
    dirty = true;
    if (view.bus) select(view.bus, false);
    hook.ready = true;
  };

  map.on("click", "buses", (e) => {
    const bus = e.features?.[0]?.properties?.bus as string | undefined;
    if (bus) select(bus, false);
  });
  map.on("click", "clusters", async (e) => {
    const f = e.features?.[0];
    if (!f) return;
    const zoom = await (map.getSource("buses") as maplibregl.GeoJSONSource).getClusterExpansionZoom(f.properties!.cluster_id as number);
    map.easeTo({ center: (f.geometry as Point).coordinates as [number, number], zoom });
  });
  map.on("click", "stops", (e) => {
    const stop = e.features?.[0]?.properties?.stop_id as string | undefined;
    if (stop && !map.queryRenderedFeatures(e.point, { layers: ["buses"] }).length) void panel.showStop(operator, stop);
  });
  for (const layer of ["buses", "clusters", "stops"]) {
    map.on("mouseenter", layer, () => (map.getCanvas().style.cursor = "pointer"));
    map.on("mouseleave", layer, () => (map.getCanvas().style.cursor = ""));
  }
}

start().catch((e: unknown) => {
  console.error(e);
  $("connection").textContent = `the map could not start: ${e instanceof Error ? e.message : String(e)}`;
});
