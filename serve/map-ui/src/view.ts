// The view a link carries: operator, filters, selected bus and the box shown, in the query string.

export interface View {
  operator: string | null;
  route: string;
  status: string;
  bus: string | null;
  bbox: [number, number, number, number] | null;
}

export function readView(search: string = window.location.search): View {
  const q = new URLSearchParams(search);
  const box = (q.get("bbox") ?? "").split(",").map(Number);
  const valid = box.length === 4 && box.every(Number.isFinite) && box[0] <= box[2] && box[1] <= box[3];
  return {
    operator: q.get("operator"),
    route: q.get("route") ?? "",
    status: q.get("status") ?? "",
    bus: q.get("bus"),
    bbox: valid ? (box as [number, number, number, number]) : null,
  };
}

/** Replace the address (no history entry per pan): a reload or a shared link opens the same view. */
export function writeView(view: View): void {
  const q = new URLSearchParams();
  if (view.operator) q.set("operator", view.operator);
  if (view.route) q.set("route", view.route);
  if (view.status) q.set("status", view.status);
  if (view.bus) q.set("bus", view.bus);
  if (view.bbox) q.set("bbox", view.bbox.map((x) => x.toFixed(5)).join(","));
  const url = `${window.location.pathname}?${q.toString()}`;
  if (url !== `${window.location.pathname}${window.location.search}`) window.history.replaceState(null, "", url);
}
