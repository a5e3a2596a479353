"""The topic scheme: which topics name a device, and the bridge's subscription filter."""

from __future__ import annotations

import pytest

from wire import DeviceRef, SourceKind, data_subscription, parse_data_topic


def test_a_device_data_topic_parses_into_its_device() -> None:
    """kind/network/site/device come back, and device_id is network/site/device."""
    ref = parse_data_topic("ghg/v1/mine/ordos-coal/buertai/t1-0302/data", "ghg/v1")
    assert ref == DeviceRef(SourceKind.MINE, "ordos-coal", "buertai", "t1-0302")
    assert ref.device_id == "ordos-coal/buertai/t1-0302"
    assert ref.status_topic("ghg/v1") == "ghg/v1/mine/ordos-coal/buertai/t1-0302/status"
    assert ref.data_topic("ghg/v1") == "ghg/v1/mine/ordos-coal/buertai/t1-0302/data"


@pytest.mark.parametrize(
    "topic",
    [
        "ghg/v1/volcano/a/b/c/data",  # unknown kind
        "ghg/v1/city/Baotou/b/c/data",  # upper case
        "ghg/v1/city/a/b/c/status",  # not the data channel
        "ghg/v1/city/a/b/data",  # a segment missing
        "ghg/v2/city/a/b/c/data",  # another root
        "ghg/v1/city/a/b/c d/data",  # a space
        "ghg/v1/city/a\n/b/c/data",  # a newline ending a segment (`$` matches before it)
        "ghg/v1/city/a/b/c\n/data",
    ],
)
def test_topics_outside_the_scheme_name_no_device(topic: str) -> None:
    """Anything off the scheme is None (the bridge dead-letters it as bad_topic)."""
    assert parse_data_topic(topic, "ghg/v1") is None


def test_parsing_is_cached_per_topic() -> None:
    """The same topic parses to the same frozen object (the bridge's hot path)."""
    topic = "ghg/v1/city/baotou/kundulun/pic-01/data"
    assert parse_data_topic(topic, "ghg/v1") is parse_data_topic(topic, "ghg/v1")


def test_subscription_filter_is_shared_when_a_group_is_given() -> None:
    """Bridges in one group share a $share filter; without a group it is a plain filter."""
    assert data_subscription("ghg/v1", "bridges") == "$share/bridges/ghg/v1/+/+/+/+/data"
    assert data_subscription("ghg/v1", None) == "ghg/v1/+/+/+/+/data"
