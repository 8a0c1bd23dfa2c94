"""What the OwnTracks Android app publishes, for benches and tests: a location with extended data on.

Field by field as the booklet (owntracks.org/booklet/tech/json) gives it; the
values are a coach on the road out of Algiers.
"""

from __future__ import annotations

import json
from typing import Any


def location(tst: int, **fields: Any) -> bytes:
    """A ``_type: location`` payload fixed at ``tst`` (epoch s), 30 km/h heading west; ``fields`` override."""
    values: dict[str, Any] = {
        "_type": "location",
        "BSSID": "b0:be:76:e0:1a:2c",
        "acc": 9,
        "alt": 52,
        "batt": 77,
        "bs": 1,
        "conn": "m",
        "created_at": tst + 1,
        "lat": 36.7525,
        "lon": 3.042 - (tst % 1000) * 1e-5,
        "m": 1,
        "t": "u",
        "tid": "42",
        "tst": tst,
        "vac": 4,
        "vel": 30,
        "cog": 270,
    }
    return json.dumps({**values, **fields}).encode()
