"""The position checks: named rules, and the teleport rule's track of each bus."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_processing.filters import BusTrack, FilterPolicy, PreviousFix, is_jump, judge
from fleet_schemas import Frame
from fleet_testing.frames import frame

POLICY = FilterPolicy()
T0 = 1_795_000_000_000
METRES_PER_DEGREE = 111_320.0


def north(seq: int, metres: float, seconds: float, accuracy_m: float | None = None) -> Frame:
    """A fix ``metres`` north of Algiers' bus station, ``seconds`` after T0."""
    lat = 36.7525 + metres / METRES_PER_DEGREE
    return frame(seq=seq, lat=lat, time_ms=T0 + int(seconds * 1000), accuracy_m=accuracy_m)


def drive(fixes: list[Frame], track: BusTrack | None = None) -> tuple[BusTrack | None, list[str | None]]:
    reasons = []
    for fix in fixes:
        track, reason = judge(POLICY, track, fix, T0 + 3_600_000)
        reasons.append(reason)
    return track, reasons


def test_a_chain_of_900_m_steps_one_second_apart_is_rejected() -> None:
    _, reasons = drive([north(i, 900.0 * i, i, accuracy_m=5.0) for i in range(10)])
    assert reasons[0] is None
    assert reasons[1:] == ["teleport"] * 9


def test_gps_noise_within_the_fixes_accuracy_is_not_a_teleport() -> None:
    # Parked bus: fixes scattered by 60 m with 20 m accuracy, a tenth of a second apart.
    fixes: list[Frame] = [north(i, 60.0 * (i % 2), i / 10, accuracy_m=20.0) for i in range(10)]
    assert drive(fixes)[1] == [None] * 10


def test_a_fix_reporting_poor_accuracy_allows_a_larger_jump() -> None:
    reference = PreviousFix(T0, 1, 36.7525, 3.0420, 5.0)
    assert is_jump(POLICY, reference, north(2, 400.0, 1, accuracy_m=5.0))
    assert not is_jump(POLICY, reference, north(2, 400.0, 1, accuracy_m=200.0))


def test_true_fixes_after_an_accepted_outlier_are_accepted_once_three_agree() -> None:
    outlier = BusTrack(PreviousFix(T0, 1, 36.0, 2.0, 5.0))  # 90 km away: a stale or multipath reference
    track, reasons = drive([north(i, 15.0 * i, i, accuracy_m=5.0) for i in range(2, 8)], outlier)
    assert reasons == ["teleport", "teleport", None, None, None, None]
    assert track is not None
    assert track.last.seq == 7


def test_outliers_that_disagree_with_each_other_never_replace_the_reference() -> None:
    start = BusTrack(PreviousFix(T0, 1, 36.7525, 3.0420, 5.0))
    wild = [north(i, 5_000.0 * i * (-1) ** i, i, accuracy_m=5.0) for i in range(2, 12)]
    track, reasons = drive(wild, start)
    assert reasons == ["teleport"] * 10
    assert track is not None
    assert track.last.seq == 1


def test_rules_without_history_come_first_and_keep_the_track() -> None:
    start = BusTrack(PreviousFix(T0, 1, 36.7525, 3.0420, 5.0))
    track, reason = judge(POLICY, start, frame(seq=2, lat=0.0, lon=0.0, time_ms=T0 + 1000), T0 + 2000)
    assert (track, reason) == (start, "null_island")


@settings(max_examples=200)
@given(
    speeds=st.lists(st.floats(0.0, POLICY.max_speed_mps), min_size=2, max_size=30),
    noise=st.lists(st.floats(-1.0, 1.0), min_size=30, max_size=30),
    accuracy=st.floats(1.0, 50.0),
    gap_s=st.floats(0.5, 30.0),
)
def test_a_bus_within_top_speed_and_its_accuracy_is_never_rejected(
    speeds: list[float], noise: list[float], accuracy: float, gap_s: float
) -> None:
    travelled, fixes = 0.0, list[Frame]()
    for i, speed in enumerate(speeds):
        travelled += speed * gap_s
        jitter = noise[i] * accuracy * POLICY.accuracy_sigmas / 2  # each fix off by at most its share
        fixes.append(north(i, travelled + jitter, i * gap_s, accuracy_m=accuracy))
    assert drive(fixes)[1] == [None] * len(fixes)


def test_teleport_distance_uses_either_time_order() -> None:
    newer = PreviousFix(T0 + 10_000, 5, 36.7525, 3.0420, 5.0)
    late = north(4, 200.0, 9, accuracy_m=5.0)  # one second before the reference, 200 m away
    assert is_jump(POLICY, newer, late)
