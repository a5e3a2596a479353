"""The repeat limiter that keeps one bad device from flooding a service's log."""

from __future__ import annotations

from core.logs import RepeatLimiter


def test_one_line_per_subject_and_kind_per_interval() -> None:
    now = [0.0]
    limit = RepeatLimiter(interval_s=60.0, max_keys=100, clock=lambda: now[0])
    assert limit.allow("dev-1", "schema")
    assert not limit.allow("dev-1", "schema")
    assert limit.allow("dev-1", "bad_topic")  # another kind of trouble is news
    assert limit.allow("dev-2", "schema")  # another device too
    now[0] = 59.9
    assert not limit.allow("dev-1", "schema")
    now[0] = 60.0
    assert limit.allow("dev-1", "schema")


def test_memory_stays_bounded_under_a_flood_of_distinct_devices() -> None:
    limit = RepeatLimiter(interval_s=60.0, max_keys=10, clock=lambda: 0.0)
    assert all(limit.allow(f"dev-{n}", "schema") for n in range(1000))
    assert len(limit._last) <= 10
