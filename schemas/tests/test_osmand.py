"""The OsmAnd protocol decoder: the apps' request shapes in SI, and typed errors naming the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet_schemas import FleetSchemaError, InvalidFieldError, OutOfRangeError, UndecodableError
from fleet_schemas.osmand import KNOT_MPS, PhoneFix, decode_json, decode_query, to_frames

T0_MS = 1_764_590_400_000  # 2025-12-01T12:00:00Z

fixes = st.builds(
    PhoneFix,
    time_ms=st.integers(T0_MS - 10**11, T0_MS + 10**11),
    lat=st.floats(-90, 90),
    lon=st.floats(-180, 180),
    accuracy_m=st.none() | st.floats(0, 10_000),
    speed_mps=st.none() | st.floats(0, 149),
    heading_deg=st.none() | st.floats(0, 359.99),
    altitude_m=st.none() | st.floats(-1_000, 20_000),
    battery_pct=st.none() | st.floats(0, 100),
    charging=st.none() | st.booleans(),
)


def _traccar_client_query(fix: PhoneFix, device_id: str) -> str:
    """What Traccar Client for Android puts in its URL: seconds, knots, ``bearing``, ``batt``."""
    params = {
        "id": device_id,
        "timestamp": str(fix.time_ms // 1000),
        "lat": repr(fix.lat),
        "lon": repr(fix.lon),
    }
    if fix.speed_mps is not None:
        params["speed"] = repr(fix.speed_mps / KNOT_MPS)
    if fix.heading_deg is not None:
        params["bearing"] = repr(fix.heading_deg)
    if fix.altitude_m is not None:
        params["altitude"] = repr(fix.altitude_m)
    if fix.accuracy_m is not None:
        params["accuracy"] = repr(fix.accuracy_m)
    if fix.battery_pct is not None:
        params["batt"] = repr(fix.battery_pct)
    if fix.charging is not None:
        params["charge"] = str(fix.charging).lower()
    return urlencode(params)


def _traccar_client_json(fix: PhoneFix, device_id: str) -> bytes:
    """What the Flutter Traccar Client POSTs (its location template); -1 for what is unknown."""
    stamp = datetime.fromtimestamp(fix.time_ms / 1000, UTC).isoformat(timespec="milliseconds")
    location = {
        "timestamp": stamp.replace("+00:00", "Z"),
        "coords": {
            "latitude": fix.lat,
            "longitude": fix.lon,
            "accuracy": -1 if fix.accuracy_m is None else fix.accuracy_m,
            "speed": -1 if fix.speed_mps is None else fix.speed_mps,
            "heading": -1 if fix.heading_deg is None else fix.heading_deg,
            "altitude": 0 if fix.altitude_m is None else fix.altitude_m,
        },
        "is_moving": True,
        "odometer": 1234.5,
        "event": "",
        "battery": {
            "level": -1 if fix.battery_pct is None else fix.battery_pct / 100,
            "is_charging": bool(fix.charging),
        },
        "activity": {"type": "in_vehicle"},
        "extras": {},
        "_": f"&id={device_id}&lat={fix.lat}&lon={fix.lon}&timestamp={stamp}&",
    }
    return json.dumps({"location": location, "device_id": device_id}).encode()


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= 1e-9 * max(1.0, abs(a))


@given(fixes)
def test_traccar_client_query_decodes_to_the_same_si_fix(fix: PhoneFix) -> None:
    report = decode_query(parse_qsl(_traccar_client_query(fix, "phone-1:s3cret")))
    assert report.device_id == "phone-1:s3cret"
    (got,) = report.fixes
    assert got.time_ms == fix.time_ms // 1000 * 1000
    for name in ("lat", "lon", "speed_mps", "heading_deg", "altitude_m", "accuracy_m", "battery_pct"):
        assert _close(getattr(got, name), getattr(fix, name)), name
    assert got.charging == fix.charging


@given(fixes)
def test_traccar_client_json_decodes_to_the_same_si_fix(fix: PhoneFix) -> None:
    report = decode_json(_traccar_client_json(fix, "phone-1:s3cret"))
    assert report.device_id == "phone-1:s3cret"
    (got,) = report.fixes
    assert got.time_ms == fix.time_ms
    for name in ("lat", "lon", "speed_mps", "heading_deg", "accuracy_m", "battery_pct"):
        assert _close(getattr(got, name), getattr(fix, name)), name


@given(fixes, st.sampled_from(["seconds", "ms", "iso", "local"]))
def test_every_timestamp_form_gives_the_same_time(fix: PhoneFix, form: str) -> None:
    seconds = fix.time_ms // 1000
    moment = datetime.fromtimestamp(seconds, UTC)
    stamp = {
        "seconds": str(seconds),
        "ms": str(seconds * 1000),
        "iso": moment.isoformat().replace("+00:00", "Z"),
        "local": moment.strftime("%Y-%m-%d %H:%M:%S"),
    }[form]
    report = decode_query([("id", "x"), ("lat", "1"), ("lon", "2"), ("timestamp", stamp)])
    assert report.fixes[0].time_ms == seconds * 1000


def test_osmand_url_template_gives_metres_per_second_and_milliseconds() -> None:
    # OsmAnd: lat={0}&lon={1}&timestamp={2}&accuracy={3}&altitude={4}&speed_mps={5}&bearing={6}
    query = (
        "id=phone-1:s&lat=36.7525&lon=3.04197&timestamp=1764590400123&accuracy=4.5&altitude=12.0"
        "&speed_mps=13.9&bearing=271.5"
    )
    (fix,) = decode_query(parse_qsl(query)).fixes
    assert (fix.time_ms, fix.speed_mps, fix.heading_deg, fix.accuracy_m) == (1764590400123, 13.9, 271.5, 4.5)
    (frame,) = to_frames([fix], "phone-1", "DZ-16-0007")
    assert (frame.seq, frame.time_ms, frame.source, frame.bus) == (
        1764590400123,
        1764590400123,
        "phone",
        "DZ-16-0007",
    )


def test_the_real_shapes_of_traccars_decoder_tests_decode() -> None:
    shapes = [
        "id=902064&lat=42.06288&lon=-88.23412&timestamp=2016-01-27T18%3A55%3A47Z&hdop=6.0&altitude=224.0&speed=0.0",
        "lat=49.60688&lon=6.15788&timestamp=2014-06-04+09%3A10%3A11&altitude=384.7&speed=0.0&id=353861053849681",
        "id=123456&timestamp=1377177267&location=60.0,30.0",
        "id=123456789012345&timestamp=1504763810&lat=40.7232948571&lon=-74.0061408571&bearing=7.19889788244"
        "&speed=40&ignition=true&rpm=933&fuel=24",
    ]
    decoded = [decode_query(parse_qsl(shape)).fixes[0] for shape in shapes]
    assert decoded[0].time_ms == 1453920947000
    assert decoded[0].hdop == 6.0
    assert decoded[1].time_ms == 1401873011000
    assert (decoded[2].lat, decoded[2].lon) == (60.0, 30.0)
    assert decoded[3].speed_mps == pytest.approx(40 * 0.514444, rel=1e-5)


def test_a_batch_of_locations_gives_one_fix_each() -> None:
    one = json.loads(_traccar_client_json(PhoneFix(time_ms=T0_MS, lat=36.7, lon=3.0), "p"))
    later = {**one["location"], "timestamp": "2025-12-01T12:00:05.000Z"}
    report = decode_json(json.dumps({"location": [one["location"], later], "device_id": "p"}).encode())
    assert [f.time_ms for f in report.fixes] == [T0_MS, T0_MS + 5000]


@pytest.mark.parametrize(
    ("query", "error", "field"),
    [
        ("lat=abc&lon=3&timestamp=1764590400", InvalidFieldError, "lat:"),
        ("lat=36&lon=3", InvalidFieldError, "timestamp: required"),
        ("lon=3&timestamp=1764590400", InvalidFieldError, "lat: required"),
        ("lat=36&lon=3&timestamp=yesterday", InvalidFieldError, "timestamp:"),
        ("lat=96&lon=3&timestamp=1764590400", OutOfRangeError, "lat:"),
        ("lat=36&lon=3&timestamp=1764590400&speed=-2", OutOfRangeError, "speed:"),
        ("lat=36&lon=3&timestamp=1764590400&bearing=nan", InvalidFieldError, "bearing:"),
        ("lat=36&lon=3&timestamp=1764590400&batt=140", OutOfRangeError, "batt:"),
        ("lat=36&lon=3&timestamp=1764590400&charge=maybe", InvalidFieldError, "charge:"),
        ("lat=36&lon=3&timestamp=100", OutOfRangeError, "timestamp:"),
        ("location=36&timestamp=1764590400", InvalidFieldError, "location:"),
    ],
)
def test_a_bad_parameter_is_named_in_a_typed_error(
    query: str, error: type[FleetSchemaError], field: str
) -> None:
    with pytest.raises(error) as raised:
        decode_query(parse_qsl(query))
    assert raised.value.message.startswith(field)


def test_a_bad_json_value_is_named_with_its_path() -> None:
    body = json.loads(_traccar_client_json(PhoneFix(time_ms=T0_MS, lat=36.7, lon=3.0), "p"))
    body["location"]["coords"]["latitude"] = 123.0
    with pytest.raises(OutOfRangeError, match=r"^out_of_range: location\.coords\.latitude:"):
        decode_json(json.dumps(body).encode())
    body["location"]["coords"]["latitude"] = "north"
    with pytest.raises(
        InvalidFieldError, match=r"^invalid_field: location\.coords\.latitude: Expected `float`"
    ):
        decode_json(json.dumps(body).encode())
    with pytest.raises(UndecodableError):
        decode_json(b"{" * 100_000)


known = st.sampled_from(
    [
        "id",
        "lat",
        "lon",
        "timestamp",
        "speed",
        "speed_mps",
        "bearing",
        "heading",
        "altitude",
        "accuracy",
        "hdop",
        "batt",
        "charge",
        "location",
        "valid",
        "cell",
    ]
)


@given(st.lists(st.tuples(known | st.text(max_size=8), st.text(max_size=80))))
def test_any_parameters_decode_or_raise_a_typed_error(params: list[tuple[str, str]]) -> None:
    try:
        report = decode_query(params)
    except FleetSchemaError:
        return
    assert len(report.fixes) == 1


@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_any_body_decodes_or_raises_a_typed_error(body: bytes) -> None:
    try:
        decode_json(body)
    except FleetSchemaError:
        return
