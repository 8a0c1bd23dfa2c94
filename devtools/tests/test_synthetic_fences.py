"""The bench's fences: as many as asked, all valid, the same for the same seed."""

from __future__ import annotations

from fleet_devtools.synthetic_fences import synthetic_fences
from fleet_processing.fence_geojson import fences_from_geojson
from fleet_processing.geofences import FenceIndex


def test_synthetic_fences_are_valid_and_repeatable() -> None:
    fences = fences_from_geojson("bench", synthetic_fences(300, seed=4))
    assert len(fences) == 300
    assert {f.kind for f in fences} == {"station", "depot", "speed_zone", "restricted"}
    assert synthetic_fences(300, seed=4) == synthetic_fences(300, seed=4)
    assert synthetic_fences(300, seed=5) != synthetic_fences(300, seed=4)
    assert len(FenceIndex(fences)) == 300
