"""Simulated fleets have unique, scheme-conforming names and the channels of their kind."""

from __future__ import annotations

import numpy as np
import pytest

from sensors_sim import build_fleet
from wire.schemas import METRICS, MineLocation, SourceKind
from wire.topics import parse_data_topic


@pytest.mark.parametrize("kind", list(SourceKind))
def test_device_topics_are_unique_and_parse_back(kind: SourceKind) -> None:
    """Every device topic follows the topic scheme and names a distinct device of its kind."""
    fleet = build_fleet(kind, 250, np.random.default_rng(7))
    topics = fleet.topics("ghg/v1")
    assert len(set(topics)) == 250
    for topic, ref in zip(topics, fleet.refs, strict=True):
        parsed = parse_data_topic(topic, "ghg/v1")
        assert parsed == ref
        assert parsed.kind is kind


@pytest.mark.parametrize("kind", list(SourceKind))
def test_channels_are_catalogue_metrics_allowed_for_the_kind(kind: SourceKind) -> None:
    """A fleet only reports metrics the wire contract allows for its kind."""
    fleet = build_fleet(kind, 3, np.random.default_rng(1))
    for metric in fleet.channels:
        assert kind in METRICS[metric].kinds, metric


def test_city_stations_are_in_baotou_and_ordos() -> None:
    """City devices sit in the two pilot cities, e.g. baotou/kundulun and ordos/kangbashi."""
    fleet = build_fleet(SourceKind.CITY, 20, np.random.default_rng(1))
    assert {ref.network for ref in fleet.refs} == {"baotou", "ordos"}
    sites = {f"{ref.network}/{ref.site}" for ref in fleet.refs}
    assert {"baotou/kundulun", "ordos/kangbashi", "baotou/qingshan", "ordos/dongsheng"} <= sites


def test_mine_sensors_carry_location_classes_and_others_do_not() -> None:
    """Mine sensors have a location class matching their name; other kinds have none."""
    mine = build_fleet(SourceKind.MINE, 400, np.random.default_rng(2))
    assert all(isinstance(loc, MineLocation) for loc in mine.locations)
    assert {MineLocation.WORKING_FACE, MineLocation.UPPER_CORNER, MineLocation.DRAINAGE} <= set(
        mine.locations
    )
    for ref, loc in zip(mine.refs, mine.locations, strict=True):
        if loc is MineLocation.WORKING_FACE:
            assert ref.device.startswith("t1-")
    city = build_fleet(SourceKind.CITY, 5, np.random.default_rng(2))
    assert set(city.locations) == {None}


def test_cems_units_are_named_by_capacity_class() -> None:
    """CEMS units are named like u1-600mw-sc and carry that class's capacity."""
    fleet = build_fleet(SourceKind.CEMS, 30, np.random.default_rng(3))
    for ref, cap in zip(fleet.refs, fleet.params["capacity_mw"], strict=True):
        assert f"-{int(cap)}mw-" in ref.device
