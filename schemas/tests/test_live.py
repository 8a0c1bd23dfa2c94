"""The newest position of each bus, whatever order the frames came in."""

from __future__ import annotations

import random
from operator import attrgetter

from hypothesis import given
from hypothesis import strategies as st

from fleet_schemas.live import LivePosition, newest_each, position_stamp

_positions = st.lists(
    st.builds(
        lambda bus, t, seq: LivePosition(
            operator="op", bus=bus, device="d", seq=seq, time_ms=t, lat=0.0, lon=0.0
        ),
        st.sampled_from(["a", "b", "c"]),
        st.integers(0, 5),
        st.integers(0, 3),
    ),
    max_size=30,
)


@given(_positions, st.randoms())
def test_the_newest_of_each_bus_is_its_greatest_time_and_sequence_in_any_order(
    positions: list[LivePosition],
    rng: random.Random,
) -> None:
    shuffled = list(positions)
    rng.shuffle(shuffled)
    newest = newest_each(shuffled, attrgetter("bus"), position_stamp)
    assert set(newest) == {p.bus for p in positions}
    for bus, chosen in newest.items():
        assert position_stamp(chosen) == max(position_stamp(p) for p in positions if p.bus == bus)


def test_of_equal_stamps_the_first_stays() -> None:
    first, second = (
        LivePosition(operator="op", bus="a", device=d, seq=1, time_ms=10, lat=0.0, lon=0.0) for d in "xy"
    )
    assert newest_each([first, second], attrgetter("bus"), position_stamp)["a"].device == "x"
