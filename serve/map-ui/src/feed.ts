// The events feed: newest first, filtered by kind; the live ones prepended as they come.

import { clock, el } from "./format";
import type { FleetEvent } from "./types";

const KEEP = 200;

export class EventsFeed {
  private readonly list = document.getElementById("events-list") as HTMLOListElement;
  private readonly kind = document.getElementById("events-kind") as HTMLSelectElement;
  private events: FleetEvent[] = [];

  constructor(kinds: string[], private readonly onPick: (e: FleetEvent) => void) {
    for (const k of kinds) this.kind.append(el("option", { value: k }, k.replace(/_/g, " ")));
    this.kind.addEventListener("change", () => this.render());
  }

  /** The history read at start (newest first, as the API answers). */
  load(events: FleetEvent[]): void {
    this.events = events.slice(0, KEEP);
    this.render();
  }

  add(e: FleetEvent): void {
    this.events.unshift(e);
    this.events.length = Math.min(this.events.length, KEEP);
    if (!this.kind.value || this.kind.value === e.kind) this.list.prepend(this.item(e));
    while (this.list.children.length > KEEP) this.list.lastElementChild?.remove();
  }

  private render(): void {
    const kind = this.kind.value;
    this.list.replaceChildren(...this.events.filter((e) => !kind || e.kind === kind).map((e) => this.item(e)));
  }

  private item(e: FleetEvent): HTMLLIElement {
    const button = el("button", { type: "button", "aria-label": `${e.kind} of bus ${e.bus} at ${clock(e.time_ms)}` }, `${clock(e.time_ms)} · ${e.bus} · ${e.kind.replace(/_/g, " ")}`);
    button.addEventListener("click", () => this.onPick(e));
    return el("li", { "data-kind": e.kind, "data-bus": e.bus }, button);
  }
}
