"""Gaps by the CN's own cadence: hourly or daily live uploads are not outages every time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.backfill import BackfillState

T0 = datetime(2026, 12, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _state() -> BackfillState:
    return BackfillState(None, min_gap=timedelta(seconds=120), max_age=timedelta(days=7))


def test_hourly_uploads_an_hour_apart_open_no_gap_and_a_missed_hour_does() -> None:
    """With the default 120 s minimum gap, 2061 uploads on the hour are no outage (they were,
    before: every hourly upload asked for history); a missing hour opens a gap over it."""
    state = _state()
    now = T0 + 10 * HOUR
    assert state.confirmed("MN1", T0, now, HOUR) is None
    assert state.confirmed("MN1", T0 + HOUR, now, HOUR) is None
    gap = state.confirmed("MN1", T0 + 3 * HOUR, now, HOUR)
    assert gap is not None
    assert (gap.begin, gap.end) == (T0 + HOUR, T0 + 3 * HOUR)


def test_real_time_data_keeps_the_minimum_gap_alone() -> None:
    """Real-time packets (no period): a step past 120 s is an outage, as before."""
    state = _state()
    now = T0 + HOUR
    assert state.confirmed("MN1", T0, now) is None
    assert state.confirmed("MN1", T0 + timedelta(seconds=100), now) is None
    assert state.confirmed("MN1", T0 + timedelta(seconds=400), now) is not None
