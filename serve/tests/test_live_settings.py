"""The websocket fan-out's settings as ``fleet serve`` reads them from the environment."""

from __future__ import annotations

import pytest

from fleet_serve.settings import load_serve_settings
from fleet_store.errors import ConfigError


def test_the_map_and_route_ticks_default_to_100_and_500_ms_and_are_read_from_the_environment() -> None:
    default = load_serve_settings({})
    assert (default.live_tick_ms, default.live_route_tick_ms) == (100, 500)
    chosen = load_serve_settings({"FLEET_LIVE_TICK_MS": "0", "FLEET_LIVE_ROUTE_TICK_MS": "1000"})
    assert (chosen.live_tick_ms, chosen.live_route_tick_ms) == (0, 1000)


@pytest.mark.parametrize("raw", ["-1", "0.5", "fast", "10001"])
def test_a_route_tick_that_is_not_whole_milliseconds_up_to_10_s_is_a_config_error_naming_it(raw: str) -> None:
    with pytest.raises(ConfigError, match="FLEET_LIVE_ROUTE_TICK_MS") as refused:
        load_serve_settings({"FLEET_LIVE_ROUTE_TICK_MS": raw})
    assert "as 500" in str(refused.value)
