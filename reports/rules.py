"""Shared helpers of the section builders: the targets they read, and one level decision.

Targets (city baselines, a mine's allowed exceedance hours, the completeness required per
source kind) live in ``settings.targets`` once the CEMS side is merged; until a field is
there, the same-named field of ``settings.reports`` is the documented default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.settings import LevelThresholds
from reports.model import Level, worst_level

__all__ = ["Decision", "pct_change", "required_share", "target_map"]


def target_map(settings: Any, name: str) -> dict[str, Any]:
    """``settings.targets.<name>``: the one place targets, baselines and requirements live."""
    return dict(getattr(settings.targets, name))


def pct_change(now: float | None, before: float | None) -> float | None:
    """Percent change from ``before`` to ``now``; None when either is missing or before is 0."""
    if now is None or before is None or before == 0:
        return None
    return (now - before) / abs(before) * 100.0


@dataclass
class Decision:
    """The levels a source reached and why, collected rule by rule."""

    levels: list[Level] = field(default_factory=list)
    reasons_zh: list[str] = field(default_factory=list)
    reasons_en: list[str] = field(default_factory=list)

    def check(
        self,
        value: float | None,
        rule: LevelThresholds,
        zh: str,
        en: str,
        *,
        cap: Level | None = None,
    ) -> Level:
        """Apply ``rule`` to ``value``; a level above green is kept with its reason.

        ``zh`` and ``en`` are format strings given ``value`` and ``level``; ``cap`` bounds
        the level (quarter-on-quarter change is at most yellow).
        """
        level = rule.level(value)
        if cap is not None and level != "green":
            level = min(level, cap, key=["green", "yellow", "orange", "red"].index)
        if level != "green":
            self.levels.append(level)
            self.reasons_zh.append(zh.format(value=value, level=level))
            self.reasons_en.append(en.format(value=value, level=level))
        return level

    @property
    def level(self) -> Level:
        """The worst level reached (green when none)."""
        return worst_level(self.levels)


def required_share(required: Mapping[str, float], kind: str, source_id: str) -> float | None:
    """The valid-hour share required of a source: the most specific key that names it.

    ``source_id`` first (``company/plant/unit``, ``network/site/device`` or
    ``network/site``), then its ``network/site`` prefix (a unit's plant, a station's site),
    then ``kind``; None when none is configured.
    """
    parts = source_id.split("/")
    for n in range(len(parts), 1, -1):
        key = "/".join(parts[:n])
        if key in required:
            return required[key]
    return required.get(kind)
