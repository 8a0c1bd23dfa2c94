"""The NMEA parser on hand-made sentences, plus property tests on hostile input."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet_agent.fix import Fix
from fleet_agent.nmea import KNOTS_TO_MPS, NmeaCounters, NmeaParser, parse_lines
from fleet_agent.nmea import sentence as nmea


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp() * 1000)


def epoch(hhmmss: str, *, talker: str = "GP", lat: str = "4807.0380", speed_kn: str = "022.4") -> list[str]:
    """One 1 Hz epoch of a typical receiver: RMC, VTG, GGA, GSA, GSV, GLL."""
    return [
        nmea(f"{talker}RMC,{hhmmss},A,{lat},N,01131.0000,E,{speed_kn},084.4,230394,003.1,W,A"),
        nmea(f"{talker}VTG,084.4,T,,M,{speed_kn},N,041.5,K,A"),
        nmea(f"{talker}GGA,{hhmmss},{lat},N,01131.0000,E,1,08,0.9,545.4,M,46.9,M,,"),
        nmea(f"{talker}GSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1"),
        nmea(f"{talker}GSV,1,1,02,04,40,083,46,05,17,308,41"),
        nmea(f"{talker}GLL,{lat},N,01131.0000,E,{hhmmss},A,A"),
    ]


def gga(hhmmss: str) -> str:
    return nmea(f"GPGGA,{hhmmss},4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")


GNS = nmea("GNGNS,074159.799,3114.8943,N,12135.2444,E,ANNA,07,1.1,196.4,8.3,,")


def feed_all(parser: NmeaParser, lines: list[str]) -> list[Fix]:
    return [fix for line in lines for fix in parser.feed(line)]


def rejected(counters: NmeaCounters) -> int:
    """Lines and sentences dropped for any reason."""
    counts: dict[str, int] = dataclasses.asdict(counters)
    return sum(counts.values()) - counts["lines"] - counts["sentences"] - counts["fixes"]


def test_each_epoch_is_one_complete_fix() -> None:
    parser = NmeaParser()
    fixes = feed_all(parser, epoch("123519.00") + epoch("123520.00", lat="4807.0390"))
    fixes += parser.flush()
    lon, speed = 11 + 31.0 / 60, 22.4 * KNOTS_TO_MPS
    assert fixes == [
        Fix(time_ms=ms("1994-03-23T12:35:19"), lat=48 + 7.038 / 60, lon=lon, mode=3, speed_mps=speed,
            heading_deg=84.4, altitude_m=545.4, hdop=0.9, satellites=8),
        Fix(time_ms=ms("1994-03-23T12:35:20"), lat=48 + 7.039 / 60, lon=lon, mode=3, speed_mps=speed,
            heading_deg=84.4, altitude_m=545.4, hdop=0.9, satellites=8),
    ]  # fmt: skip
    assert parser.counters.sentences == 12
    assert parser.counters.fixes == 2
    assert rejected(parser.counters) == 0


def test_once_the_cycle_is_learnt_an_epoch_is_reported_on_its_closing_sentence() -> None:
    parser = NmeaParser()
    feed_all(parser, epoch("123519.00") + epoch("123520.00"))
    *body, gll = epoch("123521.00")
    assert feed_all(parser, body) == []
    (fix,) = parser.feed(gll)
    assert fix.time_ms == ms("1994-03-23T12:35:21")


def test_an_epoch_missing_its_closing_sentence_is_reported_when_the_next_one_starts() -> None:
    parser = NmeaParser()
    feed_all(parser, epoch("123519.00") + epoch("123520.00"))
    assert feed_all(parser, epoch("123521.00")[:-1]) == []  # its GLL was lost
    (late,) = parser.feed(epoch("123522.00")[0])
    assert late.time_ms == ms("1994-03-23T12:35:21")
    assert late.altitude_m == 545.4


def test_the_first_fix_of_a_file_is_reported_by_flush() -> None:
    fixes = list(parse_lines(epoch("123519.00")))
    assert [fix.time_ms for fix in fixes] == [ms("1994-03-23T12:35:19")]


@pytest.mark.parametrize("talker", ["GP", "GN", "GL", "GA", "BD", "GB"])
def test_every_constellation_talker_parses(talker: str) -> None:
    parser = NmeaParser()
    fixes = list(parse_lines(epoch("123519.00", talker=talker), parser))
    assert len(fixes) == 1
    assert fixes[0].mode == 3
    assert parser.counters.sentences == 6
    assert rejected(parser.counters) == 0


def test_gns_is_read_like_gga() -> None:
    (fix,) = parse_lines([nmea("GNRMC,074159.799,A,3114.8943,N,12135.2444,E,0.23,4.94,250215,,,A"), GNS])
    assert (fix.altitude_m, fix.satellites, fix.hdop, fix.mode) == (196.4, 7, 1.1, 3)


def test_a_flipped_checksum_is_rejected_and_counted() -> None:
    parser = NmeaParser()
    good = epoch("123519.00")
    rmc = good[0].rstrip()
    flipped = rmc[:-2] + f"{int(rmc[-2:], 16) ^ 0x01:02X}"
    assert list(parse_lines([flipped], parser)) == []
    assert parser.counters.bad_checksum == 1
    assert parser.counters.sentences == 0


def test_a_sentence_without_checksum_is_rejected_and_counted() -> None:
    parser = NmeaParser()
    rmc = epoch("123519.00")[0].rstrip()
    assert list(parse_lines([rmc[: rmc.index("*")]], parser)) == []
    assert parser.counters.no_checksum == 1


@pytest.mark.parametrize(
    "no_fix",
    [
        nmea("GPRMC,,V,,,,,,,,,,N"),
        nmea("GPRMC,212619.000,V,,,,,,,181207,0,N"),
        nmea("GPGGA,212619.000,,,,,0,00,50.0,,M,0.0,M,,0000"),
        nmea("GPGGA,102141.000,3340.8472,S,15117.3205,E,0,02,99.0,064.19,M,22.4,M,,"),
        nmea("GPGLL,0000.0000,N,00000.0000,E,000430.00,V,N"),
        nmea("GPVTG,,T,,M,,N,,K,N"),
        nmea("GPGSA,A,1,,,,,,,,,,,,,99.99,99.99,99.99"),
    ],
)
def test_a_no_fix_sentence_yields_nothing(no_fix: str) -> None:
    parser = NmeaParser()
    assert list(parse_lines([nmea("GPZDA,212618.000,18,12,2007,00,00"), no_fix, no_fix], parser)) == []
    assert parser.counters.sentences == 3


def test_a_gsa_without_fix_cancels_the_epoch() -> None:
    lines = [
        nmea("GPRMC,212619.000,A,4839.9411,N,00214.9065,E,0.00,,181207,0,A"),
        nmea("GPGSA,A,1,,,,,,,,,,,,,99.99,99.99,99.99"),
    ]
    assert list(parse_lines(lines)) == []


def test_gga_before_any_rmc_has_no_date_so_no_fix() -> None:
    parser = NmeaParser()
    gga_only = [gga(f"1235{s}") for s in range(10, 20)]
    assert list(parse_lines(gga_only, parser)) == []
    assert parser.counters.sentences == 10
    assert parser.counters.fixes == 0


def test_gga_takes_the_date_of_the_last_rmc_or_zda() -> None:
    lines = [nmea("GPZDA,123514.00,23,03,1994,00,00")] + [gga(f"1235{s}") for s in range(15, 18)]
    fixes = list(parse_lines(lines))
    assert [fix.time_iso for fix in fixes] == [
        "1994-03-23T12:35:15.000Z", "1994-03-23T12:35:16.000Z", "1994-03-23T12:35:17.000Z",
    ]  # fmt: skip


def test_gga_past_midnight_moves_to_the_next_day_before_rmc_says_so() -> None:
    lines = [
        nmea("GPRMC,235959.00,A,4807.038,N,01131.000,E,0.0,,311299,,,A"),
        gga("235959.00"),
        gga("000000.00"),
    ]
    times = [fix.time_iso for fix in parse_lines(lines)]
    assert times == ["1999-12-31T23:59:59.000Z", "2000-01-01T00:00:00.000Z"]


def test_week_rollover_dates_are_reported_as_the_receiver_sent_them() -> None:
    (fix,) = parse_lines([nmea("GPRMC,000431.00,A,4808.9993,N,01135.0798,E,000.1,000.0,220899,003.0,E,A")])
    assert fix.time_iso == "1999-08-22T00:04:31.000Z"


def test_mode_follows_the_receiver() -> None:
    rmc = nmea("GPRMC,095307.801,A,2712.6486,S,15303.1293,E,1.73,279.46,080407,,,A")
    gga_3d = nmea("GPGGA,095307.801,2712.6486,S,15303.1293,E,1,04,21.1,3.0,M,42.2,M,,")
    gga_no_altitude = nmea("GPGGA,095307.801,2712.6486,S,15303.1293,E,1,04,21.1,,M,42.2,M,,")
    gsa_2d = nmea("GPGSA,A,2,05,07,12,30,,,,,,,,,34.7,21.1,27.6")
    assert [fix.mode for fix in parse_lines([rmc])] == [2]
    assert [fix.mode for fix in parse_lines([rmc, gga_3d])] == [3]
    assert [fix.mode for fix in parse_lines([rmc, gga_no_altitude])] == [2]
    assert [fix.mode for fix in parse_lines([rmc, gga_3d, gsa_2d])] == [2]


def test_comments_blanks_garbage_and_proprietary_sentences_are_skipped_and_counted() -> None:
    parser = NmeaParser()
    lines: list[bytes | str] = [
        "# Name: BT-451\n",
        "\r\n",
        "+ 6: 28 (.....)\n",
        b"\x00\xff\x82binary\xfe\n",
        "$PSRFEPE,074150.799,V,,,,,*23\r\n",
        "$GPRMC,000344.03,A,4808.9992,N,4,02.3*05\r\n",
        "$GPGSV,3,1,12,20,76,058,40,11,73,252,,06,41,274,,14,41,185,*7D\r\n",
        nmea("GPXYZ,1,2,3"),
        nmea("GPRMC,000431.00,A,48x8.9993,N,01135.0798,E,000.1,000.0,220899,003.0,E,A"),
        "$GPRMC,000431.00,A,4808.9993,N,01135.0798,E,000.1,000.0,220899,003.0,E,A*4",
    ]
    assert list(parse_lines(lines, parser)) == []
    assert parser.counters == NmeaCounters(
        lines=10, sentences=1, fixes=0, blank=1, comments=1, garbage=3, no_checksum=0, bad_checksum=1,
        proprietary=1, unknown_type=1, bad_fields=1,
    )  # fmt: skip


def test_two_sentences_glued_on_one_line_are_both_read() -> None:
    parser = NmeaParser()
    gsa = nmea("GPGSA,A,3,20,,,,13,31,,04,,,,,02.7,01.4,02.3")
    rmc = nmea("GPRMC,000345.03,A,4808.9993,N,01135.0798,E,000.1,000.0,070419,003.0,E,A")
    assert len(list(parse_lines([gsa.rstrip() + rmc], parser))) == 1
    assert parser.counters.sentences == 2


SENTENCE_ALPHABET = "$*,.GPNLABDRMCVTSAZ0123456789EWN-\r\n\t "


@given(st.lists(st.binary(max_size=200), max_size=30))
def test_random_bytes_never_raise_only_counters_grow(lines: list[bytes]) -> None:
    parser = NmeaParser()
    fixes = list(parse_lines(lines, parser))
    assert parser.counters.lines == len(lines)
    assert parser.counters.fixes == len(fixes)


@given(st.lists(st.text(alphabet=SENTENCE_ALPHABET, max_size=120), max_size=30))
def test_random_nmea_like_text_never_raises(lines: list[str]) -> None:
    parser = NmeaParser()
    list(parse_lines(lines, parser))
    assert parser.counters.lines == len(lines)


FIELD_ALPHABET = SENTENCE_ALPHABET.replace("$", "").replace("*", "").replace(",", "")


@given(
    st.sampled_from([*epoch("123519.00"), GNS]),
    st.integers(min_value=1, max_value=20),
    st.text(alphabet=FIELD_ALPHABET, max_size=12),
)
def test_a_field_replaced_under_a_valid_checksum_never_raises(sentence: str, index: int, value: str) -> None:
    """The checksum passes, so every field converter meets arbitrary text."""
    fields = sentence.strip()[1 : sentence.index("*")].split(",")
    fields[index % len(fields) or 1] = value
    parser = NmeaParser()
    fixes = list(parse_lines([nmea(",".join(fields))], parser))
    assert parser.counters.sentences + parser.counters.bad_fields + parser.counters.garbage == 1
    for fix in fixes:
        assert -90 <= fix.lat <= 90
        assert -180 <= fix.lon <= 180
