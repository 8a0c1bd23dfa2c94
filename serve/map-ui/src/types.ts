// The records the page reads, as fleet_schemas defines them (epoch ms UTC, metres, m/s, seconds).

export interface Calculated {
  state: "assigned" | "candidate" | "unassigned";
  trip_id?: string;
  start_date?: string;
  start_time?: string;
  delay_s?: number;
  on_schedule?: boolean;
  off_route_m?: number;
  next_stop_id?: string;
  next_stop_eta_ms?: number;
}

export interface LivePosition {
  operator: string;
  bus: string;
  device: string;
  seq: number;
  time_ms: number;
  lat: number;
  lon: number;
  speed_mps?: number;
  heading_deg?: number;
  trip_id?: string;
  calculated?: Calculated;
}

export interface StopEta {
  stop_sequence: number;
  stop_id: string;
  scheduled_arrival_ms: number;
  arrival_ms: number;
  arrival_early_ms: number;
  arrival_late_ms: number;
}

export interface TripEtas {
  operator: string;
  trip_id: string;
  route_id: string;
  start_date: string;
  start_time: string;
  bus: string;
  updated_ms: number;
  delay_s: number;
  stops: StopEta[];
}

export interface FleetEvent {
  operator: string;
  bus: string;
  kind: string;
  time_ms: number;
  subject?: string;
  lat?: number;
  lon?: number;
  trip_id?: string;
  route_id?: string;
  details?: Record<string, unknown>;
}

export interface StopArrival {
  trip_id: string;
  route_id: string;
  bus: string;
  scheduled_arrival_ms: number;
  arrival_ms: number;
  arrival_early_ms: number;
  arrival_late_ms: number;
}

export interface TrackFeature {
  type: "Feature";
  geometry: { type: "LineString"; coordinates: [number, number][] } | null;
  properties: { bus: string; times_ms: number[]; speeds_mps: (number | null)[] };
}

export type LiveMessage =
  | { type: "subscribed"; filter: Record<string, unknown> }
  | { type: "snapshot"; positions: LivePosition[]; etas: TripEtas[] }
  | { type: "position"; position: LivePosition }
  | { type: "gone"; operator: string; bus: string }
  | { type: "etas"; etas: TripEtas }
  | { type: "event"; event: FleetEvent }
  | { type: "offline"; event: FleetEvent }
  | { type: "error"; code: string; message: string };
