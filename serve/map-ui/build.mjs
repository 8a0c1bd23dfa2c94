// Builds the live map into the Python package (fleet_serve/map/static), as the wheel ships it.
//
// esbuild bundles src/main.ts (MapLibre GL JS, pmtiles and topojson-client
// included) into one ES module with a content hash in its name; MapLibre's
// worker, its CSS and the world-atlas TopoJSON are copied beside it, and
// index.html is written last with the hashed names, so a half-done build is
// never served. `make bundle` runs this only when the sources or the lockfile
// are newer than the built index.html.
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "src", "fleet_serve", "map", "static");
const modules = join(here, "node_modules");

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

const result = await build({
  entryPoints: [join(here, "src", "main.ts")],
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  sourcemap: "linked",
  entryNames: "[name]-[hash]",
  outdir: out,
  metafile: true,
  legalComments: "linked",
  logLevel: "warning",
});

/** Copy a file under a name carrying a hash of its bytes (so it may be cached for ever). */
function hashed(source, stem, ext) {
  const bytes = readFileSync(source);
  const name = `${stem}-${createHash("sha256").update(bytes).digest("hex").slice(0, 10)}.${ext}`;
  copyFileSync(source, join(out, name));
  return name;
}

const script = Object.keys(result.metafile.outputs)
  .map((p) => p.split("/").pop())
  .find((name) => name.startsWith("main-") && name.endsWith(".js"));
const worker = hashed(join(modules, "maplibre-gl", "dist", "maplibre-gl-worker.mjs"), "maplibre-gl-worker", "mjs");
const css = hashed(join(modules, "maplibre-gl", "dist", "maplibre-gl.css"), "maplibre-gl", "css");
const world = hashed(join(modules, "world-atlas", "countries-50m.json"), "countries-50m", "json");
const page = hashed(join(here, "src", "page.css"), "page", "css");

const html = readFileSync(join(here, "src", "index.html"), "utf8")
  .replaceAll("{{script}}", script)
  .replaceAll("{{maplibre_css}}", css)
  .replaceAll("{{page_css}}", page)
  .replaceAll("{{worker}}", worker)
  .replaceAll("{{world}}", world);
writeFileSync(join(out, "index.html"), html);
console.log(`map bundle: ${readdirSync(out).length} files in ${out}`);
