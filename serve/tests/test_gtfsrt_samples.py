"""Real GTFS-realtime samples (Caltrain, ../shared/data/gtfs-rt) through our decoding path.

``gtfsrt_build.decode`` and ``to_json`` are what the feed tests read our own
feeds with and what ``?format=json`` answers; here they decode real
producers' bytes and must give the JSON that Transitland decoded the same
files to. The samples are then held to the same rule checks, against the
static feed they came with, to show the checks read a real feed as the
validator does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet_cli.gtfs_source import open_source
from fleet_processing.gtfs.reader import read_feed
from fleet_serve.gtfsrt_build import FeedDecodeError, StaticIds, decode, to_json
from fleet_testing.gtfsrt_rules import pairing_violations, violations

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "gtfs-rt"
needs_samples = pytest.mark.skipif(
    not SAMPLES.is_dir(), reason=f"the GTFS-realtime samples are not at {SAMPLES} (../shared/data/gtfs-rt)"
)
NAMES = ["ct-vehicle-positions", "ct-trip-updates"]


@needs_samples
@pytest.mark.parametrize("name", NAMES)
def test_real_samples_decode_to_the_json_transitland_decoded_them_to(name: str) -> None:
    message = decode((SAMPLES / f"{name}.pb").read_bytes())
    expected = json.loads((SAMPLES / f"{name}.pb.json").read_text())
    assert to_json(message) == expected
    assert len(message.entity) == len(expected["entity"])


@needs_samples
def test_real_samples_pass_the_rule_checks_against_their_static_feed() -> None:
    with open_source(SAMPLES / "ct.zip") as source:
        feed = read_feed(source.open_file).feed
    assert feed is not None
    ids = StaticIds.from_feed(0, feed)
    vehicles = decode((SAMPLES / "ct-vehicle-positions.pb").read_bytes())
    trips = decode((SAMPLES / "ct-trip-updates.pb").read_bytes())
    for message in (vehicles, trips):
        assert violations(message, ids, message.header.timestamp * 1000) == []
    assert pairing_violations(vehicles, trips) == []


@given(st.binary(max_size=200))
def test_bytes_that_are_not_a_feed_raise_a_typed_error_or_decode(data: bytes) -> None:
    """Any bytes: a FeedMessage with its header, or FeedDecodeError (never another exception)."""
    try:
        message = decode(data)
    except FeedDecodeError as exc:
        error: FeedDecodeError | None = exc
    else:
        error = None
        assert message.HasField("header")
        assert decode(message.SerializeToString()) == message
    assert error is None or error.code == "gtfsrt_malformed"
