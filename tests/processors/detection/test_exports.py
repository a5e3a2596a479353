"""processors.detection declares its public surface once, sorted, in __all__."""

from __future__ import annotations

from types import ModuleType

import processors.detection as detection


def _key(name: str) -> tuple[int, str]:
    return (0 if name.isupper() else 1 if name[0].isupper() else 2), name


def test_all_matches_public_members_sorted() -> None:
    """Every public name of the package is in __all__, in ruff's order, and exists."""
    exported = list(detection.__all__)
    assert exported == sorted(exported, key=_key)
    public = {
        n
        for n, v in vars(detection).items()
        if not n.startswith("_") and not isinstance(v, ModuleType) and n != "annotations"
    }
    assert set(exported) == public
