"""The feed reader on small feeds written here: one test per notice code, the rest still imported."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TextIO

import numpy as np
import pytest
from hypothesis import given, strategies

from fleet_processing.gtfs import FeedReading, read_feed
from fleet_processing.gtfs.csvfiles import FILES
from fleet_processing.gtfs.notices import SEVERITIES
from fleet_schemas.gtfs import Notice, format_time

ACCRA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "gtfs" / "accra"

# A line along latitude 36.75 (Algiers) from 3.04 to 3.06 E, about 1.78 km; B is a quarter of the way.
BASE = {
    "agency.txt": "agency_id,agency_name,agency_url,agency_timezone\nSOG,Sogral,https://sogral.dz,Africa/Algiers\n",
    "stops.txt": (
        "stop_id,stop_name,stop_lat,stop_lon\n"
        "A,Caroubier,36.75,3.04\nB,Hussein Dey,36.75,3.045\nC,Kouba,36.75,3.06\n"
    ),
    "routes.txt": "route_id,agency_id,route_short_name,route_type\nR1,SOG,1,3\n",
    "trips.txt": "route_id,service_id,trip_id,shape_id,block_id\nR1,WK,T1,S1,\n",
    "stop_times.txt": (
        "trip_id,arrival_time,departure_time,stop_id,stop_sequence\n"
        "T1,08:00:00,08:00:00,A,1\nT1,,,B,2\nT1,08:20:00,08:20:00,C,3\n"
    ),
    "calendar.txt": (
        "service_id,monday,tuesday,wednesday,thursday,friday,saturday,sunday,start_date,end_date\n"
        "WK,1,1,1,1,1,0,0,20260101,20261231\n"
    ),
    "shapes.txt": (
        "shape_id,shape_pt_lat,shape_pt_lon,shape_pt_sequence\nS1,36.75,3.04,1\nS1,36.75,3.05,2\nS1,36.75,3.06,3\n"
    ),
}


def opener(files: dict[str, str | None]) -> Callable[[str], TextIO | None]:
    def open_file(name: str) -> TextIO | None:
        text = files.get(name)
        return None if text is None else io.StringIO(text, newline="")

    return open_file


def read(today: date | None = None, timezones: set[str] | None = None, **changes: str | None) -> FeedReading:
    files: dict[str, str | None] = {
        **BASE,
        **{name.replace("_txt", ".txt"): text for name, text in changes.items()},
    }
    return read_feed(opener(files), today=today, timezones=timezones)


def notice(reading: FeedReading, code: str) -> Notice:
    found = [n for n in reading.notices if n.code == code]
    assert found, f"no {code} in {[n.code for n in reading.notices]}"
    assert found[0].severity == SEVERITIES[code]
    return found[0]


def test_a_clean_feed_has_no_notice_and_every_row() -> None:
    reading = read()
    assert reading.notices == []
    assert reading.feed is not None
    assert {name: count.imported for name, count in reading.counts.items()} == {
        "agency.txt": 1,
        "stops.txt": 3,
        "routes.txt": 1,
        "trips.txt": 1,
        "stop_times.txt": 3,
        "calendar.txt": 1,
        "shapes.txt": 3,
    }


def test_blank_times_are_interpolated_by_distance_along_the_shape() -> None:
    reading = read()
    assert reading.feed is not None
    a, b, c = reading.feed.stop_times
    assert (a.arrival_s, c.arrival_s) == (8 * 3600, 8 * 3600 + 1200)
    assert b.arrival_s == b.departure_s == 8 * 3600 + 300
    assert b.interpolated
    assert not b.timepoint
    assert not a.interpolated
    assert a.timepoint
    assert b.dist_m == pytest.approx(c.dist_m / 4, rel=1e-3)
    assert c.dist_m == pytest.approx(1_784, rel=5e-3)
    assert reading.interpolated_stop_times == 1


def test_blank_times_follow_shape_dist_traveled_when_the_feed_gives_it() -> None:
    reading = read(
        stop_times_txt=(
            "trip_id,arrival_time,departure_time,stop_id,stop_sequence,shape_dist_traveled\n"
            "T1,08:00:00,08:00:00,A,1,0\nT1,,,B,2,0.9\nT1,08:20:00,08:20:00,C,3,1.0\n"
        )
    )
    assert reading.feed is not None
    assert reading.feed.stop_times[1].arrival_s == 8 * 3600 + 1080


def test_stop_distances_come_from_shape_dist_traveled_when_shape_and_stops_agree() -> None:
    reading = read(
        shapes_txt=(
            "shape_id,shape_pt_lat,shape_pt_lon,shape_pt_sequence,shape_dist_traveled\n"
            "S1,36.75,3.04,1,0\nS1,36.75,3.05,2,5\nS1,36.75,3.06,3,10\n"
        ),
        stop_times_txt=(
            "trip_id,arrival_time,departure_time,stop_id,stop_sequence,shape_dist_traveled\n"
            "T1,08:00:00,08:00:00,A,1,0\nT1,,,B,2,5\nT1,08:20:00,08:20:00,C,3,10\n"
        ),
    )
    assert reading.feed is not None
    _a, b, c = reading.feed.stop_times
    assert b.dist_m == pytest.approx(c.dist_m / 2)


def test_a_trip_without_a_shape_gets_one_built_from_its_stops() -> None:
    reading = read(trips_txt="route_id,service_id,trip_id\nR1,WK,T1\n", shapes_txt=None)
    assert reading.notices == []
    assert reading.feed is not None
    (shape,) = reading.feed.shapes
    assert shape.generated
    assert reading.feed.trips[0].shape_id == shape.shape_id
    assert [st.dist_m for st in reading.feed.stop_times] == pytest.approx(shape.dist_m)
    assert reading.generated_shapes == 1


def test_a_built_shape_never_takes_the_id_of_a_shape_of_the_feed() -> None:
    reading = read(
        trips_txt="route_id,service_id,trip_id,shape_id\nR1,WK,T1,generated-1\nR1,WK,T2\n",
        stop_times_txt=BASE["stop_times.txt"] + "T2,09:00:00,09:00:00,A,1\nT2,09:20:00,09:20:00,C,2\n",
        shapes_txt=BASE["shapes.txt"].replace("S1,", "generated-1,"),
    )
    assert reading.notices == []
    assert reading.feed is not None
    assert [shape.shape_id for shape in reading.feed.shapes] == ["generated-1", "generated-2"]
    assert [trip.shape_id for trip in reading.feed.trips] == ["generated-1", "generated-2"]


def test_an_unknown_shape_is_reported_and_replaced_by_one_built_from_the_stops() -> None:
    reading = read(trips_txt="route_id,service_id,trip_id,shape_id\nR1,WK,T1,NOPE\n")
    sample = notice(reading, "foreign_key_violation").samples[0]
    assert sample["childFieldName"] == "shape_id"
    assert sample["fieldValue"] == "NOPE"
    assert reading.feed is not None
    assert reading.feed.shapes[-1].generated


def test_crlf_bom_quotes_whitespace_extra_columns_and_column_order_are_tolerated() -> None:
    reading = read(
        stops_txt=(
            "\ufeffstop_lon,extra,stop_lat,stop_id,stop_name\r\n"
            '3.04,x,36.75,A,"Caroubier, gare routière"\r\n'
            " 3.045 ,y, 36.75 , B ,Hussein Dey\r\n"
            "\r\n"
            "3.06,z,36.75,C,Kouba\r\n"
        )
    )
    assert [n.code for n in reading.notices] == ["empty_row"]
    assert reading.feed is not None
    assert [s.stop_id for s in reading.feed.stops] == ["A", "B", "C"]
    assert reading.feed.stops[0].name == "Caroubier, gare routière"
    assert reading.feed.stops[1].lon == 3.045


def test_times_past_midnight_are_kept_on_the_same_service_day() -> None:
    reading = read(
        stop_times_txt=(
            "trip_id,arrival_time,departure_time,stop_id,stop_sequence\n"
            "T1,23:50:00,23:50:00,A,1\nT1,,,B,2\nT1,24:10:00,24:10:00,C,3\n"
        )
    )
    assert reading.feed is not None
    assert [st.arrival_s for st in reading.feed.stop_times] == [85_800, 86_100, 87_000]


def test_missing_required_file_makes_the_feed_unusable() -> None:
    reading = read(stops_txt=None)
    assert reading.feed is None
    assert notice(reading, "missing_required_file").samples == [{"filename": "stops.txt"}]


def test_missing_calendar_and_calendar_dates_makes_the_feed_unusable() -> None:
    reading = read(calendar_txt=None)
    assert reading.feed is None
    notice(reading, "missing_calendar_and_calendar_date_files")


def test_missing_required_column_drops_the_file_rows() -> None:
    reading = read(routes_txt="route_id,agency_id\nR1,SOG\n")
    assert notice(reading, "missing_required_column").samples == [
        {"filename": "routes.txt", "fieldName": "route_type"}
    ]
    assert reading.feed is None


def test_missing_required_field_drops_the_row_only() -> None:
    reading = read(
        stops_txt="stop_id,stop_lat,stop_lon\nA,36.75,3.04\nB,36.75,3.045\nC,36.75,3.06\n,36.7,3.0\n"
    )
    assert notice(reading, "missing_required_field").samples == [
        {"filename": "stops.txt", "csvRowNumber": 5, "fieldName": "stop_id"}
    ]
    assert reading.feed is not None
    assert len(reading.feed.stops) == 3


def test_invalid_numbers_are_reported_with_their_field() -> None:
    reading = read(
        stops_txt="stop_id,stop_lat,stop_lon\nA,36.75,3.04\nB,36.75,3.045\nC,36.75,3.06\nD,north,3.0\nE,95,3.0\n"
    )
    assert notice(reading, "invalid_float").samples[0] == {
        "filename": "stops.txt",
        "csvRowNumber": 5,
        "fieldName": "stop_lat",
        "fieldValue": "north",
    }
    assert notice(reading, "number_out_of_range").samples[0]["csvRowNumber"] == 6
    assert reading.counts["stops.txt"].read == 5
    assert reading.counts["stops.txt"].imported == 3


def test_duplicate_key_keeps_the_first_row() -> None:
    reading = read(stops_txt=BASE["stops.txt"] + "A,Elsewhere,0,0\n")
    sample = notice(reading, "duplicate_key").samples[0]
    assert sample == {
        "filename": "stops.txt",
        "oldCsvRowNumber": 2,
        "newCsvRowNumber": 5,
        "fieldName1": "stop_id",
        "fieldValue1": "A",
    }
    assert reading.feed is not None
    assert reading.feed.stops[0].name == "Caroubier"


def test_foreign_key_violation_drops_the_stop_time_and_keeps_the_trip() -> None:
    reading = read(
        stop_times_txt=(
            "trip_id,arrival_time,departure_time,stop_id,stop_sequence\n"
            "T1,08:00:00,08:00:00,A,1\nT1,08:05:00,08:05:00,GHOST,2\nT1,08:20:00,08:20:00,C,3\n"
        )
    )
    sample = notice(reading, "foreign_key_violation").samples[0]
    assert sample["childFilename"] == "stop_times.txt"
    assert sample["fieldValue"] == "GHOST"
    assert sample["csvRowNumber"] == 3
    assert reading.feed is not None
    assert [st.stop_id for st in reading.feed.stop_times] == ["A", "C"]


def test_a_station_in_stop_times_is_reported_once_and_kept() -> None:
    reading = read(
        stops_txt=(
            "stop_id,stop_name,stop_lat,stop_lon,location_type\n"
            "A,Caroubier,36.75,3.04,1\nB,Hussein Dey,36.75,3.045,0\nC,Kouba,36.75,3.06,\n"
        ),
        trips_txt="route_id,service_id,trip_id,shape_id\nR1,WK,T1,S1\nR1,WK,T2,S1\n",
        stop_times_txt=BASE["stop_times.txt"] + "T2,09:00:00,09:00:00,A,1\nT2,09:20:00,09:20:00,C,2\n",
    )
    assert notice(reading, "location_with_unexpected_stop_time").samples == [
        {"csvRowNumber": 2, "stopId": "A", "stopName": "Caroubier", "stopTimeCsvRowNumber": 2}
    ]
    assert reading.feed is not None
    assert len(reading.feed.stop_times) == 5


def test_invalid_time_is_treated_as_blank() -> None:
    reading = read(
        stop_times_txt=(
            "trip_id,arrival_time,departure_time,stop_id,stop_sequence\n"
            "T1,08:00:00,08:00:00,A,1\nT1,08:61:00,08:61:00,B,2\nT1,08:20:00,08:20:00,C,3\n"
        )
    )
    assert notice(reading, "invalid_time").count == 2
    assert reading.feed is not None
    assert reading.feed.stop_times[1].interpolated


def test_arrival_before_previous_departure_drops_the_trip() -> None:
    reading = read(
        stop_times_txt=(
            "trip_id,arrival_time,departure_time,stop_id,stop_sequence\n"
            "T1,08:00:00,08:10:00,A,1\nT1,08:05:00,08:05:00,B,2\nT1,08:20:00,08:20:00,C,3\n"
        )
    )
    sample = notice(reading, "stop_time_with_arrival_before_previous_departure_time").samples[0]
    assert sample == {
        "csvRowNumber": 3,
        "prevCsvRowNumber": 2,
        "tripId": "T1",
        "departureTime": "08:10:00",
        "arrivalTime": "08:05:00",
    }
    assert reading.feed is None


def test_departure_before_arrival_drops_the_trip() -> None:
    reading = read(
        stop_times_txt=(
            "trip_id,arrival_time,departure_time,stop_id,stop_sequence\n"
            "T1,08:00:00,08:00:00,A,1\nT1,08:06:00,08:05:00,B,2\nT1,08:20:00,08:20:00,C,3\n"
        )
    )
    sample = notice(reading, "stop_time_with_departure_before_arrival_time").samples[0]
    assert sample == {
        "csvRowNumber": 3,
        "tripId": "T1",
        "stopSequence": 2,
        "departureTime": "08:05:00",
        "arrivalTime": "08:06:00",
    }
    assert reading.feed is None


def test_a_timepoint_without_times_is_reported_and_interpolated() -> None:
    reading = read(
        stop_times_txt=(
            "trip_id,arrival_time,departure_time,stop_id,stop_sequence,timepoint\n"
            "T1,08:00:00,08:00:00,A,1,1\nT1,,,B,2,1\nT1,08:20:00,08:20:00,C,3,1\n"
        )
    )
    assert notice(reading, "stop_time_timepoint_without_times").samples == [
        {"csvRowNumber": 3, "tripId": "T1", "stopSequence": 2}
    ]
    assert reading.feed is not None
    assert reading.feed.stop_times[1].interpolated
    assert not reading.feed.stop_times[1].timepoint


def test_an_unknown_agency_timezone_drops_the_agency() -> None:
    reading = read(timezones={"Europe/Paris"})
    assert notice(reading, "invalid_timezone").samples == [
        {
            "filename": "agency.txt",
            "csvRowNumber": 2,
            "fieldName": "agency_timezone",
            "fieldValue": "Africa/Algiers",
        }
    ]
    assert reading.feed is None
    assert read(timezones={"Africa/Algiers"}).notices == []


def test_ranges_that_end_before_they_start_are_dropped() -> None:
    reading = read(
        calendar_txt=(
            "service_id,monday,tuesday,wednesday,thursday,friday,saturday,sunday,start_date,end_date\n"
            "WK,1,1,1,1,1,0,0,20260101,20261231\nSUN,0,0,0,0,0,0,1,20261231,20260101\n"
        ),
        frequencies_txt="trip_id,start_time,end_time,headway_secs\nT1,9:00:00,10:00:00,600\nT1,22:00:00,6:00:00,600\n",
    )
    samples = notice(reading, "start_and_end_range_out_of_order").samples
    assert [(x["filename"], x["entityId"], x["endValue"]) for x in samples] == [
        ("calendar.txt", "SUN", "20260101"),
        ("frequencies.txt", "T1", "6:00:00"),
    ]
    assert reading.feed is not None
    assert [f.start_s for f in reading.feed.frequencies] == [9 * 3600]
    assert [c.service_id for c in reading.feed.calendars] == ["WK"]


def test_only_arrival_or_departure_is_reported_and_used_for_both() -> None:
    reading = read(
        stop_times_txt=(
            "trip_id,arrival_time,departure_time,stop_id,stop_sequence\n"
            "T1,08:00:00,08:00:00,A,1\nT1,08:07:00,,B,2\nT1,08:20:00,08:20:00,C,3\n"
        )
    )
    sample = notice(reading, "stop_time_with_only_arrival_or_departure_time").samples[0]
    assert sample["specifiedField"] == "arrival_time"
    assert sample["stopSequence"] == 2
    assert reading.feed is not None
    assert reading.feed.stop_times[1].departure_s == 8 * 3600 + 420


def test_missing_trip_edge_drops_the_trip() -> None:
    reading = read(
        stop_times_txt=(
            "trip_id,arrival_time,departure_time,stop_id,stop_sequence\n"
            "T1,08:00:00,08:00:00,A,1\nT1,08:05:00,08:05:00,B,2\nT1,,,C,3\n"
        )
    )
    assert notice(reading, "missing_trip_edge").samples[0]["stopSequence"] == 3
    assert reading.feed is None


def test_decreasing_or_equal_stop_time_distance_falls_back_to_the_shape() -> None:
    reading = read(
        stop_times_txt=(
            "trip_id,arrival_time,departure_time,stop_id,stop_sequence,shape_dist_traveled\n"
            "T1,08:00:00,08:00:00,A,1,0\nT1,,,B,2,5\nT1,08:20:00,08:20:00,C,3,5\n"
        )
    )
    sample = notice(reading, "decreasing_or_equal_stop_time_distance").samples[0]
    assert sample["csvRowNumber"] == 4
    assert sample["prevCsvRowNumber"] == 3
    assert reading.feed is not None
    assert reading.feed.stop_times[1].arrival_s == 8 * 3600 + 300


def test_decreasing_shape_distance_is_reported() -> None:
    reading = read(
        shapes_txt=(
            "shape_id,shape_pt_lat,shape_pt_lon,shape_pt_sequence,shape_dist_traveled\n"
            "S1,36.75,3.04,1,0\nS1,36.75,3.05,2,5\nS1,36.75,3.06,3,4\n"
        )
    )
    assert notice(reading, "decreasing_shape_distance").samples[0]["shapePtSequence"] == 3
    assert reading.feed is not None


def test_stop_too_far_from_shape_is_a_warning_and_the_stop_stays() -> None:
    reading = read(stops_txt="stop_id,stop_lat,stop_lon\nA,36.75,3.04\nB,36.753,3.045\nC,36.75,3.06\n")
    sample = notice(reading, "stop_too_far_from_shape").samples[0]
    assert sample["stopId"] == "B"
    assert 300 < float(sample["geoDistanceToShape"] or 0) < 360
    assert reading.feed is not None
    assert len(reading.feed.stop_times) == 3


def test_fast_travel_between_consecutive_stops_over_150_kmh_for_a_bus() -> None:
    reading = read(
        stops_txt="stop_id,stop_lat,stop_lon\nA,36.75,3.04\nB,36.75,3.045\nC,36.75,4.06\n",
        stop_times_txt=(
            "trip_id,arrival_time,departure_time,stop_id,stop_sequence\n"
            "T1,08:00:00,08:00:00,A,1\nT1,08:05:00,08:05:00,B,2\nT1,08:20:00,08:20:00,C,3\n"
        ),
        shapes_txt=None,
        trips_txt="route_id,service_id,trip_id\nR1,WK,T1\n",
    )
    sample = notice(reading, "fast_travel_between_consecutive_stops").samples[0]
    assert sample["stopId1"] == "B"
    assert sample["stopId2"] == "C"
    assert float(sample["speedKph"] or 0) > 150


def test_block_trips_with_overlapping_stop_times() -> None:
    reading = read(
        trips_txt="route_id,service_id,trip_id,shape_id,block_id\nR1,WK,T1,S1,BL\nR1,WK,T2,S1,BL\n",
        stop_times_txt=(
            "trip_id,arrival_time,departure_time,stop_id,stop_sequence\n"
            "T1,08:00:00,08:00:00,A,1\nT1,08:20:00,08:20:00,C,2\n"
            "T2,08:10:00,08:10:00,A,1\nT2,08:30:00,08:30:00,C,2\n"
        ),
    )
    sample = notice(reading, "block_trips_with_overlapping_stop_times").samples[0]
    assert (sample["tripIdA"], sample["tripIdB"], sample["blockId"]) == ("T1", "T2", "BL")
    assert reading.feed is not None
    assert len(reading.feed.trips) == 2


def test_overlapping_frequency_drops_the_later_period() -> None:
    reading = read(
        frequencies_txt=(
            "trip_id,start_time,end_time,headway_secs\nT1,06:00:00,09:00:00,600\nT1,08:00:00,10:00:00,900\n"
        )
    )
    sample = notice(reading, "overlapping_frequency").samples[0]
    assert sample["currCsvRowNumber"] == 3
    assert sample["prevEndTime"] == "09:00:00"
    assert reading.feed is not None
    assert len(reading.feed.frequencies) == 1


def test_expired_calendar_needs_today() -> None:
    assert read().notices == []
    reading = read(today=date(2027, 1, 1))
    assert notice(reading, "expired_calendar").samples == [{"csvRowNumber": 2, "serviceId": "WK"}]


def test_unusable_trip_with_one_stop_is_dropped_and_the_others_kept() -> None:
    reading = read(
        trips_txt="route_id,service_id,trip_id,shape_id\nR1,WK,T1,S1\nR1,WK,T2,S1\n",
        stop_times_txt=BASE["stop_times.txt"] + "T2,09:00:00,09:00:00,A,1\n",
    )
    assert notice(reading, "unusable_trip").samples == [{"csvRowNumber": 3, "tripId": "T2"}]
    assert reading.feed is not None
    assert [t.trip_id for t in reading.feed.trips] == ["T1"]


def test_a_trip_of_an_unknown_service_is_dropped() -> None:
    reading = read(trips_txt="route_id,service_id,trip_id,shape_id\nR1,WK,T1,S1\nR1,SUN,T2,S1\n")
    assert notice(reading, "foreign_key_violation").samples[0]["fieldValue"] == "SUN"
    assert reading.feed is not None
    assert len(reading.feed.trips) == 1


def test_a_shape_of_one_point_is_replaced_by_one_built_from_the_stops() -> None:
    reading = read(shapes_txt="shape_id,shape_pt_lat,shape_pt_lon,shape_pt_sequence\nS1,36.75,3.04,1\n")
    assert notice(reading, "single_shape_point").samples == [{"csvRowNumber": 2, "shapeId": "S1"}]
    assert reading.feed is not None
    assert reading.feed.shapes[-1].generated


def test_an_empty_file_is_reported() -> None:
    reading = read(frequencies_txt="")
    assert notice(reading, "empty_file").samples == [{"filename": "frequencies.txt"}]
    assert reading.feed is not None


def test_a_file_that_is_not_utf8_is_reported_and_the_feed_unusable_without_it() -> None:
    files: dict[str, str | None] = dict(BASE)
    text = opener(files)

    def open_file(name: str) -> TextIO | None:
        if name == "stops.txt":
            return io.TextIOWrapper(
                io.BytesIO(b"stop_id,stop_lat,stop_lon\nA,36.75,3.04\n\xff\xfe"), encoding="utf-8"
            )
        return text(name)

    reading = read_feed(open_file)
    assert notice(reading, "csv_parsing_failed").samples[0]["filename"] == "stops.txt"
    assert reading.feed is None


@strategies.composite
def one_trip_feeds(draw: strategies.DrawFn) -> tuple[dict[str, str | None], list[bool]]:
    """A trip along a wiggly line east of Algiers, its stops on it, some with blank times."""
    count = draw(strategies.integers(2, 25))
    lons = 3.0 + np.cumsum(
        draw(strategies.lists(strategies.floats(0.0005, 0.02), min_size=count, max_size=count))
    )
    lats = 36.7 + np.asarray(
        draw(strategies.lists(strategies.floats(-0.01, 0.01), min_size=count, max_size=count))
    )
    blanks = draw(strategies.lists(strategies.booleans(), min_size=count, max_size=count))
    blanks[0] = blanks[-1] = False
    times = 6 * 3600 + np.cumsum(
        draw(strategies.lists(strategies.integers(0, 900), min_size=count, max_size=count))
    )
    stops = "".join(f"S{i},{lat},{lon}\n" for i, (lat, lon) in enumerate(zip(lats, lons, strict=True)))
    shape = "".join(f"L,{lat},{lon},{i}\n" for i, (lat, lon) in enumerate(zip(lats, lons, strict=True)))
    rows = "".join(
        f"T1,,,S{i},{i}\n" if blank else f"T1,{format_time(int(t))},{format_time(int(t))},S{i},{i}\n"
        for i, (blank, t) in enumerate(zip(blanks, times, strict=True))
    )
    files: dict[str, str | None] = {
        **BASE,
        "stops.txt": "stop_id,stop_lat,stop_lon\n" + stops,
        "shapes.txt": "shape_id,shape_pt_lat,shape_pt_lon,shape_pt_sequence\n" + shape,
        "trips.txt": "route_id,service_id,trip_id,shape_id\nR1,WK,T1,L\n",
        "stop_times.txt": "trip_id,arrival_time,departure_time,stop_id,stop_sequence\n" + rows,
    }
    return files, blanks


@given(one_trip_feeds())
def test_imported_stop_times_never_go_back_in_time_or_along_the_shape(
    drawn: tuple[dict[str, str | None], list[bool]],
) -> None:
    files, blanks = drawn
    reading = read_feed(opener(files))
    assert reading.feed is not None
    stop_times = reading.feed.stop_times
    assert [st.interpolated for st in stop_times] == blanks
    times = [t for st in stop_times for t in (st.arrival_s, st.departure_s)]
    assert times == sorted(times)
    dists = [st.dist_m for st in stop_times]
    assert dists == sorted(dists)
    assert dists[-1] == pytest.approx(reading.feed.shapes[0].dist_m[-1])


HEADERS = {
    **{name: text.splitlines()[0] for name, text in BASE.items()},
    "frequencies.txt": "trip_id,start_time,end_time,headway_secs,exact_times",
    "calendar_dates.txt": "service_id,date,exception_type",
}


@given(
    strategies.sampled_from(sorted(HEADERS)),
    strategies.lists(
        strategies.lists(
            strategies.sampled_from(["", " ", "x", "-1", "1e400", "25:61:00", "99", ",", '"']), max_size=8
        ),
        max_size=6,
    ),
    strategies.text(max_size=200),
)
def test_any_garbage_in_one_file_is_reported_never_raised(
    name: str, cells: list[list[str]], tail: str
) -> None:
    text = HEADERS[name] + "\n" + "\n".join(",".join(row) for row in cells) + "\n" + tail
    reading = read_feed(opener({**BASE, name: text}))
    assert all(n.code in SEVERITIES for n in reading.notices)
    assert set(reading.counts) <= {spec.filename for spec in FILES}


def _accra(name: str) -> TextIO | None:
    path = ACCRA / name
    return path.open(encoding="utf-8-sig", newline="") if path.exists() else None


@pytest.mark.skipif(not ACCRA.is_dir(), reason=f"the Accra feed is not at {ACCRA}")
def test_the_accra_feed_reads_whole_with_its_quirks_reported() -> None:
    reading = read_feed(_accra, today=date(2026, 12, 1))
    assert reading.feed is not None
    assert {name: (c.read, c.imported) for name, c in reading.counts.items()} == {
        "agency.txt": (1, 1),
        "stops.txt": (4171, 4171),
        "routes.txt": (277, 277),
        "trips.txt": (554, 554),
        "stop_times.txt": (11336, 11336),
        "calendar.txt": (1, 1),
        "shapes.txt": (115721, 115721),
        "frequencies.txt": (554, 554),
    }
    codes = {n.code: n for n in reading.notices}
    assert codes["expired_calendar"].samples == [{"csvRowNumber": 2, "serviceId": "0"}]
    assert "stop_too_far_from_shape" in codes
    assert not any(n.severity == "ERROR" for n in reading.notices)
    for trip_times in _by_trip(reading):
        dists = [st.dist_m for st in trip_times]
        assert dists == sorted(dists)
        times = [t for st in trip_times for t in (st.arrival_s, st.departure_s)]
        assert times == sorted(times)


def _by_trip(reading: FeedReading) -> list[list]:  # type: ignore[type-arg]
    assert reading.feed is not None
    groups: dict[str, list] = {}  # type: ignore[type-arg]
    for st in reading.feed.stop_times:
        groups.setdefault(st.trip_id, []).append(st)
    return list(groups.values())


@given(
    strategies.lists(
        strategies.text(alphabet=strategies.characters(blacklist_categories=("Cs", "Cc")), max_size=30),
        max_size=8,
    ),
    strategies.sampled_from(["\n", "\r\n"]),
)
def test_any_stop_name_survives_csv_quoting_and_line_endings(names: list[str], newline: str) -> None:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator=newline)
    writer.writerow(["stop_id", "stop_lat", "stop_lon", "stop_name"])
    writer.writerows([["A", 36.75, 3.04, "a"], ["B", 36.75, 3.045, "b"], ["C", 36.75, 3.06, "c"]])
    writer.writerows([[f"X{i}", 36.7, 3.0, name] for i, name in enumerate(names)])
    reading = read(stops_txt=out.getvalue())
    assert reading.feed is not None
    assert [stop.name for stop in reading.feed.stops[3:]] == [name.strip() or None for name in names]
