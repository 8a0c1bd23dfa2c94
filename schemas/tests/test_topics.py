"""The MQTT topic scheme."""

from __future__ import annotations

import pytest
from hypothesis import given

from fleet_schemas import (
    BadIdentifierError,
    BadTopicError,
    TopicAddress,
    frames_subscription,
    frames_topic,
    parse_topic,
    status_topic,
)
from fleet_testing.frames import identifiers


@given(identifiers, identifiers)
def test_frames_topic_parses_back_to_its_operator_and_device(operator: str, device: str) -> None:
    assert parse_topic(frames_topic(operator, device)) == TopicAddress(operator, device, "frames")
    assert parse_topic(status_topic(operator, device)) == TopicAddress(operator, device, "status")


def test_shared_subscription_names_the_group() -> None:
    assert frames_subscription() == "fleet/v1/+/+/frames"
    assert frames_subscription("ingest") == "$share/ingest/fleet/v1/+/+/frames"


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#", "x" * 65, "-leading-dash", "sp ace", "BUS-A\n", "x\r"])
def test_ids_that_would_break_a_topic_are_refused(bad: str) -> None:
    with pytest.raises(BadIdentifierError):
        frames_topic("sonelgaz", bad)


@pytest.mark.parametrize(
    "topic",
    ["fleet/v1/op/dev", "fleet/v2/op/dev/frames", "fleet/v1/op/dev/other", "fleet/v1/op/+/frames", "x"],
)
def test_foreign_topics_are_bad_topics(topic: str) -> None:
    with pytest.raises(BadTopicError):
        parse_topic(topic)
