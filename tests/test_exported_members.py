"""Each package's ``__all__`` is exactly what it exposes (httpx's test_exported_members)."""

from __future__ import annotations
import __future__

import importlib
import importlib.util
import inspect
from types import ModuleType

import pytest

PACKAGES = [
    "core",
    "wire",
    "adapters",
    "registry",
    "ghgwatch",
    "dashboards",
    "ingest",
    "processors",
    "processors.detection",
    "processors.storage",
    "sensors_sim",
    "alerts",
]
# Dunder names a package may expose on purpose besides __all__.
_ALLOWED_DUNDERS = {"__version__"}


def _isort_key(name: str) -> tuple[int, str]:
    """ruff's RUF022 order: SCREAMING_CASE constants, then CamelCase classes, then the rest."""
    if name.isupper():
        return 0, name
    return (1 if name[0].isupper() else 2), name


def _public_members(pkg: ModuleType) -> set[str]:
    """Names a user sees on the package, leaving out its submodules (``core.settings``
    is an attribute once imported, but it is reached as a module, not exported)."""
    return {
        name
        for name, value in vars(pkg).items()
        if not name.startswith("_")
        and not isinstance(value, ModuleType)
        # `from __future__ import annotations` leaves a feature object named annotations.
        and not isinstance(value, __future__._Feature)
    }


@pytest.mark.parametrize("name", PACKAGES)
def test_all_lists_every_public_member_sorted(name: str) -> None:
    """__all__ is sorted, has no duplicates, and equals the package's public members."""
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"package {name} does not exist yet")
    pkg = importlib.import_module(name)
    exported = list(getattr(pkg, "__all__", []))
    assert exported, f"{name} has no __all__"
    assert exported == sorted(exported, key=_isort_key), f"{name}.__all__ is not sorted"
    assert len(exported) == len(set(exported)), f"{name}.__all__ has duplicates"
    missing = [n for n in exported if not hasattr(pkg, n)]
    assert not missing, f"{name}.__all__ names what it does not have: {missing}"
    assert set(exported) == _public_members(pkg), (
        f"{name}: public but not in __all__: {sorted(_public_members(pkg) - set(exported))}"
    )
    extra_dunders = (
        {n for n in vars(pkg) if n.startswith("__") and n.endswith("__")}
        - _ALLOWED_DUNDERS
        - set(vars(ModuleType("x")))
        - {"__all__", "__path__", "__file__", "__cached__", "__builtins__", "__annotations__"}
    )
    assert not extra_dunders, f"{name} exposes unexpected dunders {sorted(extra_dunders)}"


@pytest.mark.parametrize("name", PACKAGES)
def test_exported_members_come_from_the_package(name: str) -> None:
    """Every exported class and function is defined inside the package, not re-exported
    from a third-party library."""
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"package {name} does not exist yet")
    pkg = importlib.import_module(name)
    for member in getattr(pkg, "__all__", []):
        value = getattr(pkg, member)
        module = getattr(value, "__module__", None)
        # Classes and functions only: type aliases report their origin's module.
        if (inspect.isclass(value) or inspect.isfunction(value)) and module is not None:
            root = name.partition(".")[0]
            assert module.partition(".")[0] == root, f"{name}.{member} comes from {module}"


@pytest.mark.parametrize("name", PACKAGES)
def test_every_exported_class_and_function_has_a_docstring(name: str) -> None:
    """Public classes and functions say what they are for."""
    pkg = importlib.import_module(name)
    undocumented = [
        n
        for n in pkg.__all__
        if (inspect.isclass(getattr(pkg, n)) or inspect.isfunction(getattr(pkg, n)))
        and not (getattr(pkg, n).__doc__ or "").strip()
    ]
    assert not undocumented, f"{name}: no docstring on {undocumented}"
