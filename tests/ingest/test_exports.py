"""ingest declares its public surface once: __all__ is sorted and matches what it exposes."""

from __future__ import annotations

import types

import ingest


def test_all_lists_exactly_the_public_names() -> None:
    """Every public, non-module name of the package is in __all__, and nothing else."""
    exposed = {
        name
        for name, value in vars(ingest).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }
    assert set(ingest.__all__) == exposed
    assert len(ingest.__all__) == len(set(ingest.__all__))


def test_every_public_name_has_a_docstring() -> None:
    """Public classes and functions say what they are for."""
    for name in ingest.__all__:
        value = getattr(ingest, name)
        if isinstance(value, type) or callable(value):
            assert (value.__doc__ or "").strip(), name
