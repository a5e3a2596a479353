"""The processors package declares its public surface once, sorted and complete."""

from __future__ import annotations

import processors
import processors.storage


def _isort_key(name: str) -> tuple[int, str]:
    """ruff RUF022 order: CONSTANTS, then Classes, then functions."""
    group = 0 if name.isupper() else 1 if name[0].isupper() else 2
    return group, name


def test_all_is_sorted_and_every_name_exists() -> None:
    """__all__ of processors and processors.storage is sorted and resolvable."""
    for module in (processors, processors.storage):
        names = module.__all__
        assert list(names) == sorted(names, key=_isort_key)
        for name in names:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_public_objects_are_all_exported() -> None:
    """Every public class or function of the package root is listed in __all__."""
    for module in (processors, processors.storage):
        public = {
            n
            for n, v in vars(module).items()
            if not n.startswith("_")
            and callable(v)
            and getattr(v, "__module__", "").startswith("processors")
        }
        assert public <= set(module.__all__)
