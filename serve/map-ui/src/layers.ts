// The map's style: a basemap (FLEET_MAP_TILES, or the bundled Natural Earth countries when none),
// then the feed's routes and stops, the geofences by kind, the trail, the replay and the buses.
//
// Buses are one clustered GeoJSON source drawn by circle layers on the GPU, never DOM markers.
// No symbol layer draws text: text needs glyphs from a server, and the page must work offline.

import * as maplibregl from "maplibre-gl";
import type { Map as MapLibreMap, StyleSpecification } from "maplibre-gl";
import { PMTiles, Protocol, TileType } from "pmtiles";
import { feature, mesh } from "topojson-client";
import type { Topology, GeometryCollection } from "topojson-specification";
import type { FeatureCollection } from "geojson";

export interface MapConfig {
  tiles: { kind: "none" | "template" | "style" | "pmtiles"; url: string | null; attribution: string | null };
}

export const EMPTY: FeatureCollection = { type: "FeatureCollection", features: [] };

export const FENCE_COLORS: Record<string, string> = {
  station: "#2166ac",
  depot: "#5e3c99",
  restricted: "#d7191c",
  speed_zone: "#fdae61",
  border: "#4d4d4d",
};

const WATER = "#b9d3e6";
const LAND = "#f2efe9";

/** The style before the overlay: only a background when the basemap comes from the config or the atlas. */
export async function baseStyle(config: MapConfig): Promise<string | StyleSpecification> {
  const t = config.tiles;
  if (t.kind === "style" && t.url) return t.url;
  const style: StyleSpecification = {
    version: 8,
    sources: {},
    layers: [{ id: "background", type: "background", paint: { "background-color": t.kind === "none" ? WATER : LAND } }],
  };
  if (t.kind === "template" && t.url) {
    style.sources.basemap = { type: "raster", tiles: [t.url], tileSize: 256, attribution: t.attribution ?? undefined };
    style.layers.push({ id: "basemap", type: "raster", source: "basemap" });
  } else if (t.kind === "pmtiles" && t.url) {
    await addPmtiles(style, new URL(t.url, window.location.origin).href, t.attribution);
  }
  return style;
}

async function addPmtiles(style: StyleSpecification, url: string, attribution: string | null): Promise<void> {
  const protocol = new Protocol();
  maplibregl.addProtocol("pmtiles", protocol.tile);
  const archive = new PMTiles(url);
  protocol.add(archive);
  const header = await archive.getHeader();
  const source = `pmtiles://${url}`;
  if (header.tileType !== TileType.Mvt) {
    style.sources.basemap = { type: "raster", url: source, tileSize: 256, attribution: attribution ?? undefined };
    style.layers.push({ id: "basemap", type: "raster", source: "basemap" });
    return;
  }
  // A vector archive of unknown schema: every layer it lists, drawn plainly.
  const metadata = (await archive.getMetadata()) as { vector_layers?: { id: string }[] };
  style.sources.basemap = { type: "vector", url: source, attribution: attribution ?? undefined };
  for (const layer of metadata.vector_layers ?? []) {
    const common = { source: "basemap", "source-layer": layer.id };
    style.layers.push({ id: `bm-${layer.id}-fill`, type: "fill", ...common, filter: ["==", ["geometry-type"], "Polygon"], paint: { "fill-color": "#e4e0d8", "fill-opacity": 0.6 } });
    style.layers.push({ id: `bm-${layer.id}-line`, type: "line", ...common, paint: { "line-color": "#b4aea4", "line-width": 0.7 } });
  }
}

/** Countries and coasts from world-atlas (Natural Earth 1:50m), for a map with no tile server. */
export async function addWorld(map: MapLibreMap, worldUrl: string): Promise<void> {
  const topology = (await (await fetch(worldUrl)).json()) as Topology<{ countries: GeometryCollection; land: GeometryCollection }>;
  const countries = feature(topology, topology.objects.countries);
  const borders = mesh(topology, topology.objects.countries, (a, b) => a !== b);
  map.addSource("world", { type: "geojson", data: countries });
  map.addSource("borders", { type: "geojson", data: borders });
  map.addLayer({ id: "world-land", type: "fill", source: "world", paint: { "fill-color": LAND } }, "background-end");
  map.addLayer({ id: "world-coast", type: "line", source: "world", paint: { "line-color": "#7a9bb5", "line-width": 0.8 } }, "background-end");
  map.addLayer({ id: "world-borders", type: "line", source: "borders", paint: { "line-color": "#9a8f80", "line-width": 1, "line-dasharray": [3, 2] } }, "background-end");
}

/** The sources and layers the page writes to, above the basemap. */
export function addOverlay(map: MapLibreMap): void {
  // an empty marker layer: the atlas goes below it, whatever loads first
  map.addSource("none", { type: "geojson", data: EMPTY });
  map.addLayer({ id: "background-end", type: "circle", source: "none" });
  for (const id of ["routes", "stops", "fences", "trail", "replay-line", "replay-events", "replay-point"])
    map.addSource(id, { type: "geojson", data: EMPTY });
  map.addSource("buses", { type: "geojson", data: EMPTY, cluster: true, clusterMaxZoom: 8, clusterRadius: 36 });

  const kindColor: maplibregl.ExpressionSpecification = ["match", ["get", "kind"], ...Object.entries(FENCE_COLORS).flat(), "#666"] as unknown as maplibregl.ExpressionSpecification;
  map.addLayer({ id: "fences-fill", type: "fill", source: "fences", paint: { "fill-color": kindColor, "fill-opacity": 0.18 } });
  map.addLayer({ id: "fences-line", type: "line", source: "fences", paint: { "line-color": kindColor, "line-width": 1.5, "line-dasharray": [2, 1] } });
  map.addLayer({ id: "routes", type: "line", source: "routes", layout: { "line-cap": "round", "line-join": "round" }, paint: { "line-color": ["coalesce", ["get", "color"], "#3366cc"], "line-width": ["interpolate", ["linear"], ["zoom"], 5, 1.5, 12, 4], "line-opacity": 0.75 } });
  map.addLayer({ id: "stops", type: "circle", source: "stops", minzoom: 7, paint: { "circle-radius": ["interpolate", ["linear"], ["zoom"], 7, 2.5, 14, 6], "circle-color": "#fff", "circle-stroke-color": "#333", "circle-stroke-width": 1.2 } });
  map.addLayer({ id: "trail", type: "line", source: "trail", paint: { "line-color": "#222", "line-width": 3, "line-opacity": 0.55, "line-dasharray": [1, 1] } });
  map.addLayer({ id: "replay-line", type: "line", source: "replay-line", paint: { "line-color": "#0b5394", "line-width": 3 } });
  map.addLayer({ id: "replay-events", type: "circle", source: "replay-events", paint: { "circle-radius": 5, "circle-color": "#ffd966", "circle-stroke-color": "#7f6000", "circle-stroke-width": 1.5 } });
  map.addLayer({ id: "replay-point", type: "circle", source: "replay-point", paint: { "circle-radius": 8, "circle-color": "#0b5394", "circle-stroke-color": "#fff", "circle-stroke-width": 2 } });
  map.addLayer({ id: "clusters", type: "circle", source: "buses", filter: ["has", "point_count"], paint: { "circle-color": "#17324d", "circle-opacity": 0.8, "circle-radius": ["step", ["get", "point_count"], 12, 10, 16, 50, 22, 200, 28], "circle-stroke-color": "#fff", "circle-stroke-width": 2 } });
  map.addLayer({ id: "buses", type: "circle", source: "buses", filter: ["!", ["has", "point_count"]], paint: { "circle-color": ["get", "color"], "circle-radius": ["interpolate", ["linear"], ["zoom"], 5, 5, 12, 8], "circle-stroke-color": ["case", ["get", "selected"], "#000", "#fff"], "circle-stroke-width": ["case", ["get", "selected"], 3, 1.5] } });
}

export function setData(map: MapLibreMap, source: string, data: FeatureCollection): void {
  (map.getSource(source) as maplibregl.GeoJSONSource | undefined)?.setData(data);
}
