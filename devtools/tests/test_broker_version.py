"""`fleet stack` runs only a Mosquitto that keeps acknowledged frames on shared subscriptions."""

from __future__ import annotations

import pytest

from fleet_devtools import stack


def test_a_broker_older_than_2_0_18_is_refused_with_the_way_out() -> None:
    with pytest.raises(
        stack.StackError, match=r"Mosquitto 2\.0\.11 is too old: fleet needs 2\.0\.18.*scripts/bootstrap"
    ):
        stack.require_mosquitto("mosquitto version 2.0.11")


def test_2_0_18_and_newer_are_accepted() -> None:
    for line in ("mosquitto version 2.0.18", "mosquitto version 2.0.21", "mosquitto version 2.1.0"):
        stack.require_mosquitto(line)


def test_an_unreadable_version_line_is_a_clear_error() -> None:
    with pytest.raises(stack.StackError, match="cannot tell Mosquitto's version"):
        stack.require_mosquitto("Error: unknown option")


def test_the_installed_broker_is_recent_enough() -> None:
    stack.check_mosquitto_version()
