"""A tiny GTFS feed written by hand for tests: a 6 km line west of Blida, four stops, three trips."""

from __future__ import annotations

from pathlib import Path

from fleet_agent.route import Point, destination

ORIGIN = Point(36.47, 2.80)


def write_feed(folder: Path, *, t1_times: list[tuple[str, str]] | None = None) -> Path:
    """A 6 km line west of Blida, four stops, a daytime trip with blank times and one past midnight."""
    vertices = [destination(ORIGIN, 270, 1000.0 * i) for i in range(7)]
    stops = {"S1": vertices[0], "S2": destination(ORIGIN, 270, 1500), "S3": vertices[4], "S4": vertices[6]}
    times = t1_times or [("08:00:00", "08:00:00"), ("", ""), ("", ""), ("08:12:00", "08:12:00")]
    night = [
        ("23:50:00", "23:50:00"),
        ("24:05:00", "24:06:00"),
        ("24:20:00", "24:21:00"),
        ("24:30:00", "24:30:00"),
    ]
    tables = {
        "agency.txt": "agency_id,agency_name,agency_url,agency_timezone\nA,Demo,https://example.dz,Africa/Algiers\n",
        "routes.txt": "route_id,agency_id,route_short_name,route_type\nR,A,1,3\n",
        "stops.txt": "stop_id,stop_name,stop_lat,stop_lon\n"
        + "".join(f"{sid},stop {sid},{p.lat:.7f},{p.lon:.7f}\n" for sid, p in stops.items()),
        "shapes.txt": "shape_id,shape_pt_lat,shape_pt_lon,shape_pt_sequence\n"
        + "".join(f"SH,{p.lat:.7f},{p.lon:.7f},{i}\n" for i, p in enumerate(vertices, start=1)),
        "trips.txt": "route_id,service_id,trip_id,shape_id\n"
        "R,daily,T1,SH\nR,weekend,T2,SH\nR,daily,NIGHT,SH\n",
        "stop_times.txt": "trip_id,arrival_time,departure_time,stop_id,stop_sequence\n"
        + "".join(
            f"{trip},{arrive},{leave},{sid},{n}\n"
            for trip, rows in (("T1", times), ("T2", times), ("NIGHT", night))
            for n, (sid, (arrive, leave)) in enumerate(zip(stops, rows, strict=True), start=1)
        ),
        "calendar.txt": "service_id,monday,tuesday,wednesday,thursday,friday,saturday,sunday,"
        "start_date,end_date\n"
        "daily,1,1,1,1,1,1,1,20260101,20271231\nweekend,0,0,0,0,0,1,1,20260101,20271231\n",
        "calendar_dates.txt": "service_id,date,exception_type\ndaily,20261225,2\nweekend,20261201,1\n",
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in tables.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder
