"""sensors_sim declares its public surface once, sorted."""

from __future__ import annotations

import sensors_sim


def test_all_is_sorted_and_every_name_exists() -> None:
    """__all__ is sorted and each listed name is importable from the package root."""
    assert list(sensors_sim.__all__) == sorted(sensors_sim.__all__)
    for name in sensors_sim.__all__:
        assert hasattr(sensors_sim, name), name
